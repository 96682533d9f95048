package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/sandbox"
)

// Containers of a pod with a user namespace join it, and see files with the
// owners they have on the host: libcontainer does not idmap the rootfs, and
// the kernel refuses to idmap an overlay mount. So each lower layer is
// bind-mounted idmapped with the pod's user namespace (a file owned by host
// root appears owned by the mapped root, and so by root inside), the
// overlay is mounted over those, and the writable layer, which the overlay
// writes through unmapped, is chowned to the mapped root. Bind mounts get
// runc's "ridmap" where the filesystem beneath supports idmapped mounts.

// rootIDMap is how a container's rootfs is idmapped; nil for a pod without
// a user namespace.
type rootIDMap struct {
	// userns is the pod's pinned user namespace.
	userns string
	// uid and gid are the host ids of the container's root.
	uid, gid uint32
}

// traversable lets the container's root, which owns nothing of the host's
// and holds no capability over it, reach its rootfs: it adds search (x)
// permission for others to every directory from root down to dir, as
// containerd's 0711 directories do. Nothing is made readable. The
// directories above root are the administrator's: one that others cannot
// search is reported rather than changed.
func traversable(root, dir string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("%s is not beneath %s", dir, root)
	}
	for p := filepath.Dir(root); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s (mode %04o, above berth's root %s) is not searchable by others, so no user namespace can reach a rootfs beneath it: %w",
				p, fi.Mode().Perm(), root, errdefs.ErrFailedPrecondition)
		}
		if p == "/" {
			break
		}
	}
	p := root
	for _, part := range append([]string{""}, strings.Split(rel, "/")...) {
		p = filepath.Join(p, part)
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, fi.Mode().Perm()|0o111); err != nil {
				return err
			}
		}
	}
	return nil
}

func podIDMap(pod *sandbox.Pod) *rootIDMap {
	if pod.UserNS == "" || len(pod.UIDMappings) == 0 || len(pod.GIDMappings) == 0 {
		return nil
	}
	return &rootIDMap{userns: pod.UserNS, uid: pod.UIDMappings[0].HostID, gid: pod.GIDMappings[0].HostID}
}

// setUserNamespace joins the pod's user namespace and idmaps the bind
// mounts whose source supports it. libcontainer reads the id maps from the
// namespace it joins (giving them too only earns a warning).
func setUserNamespace(spec *specs.Spec, pod *sandbox.Pod) {
	idmap := podIDMap(pod)
	if idmap == nil {
		return
	}
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: idmap.userns})
	for i, m := range spec.Mounts {
		if m.Type != "bind" || !idmapSupported(m.Source, idmap.userns) {
			continue
		}
		spec.Mounts[i].Options = append(spec.Mounts[i].Options, "ridmap")
	}
}

// idmapSupported probes whether path's filesystem can be idmapped with the
// namespace at userns (tmpfs, ext4, xfs, btrfs can; overlay, proc cannot),
// as critest does: a detached clone of the mount, never attached.
func idmapSupported(path, userns string) bool {
	tree, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(tree)
	return setIDMap(tree, userns) == nil
}

// setIDMap sets MOUNT_ATTR_IDMAP on the detached mount tree.
func setIDMap(tree int, userns string) error {
	ns, err := os.Open(userns)
	if err != nil {
		return err
	}
	defer ns.Close()
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.Fd())}
	return unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr)
}

// idmapLowers bind-mounts each lower layer idmapped at dir/lower/<n> and
// returns those mount points, top layer first as given.
func idmapLowers(dir string, lowers []string, idmap *rootIDMap) ([]string, error) {
	var out []string
	for i, l := range lowers {
		target := filepath.Join(dir, "lower", strconv.Itoa(i))
		if err := os.MkdirAll(target, 0o700); err != nil {
			return nil, err
		}
		if err := idmapBind(l, target, idmap.userns); err != nil {
			_ = unmountLowers(dir)
			return nil, fmt.Errorf("idmap layer %s: %w", l, err)
		}
		out = append(out, target)
	}
	return out, nil
}

func idmapBind(src, target, userns string) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tree)
	if err := setIDMap(tree, userns); err != nil {
		return fmt.Errorf("mount_setattr idmap: %w", err)
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount to %s: %w", target, err)
	}
	return nil
}

// unmountLowers detaches the idmapped layer mounts, which the overlay no
// longer needs once mounted (it holds private clones of its layers), and
// removes their directory. Nothing mounted is fine.
func unmountLowers(dir string) error {
	base := filepath.Join(dir, "lower")
	entries, err := os.ReadDir(base)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(base, e.Name())
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			continue
		}
		// os.Remove, never RemoveAll: a mount left behind must not take
		// the image's layer with it.
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(base); err != nil && len(errs) == 0 {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
