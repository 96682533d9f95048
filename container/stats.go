package container

import (
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cpuSample is the last cumulative CPU reading, to turn the next one into
// a rate (nano-cores).
type cpuSample struct {
	at    time.Time
	usage uint64
}

// Stats reports the container's CPU, memory and writable layer use.
func (m *Manager) Stats(idOrPrefix string) (*runtimeapi.ContainerStats, error) {
	c, err := m.get(idOrPrefix)
	if err != nil {
		return nil, err
	}
	return m.stats(c), nil
}

// ListStats reports stats for every container that keep passes.
func (m *Manager) ListStats(keep func(*Container) bool) []*runtimeapi.ContainerStats {
	var out []*runtimeapi.ContainerStats
	for _, c := range m.List() {
		if keep(c) {
			out = append(out, m.stats(c))
		}
	}
	return out
}

func (m *Manager) stats(c *Container) *runtimeapi.ContainerStats {
	now := time.Now()
	st := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{
			Id:          c.ID,
			Metadata:    &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: c.Attempt},
			Labels:      c.Labels,
			Annotations: c.Annotations,
		},
		WritableLayer: m.writableLayer(c, now),
	}
	if c.State != StateRunning {
		return st
	}
	lc, err := libcontainer.Load(m.runcRoot, c.ID)
	if err != nil {
		return st
	}
	s, err := lc.Stats()
	if err != nil || s.CgroupStats == nil {
		return st
	}
	cg := s.CgroupStats
	usage := cg.CpuStats.CpuUsage.TotalUsage
	cpu := &runtimeapi.CpuUsage{Timestamp: now.UnixNano(), UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: usage}}
	m.mu.Lock()
	if prev, ok := m.cpu[c.ID]; ok && usage >= prev.usage && now.After(prev.at) {
		rate := float64(usage-prev.usage) / now.Sub(prev.at).Seconds()
		cpu.UsageNanoCores = &runtimeapi.UInt64Value{Value: uint64(rate)}
	}
	m.cpu[c.ID] = cpuSample{at: now, usage: usage}
	m.mu.Unlock()
	st.Cpu = cpu
	st.Memory = memoryUsage(cg, now)
	return st
}

// memoryUsage follows cAdvisor: the working set is usage less inactive
// file cache.
func memoryUsage(cg *cgroups.Stats, now time.Time) *runtimeapi.MemoryUsage {
	mem := cg.MemoryStats
	usage := mem.Usage.Usage
	inactive := mem.Stats["total_inactive_file"]
	if cgroups.IsCgroup2UnifiedMode() {
		inactive = mem.Stats["inactive_file"]
	}
	ws := uint64(0)
	if usage > inactive {
		ws = usage - inactive
	}
	rss := mem.Stats["total_rss"]
	if cgroups.IsCgroup2UnifiedMode() {
		rss = mem.Stats["anon"]
	}
	out := &runtimeapi.MemoryUsage{
		Timestamp:       now.UnixNano(),
		WorkingSetBytes: &runtimeapi.UInt64Value{Value: ws},
		UsageBytes:      &runtimeapi.UInt64Value{Value: usage},
		RssBytes:        &runtimeapi.UInt64Value{Value: rss},
		PageFaults:      &runtimeapi.UInt64Value{Value: mem.Stats["pgfault"] + mem.Stats["total_pgfault"]},
		MajorPageFaults: &runtimeapi.UInt64Value{Value: mem.Stats["pgmajfault"] + mem.Stats["total_pgmajfault"]},
	}
	if limit := mem.Usage.Limit; limit > 0 && limit < 1<<62 && limit > ws {
		out.AvailableBytes = &runtimeapi.UInt64Value{Value: limit - ws}
	}
	return out
}

// writableLayer measures the container's upper directory.
func (m *Manager) writableLayer(c *Container, now time.Time) *runtimeapi.FilesystemUsage {
	var bytes, inodes uint64
	upper := filepath.Join(c.Dir, "upper")
	_ = filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		inodes++
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				bytes += uint64(st.Blocks) * 512
			}
		}
		return nil
	})
	return &runtimeapi.FilesystemUsage{
		Timestamp:  now.UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: filepath.Join(m.opts.Root, "containers")},
		UsedBytes:  &runtimeapi.UInt64Value{Value: bytes},
		InodesUsed: &runtimeapi.UInt64Value{Value: inodes},
	}
}
