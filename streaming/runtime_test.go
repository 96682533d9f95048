package streaming

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/sandbox"
)

// syncBuffer is an io.WriteCloser tests can read while it is written.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Close() error { return nil }

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls until the buffer holds want, writing poke (if any) to w
// between polls: a shell loop answers each line it reads.
func waitFor(t *testing.T, b *syncBuffer, want string, w io.Writer, poke string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output never held %q:\n%q", want, b.String())
		}
		if w != nil && poke != "" {
			if _, err := io.WriteString(w, poke); err != nil {
				t.Fatalf("write input: %v", err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// exitStatus is what cri-streaming does with an exec error: a type
// assertion, not errors.As, so a wrapped exit code would be lost.
func exitStatus(err error) (int, bool) {
	exitErr, ok := err.(utilexec.ExitError)
	if !ok || !exitErr.Exited() {
		return 0, false
	}
	return exitErr.ExitStatus(), true
}

func TestExecStreamsAndExitCode(t *testing.T) {
	e := newEnv(t)
	c := e.run(e.pod(), "sleeper", nil, "sleep", "1000")
	ctx := context.Background()

	var out, errOut syncBuffer
	err := e.rt.Exec(ctx, c.ID, []string{"sh", "-c", "cat; echo err >&2; exit 3"}, strings.NewReader("bytes from stdin"), &out, &errOut, false, nil)
	if code, ok := exitStatus(err); !ok || code != 3 {
		t.Fatalf("exit: %v (%T)", err, err)
	}
	if out.String() != "bytes from stdin" || errOut.String() != "err\n" {
		t.Fatalf("stdout %q stderr %q", out.String(), errOut.String())
	}
	if err := e.rt.Exec(ctx, c.ID, []string{"true"}, nil, &out, nil, false, nil); err != nil {
		t.Fatalf("exit 0: %v", err)
	}
	// A missing command is a shell's 127, with the reason on stderr.
	errOut = syncBuffer{}
	if code, _ := exitStatus(e.rt.Exec(ctx, c.ID, []string{"no-such-command"}, nil, nil, &errOut, false, nil)); code != 127 || errOut.String() == "" {
		t.Fatalf("missing command: %d %q", code, errOut.String())
	}
}

func TestExecRunsAsExecSync(t *testing.T) {
	e := newEnv(t)
	c := e.run(e.pod(), "sleeper", func(cfg *runtimeapi.ContainerConfig) {
		cfg.Envs = []*runtimeapi.KeyValue{{Key: "FROM_CONFIG", Value: []byte("yes")}}
		cfg.WorkingDir = "/tmp"
	}, "sleep", "1000")
	probe := []string{"sh", "-c", "id; pwd; echo $FROM_CONFIG $PATH; cat /proc/self/cgroup; for n in mnt pid net uts ipc; do readlink /proc/self/ns/$n; done"}
	sync, err := e.mgr.ExecSync(context.Background(), c.ID, probe, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	if err := e.rt.Exec(context.Background(), c.ID, probe, nil, &out, nil, false, nil); err != nil {
		t.Fatal(err)
	}
	if out.String() != string(sync.Stdout) || !strings.Contains(out.String(), "yes") || !strings.Contains(out.String(), "/tmp") {
		t.Fatalf("streaming exec:\n%s\nExecSync:\n%s", out.String(), sync.Stdout)
	}
}

func TestExecTTYAndResize(t *testing.T) {
	e := newEnv(t)
	c := e.run(e.pod(), "sleeper", nil, "sleep", "1000")
	inR, inW := io.Pipe()
	defer inW.Close()
	resize := make(chan remotecommand.TerminalSize)
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- e.rt.Exec(context.Background(), c.ID, []string{"sh", "-c", `while read l; do [ "$l" = q ] && exit 5; stty size; done`}, inR, &out, nil, true, resize)
	}()
	resize <- remotecommand.TerminalSize{Width: 123, Height: 45}
	waitFor(t, &out, "45 123", inW, "x\n")
	resize <- remotecommand.TerminalSize{Width: 80, Height: 20}
	waitFor(t, &out, "20 80", inW, "x\n")
	if _, err := io.WriteString(inW, "q\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if code, ok := exitStatus(err); !ok || code != 5 {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("tty exec did not end")
	}
	// A terminal's line discipline: input echoed, lines end in CRLF.
	if !strings.Contains(out.String(), "x\r\n") {
		t.Fatalf("no terminal in the output: %q", out.String())
	}
}

func TestExecIntoStoppedContainer(t *testing.T) {
	e := newEnv(t)
	c := e.run(e.pod(), "quick", nil, "true")
	e.waitState(c.ID, container.StateExited)
	err := e.rt.Exec(context.Background(), c.ID, []string{"true"}, nil, &syncBuffer{}, nil, false, nil)
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("exec into an exited container: %v", err)
	}
}

func TestAttachStdinOnce(t *testing.T) {
	e := newEnv(t)
	c := e.run(e.pod(), "shell", func(cfg *runtimeapi.ContainerConfig) { cfg.Stdin, cfg.StdinOnce = true, true }, "sh")
	inR, inW := io.Pipe()
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() { done <- e.rt.Attach(context.Background(), c.ID, inR, &out, &errOut, false, nil) }()
	if _, err := io.WriteString(inW, "echo hello; echo oops >&2\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &out, "hello\n", nil, "")
	waitFor(t, &errOut, "oops\n", nil, "")
	// The end of the client's input is the end of the container's
	// (stdin_once): the shell exits, and what it wrote after reading its
	// last line still reaches the client.
	if _, err := io.WriteString(inW, "sleep 0.3; echo after-eof\n"); err != nil {
		t.Fatal(err)
	}
	inW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("attach did not end with the container")
	}
	if out.String() != "hello\nafter-eof\n" {
		t.Fatalf("stdout %q", out.String())
	}
	e.waitState(c.ID, container.StateExited)
}

func TestAttachAfterDaemonRestart(t *testing.T) {
	e := newEnv(t)
	c := e.run(e.pod(), "shell", func(cfg *runtimeapi.ContainerConfig) { cfg.Stdin = true }, "sh")
	e.open() // a new daemon over the same state: the monitor is all that links to the container
	for _, word := range []string{"first", "second"} {
		inR, inW := io.Pipe()
		var out syncBuffer
		done := make(chan error, 1)
		go func() { done <- e.rt.Attach(context.Background(), c.ID, inR, &out, nil, false, nil) }()
		if _, err := io.WriteString(inW, "echo "+word+"\n"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, &out, word+"\n", nil, "")
		// Without stdin_once, closing the client's input detaches it and
		// leaves the container running.
		inW.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("closing stdin did not end the attach")
		}
		if got, _ := e.mgr.Get(c.ID); got.State != container.StateRunning {
			t.Fatalf("container %s after detaching", got.State)
		}
	}
}

func TestAttachTTYAndResize(t *testing.T) {
	e := newEnv(t)
	c := e.run(e.pod(), "term", func(cfg *runtimeapi.ContainerConfig) { cfg.Stdin, cfg.Tty = true, true },
		"sh", "-c", "while read l; do stty size; done")
	inR, inW := io.Pipe()
	defer inW.Close()
	resize := make(chan remotecommand.TerminalSize)
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.rt.Attach(ctx, c.ID, inR, &out, nil, true, resize) }()
	resize <- remotecommand.TerminalSize{Width: 99, Height: 33}
	waitFor(t, &out, "33 99", inW, "x\n")
	close(resize)
	// The client going away (its context) ends the session.
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("attach outlived its context")
	}
}

func TestAttachWithoutStdinAndToStoppedContainer(t *testing.T) {
	e := newEnv(t)
	p := e.pod()
	c := e.run(p, "talker", nil, "sh", "-c", "sleep 0.5; echo bye; echo bye-err >&2")
	// The container was made without stdin: the client's is ignored, and
	// the session ends when the container exits.
	inR, inW := io.Pipe()
	defer inW.Close()
	var out, errOut syncBuffer
	if err := e.rt.Attach(context.Background(), c.ID, inR, &out, &errOut, false, nil); err != nil {
		t.Fatal(err)
	}
	if out.String() != "bye\n" || errOut.String() != "bye-err\n" {
		t.Fatalf("stdout %q stderr %q", out.String(), errOut.String())
	}
	e.waitState(c.ID, container.StateExited)
	if err := e.rt.Attach(context.Background(), c.ID, nil, &out, nil, false, nil); err == nil {
		t.Fatal("attached to an exited container")
	}
	if err := e.rt.Attach(context.Background(), "nope", nil, &out, nil, false, nil); !errdefs.IsNotFound(err) {
		t.Fatalf("unknown container: %v", err)
	}
}

// pipeStream is one port-forward stream as the adapter sees it; Close ends
// only the adapter's output, like a SPDY half-close.
type pipeStream struct {
	r *io.PipeReader
	w *io.PipeWriter
}

func (s pipeStream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s pipeStream) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s pipeStream) Close() error                { return s.w.Close() }

// forwardPipe runs one PortForward call, sends payload, half-closes, and
// returns what came back and the call's error.
func forwardPipe(rt *runtime, podID string, port int32, payload []byte) ([]byte, error) {
	toPodR, toPodW := io.Pipe()
	fromPodR, fromPodW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := rt.PortForward(context.Background(), podID, port, pipeStream{r: toPodR, w: fromPodW})
		toPodR.Close()
		done <- err
	}()
	go func() {
		_, _ = toPodW.Write(payload)
		toPodW.Close()
	}()
	got, _ := io.ReadAll(fromPodR)
	return got, <-done
}

// podNetNS makes a network namespace with loopback up and an echo server
// on 127.0.0.1 inside it, and returns a pod record pointing at it.
func podNetNS(t *testing.T) (*sandbox.Pod, int) {
	t.Helper()
	netns, err := ns.TempNetNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Close() })
	var port int
	err = netns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port = l.Addr().(*net.TCPAddr).Port
		echoServer(t, l)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), netns.Fd())
	return &sandbox.Pod{ID: "pod-netns", State: sandbox.StateReady, NetNS: path}, port
}

func TestPortForwardInsidePodNetNS(t *testing.T) {
	pod, port := podNetNS(t)
	host, _ := net.Listen("tcp", "127.0.0.1:0")
	echoServer(t, host)
	hostPort := host.Addr().(*net.TCPAddr).Port
	pods := &fakePods{byID: map[string]*sandbox.Pod{
		pod.ID: pod, "host": hostPod("host"),
		"stopped": {ID: "stopped", State: sandbox.StateNotReady, NetNS: pod.NetNS},
	}}
	rt := &runtime{pods: pods, log: testLogger(t)}

	// The port exists only inside the pod: the host's loopback has none.
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Logf("something on the host also listens on %d; the isolation check is moot", port)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			payload := make([]byte, 1<<20+i)
			_, _ = rand.Read(payload)
			got, err := forwardPipe(rt, pod.ID, int32(port), payload)
			if err != nil || !bytes.Equal(got, payload) {
				t.Errorf("stream %d: %v, %d bytes back of %d, equal %v", i, err, len(got), len(payload), bytes.Equal(got, payload))
			}
		})
	}
	wg.Wait()
	if got, err := forwardPipe(rt, "host", int32(hostPort), []byte("to the host")); err != nil || string(got) != "to the host" {
		t.Fatalf("host network: %q %v", got, err)
	}

	// The host's port is not the pod's: nobody listens on it inside.
	if _, err := forwardPipe(rt, pod.ID, int32(hostPort), []byte("x")); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("closed port: %v", err)
	}
	for _, tc := range []struct {
		pod   string
		port  int32
		check func(error) bool
	}{
		{pod.ID, 0, errdefs.IsInvalidArgument},
		{pod.ID, 65536, errdefs.IsInvalidArgument},
		{"nope", 80, errdefs.IsNotFound},
		{"stopped", int32(port), errdefs.IsFailedPrecondition},
	} {
		if _, err := forwardPipe(rt, tc.pod, tc.port, nil); !tc.check(err) {
			t.Errorf("pod %s port %d: %v", tc.pod, tc.port, err)
		}
	}
}
