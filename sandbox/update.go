package sandbox

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// UpdateResources applies new pod-level resources and overhead (an in-place
// pod resize) to the pod cgroup and records them in the pod's config.
// Kubelet has already resized its own pod cgroup and treats this call as
// best effort. Limits the new values leave unset are left as they are.
func (m *Manager) UpdateResources(ctx context.Context, id string, overhead, resources *runtimeapi.LinuxContainerResources) error {
	p, err := m.record(id)
	if err != nil {
		return err
	}
	unlock := m.lock(p.ID)
	defer unlock()
	if p, err = m.record(p.ID); err != nil {
		return err
	}
	if p.State != StateReady {
		return fmt.Errorf("update pod %s resources: pod is %s: %w", p.ID, p.State, errdefs.ErrFailedPrecondition)
	}
	cfg, err := p.SandboxConfig()
	if err != nil {
		return err
	}
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxPodSandboxConfig{}
	}
	if err := m.opts.Hooks.UpdatePodSandbox(ctx, p.clone(), overhead, resources); err != nil {
		return fmt.Errorf("update pod %s resources: %w", p.ID, err)
	}
	cfg.Linux.Overhead, cfg.Linux.Resources = overhead, resources
	cg, err := cgroupManager(p.Cgroup)
	if err != nil {
		return fmt.Errorf("update pod %s resources: %w", p.ID, err)
	}
	res := podResources(cfg.Linux, m.log)
	res.SkipDevices = true
	if err := cg.Set(res); err != nil {
		return fmt.Errorf("update pod %s resources: %w", p.ID, err)
	}
	if p.Config, err = protojson.Marshal(cfg); err != nil {
		return fmt.Errorf("update pod %s resources: encode config: %w", p.ID, err)
	}
	if err := m.save(p); err != nil {
		return err
	}
	m.opts.Hooks.PostUpdatePodSandbox(ctx, p.clone())
	return nil
}
