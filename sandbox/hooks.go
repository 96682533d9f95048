package sandbox

import "context"

// Hooks are told of each pod's lifecycle, in order, and may refuse a pod
// (the NRI plugins of the nri package). A RunPodSandbox error fails that
// request and undoes the pod; the others are only told.
type Hooks interface {
	// BlockSync keeps a newly connected plugin from taking its snapshot of
	// the pods until unblock is called, so that a pod being made is either
	// in the snapshot or reported to the plugin afterwards.
	BlockSync() (unblock func())
	RunPodSandbox(ctx context.Context, p *Pod) error
	StopPodSandbox(ctx context.Context, p *Pod) error
	RemovePodSandbox(ctx context.Context, p *Pod) error
}

// noHooks is the Hooks of a manager that has none.
type noHooks struct{}

func (noHooks) BlockSync() func()                            { return func() {} }
func (noHooks) RunPodSandbox(context.Context, *Pod) error    { return nil }
func (noHooks) StopPodSandbox(context.Context, *Pod) error   { return nil }
func (noHooks) RemovePodSandbox(context.Context, *Pod) error { return nil }
