package daemon

import (
	"context"
	"slices"
	"sort"
	"strings"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/images"
)

// containerImages gives the container manager what it needs of the image
// store: an image's config, and its layers for a root filesystem.
type containerImages struct{ images *images.Manager }

func (a containerImages) ContainerImage(ctx context.Context, ref string) (*container.ImageConfig, error) {
	img, err := a.images.Get(ref)
	if err != nil {
		return nil, err
	}
	cfg := img.Config.Config
	volumes := make([]string, 0, len(cfg.Volumes))
	for v := range cfg.Volumes {
		volumes = append(volumes, v)
	}
	sort.Strings(volumes)
	return &container.ImageConfig{
		ID: img.ID, Ref: digestRef(img, ref), Name: ref,
		Env: slices.Clone(cfg.Env), Entrypoint: slices.Clone(cfg.Entrypoint), Cmd: slices.Clone(cfg.Cmd),
		WorkingDir: cfg.WorkingDir, User: cfg.User, StopSignal: cfg.StopSignal, Volumes: volumes,
	}, nil
}

// digestRef picks the repo@digest name kubelet reports as the container's
// image ref: the one of the repository the container asked for, if any.
func digestRef(img *images.Image, ref string) string {
	repo, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	for _, d := range img.RepoDigests {
		r, _, _ := strings.Cut(d, "@")
		if r == repo || strings.HasSuffix(r, "/"+repo) {
			return d
		}
	}
	if len(img.RepoDigests) > 0 {
		return img.RepoDigests[0]
	}
	return img.ID
}

func (a containerImages) Rootfs(ctx context.Context, imageID, containerID string) ([]string, error) {
	r, err := a.images.Rootfs(ctx, imageID, containerID)
	if err != nil {
		return nil, err
	}
	return r.LowerDirs, nil
}

func (a containerImages) ReleaseRootfs(containerID string) error {
	return a.images.ReleaseRootfs(containerID)
}
