// Package launch starts a container for its monitor. It runs in a short-
// lived process of berth's own binary (`shim start-container BUNDLE`), which
// links libcontainer: it creates and starts the container, so that the
// container's init is its child, then replaces itself (execve keeps the PID,
// and so the parenthood) with berth-monitor, a small binary without
// libcontainer that supervises the container for the rest of its life. A
// Go process's resident memory is about its binary's size, and one monitor
// lives beside every container: that is why the two are split.
package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/opencontainers/cgroups"
	// Device cgroup rules need the devices manager registered.
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/monitor"
)

// Subcommand is the hidden subcommand of the berth binary that runs Main.
const Subcommand = "start-container"

// Main is the launcher's body: `start-container BUNDLE MONITOR` with the
// sync pipe on fd 3. It returns only on failure, after reporting it on the
// sync pipe and removing what it made.
func Main(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: start-container BUNDLE MONITOR-BINARY")
		return 2
	}
	sync := os.NewFile(3, "sync")
	err := launch(args[0], args[1], sync)
	// launch returns only when it did not hand over to the monitor.
	_ = json.NewEncoder(sync).Encode(monitor.Started{Error: err.Error()})
	fmt.Fprintln(os.Stderr, "start container:", err)
	return 1
}

type launcher struct {
	bundle    string
	opts      monitor.Options
	container *libcontainer.Container
	process   *libcontainer.Process
	handoff   monitor.Handoff
	// keep are the files handed to the monitor.
	keep []*os.File
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

func launch(bundle, monitorBinary string, sync *os.File) (retErr error) {
	l := &launcher{bundle: bundle}
	if err := readJSON(filepath.Join(bundle, monitor.OptionsFile), &l.opts); err != nil {
		return fmt.Errorf("read monitor options: %w", err)
	}
	spec := &specs.Spec{}
	if err := readJSON(filepath.Join(bundle, monitor.SpecFile), spec); err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	if spec.Process == nil {
		return errors.New("spec has no process")
	}
	clampOOMScoreAdj(spec)
	// The monitor adopts orphans of the container; the flag survives execve.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become subreaper: %w", err)
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:       l.opts.ID,
		UseSystemdCgroup: l.opts.SystemdCgroup,
		Spec:             spec,
	})
	if err != nil {
		return fmt.Errorf("convert spec: %w", err)
	}
	l.container, err = libcontainer.Create(l.opts.RuncRoot, l.opts.ID, cfg)
	if err != nil {
		return fmt.Errorf("create container: %w", err)
	}
	defer func() {
		if retErr != nil {
			if l.process != nil {
				_ = l.process.Signal(unix.SIGKILL)
				_, _ = l.process.Wait()
			}
			_ = l.container.Destroy()
		}
	}()

	process := ProcessFromSpec(spec.Process)
	process.Init = true
	childEnds, console, err := l.setupIO(process)
	if err != nil {
		return err
	}
	err = l.container.Run(process)
	for _, f := range childEnds {
		f.Close() // the init holds its own copies now
	}
	if err != nil {
		return fmt.Errorf("start container init: %w", err)
	}
	l.process = process
	if console != nil {
		master, err := monitor.RecvFd(console)
		console.Close()
		if err != nil {
			return fmt.Errorf("receive console: %w", err)
		}
		l.handoff.Console = l.pass(master)
	}
	if l.handoff.Pid, err = process.Pid(); err != nil {
		return fmt.Errorf("container init pid: %w", err)
	}
	l.handoff.OOMCounter = oomCounter(l.container)
	l.handoff.Sync = l.pass(sync)
	l.handoff.Bundle = bundle
	l.handoff.Options = l.opts
	return l.execMonitor(monitorBinary)
}

// pass marks f to be inherited by the monitor and returns its fd number.
func (l *launcher) pass(f *os.File) int {
	l.keep = append(l.keep, f)
	return int(f.Fd())
}

// setupIO wires the init's stdio. It returns the child's ends, to close once
// the init has started, and the console socket for a terminal.
func (l *launcher) setupIO(p *libcontainer.Process) ([]*os.File, *os.File, error) {
	l.handoff.Stdout, l.handoff.Stderr, l.handoff.Stdin, l.handoff.Console = -1, -1, -1, -1
	if l.opts.TTY {
		parent, child, err := utils.NewSockPair("console")
		if err != nil {
			return nil, nil, fmt.Errorf("console socket: %w", err)
		}
		p.ConsoleSocket = child
		return []*os.File{child}, parent, nil
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	p.Stdout, p.Stderr = outW, errW
	l.handoff.Stdout, l.handoff.Stderr = l.pass(outR), l.pass(errR)
	childEnds := []*os.File{outW, errW}
	if l.opts.Stdin {
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, nil, err
		}
		p.Stdin = inR
		l.handoff.Stdin = l.pass(inW)
		childEnds = append(childEnds, inR)
	}
	return childEnds, nil, nil
}

// execMonitor replaces this process with the monitor, handing it the open
// files (libcontainer marked every fd close-on-exec; the handed ones are
// cleared again).
func (l *launcher) execMonitor(binary string) error {
	for _, f := range l.keep {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("hand %s to the monitor: %w", f.Name(), err)
		}
	}
	data, err := json.Marshal(l.handoff)
	if err != nil {
		return err
	}
	env := append(os.Environ(), monitor.HandoffEnv+"="+string(data))
	err = syscall.Exec(binary, []string{filepath.Base(binary), monitor.SuperviseArg}, env)
	return fmt.Errorf("exec monitor %s: %w", binary, err)
}

// oomCounter names the file and key counting the cgroup's OOM kills: the v1
// memory controller where the host has one (a hybrid host also lists its
// controller-less cgroup2 tree), else cgroup2's memory.events.
func oomCounter(c *libcontainer.Container) monitor.Counter {
	st, err := c.State()
	if err != nil {
		return monitor.Counter{}
	}
	if p, ok := st.CgroupPaths["memory"]; ok && !cgroups.IsCgroup2UnifiedMode() {
		return monitor.Counter{File: filepath.Join(p, "memory.oom_control"), Key: "oom_kill"}
	}
	if p, ok := st.CgroupPaths[""]; ok {
		return monitor.Counter{File: filepath.Join(p, "memory.events"), Key: "oom_kill"}
	}
	return monitor.Counter{}
}

// clampOOMScoreAdj raises a requested oom_score_adj to this process's own
// when lowering it is not allowed (no CAP_SYS_RESOURCE), instead of failing
// the container as the kernel would.
func clampOOMScoreAdj(spec *specs.Spec) {
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
		fmt.Fprintf(os.Stderr, "oom_score_adj clamped from %d to %d: lowering it needs CAP_SYS_RESOURCE\n", want, own)
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
