package container

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/monitor"
	"github.com/berth-runtime/berth/monitor/launch"
)

// MaxExecOutput caps each output stream of ExecSync, as kubelet's message
// size allows no more.
const MaxExecOutput = 16 << 20

// ioDrainTimeout bounds how long output is read after an exec'd process has
// exited: a background child may keep the pipes open forever.
const ioDrainTimeout = time.Second

// ExecOptions describe a process to run in a container.
type ExecOptions struct {
	Cmd    []string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	TTY    bool
	// Resize delivers terminal sizes (TTY only); may be nil.
	Resize <-chan TermSize
}

// TermSize is a terminal size.
type TermSize struct{ Width, Height uint16 }

// ExecResult is the output of ExecSync.
type ExecResult struct {
	Stdout, Stderr []byte
	ExitCode       int32
}

// ExecSync runs cmd in the container and collects its output. A timeout of
// 0 means none; past it the process and its children are killed and the
// error wraps context.DeadlineExceeded.
func (m *Manager) ExecSync(ctx context.Context, idOrPrefix string, cmd []string, timeout time.Duration) (*ExecResult, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	stdout, stderr := &cappedBuffer{limit: MaxExecOutput}, &cappedBuffer{limit: MaxExecOutput}
	code, err := m.Exec(ctx, idOrPrefix, ExecOptions{Cmd: cmd, Stdout: stdout, Stderr: stderr})
	if err != nil {
		return nil, err
	}
	for name, b := range map[string]*cappedBuffer{"stdout": stdout, "stderr": stderr} {
		if b.over {
			return nil, fmt.Errorf("exec in container %s: %s exceeded %d bytes: %w", idOrPrefix, name, MaxExecOutput, errdefs.ErrResourceExhausted)
		}
	}
	return &ExecResult{Stdout: stdout.buf, Stderr: stderr.buf, ExitCode: int32(code)}, nil
}

// Exec runs a process in a running container, in its namespaces and
// cgroup, as its user, with its environment, and returns the exit code. A
// command that cannot be executed is exit code 126 or 127 with the reason on
// stderr, as a shell reports it.
func (m *Manager) Exec(ctx context.Context, idOrPrefix string, o ExecOptions) (int, error) {
	if len(o.Cmd) == 0 {
		return 0, fmt.Errorf("exec: empty command: %w", errInvalidArgument)
	}
	c, err := m.get(idOrPrefix)
	if err != nil {
		return 0, err
	}
	if c.State != StateRunning {
		return 0, fmt.Errorf("exec in container %s: it is %s, not running: %w", c.ID, c.State, errFailedPrecondition)
	}
	lc, err := libcontainer.Load(m.runcRoot, c.ID)
	if err != nil {
		return 0, fmt.Errorf("exec in container %s: %v: %w", c.ID, err, errFailedPrecondition)
	}
	spec, err := readSpec(c.Bundle)
	if err != nil {
		return 0, fmt.Errorf("exec in container %s: %w", c.ID, err)
	}
	p := launch.ProcessFromSpec(spec.Process)
	p.Args = o.Cmd
	p.Init = false
	p.ConsoleWidth, p.ConsoleHeight = 0, 0

	var (
		copies    sync.WaitGroup
		closers   []io.Closer
		childEnds []*os.File
		console   *os.File
	)
	closeAll := func() {
		for _, c := range closers {
			c.Close()
		}
	}
	defer closeAll()
	if o.TTY {
		parent, child, err := utils.NewSockPair("console")
		if err != nil {
			return 0, err
		}
		closers = append(closers, parent)
		childEnds = append(childEnds, child)
		p.ConsoleSocket = child
		console = parent // the pty master arrives on it once the process starts
	} else {
		pipeOut := func(w io.Writer) (*os.File, error) {
			r, wr, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			closers = append(closers, r)
			childEnds = append(childEnds, wr)
			if w == nil {
				w = io.Discard
			}
			copies.Add(1)
			go func() { defer copies.Done(); _, _ = io.Copy(w, r) }()
			return wr, nil
		}
		if p.Stdout, err = pipeOut(o.Stdout); err != nil {
			return 0, err
		}
		if p.Stderr, err = pipeOut(o.Stderr); err != nil {
			return 0, err
		}
		if o.Stdin != nil {
			r, w, err := os.Pipe()
			if err != nil {
				return 0, err
			}
			closers = append(closers, w)
			childEnds = append(childEnds, r)
			p.Stdin = r
			go func() { _, _ = io.Copy(w, o.Stdin); w.Close() }()
		}
	}

	err = lc.Run(p)
	for _, f := range childEnds {
		f.Close()
	}
	if err != nil {
		if code, msg, ok := execFailure(err); ok {
			if o.Stderr != nil {
				_, _ = io.WriteString(o.Stderr, msg+"\n")
			}
			return code, nil
		}
		return 0, fmt.Errorf("exec in container %s: %w", c.ID, err)
	}
	pid, _ := p.Pid()
	if o.TTY {
		master, err := monitor.RecvFd(console)
		if err != nil {
			_ = p.Signal(unix.SIGKILL)
			_, _ = p.Wait()
			return 0, fmt.Errorf("exec in container %s: console: %w", c.ID, err)
		}
		closers = append(closers, master)
		copies.Add(1)
		go func() {
			defer copies.Done()
			if o.Stdout != nil {
				_, _ = io.Copy(o.Stdout, master)
			}
		}()
		if o.Stdin != nil {
			go func() { _, _ = io.Copy(master, o.Stdin) }()
		}
		if rc, err := master.SyscallConn(); err == nil && o.Resize != nil {
			// Control holds the descriptor for the call and fails once
			// the master is closed: a size arriving as the process ends
			// must not reach a descriptor number reused since.
			go func() {
				for sz := range o.Resize {
					_ = rc.Control(func(fd uintptr) {
						_ = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: sz.Width, Row: sz.Height})
					})
				}
			}()
		}
	}

	waited := make(chan *os.ProcessState, 1)
	go func() {
		st, _ := p.Wait()
		waited <- st
	}()
	var st *os.ProcessState
	select {
	case st = <-waited:
	case <-ctx.Done():
		killTree(pid)
		<-waited // reaped: no zombie stays behind
		drainOrClose(&copies, closers)
		return 0, fmt.Errorf("exec in container %s: command %q timed out: %w", c.ID, strings.Join(o.Cmd, " "), ctx.Err())
	}
	drainOrClose(&copies, closers)
	if st == nil {
		return 0, fmt.Errorf("exec in container %s: lost the process", c.ID)
	}
	ws, _ := st.Sys().(syscall.WaitStatus)
	return utils.ExitStatus(unix.WaitStatus(ws)), nil
}

// drainOrClose waits for output copies to end, closing the read ends when a
// leftover process keeps the pipes open.
func drainOrClose(copies *sync.WaitGroup, closers []io.Closer) {
	done := make(chan struct{})
	go func() { copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(ioDrainTimeout):
		for _, c := range closers {
			c.Close()
		}
		<-done
	}
}

// execFailure turns "the process could not be started" into an exit code,
// as a shell would: 127 for a missing command, 126 otherwise.
func execFailure(err error) (int, string, bool) {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		return 127, msg, true
	case strings.Contains(msg, "permission denied"), strings.Contains(msg, "exec format error"):
		return 126, msg, true
	}
	return 0, "", false
}

// killTree kills pid and every descendant, children first found.
func killTree(pid int) {
	for _, p := range descendants(pid) {
		_ = unix.Kill(p, unix.SIGKILL)
	}
	_ = unix.Kill(pid, unix.SIGKILL)
}

func descendants(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if child, err := strconv.Atoi(f); err == nil {
				out = append(out, child)
				out = append(out, descendants(child)...)
			}
		}
	}
	return out
}

func readSpec(bundle string) (*specs.Spec, error) {
	data, err := os.ReadFile(filepath.Join(bundle, monitor.SpecFile))
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	s := &specs.Spec{}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("decode spec: %w", err)
	}
	return s, nil
}

// cappedBuffer keeps at most limit bytes and remembers it was given more.
type cappedBuffer struct {
	buf   []byte
	limit int
	over  bool
}

// Write never fails: the process must not block on a full pipe, so what is
// past the limit is read and dropped.
func (b *cappedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.limit - len(b.buf); n > room {
		b.over = true
		p = p[:max(room, 0)]
	}
	b.buf = append(b.buf, p...)
	return n, nil
}
