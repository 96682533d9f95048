package container

import (
	"fmt"
	"strconv"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// setResources maps the CRI container resources onto the OCI spec.
func setResources(spec *specs.Spec, r *runtimeapi.LinuxContainerResources, hugetlb bool) error {
	if r == nil {
		return nil
	}
	if err := applyResources(spec.Linux.Resources, r, hugetlb); err != nil {
		return err
	}
	if r.GetOomScoreAdj() != 0 {
		v := int(r.GetOomScoreAdj())
		if v < -1000 || v > 1000 {
			return fmt.Errorf("oom_score_adj %d is outside -1000..1000: %w", v, errdefs.ErrInvalidArgument)
		}
		spec.Process.OOMScoreAdj = &v
	}
	return nil
}

// applyResources fills cgroup resources from CRI values; it serves create
// and UpdateContainerResources alike.
func applyResources(out *specs.LinuxResources, r *runtimeapi.LinuxContainerResources, hugetlb bool) error {
	cpu := &specs.LinuxCPU{}
	if v := r.GetCpuShares(); v != 0 {
		s := uint64(v)
		cpu.Shares = &s
	}
	if v := r.GetCpuQuota(); v != 0 {
		cpu.Quota = &v
	}
	if v := r.GetCpuPeriod(); v != 0 {
		p := uint64(v)
		cpu.Period = &p
	}
	cpu.Cpus = r.GetCpusetCpus()
	cpu.Mems = r.GetCpusetMems()
	out.CPU = cpu
	mem := &specs.LinuxMemory{}
	if v := r.GetMemoryLimitInBytes(); v != 0 {
		if v < 0 {
			return fmt.Errorf("memory_limit_in_bytes %d is negative: %w", v, errdefs.ErrInvalidArgument)
		}
		mem.Limit = &v
	}
	if v := r.GetMemorySwapLimitInBytes(); v != 0 {
		mem.Swap = &v
	}
	out.Memory = mem
	out.HugepageLimits = nil
	if hugetlb {
		for _, h := range r.GetHugepageLimits() {
			out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
		}
	}
	if u := r.GetUnified(); len(u) > 0 {
		out.Unified = map[string]string{}
		for k, v := range u {
			out.Unified[k] = v
		}
	}
	return nil
}

// parseSignal accepts "SIGTERM", "TERM" or "15".
func parseSignal(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return n, nil
	}
	name := s
	if len(name) < 3 || name[:3] != "SIG" {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return int(sig), nil
	}
	return 0, fmt.Errorf("unknown signal %q: %w", s, errdefs.ErrInvalidArgument)
}
