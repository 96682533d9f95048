package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Handle identifies a running monitor across daemon restarts: a PID alone
// could be reused, the PID with its start time cannot.
type Handle struct {
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

// Spawn starts the container of the bundle under a monitor and waits until
// the monitor supervises it or the start failed. launcher is the command
// that starts containers (berth's binary with its start-container
// subcommand); it becomes the monitor binary once the container runs. It
// returns the monitor's handle and the init's PID. The monitor runs in a
// session of its own, so no signal meant for the daemon reaches it.
func Spawn(ctx context.Context, launcher []string, monitorBinary, bundle string, opts Options) (Handle, int, error) {
	data, err := json.Marshal(opts)
	if err != nil {
		return Handle{}, 0, err
	}
	if err := writeFileAtomic(filepath.Join(bundle, OptionsFile), data); err != nil {
		return Handle{}, 0, fmt.Errorf("write monitor options: %w", err)
	}
	logFile, err := os.OpenFile(filepath.Join(bundle, LogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return Handle{}, 0, err
	}
	defer logFile.Close()
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return Handle{}, 0, err
	}
	defer syncR.Close()

	cmd := exec.Command(launcher[0], append(launcher[1:], bundle, monitorBinary)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// In the bundle: a sweep for what a container left finds its monitor.
	cmd.Dir = bundle
	cmd.ExtraFiles = []*os.File{syncW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	syncW.Close()
	if err != nil {
		return Handle{}, 0, fmt.Errorf("start monitor: %w", err)
	}
	// Read before anything reaps it: a container that exits at once takes
	// its monitor with it. execve keeps the start time, so it is the
	// monitor's too.
	startTime, startErr := processStartTime(cmd.Process.Pid)
	// Reap the monitor when it exits while this daemon lives; after a daemon
	// restart the host's init does.
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(waited) }()

	type result struct {
		s   Started
		err error
	}
	got := make(chan result, 1)
	go func() {
		var s Started
		err := json.NewDecoder(syncR).Decode(&s)
		got <- result{s, err}
	}()
	var r result
	select {
	case r = <-got:
	case <-ctx.Done():
		r.err = ctx.Err()
	}
	if r.err == nil && r.s.Error != "" {
		r.err = errors.New(r.s.Error)
	}
	if r.err != nil {
		_ = cmd.Process.Kill()
		<-waited
		if tail := logTail(filepath.Join(bundle, LogFile)); tail != "" && r.s.Error == "" {
			return Handle{}, 0, fmt.Errorf("monitor: %w (%s)", r.err, tail)
		}
		return Handle{}, 0, r.err
	}
	if startErr != nil {
		return Handle{}, 0, fmt.Errorf("monitor start time: %w", startErr)
	}
	return Handle{Pid: cmd.Process.Pid, StartTime: startTime}, r.s.Pid, nil
}

func logTail(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return lines[len(lines)-1]
}

// processStartTime reads field 22 of /proc/PID/stat (start time in clock
// ticks since boot).
func processStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it do not.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat of %d", pid)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return 0, fmt.Errorf("malformed stat of %d", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// Alive reports whether the monitor of h still runs.
func (h Handle) Alive() bool {
	if h.Pid <= 0 {
		return false
	}
	st, err := processStartTime(h.Pid)
	if err != nil || st != h.StartTime {
		return false
	}
	// A zombie has exited even though its stat is still readable.
	data, err := os.ReadFile("/proc/" + strconv.Itoa(h.Pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return false
}

// Wait blocks until the monitor of h has exited or ctx ends. It works for
// monitors that are not this process's children (after a daemon restart).
func (h Handle) Wait(ctx context.Context) error {
	fd, err := unix.PidfdOpen(h.Pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("pidfd of monitor %d: %w", h.Pid, err)
	}
	defer unix.Close(fd)
	// The pidfd now pins the process: if it is not ours (PID reused), it is
	// as good as exited.
	if !h.Alive() {
		return nil
	}
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 200)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
		if n > 0 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// call sends one request to a monitor's control socket.
func call(bundle string, req Request, timeout time.Duration) (net.Conn, *bufio.Reader, error) {
	conn, err := dialInDir(bundle, SocketFile, timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to monitor: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadBytes('\n')
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("monitor did not answer: %w", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		conn.Close()
		return nil, nil, err
	}
	if resp.Error != "" {
		conn.Close()
		return nil, nil, errors.New(resp.Error)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, nil
}

// ReopenLog asks the monitor to reopen the container's log file.
func ReopenLog(bundle string) error {
	conn, _, err := call(bundle, Request{Op: "reopen-log"}, 5*time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}

// Resize sets the container's terminal size.
func Resize(bundle string, width, height uint16) error {
	conn, _, err := call(bundle, Request{Op: "resize", Width: width, Height: height}, 5*time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}

// Attach connects to the container's stdio. The returned connection carries
// frames (ReadFrame/WriteFrame); reads must go through the returned reader.
func Attach(bundle string, stdin, stdout, stderr bool) (net.Conn, *bufio.Reader, error) {
	return call(bundle, Request{Op: "attach", Stdin: stdin, Stdout: stdout, Stderr: stderr}, 5*time.Second)
}

// dialInDir connects to the socket name in dir through the directory's
// /proc/self/fd entry: a unix socket address holds at most 107 bytes, and
// bundle paths under a long state directory are longer.
func dialInDir(dir, name string, timeout time.Duration) (net.Conn, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	return net.DialTimeout("unix", fmt.Sprintf("/proc/self/fd/%d/%s", fd, name), timeout)
}
