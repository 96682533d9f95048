package monitor

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// outputDrainTimeout bounds how long output is still collected after the
// init exits: a leftover process of a shared PID namespace may hold the
// pipes open forever.
const outputDrainTimeout = 2 * time.Second

// SuperviseArg is berth-monitor's only command; HandoffEnv carries the
// Handoff from the launcher.
const (
	SuperviseArg = "supervise"
	HandoffEnv   = "BERTH_MONITOR_HANDOFF"
)

// Handoff is what the launcher passes to the monitor across execve: the
// container's init (a child of this very process) and the open files.
// File fields are descriptor numbers, -1 for none.
type Handoff struct {
	Options Options `json:"options"`
	Bundle  string  `json:"bundle"`
	Pid     int     `json:"pid"`
	Stdout  int     `json:"stdout"`
	Stderr  int     `json:"stderr"`
	Stdin   int     `json:"stdin"`
	// Console is the pty master of a terminal container.
	Console int `json:"console"`
	// Sync is the pipe to the daemon, answered with Started.
	Sync       int     `json:"sync"`
	OOMCounter Counter `json:"oom_counter"`
}

// Counter is a "key value" line of a cgroup file.
type Counter struct {
	File string `json:"file"`
	Key  string `json:"key"`
}

func file(fd int, name string) *os.File {
	if fd < 0 {
		return nil
	}
	return os.NewFile(uintptr(fd), name)
}

type monitor struct {
	h    Handoff
	opts Options
	logs *LogWriter
	ctl  *controlServer

	// output readers (pipes, or the pty master) and the stdin writer.
	stdout, stderr io.ReadCloser
	stdin          io.WriteCloser
	console        *os.File
}

// Supervise is the monitor's body: it takes over the container the launcher
// started, reports to the daemon, and writes the container's log until the
// init exits, then records the exit.
func Supervise(h Handoff) error {
	m := &monitor{h: h, opts: h.Options}
	sync := file(h.Sync, "sync")
	fail := func(err error) error {
		if sync != nil {
			_ = json.NewEncoder(sync).Encode(Started{Error: err.Error()})
		}
		_ = unix.Kill(h.Pid, unix.SIGKILL)
		var ws unix.WaitStatus
		_, _ = unix.Wait4(h.Pid, &ws, 0, nil)
		return err
	}
	if c := file(h.Console, "console"); c != nil {
		m.console, m.stdout = c, c
		if m.opts.Stdin {
			m.stdin = c
		}
	} else {
		m.stdout, m.stderr = file(h.Stdout, "stdout"), file(h.Stderr, "stderr")
		if w := file(h.Stdin, "stdin"); w != nil {
			m.stdin = w
		}
	}
	logs, err := OpenLog(m.opts.LogPath)
	if err != nil {
		return fail(err)
	}
	m.logs = logs
	m.ctl, err = listenControl(filepath.Join(h.Bundle, SocketFile), m)
	if err != nil {
		return fail(err)
	}
	if sync != nil {
		_ = json.NewEncoder(sync).Encode(Started{Pid: h.Pid})
		sync.Close()
	}
	return m.supervise()
}

// supervise copies output until the init exits, then records the exit.
func (m *monitor) supervise() error {
	var copies sync.WaitGroup
	copyStream := func(stream string, r io.Reader) {
		defer copies.Done()
		if err := m.logs.Copy(stream, r, m.opts.TTY, func(b []byte) { m.ctl.broadcast(stream, b) }); err != nil {
			fmt.Fprintf(os.Stderr, "write container log: %v\n", err)
		}
	}
	copies.Add(1)
	go copyStream(Stdout, m.stdout)
	if m.stderr != nil {
		copies.Add(1)
		go copyStream(Stderr, m.stderr)
	}

	exit := &Exit{Pid: m.h.Pid, ExitCode: 255}
	exit.ExitCode = m.reap()
	exit.FinishedAt = time.Now().UTC()
	exit.OOMKilled = counterAbove0(m.h.OOMCounter)

	drained := make(chan struct{})
	go func() { copies.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(outputDrainTimeout):
		fmt.Fprintln(os.Stderr, "container output still open after exit; closing it")
		m.closeOutput()
		<-drained
	}
	m.closeOutput()
	m.ctl.close()
	m.logs.Close()

	data, err := json.Marshal(exit)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(m.h.Bundle, ExitFile), data); err != nil {
		return fmt.Errorf("record exit: %w", err)
	}
	return nil
}

// reap waits for the init and returns its exit code (128+signal when
// killed). As a subreaper the monitor also inherits the container's
// orphans; they are reaped on the way so none stays a zombie.
func (m *monitor) reap() int {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "wait for container init: %v\n", err)
			return 255
		}
		if pid != m.h.Pid {
			continue
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus()
		case ws.Signaled():
			return 128 + int(ws.Signal())
		}
	}
}

func (m *monitor) closeOutput() {
	for _, c := range []io.Closer{m.stdout, m.stderr, m.stdin} {
		if c != nil {
			c.Close()
		}
	}
}

func counterAbove0(c Counter) bool {
	if c.File == "" {
		return false
	}
	data, err := os.ReadFile(c.File)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == c.Key {
			n, _ := strconv.Atoi(f[1])
			return n > 0
		}
	}
	return false
}

// RecvFd receives one file descriptor sent over a unix socket (a pty
// master from libcontainer's console socket).
func RecvFd(sock *os.File) (*os.File, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, 0)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	for _, msg := range msgs {
		fds, err := unix.ParseUnixRights(&msg)
		if err == nil && len(fds) == 1 {
			return os.NewFile(uintptr(fds[0]), string(buf[:n])), nil
		}
	}
	return nil, fmt.Errorf("no file descriptor received")
}
