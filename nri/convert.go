package nri

import (
	"github.com/containerd/nri/pkg/api"
	nrigen "github.com/containerd/nri/pkg/runtime-tools/generate"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/sandbox"
)

// podToNRI describes a pod to plugins.
func podToNRI(p *sandbox.Pod) *api.PodSandbox {
	out := &api.PodSandbox{
		Id:             p.ID,
		Name:           p.Name,
		Uid:            p.UID,
		Namespace:      p.Namespace,
		Labels:         p.Labels,
		Annotations:    p.Annotations,
		RuntimeHandler: p.RuntimeHandler,
		Ips:            p.IPs,
		Pid:            uint32(p.InfraPID),
		Linux: &api.LinuxPodSandbox{
			CgroupsPath: p.Cgroup.ContainerParent(),
			Namespaces:  podNamespaces(p),
		},
	}
	if cfg, err := p.SandboxConfig(); err == nil {
		out.Linux.CgroupParent = cfg.GetLinux().GetCgroupParent()
		out.Linux.PodOverhead = nriResources(cfg.GetLinux().GetOverhead())
		out.Linux.PodResources = nriResources(cfg.GetLinux().GetResources())
	}
	return out
}

func podNamespaces(p *sandbox.Pod) []*api.LinuxNamespace {
	var ns []*api.LinuxNamespace
	for _, n := range []struct{ kind, path string }{
		{"network", p.NetNS}, {"ipc", p.IPCNS}, {"uts", p.UTSNS}, {"user", p.UserNS},
	} {
		if n.path != "" {
			ns = append(ns, &api.LinuxNamespace{Type: n.kind, Path: n.path})
		}
	}
	return ns
}

// containerToNRI describes a container to plugins; spec may be nil (a
// removed container has none left).
func containerToNRI(c *container.Container, spec *specs.Spec) *api.Container {
	out := &api.Container{
		Id:           c.ID,
		PodSandboxId: c.PodID,
		Name:         c.Name,
		State:        containerState(c.State),
		Labels:       c.Labels,
		Annotations:  c.Annotations,
		Pid:          uint32(c.Pid),
		CreatedAt:    unixNano(c.CreatedAt.UnixNano()),
		ExitCode:     c.ExitCode,
		StatusReason: c.Reason,
		Linux:        &api.LinuxContainer{},
	}
	if !c.StartedAt.IsZero() {
		out.StartedAt = c.StartedAt.UnixNano()
	}
	if !c.FinishedAt.IsZero() {
		out.FinishedAt = c.FinishedAt.UnixNano()
	}
	if spec == nil {
		return out
	}
	if spec.Process != nil {
		out.Args = spec.Process.Args
		out.Env = spec.Process.Env
		out.User = &api.User{Uid: spec.Process.User.UID, Gid: spec.Process.User.GID, AdditionalGids: spec.Process.User.AdditionalGids}
		if spec.Process.OOMScoreAdj != nil {
			out.Linux.OomScoreAdj = api.Int(*spec.Process.OOMScoreAdj)
		}
	}
	out.Mounts = api.FromOCIMounts(spec.Mounts)
	out.Hooks = api.FromOCIHooks(spec.Hooks)
	if l := spec.Linux; l != nil {
		out.Linux.Namespaces = api.FromOCILinuxNamespaces(l.Namespaces)
		out.Linux.Devices = api.FromOCILinuxDevices(l.Devices)
		out.Linux.Resources = api.FromOCILinuxResources(l.Resources, spec.Annotations)
		out.Linux.CgroupsPath = l.CgroupsPath
		out.Linux.Sysctl = l.Sysctl
	}
	return out
}

func unixNano(n int64) int64 {
	if n < 0 {
		return 0
	}
	return n
}

func containerState(s container.State) api.ContainerState {
	switch s {
	case container.StateCreated:
		return api.ContainerState_CONTAINER_CREATED
	case container.StateRunning:
		return api.ContainerState_CONTAINER_RUNNING
	case container.StateExited:
		return api.ContainerState_CONTAINER_STOPPED
	}
	return api.ContainerState_CONTAINER_UNKNOWN
}

// nriResources turns CRI resources into NRI's.
func nriResources(r *runtimeapi.LinuxContainerResources) *api.LinuxResources {
	if r == nil {
		return nil
	}
	out := &api.LinuxResources{
		Cpu: &api.LinuxCPU{
			Shares: api.UInt64(uint64(r.GetCpuShares())),
			Quota:  api.Int64(r.GetCpuQuota()),
			Period: api.UInt64(uint64(r.GetCpuPeriod())),
			Cpus:   r.GetCpusetCpus(),
			Mems:   r.GetCpusetMems(),
		},
		Memory: &api.LinuxMemory{
			Limit: api.Int64(r.GetMemoryLimitInBytes()),
		},
		Unified: r.GetUnified(),
	}
	if s := r.GetMemorySwapLimitInBytes(); s != 0 {
		out.Memory.Swap = api.Int64(s)
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, &api.HugepageLimit{PageSize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	return out
}

// podOrID describes the container's pod, or names it when it is gone.
func podOrID(pod *sandbox.Pod, c *container.Container) *api.PodSandbox {
	if pod == nil {
		return &api.PodSandbox{Id: c.PodID}
	}
	return podToNRI(pod)
}

// mergeResources lays the OCI resources a plugin asked for over base (a
// CRI update, or nothing), keeping what OCI does not carry (oom_score_adj).
// A zero field is "leave as is" to berth's update.
func mergeResources(base *runtimeapi.LinuxContainerResources, r *specs.LinuxResources) *runtimeapi.LinuxContainerResources {
	out := &runtimeapi.LinuxContainerResources{}
	if base != nil {
		out = proto.Clone(base).(*runtimeapi.LinuxContainerResources)
	}
	if r == nil {
		return out
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil {
			out.CpuShares = int64(*c.Shares)
		}
		if c.Quota != nil {
			out.CpuQuota = *c.Quota
		}
		if c.Period != nil {
			out.CpuPeriod = int64(*c.Period)
		}
		if c.Cpus != "" {
			out.CpusetCpus = c.Cpus
		}
		if c.Mems != "" {
			out.CpusetMems = c.Mems
		}
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			out.MemoryLimitInBytes = *m.Limit
		}
		if m.Swap != nil {
			out.MemorySwapLimitInBytes = *m.Swap
		}
	}
	if len(r.HugepageLimits) > 0 {
		out.HugepageLimits = nil
		for _, h := range r.HugepageLimits {
			out.HugepageLimits = append(out.HugepageLimits, &runtimeapi.HugepageLimit{PageSize: h.Pagesize, Limit: h.Limit})
		}
	}
	if len(r.Unified) > 0 {
		out.Unified = r.Unified
	}
	return out
}

// adjust applies the plugins' combined adjustment to the container's spec.
func adjust(spec *specs.Spec, a *api.ContainerAdjustment) error {
	if a == nil {
		return nil
	}
	g := nrigen.SpecGenerator(specEditor{spec})
	return g.Adjust(a)
}
