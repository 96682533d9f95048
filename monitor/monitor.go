package monitor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// outputDrainTimeout bounds how long output is still collected after the
// init exits: a leftover process of a shared PID namespace may hold the
// pipes open forever.
const outputDrainTimeout = 2 * time.Second

// Run is the monitor process's body: it creates and starts the container
// from the bundle, reports on the sync pipe, then supervises until the init
// exits.
func Run(bundle string, sync *os.File, log *slog.Logger) error {
	m, err := create(bundle, log)
	if err != nil {
		report(sync, Started{Error: err.Error()})
		return err
	}
	report(sync, Started{Pid: m.pid})
	return m.supervise()
}

func report(sync *os.File, s Started) {
	if sync == nil {
		return
	}
	_ = json.NewEncoder(sync).Encode(s)
	sync.Close()
}

type monitor struct {
	bundle    string
	opts      Options
	log       *slog.Logger
	container *libcontainer.Container
	process   *libcontainer.Process
	pid       int
	logs      *LogWriter
	ctl       *controlServer

	// output readers (pipes, or the pty master) and the stdin writer.
	stdout, stderr io.ReadCloser
	stdin          io.WriteCloser
	console        *os.File
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// create makes the container and runs its init: the daemon spawns the
// monitor at StartContainer, as containerd creates its task then, so a
// command missing from the image fails the start, naming the command. On
// error nothing is left: the libcontainer state is destroyed.
func create(bundle string, log *slog.Logger) (_ *monitor, retErr error) {
	m := &monitor{bundle: bundle, log: log}
	if err := readJSON(filepath.Join(bundle, OptionsFile), &m.opts); err != nil {
		return nil, fmt.Errorf("read monitor options: %w", err)
	}
	spec := &specs.Spec{}
	if err := readJSON(filepath.Join(bundle, SpecFile), spec); err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	if spec.Process == nil {
		return nil, errors.New("spec has no process")
	}
	clampOOMScoreAdj(spec, log)
	// The monitor adopts orphans of the container (a daemon-less exit would
	// otherwise hand the init to the host's PID 1 and lose its exit code).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become subreaper: %w", err)
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:       m.opts.ID,
		UseSystemdCgroup: m.opts.SystemdCgroup,
		Spec:             spec,
	})
	if err != nil {
		return nil, fmt.Errorf("convert spec: %w", err)
	}
	logs, err := OpenLog(m.opts.LogPath)
	if err != nil {
		return nil, err
	}
	m.logs = logs
	defer func() {
		if retErr != nil {
			logs.Close()
		}
	}()

	m.container, err = libcontainer.Create(m.opts.RuncRoot, m.opts.ID, cfg)
	if err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = m.container.Destroy()
		}
	}()

	m.process = ProcessFromSpec(spec.Process)
	m.process.Init = true
	childIO, err := m.setupIO()
	if err != nil {
		return nil, err
	}
	err = m.container.Run(m.process)
	for _, f := range childIO {
		f.Close() // the init holds its own copies now
	}
	if err != nil {
		return nil, fmt.Errorf("start container init: %w", err)
	}
	if m.opts.TTY {
		if err := m.receiveConsole(); err != nil {
			return nil, err
		}
	}
	if m.pid, err = m.process.Pid(); err != nil {
		return nil, fmt.Errorf("container init pid: %w", err)
	}
	m.ctl, err = listenControl(filepath.Join(bundle, SocketFile), m)
	if err != nil {
		_ = m.process.Signal(unix.SIGKILL)
		_, _ = m.process.Wait()
		return nil, err
	}
	return m, nil
}

// consoleSocket is the parent end of the socket the init sends its pty
// master over.
var consoleSocketName = "console"

// setupIO wires the init's stdio and returns the child's ends to close once
// the init has started.
func (m *monitor) setupIO() ([]*os.File, error) {
	if m.opts.TTY {
		parent, child, err := utils.NewSockPair(consoleSocketName)
		if err != nil {
			return nil, fmt.Errorf("console socket: %w", err)
		}
		m.console = parent
		m.process.ConsoleSocket = child
		return []*os.File{child}, nil
	}
	var childEnds []*os.File
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	m.stdout, m.stderr = outR, errR
	m.process.Stdout, m.process.Stderr = outW, errW
	childEnds = append(childEnds, outW, errW)
	if m.opts.Stdin {
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		m.stdin = inW
		m.process.Stdin = inR
		childEnds = append(childEnds, inR)
	}
	return childEnds, nil
}

// receiveConsole takes the pty master the init created.
func (m *monitor) receiveConsole() error {
	sock := m.console
	defer sock.Close()
	master, err := RecvFd(sock)
	if err != nil {
		return fmt.Errorf("receive console: %w", err)
	}
	m.console = master
	m.stdout = master
	if m.opts.Stdin {
		m.stdin = master
	}
	return nil
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
	return nil, errors.New("no file descriptor received")
}

// supervise copies output until the init exits, then records the exit.
func (m *monitor) supervise() error {
	var copies sync.WaitGroup
	copyStream := func(stream string, r io.Reader) {
		defer copies.Done()
		if err := m.logs.Copy(stream, r, m.opts.TTY, func(b []byte) { m.ctl.broadcast(stream, b) }); err != nil {
			m.log.Warn("write container log", "id", m.opts.ID, "error", err)
		}
	}
	copies.Add(1)
	go copyStream(Stdout, m.stdout)
	if m.stderr != nil {
		copies.Add(1)
		go copyStream(Stderr, m.stderr)
	}

	state, waitErr := m.process.Wait()
	exit := &Exit{Pid: m.pid, FinishedAt: time.Now().UTC(), ExitCode: 255}
	if state != nil {
		if ws, ok := state.Sys().(syscall.WaitStatus); ok {
			exit.ExitCode = utils.ExitStatus(unix.WaitStatus(ws))
		}
	} else if waitErr != nil {
		m.log.Error("wait for container init", "id", m.opts.ID, "error", waitErr)
	}
	exit.OOMKilled = m.oomKilled()

	drained := make(chan struct{})
	go func() { copies.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(outputDrainTimeout):
		m.log.Warn("container output still open after exit; closing", "id", m.opts.ID)
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
	if err := writeFileAtomic(filepath.Join(m.bundle, ExitFile), data); err != nil {
		return fmt.Errorf("record exit: %w", err)
	}
	return nil
}

func (m *monitor) closeOutput() {
	for _, c := range []io.Closer{m.stdout, m.stderr, m.stdin} {
		if c != nil {
			c.Close()
		}
	}
}

// oomKilled reads the cgroup's OOM kill counter: memory.events on cgroup v2,
// memory.oom_control on v1. The cgroup stays until the daemon destroys it.
func (m *monitor) oomKilled() bool {
	st, err := m.container.State()
	if err != nil {
		return false
	}
	// A hybrid host lists its controller-less cgroup2 tree under "" too:
	// the v1 memory controller, where present, is the one that counts.
	if p, ok := st.CgroupPaths["memory"]; ok {
		return counterAbove0(filepath.Join(p, "memory.oom_control"), "oom_kill")
	}
	if p, ok := st.CgroupPaths[""]; ok {
		return counterAbove0(filepath.Join(p, "memory.events"), "oom_kill")
	}
	return false
}

func counterAbove0(path, key string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			n, _ := strconv.Atoi(f[1])
			return n > 0
		}
	}
	return false
}

// clampOOMScoreAdj raises a requested oom_score_adj to the monitor's own when
// lowering it is not allowed (no CAP_SYS_RESOURCE), instead of failing the
// container as the kernel would.
func clampOOMScoreAdj(spec *specs.Spec, log *slog.Logger) {
	if spec.Process.OOMScoreAdj == nil || hasCapSysResource() {
		return
	}
	data, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return
	}
	own, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return
	}
	if want := *spec.Process.OOMScoreAdj; want < own {
		log.Warn("oom_score_adj clamped: lowering it needs CAP_SYS_RESOURCE", "requested", want, "applied", own)
		spec.Process.OOMScoreAdj = &own
	}
}

func hasCapSysResource() bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}
