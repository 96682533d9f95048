package metrics

import (
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/sandbox"
)

// checkDescribed fails for a metric that has no descriptor or whose label
// values do not match its descriptor's keys: kubelet drops those.
func checkDescribed(t *testing.T, ms []*runtimeapi.Metric) map[string][]*runtimeapi.Metric {
	t.Helper()
	keys := map[string][]string{}
	for _, d := range Descriptors() {
		keys[d.GetName()] = d.GetLabelKeys()
	}
	byName := map[string][]*runtimeapi.Metric{}
	for _, m := range ms {
		k, ok := keys[m.GetName()]
		if !ok {
			t.Errorf("%s is reported but not described", m.GetName())
		}
		if len(m.GetLabelValues()) != len(k) {
			t.Errorf("%s: %d label values for %d keys", m.GetName(), len(m.GetLabelValues()), len(k))
		}
		byName[m.GetName()] = append(byName[m.GetName()], m)
	}
	return byName
}

func TestDescriptors(t *testing.T) {
	seen := map[string]bool{}
	for _, d := range Descriptors() {
		if seen[d.GetName()] {
			t.Errorf("%s described twice", d.GetName())
		}
		seen[d.GetName()] = true
		if d.GetHelp() == "" || !strings.HasPrefix(d.GetName(), "container_") {
			t.Errorf("%s: empty help or not a container_ metric", d.GetName())
		}
		if !slices.Equal(d.GetLabelKeys()[:len(baseLabels)], baseLabels) {
			t.Errorf("%s: labels %v do not start with the base labels", d.GetName(), d.GetLabelKeys())
		}
	}
	// The cAdvisor metrics kubelet dashboards use most.
	for _, name := range []string{
		"container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
		"container_network_receive_bytes_total", "container_fs_usage_bytes", "container_oom_events_total",
	} {
		if !seen[name] {
			t.Errorf("%s is not described", name)
		}
	}
}

func testSample() *container.Sample {
	start := time.Unix(1_700_000_000, 0)
	return &container.Sample{
		Container: &container.Container{ID: "c1", Name: "app", Image: "busybox", Key: "app_p_ns_uid_0", StartedAt: start},
		At:        start.Add(time.Minute),
		Cgroup: &cgroups.Stats{
			CpuStats: cgroups.CpuStats{
				CpuUsage:       cgroups.CpuUsage{TotalUsage: 3_500_000_000, UsageInUsermode: 2e9, UsageInKernelmode: 1e9},
				ThrottlingData: cgroups.ThrottlingData{Periods: 10, ThrottledPeriods: 4, ThrottledTime: 2e9},
			},
			MemoryStats: cgroups.MemoryStats{
				Usage: cgroups.MemoryData{Usage: 1000, MaxUsage: 1500, Failcnt: 2},
				Stats: map[string]uint64{"total_inactive_file": 300, "total_rss": 600, "total_cache": 400, "pgfault": 5, "total_pgfault": 7},
			},
			PidsStats: cgroups.PidsStats{Current: 2, Limit: 100},
			BlkioStats: cgroups.BlkioStats{
				IoServiceBytesRecursive: []cgroups.BlkioStatEntry{{Major: 254, Minor: 0, Op: "Read", Value: 4096}},
				IoServicedRecursive:     []cgroups.BlkioStatEntry{{Major: 254, Minor: 0, Op: "Read", Value: 1}},
			},
		},
		Pids:          []int{1, 2},
		WritableBytes: 8192,
	}
}

// TestContainerMetrics checks the values of a cgroup v1 sample and that
// every described container metric has one (block I/O and network aside).
func TestContainerMetrics(t *testing.T) {
	ms := containerMetrics(containerInput{
		sample: testSample(), podName: "p", podNamespace: "ns",
		resources: &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 20000, CpuShares: 1024, MemoryLimitInBytes: 64 << 20},
		procs:     processCounts{threads: 3, fds: 9, sockets: 1},
		oomKills:  1,
		fs:        fsInfo{device: "/var/lib/berth/containers", inodesFree: 10, inodesTotal: 20, limitBytes: 1 << 30},
	})
	byName := checkDescribed(t, ms)
	for _, d := range descriptors {
		// Block I/O exists only for the devices the kernel accounted; the
		// sample read one device, and wrote nothing.
		if strings.HasPrefix(d.name, "container_network_") || strings.HasPrefix(d.name, "container_fs_writes") {
			continue
		}
		if len(byName[d.name]) == 0 {
			t.Errorf("%s has no value", d.name)
		}
	}
	value := func(name string, labels ...string) uint64 {
		for _, m := range byName[name] {
			if slices.Equal(m.GetLabelValues()[len(baseLabels):], labels) {
				return m.GetValue().GetValue()
			}
		}
		t.Errorf("%s%v: no value", name, labels)
		return 0
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   uint64
	}{
		{"container_cpu_usage_seconds_total", []string{"total"}, 3},
		{"container_cpu_cfs_throttled_seconds_total", nil, 2},
		{"container_memory_working_set_bytes", nil, 700},
		{"container_memory_rss", nil, 600},
		{"container_memory_failures_total", []string{"pgfault", "hierarchy"}, 7},
		{"container_memory_failures_total", []string{"pgfault", "container"}, 5},
		{"container_oom_events_total", nil, 1},
		{"container_fs_usage_bytes", []string{"/var/lib/berth/containers"}, 8192},
		{"container_processes", nil, 2},
		{"container_threads_max", nil, 100},
		{"container_spec_cpu_quota", nil, 20000},
		{"container_spec_memory_limit_bytes", nil, 64 << 20},
		{"container_start_time_seconds", nil, 1_700_000_000},
	} {
		if got := value(tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %d, want %d", tc.name, tc.labels, got, tc.want)
		}
	}
	m := byName["container_cpu_usage_seconds_total"][0]
	if want := []string{"app", "c1", "busybox", "app_p_ns_uid_0", "ns", "p", "total"}; !slices.Equal(m.GetLabelValues(), want) {
		t.Errorf("labels %v, want %v", m.GetLabelValues(), want)
	}
	if m.GetMetricType() != runtimeapi.MetricType_COUNTER || byName["container_memory_rss"][0].GetMetricType() != runtimeapi.MetricType_GAUGE {
		t.Error("counter and gauge types are mixed up")
	}
}

func TestNetworkMetrics(t *testing.T) {
	p := &sandbox.Pod{ID: "p1", Name: "web", Namespace: "default"}
	ms := networkMetrics(p, []sandbox.InterfaceStats{{Name: "eth0", RxBytes: 100, RxPackets: 2, TxBytes: 50, TxDropped: 1}})
	byName := checkDescribed(t, ms)
	if len(ms) != 8 {
		t.Fatalf("%d network metrics for one interface, want 8", len(ms))
	}
	m := byName["container_network_receive_bytes_total"][0]
	if m.GetValue().GetValue() != 100 || !slices.Equal(m.GetLabelValues(), []string{"POD", "p1", "", "web", "default", "web", "eth0"}) {
		t.Errorf("receive bytes: %v", m)
	}
	if v := byName["container_network_transmit_packets_dropped_total"][0].GetValue().GetValue(); v != 1 {
		t.Errorf("transmit drops = %d, want 1", v)
	}
}

func TestEmitterDropsUndescribed(t *testing.T) {
	e := &emitter{base: make([]string, len(baseLabels))}
	e.add("container_no_such_metric", 1)
	e.add("container_cpu_usage_seconds_total", 1) // missing its cpu label
	if len(e.out) != 0 {
		t.Errorf("emitted %v", e.out)
	}
}

func TestCountProcesses(t *testing.T) {
	pc := countProcesses([]int{os.Getpid(), 1 << 30}) // the second does not exist
	if pc.threads < 1 || pc.fds < 3 {
		t.Errorf("own process: %+v", pc)
	}
	if got := keyedValue([]byte("oom 0\noom_kill 3\n"), "oom_kill"); got != 3 {
		t.Errorf("keyedValue = %d", got)
	}
}

func TestBlkioMetrics(t *testing.T) {
	e := &emitter{base: make([]string, len(baseLabels))}
	blkioMetrics(e, cgroups.BlkioStats{
		IoServiceBytesRecursive: []cgroups.BlkioStatEntry{
			{Major: 8, Minor: 0, Op: "Read", Value: 4096}, {Major: 8, Minor: 0, Op: "Write", Value: 512},
			{Major: 8, Minor: 0, Op: "Total", Value: 4608}, {Major: 8, Minor: 16, Op: "write", Value: 100},
		},
		IoServicedRecursive: []cgroups.BlkioStatEntry{
			{Major: 8, Minor: 0, Op: "Read", Value: 3}, {Major: 8, Minor: 0, Op: "Write", Value: 2},
			{Major: 8, Minor: 16, Op: "write", Value: 1},
		},
	})
	got := map[string]uint64{}
	for _, m := range e.out {
		l := m.GetLabelValues()[len(baseLabels):]
		if len(l) == 1 {
			got[m.GetName()+" "+l[0]] = m.GetValue().GetValue()
		}
	}
	sda, sdb := deviceName(8, 0), deviceName(8, 16)
	want := map[string]uint64{
		"container_fs_reads_bytes_total " + sda: 4096, "container_fs_reads_total " + sda: 3,
		"container_fs_writes_bytes_total " + sda: 512, "container_fs_writes_total " + sda: 2,
		"container_fs_writes_bytes_total " + sdb: 100, "container_fs_writes_total " + sdb: 1,
	}
	if !maps.Equal(got, want) {
		t.Errorf("per-device I/O %v, want %v", got, want)
	}
}
