package streaming

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	kubestreaming "k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/sandbox"
)

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// catExec is a fake exec: stdin to stdout, a line to stderr, then the exit
// code given.
func catExec(code int) func(ctx context.Context, o container.ExecOptions) (int, error) {
	return func(ctx context.Context, o container.ExecOptions) (int, error) {
		if o.Stdin != nil && o.Stdout != nil {
			_, _ = io.Copy(o.Stdout, o.Stdin)
		}
		if o.Stderr != nil {
			_, _ = io.WriteString(o.Stderr, "to stderr\n")
		}
		return code, nil
	}
}

func TestTokensAreSingleUseAndExpire(t *testing.T) {
	tk := newTokens(time.Minute)
	now := time.Unix(1000, 0)
	tk.now = func() time.Time { return now }
	a, err := tk.issue(kindExec, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tk.issue(kindExec, "b")
	c, _ := tk.issue(kindAttach, "c")
	if a == b || len(a) < 40 {
		t.Fatalf("weak or repeated tokens: %q %q", a, b)
	}
	if req, ok := tk.redeem(kindExec, a); !ok || req != "a" {
		t.Fatalf("first use: %v %v", req, ok)
	}
	if _, ok := tk.redeem(kindExec, a); ok {
		t.Fatal("a token worked twice")
	}
	if _, ok := tk.redeem(kindExec, c); ok {
		t.Fatal("an attach token opened an exec")
	}
	if _, ok := tk.redeem(kindAttach, c); ok {
		t.Fatal("a token tried with the wrong kind still worked after")
	}
	now = now.Add(time.Minute + time.Nanosecond)
	if _, ok := tk.redeem(kindExec, b); ok {
		t.Fatal("an expired token worked")
	}
	// Expired tokens do not count against the limit.
	for range maxPendingTokens {
		if _, err := tk.issue(kindExec, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tk.issue(kindExec, "x"); !errdefs.IsResourceExhausted(err) {
		t.Fatalf("token %d: %v", maxPendingTokens+1, err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := tk.issue(kindExec, "x"); err != nil {
		t.Fatalf("after every token expired: %v", err)
	}
}

func TestBadUsedOrExpiredTokenIs404AndTouchesNothing(t *testing.T) {
	cs := &fakeContainers{byID: map[string]*container.Container{}, exec: catExec(0)}
	pods := &fakePods{}
	s := startServer(t, cs, pods, nil)
	now := time.Now()
	s.tokens.now = func() time.Time { return now }

	get := func(u string) int {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	base := s.URL()
	for _, path := range []string{"/exec/not-a-token", "/attach/x", "/portforward/y", "/", "/exec", "/exec/a/b"} {
		if code := get(base + path); code != http.StatusNotFound {
			t.Errorf("%s: HTTP %d, want 404", path, code)
		}
	}

	// Used: the first connection redeems the token (a plain GET is no
	// upgrade, so the library refuses it), the second finds nothing.
	e, err := s.GetExec(execRequest("c1", "true"))
	if err != nil {
		t.Fatal(err)
	}
	if code := get(e.GetUrl()); code == http.StatusNotFound {
		t.Fatalf("first use of a good token: 404")
	}
	if code := get(e.GetUrl()); code != http.StatusNotFound {
		t.Fatalf("second use: HTTP %d, want 404", code)
	}
	// A token for one kind does not open another.
	pf, _ := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p1"})
	if code := get(strings.Replace(pf.GetUrl(), "/portforward/", "/exec/", 1)); code != http.StatusNotFound {
		t.Fatalf("port-forward token on the exec path: HTTP %d", code)
	}
	// Expired: past the configured lifetime, even a v5 client that would
	// otherwise run is refused before anything is looked up.
	a, _ := s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c1", Stdout: true})
	now = now.Add(time.Minute + time.Second)
	if code := upgradeStatus(t, a.GetUrl()); code != http.StatusNotFound {
		t.Fatalf("expired token: HTTP %d, want 404", code)
	}
	if cs.calls() != 0 || pods.calls() != 0 {
		t.Fatalf("refused requests touched %d containers and %d pods", cs.calls(), pods.calls())
	}
}

func TestTokenLifetimeIsConfigured(t *testing.T) {
	cs := &fakeContainers{exec: catExec(0)}
	s := startServer(t, cs, &fakePods{}, func(o *Options) { o.TokenTTL = 200 * time.Millisecond })
	fresh, err := s.GetExec(execRequest("c1", "cat"))
	if err != nil {
		t.Fatal(err)
	}
	if code := upgradeStatus(t, fresh.GetUrl()); code != http.StatusSwitchingProtocols {
		t.Fatalf("fresh token: HTTP %d, want 101", code)
	}
	e, err := s.GetExec(execRequest("c1", "cat"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	calls := cs.calls() // the fresh session's exec is done by now
	if code := upgradeStatus(t, e.GetUrl()); code != http.StatusNotFound {
		t.Fatalf("token past a 200ms lifetime: HTTP %d, want 404", code)
	}
	if cs.calls() != calls {
		t.Fatal("expired token reached a container")
	}
}

func TestGetRefusesBadRequests(t *testing.T) {
	s, err := New(Options{Address: "127.0.0.1", TokenTTL: time.Minute, Containers: &fakeContainers{}, Pods: &fakePods{}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetExec(execRequest("c1", "true")); !errdefs.IsUnavailable(err) {
		t.Fatalf("before Start: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	for name, err := range map[string]error{
		"tty and stderr": func() error {
			_, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c", Cmd: []string{"sh"}, Tty: true, Stdout: true, Stderr: true})
			return err
		}(),
		"no stream": func() error {
			_, err := s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c"})
			return err
		}(),
		"no container": func() error {
			_, err := s.GetExec(&runtimeapi.ExecRequest{Cmd: []string{"sh"}, Stdout: true})
			return err
		}(),
		"port 0": func() error {
			_, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p", Port: []int32{0}})
			return err
		}(),
		"port 65536": func() error {
			_, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p", Port: []int32{65536}})
			return err
		}(),
		"no pod": func() error {
			_, err := s.GetPortForward(&runtimeapi.PortForwardRequest{Port: []int32{80}})
			return err
		}(),
	} {
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want invalid argument", name, err)
		}
	}
	for _, o := range []Options{
		{Address: "localhost", TokenTTL: time.Minute},
		{Address: "127.0.0.1", Port: 70000, TokenTTL: time.Minute},
		{Address: "127.0.0.1"},
		{Address: "127.0.0.1", TokenTTL: time.Minute, TLSCert: "/nonexistent", TLSKey: "/nonexistent"},
	} {
		o.Containers, o.Pods = &fakeContainers{}, &fakePods{}
		if _, err := New(o); err == nil {
			t.Errorf("New accepted %+v", o)
		}
	}
}

func TestExecOverSPDYReturnsOutputAndExitCode(t *testing.T) {
	cs := &fakeContainers{exec: catExec(7)}
	s := startServer(t, cs, &fakePods{}, nil)
	for _, proto := range []string{remotecommand.StreamProtocolV4Name} {
		e, err := s.GetExec(execRequest("c1", "cat"))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := spdyConnect(t, e.GetUrl(), proto, nil)
		if err != nil {
			t.Fatal(err)
		}
		out, errOut, st := spdyExec(t, conn, strings.NewReader("bytes in"), true, true)
		if out != "bytes in" || errOut != "to stderr\n" || st.exitCode() != 7 {
			t.Fatalf("%s: stdout %q stderr %q status %+v", proto, out, errOut, st)
		}
	}
}

func TestExecOverWebSocketV5(t *testing.T) {
	cs := &fakeContainers{exec: catExec(3)}
	s := startServer(t, cs, &fakePods{}, nil)
	e, err := s.GetExec(execRequest("c1", "cat"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialV5(t, e.GetUrl(), nil)
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 100<<10)
	_, _ = rand.Read(payload)
	c.send(chanStdin, payload[:50<<10])
	c.send(chanStdin, payload[50<<10:])
	// Only v5 can say stdin ended; without it cat would never return.
	c.closeChannel(chanStdin)
	got := c.readAll()
	if !bytes.Equal(got[chanStdout], payload) || string(got[chanStderr]) != "to stderr\n" {
		t.Fatalf("stdout %d bytes (want %d, equal %v), stderr %q", len(got[chanStdout]), len(payload), bytes.Equal(got[chanStdout], payload), got[chanStderr])
	}
	if st := status(t, got[chanError]); st.exitCode() != 3 {
		t.Fatalf("status %+v", st)
	}

	// Success is a Success status; a failure to run is an internal error.
	cs.exec = catExec(0)
	e, _ = s.GetExec(execRequest("c1", "true"))
	c, _ = dialV5(t, e.GetUrl(), nil)
	c.closeChannel(chanStdin)
	if st := status(t, c.readAll()[chanError]); st.Status != "Success" {
		t.Fatalf("exit 0: %+v", st)
	}
	cs.exec = func(ctx context.Context, o container.ExecOptions) (int, error) {
		return 0, errors.New("container went away")
	}
	e, _ = s.GetExec(execRequest("c1", "true"))
	c, _ = dialV5(t, e.GetUrl(), nil)
	if st := status(t, c.readAll()[chanError]); st.Status != "Failure" || st.exitCode() != -1 || !strings.Contains(st.Message, "container went away") {
		t.Fatalf("failed exec: %+v", st)
	}
}

// Older WebSocket clients (v1-v4, no CLOSE signal) are cri-streaming's:
// the exit code still arrives with v4.
func TestExecOverWebSocketV4(t *testing.T) {
	cs := &fakeContainers{exec: catExec(9)}
	s := startServer(t, cs, &fakePods{}, nil)
	e, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"true"}, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialWebSocket(t, e.GetUrl(), "v4.channel.k8s.io", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := c.readAll()
	if string(got[chanStderr]) != "to stderr\n" || status(t, got[chanError]).exitCode() != 9 {
		t.Fatalf("v4: stderr %q, status %q", got[chanStderr], got[chanError])
	}
}

func TestExecResizeReachesTheProcess(t *testing.T) {
	sizes := make(chan container.TermSize, 4)
	cs := &fakeContainers{exec: func(ctx context.Context, o container.ExecOptions) (int, error) {
		if !o.TTY || o.Stderr != nil {
			return 1, nil
		}
		for sz := range o.Resize {
			sizes <- sz
			if sz.Width == 0 {
				break
			}
		}
		return 0, nil
	}}
	s := startServer(t, cs, &fakePods{}, nil)
	e, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"sh"}, Tty: true, Stdin: true, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialV5(t, e.GetUrl(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(chanResize, []byte(`{"Width":120,"Height":40}`))
	c.send(chanResize, []byte(`{"Width":0,"Height":0}`))
	if st := status(t, c.readAll()[chanError]); st.Status != "Success" {
		t.Fatalf("status %+v", st)
	}
	if a, b := <-sizes, <-sizes; a != (container.TermSize{Width: 120, Height: 40}) || b.Width != 0 {
		t.Fatalf("sizes %v %v", a, b)
	}
}

func TestPortForwardOverSPDYAndWebSocketTunnel(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, l)
	port := l.Addr().(*net.TCPAddr).Port
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close()

	s := startServer(t, &fakeContainers{}, &fakePods{byID: map[string]*sandbox.Pod{"p1": hostPod("p1")}}, nil)
	for _, transport := range []string{"spdy", "websocket"} {
		pf, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p1"})
		if err != nil {
			t.Fatal(err)
		}
		var conn httpstream.Connection
		if transport == "spdy" {
			if conn, err = spdyConnect(t, pf.GetUrl(), portforward.ProtocolV1Name, nil); err != nil {
				t.Fatal(err)
			}
		} else {
			conn = tunnelConnect(t, pf.GetUrl())
		}
		// Several connections at once over one session, each with its own
		// bytes, which must come back unchanged.
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				payload := make([]byte, 256<<10+i)
				_, _ = rand.Read(payload)
				got, msg := forward(t, conn, port, i, payload)
				if !bytes.Equal(got, payload) || msg != "" {
					t.Errorf("%s request %d: %d bytes back of %d, equal %v, error %q", transport, i, len(got), len(payload), bytes.Equal(got, payload), msg)
				}
			})
		}
		wg.Wait()
		got, msg := forward(t, conn, deadPort, 9, []byte("anyone?"))
		if len(got) != 0 || !strings.Contains(msg, "connection refused") {
			t.Errorf("%s to a closed port: %q, error %q", transport, got, msg)
		}
	}
}

func TestStopEndsSessions(t *testing.T) {
	running := make(chan struct{})
	ended := make(chan error, 1)
	cs := &fakeContainers{exec: func(ctx context.Context, o container.ExecOptions) (int, error) {
		close(running)
		<-ctx.Done()
		ended <- ctx.Err()
		return 0, ctx.Err()
	}}
	s, err := New(Options{Address: "127.0.0.1", TokenTTL: time.Minute, Containers: cs, Pods: &fakePods{}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	e, _ := s.GetExec(execRequest("c1", "sleep", "1000"))
	c, err := dialV5(t, e.GetUrl(), nil)
	if err != nil {
		t.Fatal(err)
	}
	<-running
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("session ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop left the exec running")
	}
	c.readAll() // returns: the connection is gone
	if n := s.lis.open(); n != 0 {
		t.Fatalf("%d connections open after Stop", n)
	}
	if _, err := http.Get(s.URL() + "/exec/x"); err == nil {
		t.Fatal("server still answers after Stop")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestClientMissingStreamsDoesNotLeaveTheConnection(t *testing.T) {
	cs := &fakeContainers{exec: catExec(0)}
	s := startServer(t, cs, &fakePods{}, nil)
	s.libCfg.StreamCreationTimeout = 200 * time.Millisecond
	var err error
	if s.lib, err = kubestreaming.NewServer(s.libCfg, s.rt); err != nil {
		t.Fatal(err)
	}
	e, _ := s.GetExec(execRequest("c1", "cat")) // asks for stdin, stdout and stderr
	conn, err := spdyConnect(t, e.GetUrl(), remotecommand.StreamProtocolV4Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(remotecommand.StreamType, remotecommand.StreamTypeError)
	if _, err := conn.CreateStream(h); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the server kept a connection whose streams never came")
	}
	if cs.calls() != 0 {
		t.Fatal("an incomplete session ran")
	}
}
