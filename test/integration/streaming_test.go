package integration

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// These tests drive berth's streaming server the way users do: crictl
// exec, attach and port-forward against bin/shim, over both transports
// (SPDY, crictl's default, and WebSocket), under a real terminal where a
// terminal is asked for.

var transports = []string{"spdy", "websocket"}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitOutput polls until b holds want; each poll first writes poke to w
// (when given), for a shell that answers each line.
func waitOutput(t *testing.T, b *lockedBuffer, want string, w io.Writer, poke string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("never saw %q in:\n%q", want, b.String())
		}
		if w != nil {
			if _, err := io.WriteString(w, poke); err != nil {
				t.Fatalf("write %q: %v", poke, err)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// crictlCmd is crictl against d, not yet started. Whatever the test
// starts is killed by its PID when the test ends.
func (d *daemon) crictlCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	ep := "unix://" + d.socket
	cmd := exec.Command(crictlBinary(t), append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep}, args...)...)
	t.Cleanup(func() {
		if cmd.Process != nil && cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// waitExit waits for a started command and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd, what string, output func() string) int {
	t.Helper()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not end; output:\n%s", what, output())
	}
	return -1
}

// ptyCrictl starts crictl on a terminal of rows×cols and returns the
// terminal's master and everything written to it.
func (d *daemon) ptyCrictl(t *testing.T, rows, cols uint16, args ...string) (*exec.Cmd, *os.File, *lockedBuffer) {
	t.Helper()
	cmd := d.crictlCmd(t, args...)
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: rows, Cols: cols})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close() })
	out := &lockedBuffer{}
	go func() { _, _ = io.Copy(out, ptmx) }()
	return cmd, ptmx, out
}

// streamingSetup is a daemon with a pulled busybox and a ready pod with a
// network namespace of its own.
type streamingSetup struct {
	d      *daemon
	dir    string
	cfg    string
	image  string
	pod    string
	podCfg string
}

// streamingNetwork is a network of these tests' own: other tests, maybe
// run at the same time from another checkout, add and delete theirs.
const streamingNetwork = `{"cniVersion":"1.0.0","name":"berthst","plugins":[
 {"type":"bridge","bridge":"berthst0","isGateway":true,"ipMasq":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.253.0.0/24"}]],"dataDir":"%s"}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}`

func streamingNetworkConfig(t *testing.T, dir string) string {
	t.Helper()
	netd := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(netd, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(streamingNetwork, filepath.Join(dir, "ipam"))
	if err := os.WriteFile(filepath.Join(netd, "10-berthst.conflist"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", "berthst0").Run() })
	return fmt.Sprintf("[cni]\nconf_dir = %q\n", netd)
}

func newStreamingSetup(t *testing.T, extraConfig string) *streamingSetup {
	t.Helper()
	reg := startRegistry(t, "busybox")
	s := &streamingSetup{dir: t.TempDir(), image: reg + "/e2e-test-images/busybox:1.29-2"}
	s.cfg = streamingNetworkConfig(t, s.dir) + extraConfig
	s.d = startDaemonWithConfig(t, s.dir, s.cfg)
	s.cleanupPods(t)
	s.d.must(t, "pull", s.image)
	s.podCfg = writeJSON(t, filepath.Join(s.dir, "pod.json"), map[string]any{
		"metadata":      map[string]any{"name": "streaming", "namespace": "it", "uid": fmt.Sprintf("streaming-%d", time.Now().UnixNano())},
		"log_directory": filepath.Join(s.dir, "logs"),
		"linux":         map[string]any{},
	})
	s.pod = s.d.must(t, "runp", s.podCfg)
	return s
}

// cleanupPods removes every pod through the daemon when the test ends,
// before the daemon itself is stopped.
func (s *streamingSetup) cleanupPods(t *testing.T) {
	d := s.d
	t.Cleanup(func() {
		if d.running() {
			_, _ = d.crictl(t, "rmp", "-a", "-f")
		}
	})
}

// container creates and starts a busybox container in the pod.
func (s *streamingSetup) container(t *testing.T, name string, extra map[string]any, args ...string) string {
	t.Helper()
	cfg := map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": s.image},
		"command":  args,
		"log_path": name + ".log",
	}
	for k, v := range extra {
		cfg[k] = v
	}
	id := s.d.must(t, "create", s.pod, writeJSON(t, filepath.Join(s.dir, name+".json"), cfg), s.podCfg)
	s.d.must(t, "start", id)
	return id
}

func TestIntegrationStreamingExec(t *testing.T) {
	s := newStreamingSetup(t, "")
	d := s.d
	c := s.container(t, "sleeper", nil, "sleep", "100000")

	// exec -s: ExecSync. crictl prints the output, or on a non-zero exit
	// the code and stderr in its error.
	if out := d.must(t, "exec", "-s", c, "sh", "-c", "echo out; echo err >&2"); !strings.Contains(out, "out") || !strings.Contains(out, "err") {
		t.Fatalf("exec -s: %q", out)
	}
	if out, err := d.crictl(t, "exec", "-s", c, "sh", "-c", "echo err >&2; exit 3"); err == nil || !strings.Contains(out, "exited with 3: err") {
		t.Fatalf("exec -s exiting 3: %v %q", err, out)
	}

	// exec -i: stdin, stdout and stderr apart, bytes unchanged, and the
	// exit code reaches the client.
	payload := make([]byte, 256<<10)
	_, _ = rand.Read(payload)
	for _, tr := range transports {
		cmd := d.crictlCmd(t, "exec", "-i", "-r", tr, c, "sh", "-c", "cat; echo to-stderr >&2; exit 4")
		var out, errOut lockedBuffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(payload), &out, &errOut
		_ = cmd.Run()
		if !bytes.Equal([]byte(out.String()), payload) || !strings.Contains(errOut.String(), "to-stderr") ||
			!strings.Contains(errOut.String(), "exit code 4") || cmd.ProcessState.ExitCode() == 0 {
			t.Fatalf("exec -i over %s: exit %d, %d bytes of %d back (equal %v), stderr %q",
				tr, cmd.ProcessState.ExitCode(), len(out.String()), len(payload), bytes.Equal([]byte(out.String()), payload), errOut.String())
		}
		cmd = d.crictlCmd(t, "exec", "-r", tr, c, "true")
		if outB, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("exec true over %s: %v %s", tr, err, outB)
		}
	}

	// exec -it on a real terminal: the size follows the client's terminal,
	// and the exit code comes back.
	for _, tr := range transports {
		cmd, ptmx, term := d.ptyCrictl(t, 30, 100, "exec", "-it", "-r", tr, c, "sh")
		waitOutput(t, term, "30 100", ptmx, "stty size\r")
		if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
			t.Fatal(err)
		}
		waitOutput(t, term, "40 120", ptmx, "stty size\r")
		if _, err := io.WriteString(ptmx, "exit 7\r"); err != nil {
			t.Fatal(err)
		}
		if code := waitExit(t, cmd, "exec -it", term.String); code == 0 {
			t.Fatalf("exec -it over %s: exit %d, terminal:\n%q", tr, code, term.String())
		}
		// crictl's last words may still be in the terminal when it has
		// exited: the copy from the master runs on its own.
		waitOutput(t, term, "exit code 7", nil, "")
	}
}

func TestIntegrationStreamingAttach(t *testing.T) {
	s := newStreamingSetup(t, "")
	d := s.d

	// stdin_once, no terminal: the client's input is the container's; its
	// end ends the container, and crictl with it.
	for _, tr := range transports {
		c := s.container(t, "once-"+tr, map[string]any{"stdin": true, "stdin_once": true}, "sh")
		cmd := d.crictlCmd(t, "attach", "-i", "-r", tr, c)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut lockedBuffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The attach is up once an echo comes back; input sent before
		// then would reach the shell with nobody to see its output.
		waitOutput(t, &out, "hello-"+tr, in, "echo hello-"+tr+"\n")
		if _, err := io.WriteString(in, "echo bye >&2; exit 6\n"); err != nil {
			t.Fatal(err)
		}
		in.Close()
		if code := waitExit(t, cmd, "attach", out.String); code != 0 || !strings.Contains(errOut.String(), "bye") {
			t.Fatalf("attach over %s: exit %d, stdout %q, stderr %q", tr, code, out.String(), errOut.String())
		}
		if st := d.inspect(t, c).Status; st.State != "CONTAINER_EXITED" || st.ExitCode != 6 {
			t.Fatalf("container after its stdin ended: %+v", st)
		}
	}

	// A terminal: attach -it follows the client's terminal size.
	for _, tr := range transports {
		c := s.container(t, "term-"+tr, map[string]any{"stdin": true, "tty": true}, "sh")
		cmd, ptmx, term := d.ptyCrictl(t, 30, 100, "attach", "-it", "-r", tr, c)
		waitOutput(t, term, "30 100", ptmx, "stty size\r")
		if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 33, Cols: 99}); err != nil {
			t.Fatal(err)
		}
		waitOutput(t, term, "33 99", ptmx, "stty size\r")
		if _, err := io.WriteString(ptmx, "exit 5\r"); err != nil {
			t.Fatal(err)
		}
		waitExit(t, cmd, "attach -it", term.String)
		if st := d.inspect(t, c).Status; st.State != "CONTAINER_EXITED" || st.ExitCode != 5 {
			t.Fatalf("container after exit in the terminal: %+v", st)
		}
	}

	// Attaching goes through the container's monitor: it works the same
	// after the daemon restarted.
	c := s.container(t, "keeper", map[string]any{"stdin": true}, "sh")
	attachEcho := func(word string) {
		t.Helper()
		cmd := d.crictlCmd(t, "attach", "-i", c)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out lockedBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitOutput(t, &out, word, in, "echo "+word+"\n")
		in.Close() // without stdin_once, the end of input detaches
		if code := waitExit(t, cmd, "attach", out.String); code != 0 {
			t.Fatalf("attach: exit %d: %s", code, out.String())
		}
	}
	attachEcho("before-restart")
	if code := d.stop(t); code != 0 {
		t.Fatalf("daemon exit %d", code)
	}
	d = startDaemonWithConfig(t, s.dir, s.cfg)
	s.d = d
	s.cleanupPods(t)
	attachEcho("after-restart")
	if st := d.inspect(t, c).Status; st.State != "CONTAINER_RUNNING" {
		t.Fatalf("container after detaching: %+v", st)
	}
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// portForward starts crictl port-forward to the pod's port and returns the
// local port once crictl listens, and crictl's stderr.
func (s *streamingSetup) portForward(t *testing.T, transport string, podPort int) (int, *lockedBuffer) {
	t.Helper()
	local := freePort(t)
	cmd := s.d.crictlCmd(t, "port-forward", "-r", transport, s.pod, fmt.Sprintf("%d:%d", local, podPort))
	var out, errOut lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, &out, fmt.Sprintf("Forwarding from 127.0.0.1:%d", local), nil, "")
	return local, &errOut
}

func TestIntegrationStreamingPortForward(t *testing.T) {
	s := newStreamingSetup(t, "")
	d := s.d
	// An echo server inside the pod, on its own network namespace.
	c := s.container(t, "echo", nil, "nc", "-ll", "-p", "8080", "-e", "cat")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if out, _ := d.crictl(t, "exec", "-s", c, "netstat", "-ltn"); strings.Contains(out, ":8080") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("echo server never listened")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, tr := range transports {
		local, errOut := s.portForward(t, tr, 8080)
		// Several connections at once, each with its own bytes, which come
		// back unchanged.
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Go(func() {
				payload := make([]byte, 128<<10+i)
				_, _ = rand.Read(payload)
				conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", local))
				if err != nil {
					t.Errorf("dial: %v", err)
					return
				}
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
				go func() {
					_, _ = conn.Write(payload)
					_ = conn.(*net.TCPConn).CloseWrite()
				}()
				got, err := io.ReadAll(conn)
				if err != nil || !bytes.Equal(got, payload) {
					t.Errorf("%s connection %d: %v, %d bytes back of %d, equal %v; crictl: %s", tr, i, err, len(got), len(payload), bytes.Equal(got, payload), errOut.String())
				}
			})
		}
		wg.Wait()

		// Nobody listens on 9999 in the pod: the connection ends at once
		// and crictl reports why.
		local, errOut = s.portForward(t, tr, 9999)
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", local))
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		_, _ = conn.Write([]byte("anyone?"))
		got, _ := io.ReadAll(conn)
		conn.Close()
		waitOutput(t, errOut, "connection refused", nil, "")
		if len(got) != 0 {
			t.Fatalf("%s: %q from a port nobody listens on", tr, got)
		}
	}
}

func TestIntegrationStreamingBadInput(t *testing.T) {
	s := newStreamingSetup(t, "")
	d := s.d
	c := s.container(t, "quick", nil, "true")
	deadline := time.Now().Add(20 * time.Second)
	for d.inspect(t, c).Status.State != "CONTAINER_EXITED" {
		if time.Now().After(deadline) {
			t.Fatal("container never exited")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"exec", c, "true"}, "FailedPrecondition"},
		{[]string{"attach", c}, "FailedPrecondition"},
		{[]string{"exec", "no-such-container", "true"}, "NotFound"},
		{[]string{"port-forward", "no-such-pod", "80"}, "NotFound"},
	} {
		out, err := d.crictl(t, tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("crictl %v: %v, want %s in:\n%s", tc.args, err, tc.want, out)
		}
	}

	// A token nobody handed out, or one already used, is a 404.
	var info struct {
		StreamingURL string `json:"streamingURL"`
	}
	if err := json.Unmarshal([]byte(d.must(t, "info")), &info); err != nil || info.StreamingURL == "" {
		t.Fatalf("crictl info: %v %+v", err, info)
	}
	resp, err := http.Get(info.StreamingURL + "/exec/not-a-token")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("bad token: HTTP %d", resp.StatusCode)
	}
	if logs := d.logs(); !strings.Contains(logs, "unknown, used or expired token") {
		t.Fatal("the refused token left no log line")
	}
}

// writeCert writes a self-signed certificate for localhost and 127.0.0.1
// and its key; the certificate is its own CA.
func writeCert(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "streaming.crt"), filepath.Join(dir, "streaming.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestIntegrationStreamingTLS(t *testing.T) {
	cert, key := writeCert(t, t.TempDir())
	s := newStreamingSetup(t, fmt.Sprintf("[streaming]\ntls_cert = %q\ntls_key = %q\n", cert, key))
	d := s.d
	c := s.container(t, "sleeper", nil, "sleep", "100000")
	for _, tr := range transports {
		// crictl wants a client key pair with any TLS flag; berth asks
		// for no client certificate, so any pair does.
		cmd := d.crictlCmd(t, "exec", "-i", "-r", tr, "--tls-ca", cert, "--tls-cert", cert, "--tls-key", key, c, "sh", "-c", "cat; exit 2")
		var out, errOut lockedBuffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader("over TLS"), &out, &errOut
		_ = cmd.Run()
		if out.String() != "over TLS" || !strings.Contains(errOut.String(), "exit code 2") {
			t.Fatalf("exec over TLS (%s): exit %d, stdout %q, stderr %q", tr, cmd.ProcessState.ExitCode(), out.String(), errOut.String())
		}
	}
	// A client that does not trust the certificate gets nothing.
	other, otherKey := writeCert(t, t.TempDir())
	cmd := d.crictlCmd(t, "exec", "-i", "--tls-ca", other, "--tls-cert", other, "--tls-key", otherKey, c, "cat")
	cmd.Stdin = strings.NewReader("secret")
	if out, err := cmd.CombinedOutput(); err == nil || strings.Contains(string(out), "secret") {
		t.Fatalf("exec with an untrusted certificate: %v %s", err, out)
	}
}
