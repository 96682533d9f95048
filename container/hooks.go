package container

import (
	"context"

	"github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/sandbox"
)

// Hooks are told of each container's lifecycle, in order (the NRI plugins
// of the nri package). CreateContainer may adjust the container's spec or
// refuse it, StartContainer may refuse the start, UpdateContainer may change
// or refuse an update; the others are only told.
type Hooks interface {
	// BlockSync keeps a newly connected plugin from taking its snapshot of
	// the containers until unblock is called, so that a container being
	// made is either in the snapshot or reported to the plugin afterwards.
	BlockSync() (unblock func())
	CreateContainer(ctx context.Context, pod *sandbox.Pod, c *Container, spec *specs.Spec) error
	PostCreateContainer(ctx context.Context, pod *sandbox.Pod, c *Container)
	StartContainer(ctx context.Context, pod *sandbox.Pod, c *Container) error
	PostStartContainer(ctx context.Context, pod *sandbox.Pod, c *Container)
	// UpdateContainer may change the resources of an update kubelet asked
	// for (a plugin keeping its CPU pinning, say), or refuse it.
	UpdateContainer(ctx context.Context, pod *sandbox.Pod, c *Container, r *runtimeapi.LinuxContainerResources) (*runtimeapi.LinuxContainerResources, error)
	PostUpdateContainer(ctx context.Context, pod *sandbox.Pod, c *Container)
	// StopContainer is told once, when the container's process has ended,
	// whether it was stopped or exited on its own.
	StopContainer(ctx context.Context, pod *sandbox.Pod, c *Container)
	RemoveContainer(ctx context.Context, pod *sandbox.Pod, c *Container)
}

type noHooks struct{}

func (noHooks) BlockSync() func() { return func() {} }
func (noHooks) CreateContainer(context.Context, *sandbox.Pod, *Container, *specs.Spec) error {
	return nil
}
func (noHooks) PostCreateContainer(context.Context, *sandbox.Pod, *Container)  {}
func (noHooks) StartContainer(context.Context, *sandbox.Pod, *Container) error { return nil }
func (noHooks) UpdateContainer(_ context.Context, _ *sandbox.Pod, _ *Container, r *runtimeapi.LinuxContainerResources) (*runtimeapi.LinuxContainerResources, error) {
	return r, nil
}
func (noHooks) PostUpdateContainer(context.Context, *sandbox.Pod, *Container) {}
func (noHooks) PostStartContainer(context.Context, *sandbox.Pod, *Container)  {}
func (noHooks) StopContainer(context.Context, *sandbox.Pod, *Container)       {}
func (noHooks) RemoveContainer(context.Context, *sandbox.Pod, *Container)     {}

// SetHooks installs the containers' lifecycle hooks; call it before serving.
func (m *Manager) SetHooks(h Hooks) { m.opts.Hooks = h }

// podOf is the container's pod for a hook, nil when it is gone.
func (m *Manager) podOf(c *Container) *sandbox.Pod {
	pod, err := m.opts.Pods.Get(c.PodID)
	if err != nil {
		return nil
	}
	return pod
}
