package monitor

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Request is one command on the control socket, sent as a JSON line. The
// monitor answers with a Response line; after a successful attach the
// connection carries frames (see WriteFrame).
type Request struct {
	Op     string `json:"op"` // "reopen-log", "resize" or "attach"
	Width  uint16 `json:"width,omitempty"`
	Height uint16 `json:"height,omitempty"`
	Stdin  bool   `json:"stdin,omitempty"`
	Stdout bool   `json:"stdout,omitempty"`
	Stderr bool   `json:"stderr,omitempty"`
}

// Response answers a Request; Error is empty on success.
type Response struct {
	Error string `json:"error,omitempty"`
}

// Frame kinds on an attach connection.
const (
	FrameStdin  byte = 0 // client → monitor
	FrameStdout byte = 1 // monitor → client
	FrameStderr byte = 2 // monitor → client
	FrameResize byte = 3 // client → monitor: width, height (uint16 each)
)

// maxFrame bounds a frame so a bad peer cannot make the monitor allocate.
const maxFrame = 1 << 20

// WriteFrame writes one frame: kind, big-endian uint32 length, payload.
func WriteFrame(w io.Writer, kind byte, payload []byte) error {
	hdr := [5]byte{kind}
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// ReadFrame reads one frame written by WriteFrame.
func ReadFrame(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[0], payload, nil
}

// attachQueue is how many output chunks wait for a slow attached client
// before chunks are dropped for it: the container must never block on a
// client, and the log file always gets everything.
const attachQueue = 256

type outputChunk struct {
	stream string
	data   []byte
}

type attachClient struct {
	conn           net.Conn
	stdout, stderr bool
	out            chan outputChunk
	once           sync.Once
}

func (c *attachClient) stop() { c.once.Do(func() { close(c.out); c.conn.Close() }) }

type controlServer struct {
	m   *monitor
	lis net.Listener

	mu        sync.Mutex
	clients   map[*attachClient]struct{}
	stdinUsed bool
	closed    bool
}

// listenControl listens on the control socket. It binds through the
// directory's /proc/self/fd entry, as dialInDir connects, to stay within the
// unix socket address limit whatever the bundle path.
func listenControl(path string, m *monitor) (*controlServer, error) {
	_ = os.Remove(path)
	dir, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket: open %s: %w", filepath.Dir(path), err)
	}
	defer unix.Close(dir)
	lis, err := net.Listen("unix", fmt.Sprintf("/proc/self/fd/%d/%s", dir, filepath.Base(path)))
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The listener would unlink its /proc path on close, which does not
	// name the socket once the directory fd is closed; the bundle's removal
	// takes the socket file instead.
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return nil, err
	}
	s := &controlServer{m: m, lis: lis, clients: map[*attachClient]struct{}{}}
	go s.serve()
	return s, nil
}

func (s *controlServer) serve() {
	for {
		conn, err := s.lis.Accept()
		if err != nil {
			return
		}
		go s.handle(conn)
	}
}

func (s *controlServer) close() {
	s.lis.Close()
	s.mu.Lock()
	s.closed = true
	clients := s.clients
	s.clients = map[*attachClient]struct{}{}
	s.mu.Unlock()
	for c := range clients {
		c.stop()
	}
}

func reply(conn net.Conn, err error) {
	r := Response{}
	if err != nil {
		r.Error = err.Error()
	}
	_ = json.NewEncoder(conn).Encode(r)
}

func (s *controlServer) handle(conn net.Conn) {
	br := bufio.NewReader(conn)
	line, err := br.ReadBytes('\n')
	if err != nil {
		conn.Close()
		return
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		reply(conn, fmt.Errorf("bad request: %w", err))
		conn.Close()
		return
	}
	switch req.Op {
	case "reopen-log":
		reply(conn, s.m.logs.Reopen())
		conn.Close()
	case "resize":
		reply(conn, s.m.resize(req.Width, req.Height))
		conn.Close()
	case "attach":
		s.attach(conn, br, req)
	default:
		reply(conn, fmt.Errorf("unknown op %q", req.Op))
		conn.Close()
	}
}

func (m *monitor) resize(w, h uint16) error {
	if m.console == nil {
		return errors.New("container has no terminal")
	}
	return unix.IoctlSetWinsize(int(m.console.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: w, Row: h})
}

func (s *controlServer) attach(conn net.Conn, br *bufio.Reader, req Request) {
	if req.Stdin && s.m.stdin == nil {
		reply(conn, errors.New("container was not created with stdin"))
		conn.Close()
		return
	}
	c := &attachClient{conn: conn, stdout: req.Stdout, stderr: req.Stderr, out: make(chan outputChunk, attachQueue)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		reply(conn, errors.New("container has exited"))
		conn.Close()
		return
	}
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	reply(conn, nil)

	go func() {
		for chunk := range c.out {
			kind := FrameStdout
			if chunk.stream == Stderr {
				kind = FrameStderr
			}
			if err := WriteFrame(conn, kind, chunk.data); err != nil {
				s.detach(c)
				return
			}
		}
	}()

	// Input: stdin and resize frames until the client goes.
	for {
		kind, payload, err := ReadFrame(br)
		if err != nil {
			break
		}
		switch kind {
		case FrameStdin:
			if req.Stdin {
				if _, err := s.m.stdin.Write(payload); err != nil {
					fmt.Fprintf(os.Stderr, "write container stdin: %v\n", err)
				}
			}
		case FrameResize:
			if len(payload) == 4 {
				_ = s.m.resize(binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:]))
			}
		}
	}
	if req.Stdin && s.m.opts.StdinOnce {
		// stdin_once: the first attached writer's end is the stream's end.
		s.mu.Lock()
		first := !s.stdinUsed
		s.stdinUsed = true
		s.mu.Unlock()
		if first && !s.m.opts.TTY {
			s.m.stdin.Close()
		}
	}
	// The client's input has ended, which may be a half-close: what the
	// container writes afterwards still goes to it (kubectl attach relies
	// on this; containerd and CRI-O do the same). A client that went away
	// entirely is dropped at the first output its connection refuses, or
	// when the container exits.
}

func (s *controlServer) detach(c *attachClient) {
	s.mu.Lock()
	_, ok := s.clients[c]
	delete(s.clients, c)
	s.mu.Unlock()
	if ok {
		c.stop()
	}
}

// broadcast hands an output chunk to every attached client that wants the
// stream, without ever waiting for one.
func (s *controlServer) broadcast(stream string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.clients) == 0 {
		return
	}
	chunk := outputChunk{stream: stream, data: append([]byte(nil), data...)}
	for c := range s.clients {
		if (stream == Stdout && !c.stdout) || (stream == Stderr && !c.stderr) {
			continue
		}
		select {
		case c.out <- chunk:
		default:
			fmt.Fprintln(os.Stderr, "attached client too slow; output dropped for it")
		}
	}
}
