package sandbox

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
)

// Stats are a pod's resource usage: its cgroup (containers included) and
// its network namespace's interfaces.
type Stats struct {
	Timestamp time.Time
	// CPUUsageNanos is cumulative CPU time; CPUNanoCores the rate since the
	// previous sample (0 on the first).
	CPUUsageNanos uint64
	CPUNanoCores  uint64
	// Memory, as kubelet reads it: working set is usage less inactive file
	// pages.
	MemoryUsage      uint64
	MemoryWorkingSet uint64
	MemoryRSS        uint64
	MemoryAvailable  uint64
	PageFaults       uint64
	MajorPageFaults  uint64
	Processes        uint64
	Interfaces       []InterfaceStats
	// HasCgroup is false when the pod cgroup is gone (a stopped pod whose
	// cgroup a crash removed): the cgroup figures are then zero.
	HasCgroup bool
}

// InterfaceStats are the counters of one interface in the pod.
type InterfaceStats struct {
	Name                                 string
	RxBytes, RxErrors, TxBytes, TxErrors uint64
	// Packets and drops, for the cAdvisor-style network metrics.
	RxPackets, RxDropped, TxPackets, TxDropped uint64
}

type cpuSample struct {
	at    time.Time
	usage uint64
}

// Stats samples the pod's usage.
func (m *Manager) Stats(id string) (*Stats, error) {
	p, err := m.Get(id)
	if err != nil {
		return nil, err
	}
	st := &Stats{Timestamp: time.Now()}
	if cg, err := cgroupManager(p.Cgroup); err == nil && cgroupExists(cg) {
		s, err := cg.GetStats()
		if err != nil {
			return nil, fmt.Errorf("pod %s: cgroup stats: %w", p.ID, err)
		}
		st.HasCgroup = true
		fillCgroupStats(st, s)
		m.mu.Lock()
		if prev, ok := m.cpu[p.ID]; ok && st.CPUUsageNanos >= prev.usage && st.Timestamp.After(prev.at) {
			st.CPUNanoCores = uint64(float64(st.CPUUsageNanos-prev.usage) / st.Timestamp.Sub(prev.at).Seconds())
		}
		m.cpu[p.ID] = cpuSample{at: st.Timestamp, usage: st.CPUUsageNanos}
		m.mu.Unlock()
		if pids, err := cg.GetAllPids(); err == nil && st.Processes == 0 {
			st.Processes = uint64(len(pids))
		}
	}
	if p.NetNS != "" && isNamespace(p.NetNS) {
		ifs, err := netDevStats(p.NetNS)
		if err != nil {
			return nil, fmt.Errorf("pod %s: network stats: %w", p.ID, err)
		}
		st.Interfaces = ifs
	}
	return st, nil
}

func fillCgroupStats(st *Stats, s *cgroups.Stats) {
	st.CPUUsageNanos = s.CpuStats.CpuUsage.TotalUsage
	mem := s.MemoryStats
	st.MemoryUsage = mem.Usage.Usage
	// cgroup v1 reports hierarchical totals as total_*, v2 plain names.
	get := func(v1, v2 string) uint64 {
		if v, ok := mem.Stats[v1]; ok {
			return v
		}
		return mem.Stats[v2]
	}
	inactive := get("total_inactive_file", "inactive_file")
	if st.MemoryUsage > inactive {
		st.MemoryWorkingSet = st.MemoryUsage - inactive
	}
	st.MemoryRSS = get("total_rss", "anon")
	st.PageFaults = get("total_pgfault", "pgfault")
	st.MajorPageFaults = get("total_pgmajfault", "pgmajfault")
	if limit := mem.Usage.Limit; limit > 0 && limit < 1<<62 && limit > st.MemoryWorkingSet {
		st.MemoryAvailable = limit - st.MemoryWorkingSet
	}
	st.Processes = s.PidsStats.Current
}

// netDevStats reads /proc/thread-self/net/dev from a thread inside netns:
// /proc/net follows the reading thread's network namespace.
func netDevStats(netns string) ([]InterfaceStats, error) {
	var data []byte
	err := inNamespaces(map[string]string{nsNet.name: netns}, func() error {
		var err error
		data, err = os.ReadFile("/proc/thread-self/net/dev")
		return err
	})
	if err != nil {
		return nil, err
	}
	return parseNetDev(data)
}

// parseNetDev parses /proc/net/dev, skipping loopback.
func parseNetDev(data []byte) ([]InterfaceStats, error) {
	var out []InterfaceStats
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue // the two header lines
		}
		name = strings.TrimSpace(name)
		if name == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			return nil, fmt.Errorf("net/dev line for %s: %d fields", name, len(f))
		}
		n := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		out = append(out, InterfaceStats{
			Name: name, RxBytes: n(0), RxPackets: n(1), RxErrors: n(2), RxDropped: n(3),
			TxBytes: n(8), TxPackets: n(9), TxErrors: n(10), TxDropped: n(11),
		})
	}
	return out, sc.Err()
}
