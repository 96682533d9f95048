package sandbox

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Hooks are told of each pod's lifecycle, in order, and may refuse a pod
// (the NRI plugins of the nri package). A RunPodSandbox error fails that
// request and undoes the pod; the others are only told.
type Hooks interface {
	// BlockSync keeps a newly connected plugin from taking its snapshot of
	// the pods until unblock is called, so that a pod being made is either
	// in the snapshot or reported to the plugin afterwards.
	BlockSync() (unblock func())
	RunPodSandbox(ctx context.Context, p *Pod) error
	// UpdatePodSandbox hears of an in-place pod resize before it applies;
	// an error refuses it. PostUpdatePodSandbox after.
	UpdatePodSandbox(ctx context.Context, p *Pod, overhead, resources *runtimeapi.LinuxContainerResources) error
	PostUpdatePodSandbox(ctx context.Context, p *Pod)
	StopPodSandbox(ctx context.Context, p *Pod) error
	RemovePodSandbox(ctx context.Context, p *Pod) error
}

// noHooks is the Hooks of a manager that has none.
type noHooks struct{}

func (noHooks) BlockSync() func()                         { return func() {} }
func (noHooks) RunPodSandbox(context.Context, *Pod) error { return nil }
func (noHooks) UpdatePodSandbox(context.Context, *Pod, *runtimeapi.LinuxContainerResources, *runtimeapi.LinuxContainerResources) error {
	return nil
}
func (noHooks) PostUpdatePodSandbox(context.Context, *Pod)   {}
func (noHooks) StopPodSandbox(context.Context, *Pod) error   { return nil }
func (noHooks) RemovePodSandbox(context.Context, *Pod) error { return nil }
