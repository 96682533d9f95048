package streaming

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/monitor"
)

// stdinChunk is how much client input one stdin frame carries; the monitor
// accepts frames of up to 1 MiB.
const stdinChunk = 32 << 10

// Attach connects the client's streams to the container's main process
// through the container's monitor, which holds the process's stdio. The
// monitor outlives the daemon, so attaching works the same after a daemon
// restart.
//
// The session ends when the container exits, when the client goes, or when
// the client closes its stdin, except for a container created with
// stdin_once and no terminal: then closing stdin closes the container's
// stdin and the output keeps flowing until the container exits (the rule
// kubectl attach relies on, as in containerd and CRI-O).
func (r *runtime) Attach(ctx context.Context, id string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, err := r.containers.Get(id)
	if err != nil {
		return err
	}
	if c.State != container.StateRunning {
		return fmt.Errorf("attach to container %s: it is %s, not running", c.ID, c.State)
	}
	cfg, err := c.ContainerConfig()
	if err != nil {
		return err
	}
	// A container created without stdin has nothing to write to: the
	// client's input is ignored, as containerd does, rather than refused.
	withStdin := in != nil && cfg.GetStdin()
	if in != nil && !withStdin {
		r.log.Debug("attach: container was created without stdin; ignoring the client's", "container", c.ID)
	}
	conn, br, err := monitor.Attach(c.Bundle, withStdin, out != nil, errOut != nil)
	if err != nil {
		return fmt.Errorf("attach to container %s: %w", c.ID, err)
	}
	s := &attachSession{conn: conn}
	defer s.close()

	// Both ends of the session can stop it: the client's context (and the
	// server stopping) or the end of the container's output.
	stop := context.AfterFunc(ctx, s.close)
	defer stop()
	if withStdin {
		keepOutput := cfg.GetStdinOnce() && !cfg.GetTty()
		go s.copyStdin(in, keepOutput)
	}
	if resize != nil {
		go s.copyResize(resize)
	}
	err = copyOutput(br, out, errOut)
	r.log.Debug("attach ended", "container", c.ID, "tty", tty, "stdin", withStdin, "error", err)
	return nil
}

// attachSession is the connection to the monitor; the stdin and resize
// copies both write frames to it.
type attachSession struct {
	conn net.Conn

	mu        sync.Mutex // one frame at a time
	closeOnce sync.Once
}

func (s *attachSession) writeFrame(kind byte, payload []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return monitor.WriteFrame(s.conn, kind, payload)
}

func (s *attachSession) close() { s.closeOnce.Do(func() { s.conn.Close() }) }

// copyStdin forwards the client's input. At its end, keepOutput half-closes
// the connection: the monitor then closes the container's stdin (stdin_once)
// and output still arrives. Otherwise the session ends.
func (s *attachSession) copyStdin(in io.Reader, keepOutput bool) {
	buf := make([]byte, stdinChunk)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if werr := s.writeFrame(monitor.FrameStdin, buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	if hc, ok := s.conn.(interface{ CloseWrite() error }); ok && keepOutput {
		s.mu.Lock()
		_ = hc.CloseWrite()
		s.mu.Unlock()
		return
	}
	s.close()
}

func (s *attachSession) copyResize(resize <-chan remotecommand.TerminalSize) {
	for sz := range resize {
		payload := make([]byte, 4)
		binary.BigEndian.PutUint16(payload, sz.Width)
		binary.BigEndian.PutUint16(payload[2:], sz.Height)
		if err := s.writeFrame(monitor.FrameResize, payload); err != nil {
			return
		}
	}
}

// copyOutput writes the monitor's output frames to the client until the
// monitor closes the connection (the container exited) or the connection is
// closed here. A client that stopped reading ends it too.
func copyOutput(br io.Reader, out, errOut io.Writer) error {
	for {
		kind, payload, err := monitor.ReadFrame(br)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		var w io.Writer
		switch kind {
		case monitor.FrameStdout:
			w = out
		case monitor.FrameStderr:
			w = errOut
		}
		if w == nil {
			continue
		}
		if _, err := w.Write(payload); err != nil {
			return fmt.Errorf("write to client: %w", err)
		}
	}
}
