package streaming

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/net/websocket"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/sandbox"
)

// Clients of the streaming protocols, as small as the tests need: raw SPDY
// streams (what kubelet and crictl's default transport use), a v5 WebSocket
// (client-go's WebSocket executor) and SPDY through a WebSocket (client-go's
// WebSocket port-forward dialer). The e2e tests drive the real clients
// through crictl.

// fakeContainers counts every look-up, so tests can tell a request never
// reached a container.
type fakeContainers struct {
	mu      sync.Mutex
	touched int
	byID    map[string]*container.Container
	exec    func(ctx context.Context, o container.ExecOptions) (int, error)
}

func (f *fakeContainers) Get(id string) (*container.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.touched++
	c, ok := f.byID[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

func (f *fakeContainers) Exec(ctx context.Context, id string, o container.ExecOptions) (int, error) {
	f.mu.Lock()
	f.touched++
	f.mu.Unlock()
	return f.exec(ctx, o)
}

func (f *fakeContainers) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.touched
}

type fakePods struct {
	mu      sync.Mutex
	touched int
	byID    map[string]*sandbox.Pod
}

func (f *fakePods) Get(id string) (*sandbox.Pod, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.touched++
	p, ok := f.byID[id]
	if !ok {
		return nil, fmt.Errorf("pod %s: %w", id, errdefs.ErrNotFound)
	}
	return p, nil
}

func (f *fakePods) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.touched
}

// hostPod is a ready pod on the host network: port-forward dials the host.
func hostPod(id string) *sandbox.Pod {
	return &sandbox.Pod{ID: id, State: sandbox.StateReady, HostNetwork: true}
}

// startServer runs a server over the fakes on a free port, stopped at the
// end of the test.
func startServer(t *testing.T, cs Containers, pods Pods, mod func(*Options)) *Server {
	t.Helper()
	opts := Options{Address: "127.0.0.1", TokenTTL: time.Minute, Containers: cs, Pods: pods, Logger: testLogger(t)}
	if mod != nil {
		mod(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if s.lis.open() != 0 {
			t.Errorf("%d connections left open after Stop", s.lis.open())
		}
	})
	return s
}

// spdyConnect upgrades a streaming URL to SPDY with one subprotocol.
func spdyConnect(t *testing.T, rawURL, protocol string, tlsConfig *tls.Config) (httpstream.Connection, error) {
	t.Helper()
	rt, err := spdy.NewRoundTripper(tlsConfig)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(httpstream.HeaderProtocolVersion, protocol)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	conn, err := rt.NewConnection(resp)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	return conn, nil
}

// tunnelConnect opens SPDY port-forward through a WebSocket.
func tunnelConnect(t *testing.T, rawURL string) httpstream.Connection {
	t.Helper()
	cfg, err := websocket.NewConfig(strings.Replace(rawURL, "http", "ws", 1), "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Protocol = []string{tunnelPrefix + portforward.ProtocolV1Name}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("websocket tunnel: %v", err)
	}
	ws.PayloadType = websocket.BinaryFrame
	conn, err := spdy.NewClientConnection(ws)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// forward runs one port-forward request over conn: sends payload, closes
// its side, and returns what came back and what the error stream said.
func forward(t *testing.T, conn httpstream.Connection, port, requestID int, payload []byte) ([]byte, string) {
	t.Helper()
	h := http.Header{}
	h.Set(portforward.StreamType, portforward.StreamTypeError)
	h.Set(portforward.PortHeader, strconv.Itoa(port))
	h.Set(portforward.PortForwardRequestIDHeader, strconv.Itoa(requestID))
	errStream, err := conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	errStream.Close() // the client never writes to the error stream
	errText := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(errStream)
		errText <- string(b)
	}()
	h.Set(portforward.StreamType, portforward.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = data.Write(payload)
		data.Close() // half-close: the server sees the end of input
	}()
	got, _ := io.ReadAll(data)
	select {
	case msg := <-errText:
		return got, msg
	case <-time.After(20 * time.Second):
		t.Fatal("error stream never ended")
	}
	return nil, ""
}

// spdyExec runs an exec or attach session over SPDY v4 and returns stdout,
// stderr and the decoded status.
func spdyExec(t *testing.T, conn httpstream.Connection, stdin io.Reader, stdout, stderr bool) (string, string, sessionStatus) {
	t.Helper()
	mk := func(kind string) httpstream.Stream {
		h := http.Header{}
		h.Set(remotecommand.StreamType, kind)
		s, err := conn.CreateStream(h)
		if err != nil {
			t.Fatalf("create %s stream: %v", kind, err)
		}
		return s
	}
	errStream := mk(remotecommand.StreamTypeError)
	var wg sync.WaitGroup
	var outBuf, errBuf bytes.Buffer
	if stdin != nil {
		in := mk(remotecommand.StreamTypeStdin)
		go func() { _, _ = io.Copy(in, stdin); in.Close() }()
	}
	if stdout {
		s := mk(remotecommand.StreamTypeStdout)
		wg.Go(func() { _, _ = io.Copy(&outBuf, s) })
	}
	if stderr {
		s := mk(remotecommand.StreamTypeStderr)
		wg.Go(func() { _, _ = io.Copy(&errBuf, s) })
	}
	raw, _ := io.ReadAll(errStream)
	wg.Wait()
	var st sessionStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("status %q: %v", raw, err)
	}
	return outBuf.String(), errBuf.String(), st
}

// v5Client is a v5.channel.k8s.io WebSocket session.
type v5Client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dialV5(t *testing.T, rawURL string, tlsConfig *tls.Config) (*v5Client, error) {
	t.Helper()
	return dialWebSocket(t, rawURL, remotecommand.StreamProtocolV5Name, tlsConfig)
}

// dialWebSocket opens a remote command WebSocket with one subprotocol.
func dialWebSocket(t *testing.T, rawURL, protocol string, tlsConfig *tls.Config) (*v5Client, error) {
	t.Helper()
	u := strings.Replace(rawURL, "http", "ws", 1)
	cfg, err := websocket.NewConfig(u, "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Protocol = []string{protocol}
	cfg.TlsConfig = tlsConfig
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { ws.Close() })
	return &v5Client{t: t, ws: ws}, nil
}

// upgradeStatus asks for a v5 WebSocket upgrade and returns the HTTP
// status: 101 when the server takes the session.
func upgradeStatus(t *testing.T, rawURL string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", remotecommand.StreamProtocolV5Name)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (c *v5Client) send(channel byte, data []byte) {
	c.t.Helper()
	if err := websocket.Message.Send(c.ws, append([]byte{channel}, data...)); err != nil {
		c.t.Fatalf("send on channel %d: %v", channel, err)
	}
}

// closeChannel sends v5's CLOSE signal for a channel (stdin's end).
func (c *v5Client) closeChannel(channel byte) {
	c.send(remotecommand.StreamClose, []byte{channel})
}

// readAll reads frames until the server closes, sorted by channel.
func (c *v5Client) readAll() map[byte][]byte {
	out := map[byte][]byte{}
	_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		var msg []byte
		if err := websocket.Message.Receive(c.ws, &msg); err != nil {
			return out
		}
		if len(msg) > 0 {
			out[msg[0]] = append(out[msg[0]], msg[1:]...)
		}
	}
}

func status(t *testing.T, raw []byte) sessionStatus {
	t.Helper()
	var st sessionStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("status %q: %v", raw, err)
	}
	return st
}

// exitCode is the exit code a status carries, or -1.
func (st sessionStatus) exitCode() int {
	if st.Details == nil || st.Reason != remotecommand.NonZeroExitCodeReason {
		return -1
	}
	for _, c := range st.Details.Causes {
		if c.Type == remotecommand.ExitCodeCauseType {
			n, _ := strconv.Atoi(c.Message)
			return n
		}
	}
	return -1
}

// echoServer accepts on l and echoes each connection until its client
// half-closes, then closes. It stops with the test.
func echoServer(t *testing.T, l net.Listener) {
	t.Helper()
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

func execRequest(id string, cmd ...string) *runtimeapi.ExecRequest {
	return &runtimeapi.ExecRequest{ContainerId: id, Cmd: cmd, Stdin: true, Stdout: true, Stderr: true}
}
