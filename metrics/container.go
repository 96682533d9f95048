package metrics

import (
	"fmt"
	"time"

	"github.com/opencontainers/cgroups"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
)

// containerInput is what one container's metrics are computed from.
type containerInput struct {
	sample *container.Sample
	// podName and podNamespace label the metrics as kubelet's cAdvisor
	// ones are.
	podName, podNamespace string
	resources             *runtimeapi.LinuxContainerResources
	procs                 processCounts
	oomKills              uint64
	fs                    fsInfo
	// cgroup2 selects the cgroup v2 names of the memory statistics.
	cgroup2 bool
}

// containerMetrics computes every per-container metric of the table.
func containerMetrics(in containerInput) []*runtimeapi.Metric {
	c := in.sample.Container
	e := &emitter{base: []string{c.Name, c.ID, c.Image, c.Key, in.podNamespace, in.podName}}
	cg := in.sample.Cgroup
	if cg == nil {
		cg = &cgroups.Stats{}
	}
	sec := func(ns uint64) uint64 { return ns / uint64(time.Second) }

	cpu := cg.CpuStats
	e.add("container_cpu_usage_seconds_total", sec(cpu.CpuUsage.TotalUsage), "total")
	e.add("container_cpu_user_seconds_total", sec(cpu.CpuUsage.UsageInUsermode))
	e.add("container_cpu_system_seconds_total", sec(cpu.CpuUsage.UsageInKernelmode))
	e.add("container_cpu_cfs_periods_total", cpu.ThrottlingData.Periods)
	e.add("container_cpu_cfs_throttled_periods_total", cpu.ThrottlingData.ThrottledPeriods)
	e.add("container_cpu_cfs_throttled_seconds_total", sec(cpu.ThrottlingData.ThrottledTime))

	memoryMetrics(e, cg.MemoryStats, in.cgroup2)
	e.add("container_oom_events_total", in.oomKills)

	e.add("container_fs_inodes_free", in.fs.inodesFree, in.fs.device)
	e.add("container_fs_inodes_total", in.fs.inodesTotal, in.fs.device)
	e.add("container_fs_limit_bytes", in.fs.limitBytes, in.fs.device)
	e.add("container_fs_usage_bytes", in.sample.WritableBytes, in.fs.device)
	blkioMetrics(e, cg.BlkioStats)

	e.add("container_processes", uint64(len(in.sample.Pids)))
	e.add("container_threads", in.procs.threads)
	e.add("container_threads_max", cg.PidsStats.Limit)
	e.add("container_file_descriptors", in.procs.fds)
	e.add("container_sockets", in.procs.sockets)

	e.add("container_last_seen", uint64(in.sample.At.Unix()))
	start := c.StartedAt
	if start.IsZero() {
		start = c.CreatedAt
	}
	e.add("container_start_time_seconds", uint64(start.Unix()))
	r := in.resources
	e.add("container_spec_cpu_period", uint64(max(r.GetCpuPeriod(), 0)))
	e.add("container_spec_cpu_quota", uint64(max(r.GetCpuQuota(), 0)))
	e.add("container_spec_cpu_shares", uint64(max(r.GetCpuShares(), 0)))
	e.add("container_spec_memory_limit_bytes", uint64(max(r.GetMemoryLimitInBytes(), 0)))
	e.add("container_spec_memory_swap_limit_bytes", uint64(max(r.GetMemorySwapLimitInBytes(), 0)))
	return e.out
}

// memoryMetrics follows cAdvisor: cgroup v1 reports hierarchical totals as
// total_*, v2 under plain names; the working set is usage less inactive
// file pages.
func memoryMetrics(e *emitter, mem cgroups.MemoryStats, v2 bool) {
	get := func(v1Name, v2Name string) uint64 {
		if v2 {
			return mem.Stats[v2Name]
		}
		return mem.Stats[v1Name]
	}
	usage := mem.Usage.Usage
	ws := uint64(0)
	if inactive := get("total_inactive_file", "inactive_file"); usage > inactive {
		ws = usage - inactive
	}
	swap, kernel := mem.Stats["total_swap"], mem.KernelUsage.Usage
	if v2 {
		swap, kernel = mem.SwapUsage.Usage, mem.Stats["kernel"]
		if kernel == 0 {
			kernel = mem.Stats["kernel_stack"] + mem.Stats["slab"] + mem.Stats["sock"]
		}
	}
	e.add("container_memory_cache", get("total_cache", "file"))
	e.add("container_memory_rss", get("total_rss", "anon"))
	e.add("container_memory_kernel_usage", kernel)
	e.add("container_memory_mapped_file", get("total_mapped_file", "file_mapped"))
	e.add("container_memory_swap", swap)
	e.add("container_memory_failcnt", mem.Usage.Failcnt)
	e.add("container_memory_usage_bytes", usage)
	e.add("container_memory_max_usage_bytes", mem.Usage.MaxUsage)
	e.add("container_memory_working_set_bytes", ws)
	// cAdvisor's scopes: "container" counts the cgroup's own faults,
	// "hierarchy" its children's too; cgroup v2 counts only the latter.
	for _, f := range []struct{ typ, own, total string }{{"pgfault", "pgfault", "total_pgfault"}, {"pgmajfault", "pgmajfault", "total_pgmajfault"}} {
		own, total := mem.Stats[f.own], mem.Stats[f.total]
		if v2 {
			total = own
		}
		e.add("container_memory_failures_total", own, f.typ, "container")
		e.add("container_memory_failures_total", total, f.typ, "hierarchy")
	}
}

// blkioMetrics reports per-device block I/O where the kernel accounts it.
func blkioMetrics(e *emitter, io cgroups.BlkioStats) {
	type key struct{ major, minor uint64 }
	reads, writes := map[key][2]uint64{}, map[key][2]uint64{} // bytes, ops
	// tally adds v to slot (0 bytes, 1 ops) of the device's reads or writes.
	tally := func(op string, k key, slot int, v uint64) {
		var m map[key][2]uint64
		switch op {
		case "Read", "read":
			m = reads
		case "Write", "write":
			m = writes
		default:
			return
		}
		t := m[k]
		t[slot] += v
		m[k] = t
	}
	for _, s := range io.IoServiceBytesRecursive {
		dev := deviceName(s.Major, s.Minor)
		e.add("container_blkio_device_usage_total", s.Value, dev, fmt.Sprint(s.Major), fmt.Sprint(s.Minor), s.Op)
		tally(s.Op, key{s.Major, s.Minor}, 0, s.Value)
	}
	for _, s := range io.IoServicedRecursive {
		tally(s.Op, key{s.Major, s.Minor}, 1, s.Value)
	}
	for k, v := range reads {
		dev := deviceName(k.major, k.minor)
		e.add("container_fs_reads_bytes_total", v[0], dev)
		e.add("container_fs_reads_total", v[1], dev)
	}
	for k, v := range writes {
		dev := deviceName(k.major, k.minor)
		e.add("container_fs_writes_bytes_total", v[0], dev)
		e.add("container_fs_writes_total", v[1], dev)
	}
}
