package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The pod's PID namespace.
//
// Net, IPC and UTS namespaces live on without a process once pinned, but a
// PID namespace dies with its first process, and a process can only be
// created inside one by fork. So a pod asking for a shared PID namespace
// (NamespaceOption.pid == POD, shareProcessNamespace) gets an infra process:
// berth's own binary re-executed as `shim pod-init <pod id>`, forked with
// CLONE_NEWPID from a thread that joined the pod's net/IPC/UTS namespaces,
// so it is PID 1 of the new namespace and lives in the pod's other
// namespaces too. Containers join /proc/<pid>/ns/pid. It needs no image
// (CRI-O does the same with pinns plus an infra container only in this
// case), reaps the orphans the pod's processes leave, and exits on SIGTERM.
// Pods without a shared PID namespace have no process at all.
//
// The pid and its start time (field 22 of /proc/<pid>/stat) are recorded,
// so after a daemon restart the same process is found again and a recycled
// pid is never signalled.

// InfraSubcommand is the hidden subcommand of the berth binary that runs
// PodInit.
const InfraSubcommand = "pod-init"

// PodInit is the body of `shim pod-init`: PID 1 of a pod's PID namespace. It
// reaps every child and returns (exit status 0) on SIGTERM or SIGINT.
func PodInit() int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGCHLD)
	for s := range sigs {
		if s != unix.SIGCHLD {
			return 0
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
	return 0
}

// infra is a started infra process.
type infra struct {
	pid   int
	start uint64
	// exited is closed when the daemon that started it has reaped it.
	exited chan struct{}
}

// startInfra forks the infra into a new PID namespace, inside the pod's
// pinned namespaces, and moves it into the pod cgroup.
//
// Its working directory is the pod's run directory: it pins nothing there,
// and makes the process findable by what it belongs to (a test harness
// that sweeps processes living in its temporary directory finds it).
func startInfra(command []string, podID, dir string, nsPaths map[string]string, cg CgroupRef) (*infra, error) {
	if len(command) == 0 {
		return nil, errors.New("no infra command")
	}
	// The fork happens on a locked thread that joined the pod's
	// namespaces, so the child inherits them; the thread is then
	// discarded (see inNamespaces).
	var cmd *exec.Cmd
	err := inNamespaces(nsPaths, func() error {
		cmd = exec.Command(command[0], append(command[1:], podID)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID, Setsid: true}
		cmd.Dir = dir
		return cmd.Start()
	})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", command[0], err)
	}
	in := &infra{pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // reap it: the daemon is its parent until it restarts
		close(in.exited)
	}()
	if in.start, err = procStartTime(in.pid); err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("read start time of infra %d: %w", in.pid, err)
	}
	if err := joinCgroup(cg, in.pid); err != nil {
		_ = cmd.Process.Kill()
		<-in.exited
		return nil, fmt.Errorf("move infra %d into the pod cgroup: %w", in.pid, err)
	}
	return in, nil
}

// procStartTime reads field 22 of /proc/<pid>/stat (start time in clock
// ticks since boot).
func procStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm (field 2) may hold spaces and parentheses: split after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := bytes.Fields(data[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(string(fields[19]), 10, 64)
}

// processAlive reports whether pid still is the process that started at
// start (and has not exited).
func processAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	got, err := procStartTime(pid)
	if err != nil || got != start {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i >= 0 && len(data) > i+2 && data[i+2] != 'Z'
}

// killProcess SIGKILLs pid if it still is the process started at start, and
// waits up to timeout for it to die. It goes through a pidfd, so the check
// and the signal are about the same process even if the pid is recycled in
// between. A process that is already gone is success.
func killProcess(pid int, start uint64, timeout time.Duration) error {
	if pid <= 0 {
		return nil
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if got, err := procStartTime(pid); err != nil || got != start {
		return nil // a different process now holds the pid
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	// A pidfd polls readable once the process has exited.
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for %d: %w", pid, err)
		}
		if n > 0 {
			return nil
		}
		return fmt.Errorf("process %d still alive %s after SIGKILL", pid, timeout)
	}
}
