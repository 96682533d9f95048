package images

import (
	"context"
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Rootfs is what a container's root file system is stacked from.
type Rootfs struct {
	// ImageID is the ID of the image, the value CRI reports as the
	// container's image_id.
	ImageID string
	// LowerDirs are the image's layer directories, top layer first, in the
	// order overlayfs takes them in lowerdir=. An image without layers has
	// one empty directory, as overlayfs needs at least one.
	LowerDirs []string
}

// Rootfs resolves imageRef (an ID, a unique ID prefix or any name of the
// image) and records that containerID uses its layers: they stay on disk,
// even if the image is removed, until ReleaseRootfs. Calling it again for
// the same container replaces the record.
func (m *Manager) Rootfs(ctx context.Context, imageRef, containerID string) (*Rootfs, error) {
	if containerID == "" {
		return nil, fmt.Errorf("rootfs: empty container ID: %w", errdefs.ErrInvalidArgument)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	img, _, err := m.lookupLocked(imageRef)
	if err != nil {
		return nil, err
	}
	out := &Rootfs{ImageID: img.rec.ID}
	for _, chainID := range slices.Backward(img.rec.Layers) {
		l := m.layers[chainID]
		if l == nil {
			return nil, fmt.Errorf("image %s: layer %s is missing; pull the image again: %w", img.rec.ID, chainID, errdefs.ErrDataLoss)
		}
		out.LowerDirs = append(out.LowerDirs, m.layerPath(l.Dir))
	}
	if len(out.LowerDirs) == 0 {
		out.LowerDirs = []string{m.emptyLayerDir()}
	}
	rec := &rootfsRecord{ContainerID: containerID, ImageID: img.rec.ID, Layers: slices.Clone(img.rec.Layers)}
	if err := m.rootfsTable.Put(containerID, rec); err != nil {
		return nil, fmt.Errorf("rootfs of %s: %w", containerID, err)
	}
	m.rootfs[containerID] = rec
	return out, nil
}

// ReleaseRootfs records that containerID no longer uses image layers, and
// frees those nothing else uses. Releasing twice, or a container that never
// had a rootfs, succeeds.
func (m *Manager) ReleaseRootfs(containerID string) error {
	m.mu.Lock()
	if m.rootfs[containerID] == nil {
		m.mu.Unlock()
		return nil
	}
	if err := m.rootfsTable.Delete(containerID); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("release rootfs of %s: %w", containerID, err)
	}
	delete(m.rootfs, containerID)
	trash := m.collectGarbageLocked()
	m.mu.Unlock()
	m.emptyTrash(trash)
	return nil
}

// Config returns the OCI configuration of the image imageRef names: env,
// entrypoint, cmd, user, working dir, stop signal, volumes, labels.
func (m *Manager) Config(imageRef string) (ocispec.ImageConfig, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	img, _, err := m.lookupLocked(imageRef)
	if err != nil {
		return ocispec.ImageConfig{}, err
	}
	cfg := img.config.Config
	cfg.Env = slices.Clone(cfg.Env)
	cfg.Entrypoint = slices.Clone(cfg.Entrypoint)
	cfg.Cmd = slices.Clone(cfg.Cmd)
	return cfg, nil
}
