package sandbox

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strings"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CgroupRef names a pod cgroup for either driver.
//
// The pod cgroup is berth's own child of LinuxPodSandboxConfig.cgroup_parent
// (the cgroup kubelet made for the pod), not that cgroup itself: berth
// applies the pod's resources and overhead to a cgroup it owns instead of
// overwriting kubelet's settings, removes exactly what it made on
// RemovePodSandbox, and has a place for the infra process. Containers go
// beneath it, so kubelet's pod cgroup still accounts for everything.
type CgroupRef struct {
	Systemd bool `json:"systemd,omitempty"`
	// Path is the cgroupfs path below the hierarchy root ("/kubepods/…/<id>").
	Path string `json:"path,omitempty"`
	// Parent and Name are the systemd parent slice and the pod's own slice.
	Parent string `json:"parent,omitempty"`
	Name   string `json:"name,omitempty"`
}

// ContainerParent is the cgroup parent for the pod's containers: the path
// for cgroupfs (a container goes to <path>/<container id>), the pod slice for
// systemd (cgroupsPath "<slice>:berth:<container id>").
func (r CgroupRef) ContainerParent() string {
	if r.Systemd {
		return r.Name
	}
	return r.Path
}

// defaultCgroupParent is used when the config names none (crictl, critest).
const (
	defaultCgroupParent = "/berth"
	defaultSystemdSlice = "berth.slice"
)

// podCgroupRef places the pod cgroup under parent. Kubelet's systemd driver
// sends a slice ("kubepods-besteffort-pod<uid>.slice"); the "slice:prefix:name"
// form is accepted too and its slice used. A child slice must be named after
// its parent ("a-b.slice" lives in "a.slice"), hence the name built here.
func podCgroupRef(driver, parent, id string) (CgroupRef, error) {
	if driver == "systemd" {
		slice := parent
		if i := strings.IndexByte(slice, ':'); i >= 0 {
			slice = slice[:i]
		}
		if slice == "" {
			slice = defaultSystemdSlice
		}
		if !strings.HasSuffix(slice, ".slice") || strings.Contains(slice, "/") {
			return CgroupRef{}, fmt.Errorf("cgroup parent %q is not a systemd slice", parent)
		}
		prefix := strings.TrimSuffix(slice, ".slice")
		if slice == "-.slice" {
			prefix = ""
		}
		name := "berth" + shortID(id) + ".slice"
		if prefix != "" {
			name = prefix + "-" + name
		}
		return CgroupRef{Systemd: true, Parent: slice, Name: name}, nil
	}
	if parent == "" {
		parent = defaultCgroupParent
	}
	if strings.HasSuffix(parent, ".slice") {
		return CgroupRef{}, fmt.Errorf("cgroup parent %q is a systemd slice but the cgroup driver is cgroupfs", parent)
	}
	clean := path.Clean("/" + parent)
	return CgroupRef{Path: path.Join(clean, id)}, nil
}

func shortID(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}

func (r CgroupRef) config(res *cgroups.Resources) *cgroups.Cgroup {
	if res == nil {
		res = &cgroups.Resources{}
	}
	// The devices controller is left alone: a pod cgroup allows what its
	// parent allows, and each container gets its own device rules.
	res.SkipDevices = true
	if r.Systemd {
		return &cgroups.Cgroup{Systemd: true, Parent: r.Parent, Name: r.Name, Resources: res}
	}
	return &cgroups.Cgroup{Path: r.Path, Resources: res}
}

// createCgroup makes the pod cgroup and applies res.
func createCgroup(r CgroupRef, res *cgroups.Resources) error {
	m, err := manager.New(r.config(res))
	if err != nil {
		return err
	}
	if err := m.Apply(-1); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if err := m.Set(res); err != nil {
		return fmt.Errorf("set resources: %w", err)
	}
	return nil
}

// joinCgroup moves pid into the pod cgroup.
func joinCgroup(r CgroupRef, pid int) error {
	m, err := manager.New(r.config(nil))
	if err != nil {
		return err
	}
	return m.Apply(pid)
}

// cgroupManager returns a manager for an existing pod cgroup (stats, pids).
func cgroupManager(r CgroupRef) (cgroups.Manager, error) {
	return manager.New(r.config(nil))
}

// cgroupExists reports whether any controller's directory of the cgroup
// exists. (The v1 manager's Exists looks at the devices controller only,
// which berth leaves alone for pod cgroups.)
func cgroupExists(m cgroups.Manager) bool {
	for _, p := range m.GetPaths() {
		if cgroups.PathExists(p) {
			return true
		}
	}
	return false
}

// destroyCgroup removes the pod cgroup; a missing one is fine.
func destroyCgroup(r CgroupRef) error {
	if r.Path == "" && r.Name == "" {
		return nil
	}
	m, err := manager.New(r.config(nil))
	if err != nil {
		return err
	}
	if err := m.Destroy(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// podResources turns the pod's resources and overhead into cgroup limits.
// CRI's resources are the sum of the containers' resources; the overhead
// (RuntimeClass) comes on top, so limits add up. A limit the containers
// leave unset stays unset: overhead alone must not cap an unlimited pod.
// Hugepage limits are dropped when the hierarchy has no hugetlb controller
// (cgroup v1 here binds hugetlb to cgroup2; see NOTES), with a log line.
func podResources(linux *runtimeapi.LinuxPodSandboxConfig, log *slog.Logger) *cgroups.Resources {
	res, over := linux.GetResources(), linux.GetOverhead()
	out := &cgroups.Resources{}
	if res == nil && over == nil {
		return out
	}
	if l := res.GetMemoryLimitInBytes(); l > 0 {
		out.Memory = l + over.GetMemoryLimitInBytes()
	}
	if s := res.GetMemorySwapLimitInBytes(); s > 0 {
		out.MemorySwap = s + over.GetMemoryLimitInBytes()
	}
	if s := res.GetCpuShares(); s > 0 {
		out.CpuShares = uint64(s + over.GetCpuShares())
	}
	if q, p := res.GetCpuQuota(), res.GetCpuPeriod(); q > 0 {
		if p <= 0 {
			p = 100000
		}
		out.CpuPeriod = uint64(p)
		out.CpuQuota = q
		if oq, op := over.GetCpuQuota(), over.GetCpuPeriod(); oq > 0 {
			if op <= 0 {
				op = 100000
			}
			out.CpuQuota += oq * p / op
		}
	}
	out.CpusetCpus = res.GetCpusetCpus()
	out.CpusetMems = res.GetCpusetMems()
	if len(res.GetUnified()) > 0 && cgroups.IsCgroup2UnifiedMode() {
		out.Unified = res.GetUnified()
	}
	if hp := res.GetHugepageLimits(); len(hp) > 0 {
		if len(cgroups.HugePageSizes()) == 0 || !hasHugetlb() {
			log.Warn("pod hugepage limits dropped: no hugetlb controller in this cgroup hierarchy")
		} else {
			for _, h := range hp {
				out.HugetlbLimit = append(out.HugetlbLimit, &cgroups.HugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
			}
		}
	}
	return out
}

func hasHugetlb() bool {
	if cgroups.IsCgroup2UnifiedMode() {
		data, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		return err == nil && strings.Contains(string(data), "hugetlb")
	}
	_, err := os.Stat("/sys/fs/cgroup/hugetlb")
	return err == nil
}
