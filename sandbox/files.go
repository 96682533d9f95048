package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Host files copied into pods that do not get their own; variables so tests
// can point them elsewhere.
var (
	hostResolvConf = "/etc/resolv.conf"
	hostHosts      = "/etc/hosts"
)

// DefaultShmSize is the pod /dev/shm size kubelet's dockershim used and
// containerd and CRI-O keep: 64 MiB.
const DefaultShmSize = 64 << 20

// writeHostname writes the pod's /etc/hostname.
func writeHostname(path, hostname string) error {
	return writeFileAtomic(path, []byte(hostname+"\n"), 0o644)
}

// writeResolvConf writes the pod's /etc/resolv.conf from DNSConfig, or a
// copy of the host's when the config names no server, search or option
// (kubelet sends none for dnsPolicy Default, meaning "the node's").
func writeResolvConf(path string, dns *runtimeapi.DNSConfig) error {
	if len(dns.GetServers())+len(dns.GetSearches())+len(dns.GetOptions()) == 0 {
		data, err := os.ReadFile(hostResolvConf)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read host %s: %w", hostResolvConf, err)
		}
		return writeFileAtomic(path, data, 0o644)
	}
	var b bytes.Buffer
	if s := dns.GetSearches(); len(s) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(s, " "))
	}
	for _, s := range dns.GetServers() {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if o := dns.GetOptions(); len(o) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(o, " "))
	}
	return writeFileAtomic(path, b.Bytes(), 0o644)
}

// writeHosts writes the pod's /etc/hosts: the host's with host network (the
// pod is the node), else kubelet's managed header and the pod's own
// addresses under its hostname.
func writeHosts(path, hostname string, ips []string, hostNetwork bool) error {
	if hostNetwork {
		data, err := os.ReadFile(hostHosts)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read host %s: %w", hostHosts, err)
		}
		return writeFileAtomic(path, data, 0o644)
	}
	var b bytes.Buffer
	b.WriteString("# Kubernetes-managed hosts file (written by berth).\n" +
		"127.0.0.1\tlocalhost\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\n" +
		"fe00::0\tip6-mcastprefix\n" +
		"fe00::1\tip6-allnodes\n" +
		"fe00::2\tip6-allrouters\n")
	for _, ip := range ips {
		if hostname != "" {
			fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
		}
	}
	return writeFileAtomic(path, b.Bytes(), 0o644)
}

// writeFileAtomic writes through a temporary file and a rename, so a
// container starting concurrently never binds a half-written file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// mountShm mounts the pod's /dev/shm: one tmpfs per pod, shared by its
// containers (they bind it), since POSIX shared memory belongs with the
// pod's IPC namespace.
func mountShm(path string, size int64) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	if mounted, err := isMountPoint(path); err != nil {
		return err
	} else if mounted {
		return nil
	}
	opts := fmt.Sprintf("mode=1777,size=%d", size)
	if err := unix.Mount("shm", path, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", path, err)
	}
	return nil
}

// isMountPoint compares the device of path and of its parent.
func isMountPoint(path string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false, err
	}
	if err := unix.Lstat(filepath.Dir(path), &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev, nil
}

// removeDir unmounts anything on the pod-owned mount points and removes
// the directory. It succeeds when the directory is already gone.
func removeDir(dir string, mountPoints ...string) error {
	var errs []error
	for _, m := range mountPoints {
		if m == "" {
			continue
		}
		if err := unmountAll(m); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// Never RemoveAll through a mount that is still there.
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
