package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageVolume is an image mounted read-only into a container (an image
// volume, KEP-4639). Its layers are held under the key VolumeKey gives, as
// a container's root layers are under its ID.
type ImageVolume struct {
	// Index is the mount's position in the container config's mounts.
	Index   int    `json:"index"`
	ImageID string `json:"imageId"`
}

// imageVolumesDir holds each image volume's overlay, as <dir>/<index>,
// and the empty lower layer a one-layer image is stacked on.
const imageVolumesDir = "imagevols"

// idmapDir, under imageVolumesDir, holds the idmapped layer binds an image
// volume of a pod with a user namespace is stacked on, while it is mounted.
const idmapDir = "idmap"

// VolumeKey names the image layers an image volume holds, for the image
// store's use records.
func VolumeKey(containerID string, index int) string {
	return containerID + "/vol" + strconv.Itoa(index)
}

func isImageMount(m *runtimeapi.Mount) bool { return m.GetImage().GetImage() != "" }

// resolveImageVolumes checks the config's image mounts and fills in each
// one's image_ref with the image's ID (the value PullImage returned, which
// ContainerStatus reports back). It returns the images by mount index.
func (m *Manager) resolveImageVolumes(ctx context.Context, cfg *runtimeapi.ContainerConfig) (map[int]*ImageConfig, error) {
	out := map[int]*ImageConfig{}
	for i, mnt := range cfg.GetMounts() {
		if !isImageMount(mnt) {
			continue
		}
		dest := mnt.GetContainerPath()
		// An image is shared by every container using it: kubelet always
		// asks read-only, and a writable image volume has nothing to write
		// to, so it is refused rather than silently made read-only.
		if !mnt.GetReadonly() {
			return nil, fmt.Errorf("image volume %s: image volumes are read-only, readonly must be set: %w", dest, errInvalidArgument)
		}
		if mnt.GetHostPath() != "" {
			return nil, fmt.Errorf("image volume %s: host_path and image are exclusive: %w", dest, errInvalidArgument)
		}
		if err := checkSubPath(mnt.GetImageSubPath()); err != nil {
			return nil, fmt.Errorf("image volume %s: %w", dest, err)
		}
		img, err := m.opts.Images.ContainerImage(ctx, mnt.GetImage().GetImage())
		if err != nil {
			return nil, fmt.Errorf("image volume %s: image %q: %w", dest, mnt.GetImage().GetImage(), err)
		}
		mnt.Image.ImageRef = img.ID
		out[i] = img
	}
	return out, nil
}

// checkSubPath refuses a sub path that is absolute or climbs out of the
// image; the sub path's existence is checked once the image is mounted.
func checkSubPath(sub string) error {
	if sub == "" {
		return nil
	}
	clean := filepath.Clean(sub)
	if filepath.IsAbs(sub) || clean == ".." || strings.HasPrefix(clean, "../") {
		return fmt.Errorf("image_sub_path %q must be relative and inside the image: %w", sub, errInvalidArgument)
	}
	return nil
}

// mountImageVolumes mounts each image volume read-only under the
// container's directory and returns, by mount index, the host path to
// bind into the container (the image root or its sub path). Each volume
// is recorded before its layers are taken, so a remove, or Recover after a
// crash, releases what a create got as far as.
func (m *Manager) mountImageVolumes(ctx context.Context, c *Container, cfg *runtimeapi.ContainerConfig, imgs map[int]*ImageConfig, idmap *rootIDMap) (map[int]string, error) {
	sources := map[int]string{}
	for i, mnt := range cfg.GetMounts() {
		img, ok := imgs[i]
		if !ok {
			continue
		}
		c.ImageVolumes = append(c.ImageVolumes, ImageVolume{Index: i, ImageID: img.ID})
		if err := m.save(c); err != nil {
			return nil, err
		}
		lowers, err := m.opts.Images.Rootfs(ctx, img.ID, VolumeKey(c.ID, i))
		if err != nil {
			return nil, fmt.Errorf("image volume %s: image layers: %w", mnt.GetContainerPath(), err)
		}
		target, err := mountImageVolume(c.Dir, i, lowers, idmap)
		if err != nil {
			return nil, fmt.Errorf("image volume %s: %w", mnt.GetContainerPath(), err)
		}
		src, err := subPathSource(target, mnt.GetImageSubPath())
		if err != nil {
			return nil, fmt.Errorf("image volume %s: %w", mnt.GetContainerPath(), err)
		}
		sources[i] = src
	}
	return sources, nil
}

// mountImageVolume mounts the layers as a read-only overlay with no upper
// layer at <dir>/imagevols/<index>. overlayfs wants two lower layers when
// there is no upper one, so a one-layer image is stacked on an empty
// directory. With idmap (a pod user namespace) the overlay is stacked on
// idmapped binds of the layers, as the root is: the kernel cannot idmap
// the overlay itself, and the image's root-owned files must appear owned by
// root inside.
func mountImageVolume(dir string, index int, lowers []string, idmap *rootIDMap) (string, error) {
	base := filepath.Join(dir, imageVolumesDir)
	target := filepath.Join(base, strconv.Itoa(index))
	empty := filepath.Join(base, "empty")
	for _, d := range []string{target, empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	if len(lowers) < 2 {
		lowers = append(lowers, empty)
	}
	if idmap != nil {
		mapDir := filepath.Join(base, idmapDir)
		mapped, err := idmapLowers(mapDir, lowers, idmap)
		if err != nil {
			return "", err
		}
		// The overlay holds its own clones of the layers once mounted.
		defer func() { _ = unmountLowers(mapDir) }()
		lowers = mapped
	}
	opts := "lowerdir=" + strings.Join(lowers, ":")
	if len(opts) >= unix.Getpagesize() {
		return "", fmt.Errorf("overlay options of %d bytes exceed the page size", len(opts))
	}
	if err := unix.Mount("overlay", target, "overlay", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, opts); err != nil {
		return "", fmt.Errorf("mount read-only overlay: %w", err)
	}
	return target, nil
}

// subPathSource resolves sub inside the mounted image, without following
// links out of it. A sub path the image lacks is the caller's mistake.
func subPathSource(root, sub string) (string, error) {
	if sub == "" {
		return root, nil
	}
	p, err := securejoin.SecureJoin(root, sub)
	if err != nil {
		return "", fmt.Errorf("image_sub_path %q: %v: %w", sub, err, errInvalidArgument)
	}
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("image_sub_path %q does not exist in the image: %w", sub, errInvalidArgument)
	} else if err != nil {
		return "", fmt.Errorf("image_sub_path %q: %w", sub, err)
	}
	return p, nil
}

// unmountImageVolumes unmounts every image volume under the container's
// directory. It looks at the directory, not the record, so it also finds
// a mount a crash left before the record named it.
func unmountImageVolumes(dir string) error {
	base := filepath.Join(dir, imageVolumesDir)
	entries, err := os.ReadDir(base)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("image volumes: %w", err)
	}
	// Idmapped layer binds a crash left between their mount and the
	// overlay's.
	errs := []error{unmountLowers(filepath.Join(base, idmapDir))}
	for _, e := range entries {
		if e.Name() == "empty" || e.Name() == idmapDir {
			continue
		}
		target := filepath.Join(base, e.Name())
		err := unix.Unmount(target, unix.MNT_DETACH)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount image volume %s: %w", target, err))
		}
	}
	return errors.Join(errs...)
}

// releaseImageVolumes drops the container's hold on its image volumes'
// layers.
func (m *Manager) releaseImageVolumes(c *Container) error {
	var errs []error
	for _, v := range c.ImageVolumes {
		if err := m.opts.Images.ReleaseRootfs(VolumeKey(c.ID, v.Index)); err != nil {
			errs = append(errs, fmt.Errorf("release image volume layers: %w", err))
		}
	}
	return errors.Join(errs...)
}
