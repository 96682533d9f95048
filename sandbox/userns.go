package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A pod with a user namespace (UsernsOptions mode POD, hostUsers: false).
//
// Its other namespaces must belong to the user namespace: a container in
// the pod's user namespace that joins a net or IPC namespace owned by the
// host's cannot mount sysfs or mqueue there. unshare(CLONE_NEWUSER) needs a
// single-threaded caller, which the daemon is not, so a helper process is
// cloned with CLONE_NEWUSER together with the other flags (the kernel
// creates the user namespace first and makes it the owner of the rest),
// its id maps are written by the parent (os/exec does that before the
// child execs), and its /proc/<pid>/ns files are bind-mounted like the
// thread's in pinNamespaces.
//
// The helper is the pod's infra command. It keeps the daemon's kernel
// uid 0 (no setuid to the mapped root): unmapped in its own namespace it
// has no capability there after exec, which it does not need, but as the
// owner of root's 0700 directories it can still reach its binary (a test
// binary lives in such a directory, which the mapped root could not enter).
// When the pod shares a PID namespace the helper is cloned with
// CLONE_NEWPID as well and stays on as the pod's infra process, so the PID
// namespace too belongs to the user namespace; otherwise it is killed once
// the namespaces are pinned.

var nsUser = nsKind{"user", unix.CLONE_NEWUSER}

// usernsMappings validates the pod's UsernsOptions the way containerd does
// and returns the uid and gid mappings of a pod user namespace, or nil
// mappings when the pod uses the host's (mode NODE, or no options).
func usernsMappings(ns *runtimeapi.NamespaceOption) (uids, gids []specs.LinuxIDMapping, err error) {
	u := ns.GetUsernsOptions()
	if u == nil {
		return nil, nil, nil
	}
	switch u.GetMode() {
	case runtimeapi.NamespaceMode_NODE:
		if len(u.GetUids()) > 0 || len(u.GetGids()) > 0 {
			return nil, nil, fmt.Errorf("userns_options: mode NODE takes no uid or gid mappings: %w", errdefs.ErrInvalidArgument)
		}
		return nil, nil, nil
	case runtimeapi.NamespaceMode_POD:
	default:
		return nil, nil, fmt.Errorf("userns_options: mode %s is not supported (only POD and NODE): %w", u.GetMode(), errdefs.ErrInvalidArgument)
	}
	if uids, err = oneMapping("uids", u.GetUids()); err != nil {
		return nil, nil, err
	}
	if gids, err = oneMapping("gids", u.GetGids()); err != nil {
		return nil, nil, err
	}
	// A user namespace shares nothing with the host's namespaces it would
	// have to join: sysfs, mqueue and proc cannot be mounted over them.
	// kubelet refuses hostUsers: false with any host namespace too.
	if ns.GetNetwork() == runtimeapi.NamespaceMode_NODE || ns.GetIpc() == runtimeapi.NamespaceMode_NODE || ns.GetPid() == runtimeapi.NamespaceMode_NODE {
		return nil, nil, fmt.Errorf("userns_options: a pod user namespace cannot be combined with host network, IPC or PID: %w", errdefs.ErrInvalidArgument)
	}
	return uids, gids, nil
}

// oneMapping accepts exactly one mapping whose container range starts at 0,
// which is what kubelet sends (and what containerd accepts): the pod's root
// must be mapped, and the rootfs is idmapped with the same single range.
func oneMapping(field string, m []*runtimeapi.IDMapping) ([]specs.LinuxIDMapping, error) {
	if len(m) != 1 {
		return nil, fmt.Errorf("userns_options.%s: want exactly one mapping with mode POD, got %d: %w", field, len(m), errdefs.ErrInvalidArgument)
	}
	if m[0].GetContainerId() != 0 {
		return nil, fmt.Errorf("userns_options.%s: the mapping must start at container id 0, not %d: %w", field, m[0].GetContainerId(), errdefs.ErrInvalidArgument)
	}
	if m[0].GetLength() == 0 {
		return nil, fmt.Errorf("userns_options.%s: the mapping has length 0: %w", field, errdefs.ErrInvalidArgument)
	}
	if uint64(m[0].GetHostId())+uint64(m[0].GetLength()) > 1<<32-1 {
		return nil, fmt.Errorf("userns_options.%s: host ids %d+%d overflow: %w", field, m[0].GetHostId(), m[0].GetLength(), errdefs.ErrInvalidArgument)
	}
	return []specs.LinuxIDMapping{{ContainerID: 0, HostID: m[0].GetHostId(), Size: m[0].GetLength()}}, nil
}

func sysProcMappings(m []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(m))
	for i, x := range m {
		out[i] = syscall.SysProcIDMap{ContainerID: int(x.ContainerID), HostID: int(x.HostID), Size: int(x.Size)}
	}
	return out
}

// pinUserNamespaces creates the pod's user namespace and, owned by it, the
// given kinds of namespaces (net, ipc, uts), pins all of them under dir and
// sets the hostname. With keepInfra the helper also gets a new PID
// namespace and is returned as the pod's infra process, moved into cg;
// otherwise it is gone when this returns. On error nothing is left.
func pinUserNamespaces(dir string, kinds []nsKind, hostname string, uids, gids []specs.LinuxIDMapping, command []string, podID string, keepInfra bool, cg CgroupRef) (paths map[string]string, in *infra, retErr error) {
	if len(command) == 0 {
		return nil, nil, errors.New("no infra command")
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, nil, err
	}
	defer func() {
		if retErr != nil {
			_ = unpinNamespaces(dir)
		}
	}()
	kinds = append([]nsKind{nsUser}, kinds...)
	flags := uintptr(0)
	paths = map[string]string{}
	for _, k := range kinds {
		p := filepath.Join(dir, k.name)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o444)
		if err != nil {
			return nil, nil, err
		}
		f.Close()
		paths[k.name] = p
		flags |= uintptr(k.flag)
	}
	if keepInfra {
		flags |= unix.CLONE_NEWPID
	}
	cmd := exec.Command(command[0], append(command[1:], podID)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  flags,
		UidMappings: sysProcMappings(uids),
		GidMappings: sysProcMappings(gids),
		Setsid:      true,
	}
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start user namespace helper %s: %w", command[0], err)
	}
	in = &infra{pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(in.exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-in.exited
	}
	for _, k := range kinds {
		src := fmt.Sprintf("/proc/%d/ns/%s", in.pid, k.name)
		if err := unix.Mount(src, paths[k.name], "", unix.MS_BIND, ""); err != nil {
			stop()
			return nil, nil, fmt.Errorf("bind %s namespace to %s: %w", k.name, paths[k.name], err)
		}
	}
	if p := paths[nsUTS.name]; p != "" && hostname != "" {
		// The daemon's root holds every capability in the pod's user
		// namespace, so a thread of its own can join the UTS namespace and
		// name it; the helper has no capability there.
		err := inNamespaces(map[string]string{nsUTS.name: p}, func() error {
			return unix.Sethostname([]byte(hostname))
		})
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("set hostname %q: %w", hostname, err)
		}
	}
	if !keepInfra {
		stop()
		return paths, nil, nil
	}
	var err error
	if in.start, err = procStartTime(in.pid); err != nil {
		stop()
		return nil, nil, fmt.Errorf("read start time of infra %d: %w", in.pid, err)
	}
	if err := joinCgroup(cg, in.pid); err != nil {
		stop()
		return nil, nil, fmt.Errorf("move infra %d into the pod cgroup: %w", in.pid, err)
	}
	return paths, in, nil
}
