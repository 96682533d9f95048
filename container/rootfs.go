package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mountRootfs mounts the container's root: the image's layers under a
// writable layer of its own, all in the container's persistent directory.
// With idmap (a pod user namespace) the layers are idmapped and the
// writable layer belongs to the mapped root (see userns.go).
func mountRootfs(dir string, lowers []string, idmap *rootIDMap) (string, error) {
	upper, work, target := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	for _, d := range []string{upper, work, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("rootfs: %w", err)
		}
	}
	if len(lowers) == 0 {
		// An image with no layers: overlayfs needs a lower directory.
		empty := filepath.Join(dir, "empty")
		if err := os.MkdirAll(empty, 0o755); err != nil {
			return "", err
		}
		lowers = []string{empty}
	}
	if idmap != nil {
		for _, d := range []string{upper, work} {
			if err := os.Chown(d, int(idmap.uid), int(idmap.gid)); err != nil {
				return "", fmt.Errorf("rootfs: %w", err)
			}
		}
		mapped, err := idmapLowers(dir, lowers, idmap)
		if err != nil {
			return "", fmt.Errorf("rootfs: %w", err)
		}
		// The overlay holds its own clones of the layers once mounted.
		defer func() { _ = unmountLowers(dir) }()
		lowers = mapped
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lowers, ":"), upper, work)
	if len(opts) >= unix.Getpagesize() {
		return "", fmt.Errorf("rootfs: overlay options of %d bytes exceed the page size", len(opts))
	}
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return "", fmt.Errorf("mount overlay root: %w", err)
	}
	return target, nil
}

// unmountRootfs unmounts the root (and idmapped layers a crash left); an
// unmounted root is fine.
func unmountRootfs(dir string) error {
	if err := unmountLowers(dir); err != nil {
		return err
	}
	target := filepath.Join(dir, "rootfs")
	err := unix.Unmount(target, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}
