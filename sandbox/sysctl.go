package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// normalizeSysctl accepts both spellings kubelet allows ("net.ipv4.ip_forward"
// and "net/ipv4/ip_forward") and returns the dotted one.
func normalizeSysctl(name string) string {
	if i := strings.IndexAny(name, "./"); i >= 0 && name[i] == '/' {
		return strings.NewReplacer("/", ".", ".", "/").Replace(name)
	}
	return name
}

// sysctlNamespace returns the namespace kind a sysctl belongs to, or "" for
// one that is not namespaced (and so unsafe for a pod to set).
func sysctlNamespace(name string) string {
	switch {
	case strings.HasPrefix(name, "net."):
		return nsNet.name
	case name == "kernel.sem", strings.HasPrefix(name, "kernel.shm"),
		strings.HasPrefix(name, "kernel.msg"), strings.HasPrefix(name, "fs.mqueue."):
		return nsIPC.name
	}
	return ""
}

// validateSysctls rejects, before anything is built, a sysctl that is not
// namespaced or that would change the host's namespace.
func validateSysctls(sysctls map[string]string, hostNetwork, hostIPC bool) error {
	for raw := range sysctls {
		name := normalizeSysctl(raw)
		if name == "" || strings.Contains(name, "..") || strings.ContainsAny(name, "/\x00") {
			return fmt.Errorf("sysctl %q: malformed name: %w", raw, errdefs.ErrInvalidArgument)
		}
		switch sysctlNamespace(name) {
		case nsNet.name:
			if hostNetwork {
				return fmt.Errorf("sysctl %q: not allowed with host network: %w", raw, errdefs.ErrInvalidArgument)
			}
		case nsIPC.name:
			if hostIPC {
				return fmt.Errorf("sysctl %q: not allowed with host IPC: %w", raw, errdefs.ErrInvalidArgument)
			}
		default:
			return fmt.Errorf("sysctl %q: not a namespaced sysctl a pod may set (allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*): %w", raw, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// applySysctls writes each sysctl from a thread inside the pod's network
// and IPC namespaces: /proc/sys resolves net.* and IPC entries against the
// writing thread's namespaces. A sysctl the kernel does not know is
// InvalidArgument, naming it.
//
// rootUID is the host uid of the pod's root when the pod has a user
// namespace, else -1. The kernel lets only that uid write the IPC sysctls
// of an IPC namespace the user namespace owns (ipc_permissions gives
// everyone else, the host's root included, the "other" bits: read-only),
// while net.* ones need CAP_NET_ADMIN over the network namespace, which
// only uid 0 holds here. So the thread switches its effective uid per
// sysctl (its saved uid stays 0, so it can switch back, and regains its
// capabilities when it does). The thread is discarded after (see
// inNamespaces), and the raw syscall changes that thread alone.
func applySysctls(sysctls map[string]string, netns, ipcns string, rootUID int) error {
	if len(sysctls) == 0 {
		return nil
	}
	names := make([]string, 0, len(sysctls))
	for n := range sysctls {
		names = append(names, n)
	}
	sort.Strings(names)
	return inNamespaces(map[string]string{nsNet.name: netns, nsIPC.name: ipcns}, func() error {
		for _, raw := range names {
			name := normalizeSysctl(raw)
			if rootUID >= 0 {
				euid := 0
				if sysctlNamespace(name) == nsIPC.name {
					euid = rootUID
				}
				if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(euid), ^uintptr(0)); errno != 0 {
					return fmt.Errorf("sysctl %q: switch to uid %d: %w", raw, euid, errno)
				}
			}
			path := filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("sysctl %q: unknown to this kernel: %w", raw, errdefs.ErrInvalidArgument)
			}
			if err != nil {
				return fmt.Errorf("sysctl %q: %w", raw, err)
			}
			_, err = f.WriteString(sysctls[raw])
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("sysctl %q = %q: %w: %w", raw, sysctls[raw], err, errdefs.ErrInvalidArgument)
			}
		}
		return nil
	})
}
