package container

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// baseMounts are the filesystems every container gets, as runc's and
// containerd's default specs.
func baseMounts(privileged bool) []specs.Mount {
	sysOpts := []string{"nosuid", "noexec", "nodev", "ro"}
	cgroupOpts := []string{"nosuid", "noexec", "nodev", "relatime", "ro"}
	if privileged {
		// Privileged containers get a writable sysfs and cgroupfs.
		sysOpts = []string{"nosuid", "noexec", "nodev", "rw"}
		cgroupOpts = []string{"nosuid", "noexec", "nodev", "relatime", "rw"}
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: sysOpts},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: cgroupOpts},
	}
}

// setMounts lays out the container's filesystem: base mounts, the pod's
// /dev/shm and /etc files, image volumes and the config's mounts. A config
// mount wins over anything else at the same destination.
func setMounts(spec *specs.Spec, in specInput) error {
	sc := in.cfg.GetLinux().GetSecurityContext()
	var mounts []specs.Mount
	taken := map[string]bool{}
	for _, m := range in.cfg.GetMounts() {
		taken[filepath.Clean(m.GetContainerPath())] = true
	}
	add := func(m specs.Mount) {
		if !taken[filepath.Clean(m.Destination)] {
			mounts = append(mounts, m)
		}
	}
	for _, m := range baseMounts(sc.GetPrivileged()) {
		add(m)
	}

	// /dev/shm: the pod's tmpfs (its IPC namespace's), or the host's with
	// host IPC.
	shm := in.pod.ShmPath
	if shm == "" {
		shm = "/dev/shm"
	}
	add(specs.Mount{Destination: "/dev/shm", Type: "bind", Source: shm, Options: []string{"rbind", "rprivate", "rw"}})

	etcOpts := []string{"rbind", "rprivate", "rw"}
	if sc.GetReadonlyRootfs() {
		etcOpts = []string{"rbind", "rprivate", "ro"}
	}
	for dest, src := range map[string]string{
		"/etc/hosts":       in.pod.HostsPath,
		"/etc/resolv.conf": in.pod.ResolvConfPath,
		"/etc/hostname":    in.pod.HostnamePath,
	} {
		if src != "" {
			add(specs.Mount{Destination: dest, Type: "bind", Source: src, Options: etcOpts})
		}
	}

	// Image volumes become empty directories of the container's own, as
	// containerd does, unless a config mount covers them.
	for _, v := range in.image.Volumes {
		dest := filepath.Clean(v)
		if taken[dest] {
			continue
		}
		sum := sha256.Sum256([]byte(dest))
		src := filepath.Join(in.dir, "volumes", hex.EncodeToString(sum[:8]))
		if err := os.MkdirAll(src, 0o755); err != nil {
			return fmt.Errorf("image volume %s: %w", dest, err)
		}
		add(specs.Mount{Destination: dest, Type: "bind", Source: src, Options: []string{"rbind", "rprivate", "rw"}})
	}

	for i, m := range in.cfg.GetMounts() {
		if src, ok := in.imageVolumes[i]; ok {
			mounts = append(mounts, specs.Mount{
				Destination: m.GetContainerPath(), Type: "bind", Source: src,
				Options: []string{"rbind", "rprivate", "ro", "nosuid", "nodev"},
			})
			continue
		}
		sm, err := configMount(m)
		if err != nil {
			return err
		}
		if err := checkMountKind(in.rootfs, m); err != nil {
			return err
		}
		mounts = append(mounts, sm)
		if m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
			// Propagation from or to the host needs a root that is not
			// private itself.
			spec.Linux.RootfsPropagation = "rslave"
			if m.GetPropagation() == runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL {
				spec.Linux.RootfsPropagation = "rshared"
			}
		}
	}
	// Parents before children, so /a is mounted before /a/b.
	slices.SortStableFunc(mounts, func(a, b specs.Mount) int {
		return strings.Count(filepath.Clean(a.Destination), "/") - strings.Count(filepath.Clean(b.Destination), "/")
	})
	spec.Mounts = mounts
	return nil
}

// configMount converts one CRI bind mount. A missing host path is created as
// a directory, as kubelet expects of hostPath volumes.
func configMount(m *runtimeapi.Mount) (specs.Mount, error) {
	src, dest := m.GetHostPath(), m.GetContainerPath()
	if m.GetImage() != nil && m.GetImage().GetImage() != "" {
		// Create mounts image volumes before the spec is built; one that
		// reaches here was never prepared.
		return specs.Mount{}, fmt.Errorf("mount %s: image volume was not prepared: %w", dest, errdefs.ErrFailedPrecondition)
	}
	if !filepath.IsAbs(dest) {
		return specs.Mount{}, fmt.Errorf("mount: container path %q is not absolute: %w", dest, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(src) {
		return specs.Mount{}, fmt.Errorf("mount %s: host path %q is not absolute: %w", dest, src, errdefs.ErrInvalidArgument)
	}
	if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(src, 0o755); err != nil {
			return specs.Mount{}, fmt.Errorf("mount %s: create host path %s: %w", dest, src, err)
		}
	} else if err != nil {
		return specs.Mount{}, fmt.Errorf("mount %s: host path %s: %v: %w", dest, src, err, errdefs.ErrInvalidArgument)
	}
	opts := []string{"rbind"}
	switch m.GetPropagation() {
	case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
		opts = append(opts, "rslave")
	case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
		opts = append(opts, "rshared")
	default:
		opts = append(opts, "rprivate")
	}
	switch {
	case m.GetRecursiveReadOnly():
		if !m.GetReadonly() {
			return specs.Mount{}, fmt.Errorf("mount %s: recursive_read_only needs readonly: %w", dest, errdefs.ErrInvalidArgument)
		}
		if m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
			return specs.Mount{}, fmt.Errorf("mount %s: recursive_read_only needs private propagation: %w", dest, errdefs.ErrInvalidArgument)
		}
		opts = append(opts, "rro")
	case m.GetReadonly():
		opts = append(opts, "ro")
	default:
		opts = append(opts, "rw")
	}
	// selinux_relabel has no meaning without SELinux; it is ignored, as
	// containerd does with SELinux disabled.
	return specs.Mount{Destination: dest, Type: "bind", Source: src, Options: opts}, nil
}

// setDevices exposes the config's host devices.
func setDevices(spec *specs.Spec, devices []*runtimeapi.Device, privileged bool) error {
	for _, d := range devices {
		perms := d.GetPermissions()
		if perms == "" {
			perms = "rwm"
		}
		if strings.Trim(perms, "rwm") != "" {
			return fmt.Errorf("device %s: permissions %q are not a subset of rwm: %w", d.GetHostPath(), perms, errdefs.ErrInvalidArgument)
		}
		dev, err := deviceFromPath(d.GetHostPath(), d.GetContainerPath())
		if err != nil {
			return err
		}
		spec.Linux.Devices = append(spec.Linux.Devices, dev)
		major, minor := dev.Major, dev.Minor
		spec.Linux.Resources.Devices = append(spec.Linux.Resources.Devices, specs.LinuxDeviceCgroup{
			Allow: true, Type: dev.Type, Major: &major, Minor: &minor, Access: perms,
		})
	}
	if privileged {
		hostDevs, err := hostDevices()
		if err != nil {
			return err
		}
		spec.Linux.Devices = append(spec.Linux.Devices, hostDevs...)
	}
	return nil
}

// checkMountKind refuses a bind mount of a file over a directory of the
// image, or of a directory over a file: the mount would fail deep in the
// container's start with a message naming neither.
func checkMountKind(rootfs string, m *runtimeapi.Mount) error {
	src, err := os.Stat(m.GetHostPath())
	if err != nil {
		return nil
	}
	target, err := securejoin.SecureJoin(rootfs, m.GetContainerPath())
	if err != nil {
		return nil
	}
	dst, err := os.Stat(target)
	if err != nil {
		return nil // created at start
	}
	if src.IsDir() != dst.IsDir() {
		kind := func(dir bool) string {
			if dir {
				return "a directory"
			}
			return "a file"
		}
		return fmt.Errorf("mount %s: host path %s is %s but %s is %s in the image: %w",
			m.GetContainerPath(), m.GetHostPath(), kind(src.IsDir()), m.GetContainerPath(), kind(dst.IsDir()), errdefs.ErrInvalidArgument)
	}
	return nil
}
