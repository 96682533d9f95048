// Package metrics turns pod and container usage into the cAdvisor-style
// metrics kubelet serves on /metrics/cadvisor when it takes pod and
// container stats from the runtime (the PodAndContainerStatsFromCRI gate):
// the CRI ListMetricDescriptors and ListPodSandboxMetrics RPCs.
//
// The names, help texts and meanings are cAdvisor's, so dashboards and
// alerts written against cAdvisor keep working. Values are unsigned
// integers, as the CRI carries them: seconds are whole seconds.
package metrics

import (
	"slices"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// baseLabels are the labels kubelet's cAdvisor metrics carry; every metric
// has them, in this order, then its own.
var baseLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

type descriptor struct {
	name, help string
	counter    bool
	// labels are the metric's own labels, after baseLabels.
	labels []string
}

// descriptors lists every metric berth reports, and only those: a metric
// described here must have a value for each running container (or, for
// the network ones, each pod with a network namespace), except the block
// I/O ones, which exist only where the kernel accounts I/O to a device.
// Not here, on purpose: hugetlb (no hugetlb controller in use on cgroup v1
// hosts of this kind), PSI (cgroup v2 only), memory reservation and soft
// ulimits (not kept by berth).
var descriptors = []descriptor{
	// CPU.
	{"container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", true, []string{"cpu"}},
	{"container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", true, nil},
	{"container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", true, nil},
	{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", true, nil},
	{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", true, nil},
	{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", true, nil},

	// Memory.
	{"container_memory_cache", "Number of bytes of page cache memory.", false, nil},
	{"container_memory_rss", "Size of RSS in bytes.", false, nil},
	{"container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", false, nil},
	{"container_memory_mapped_file", "Size of memory mapped files in bytes.", false, nil},
	{"container_memory_swap", "Container swap usage in bytes.", false, nil},
	{"container_memory_failcnt", "Number of memory usage hits limits", true, nil},
	{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", false, nil},
	{"container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", false, nil},
	{"container_memory_working_set_bytes", "Current working set in bytes.", false, nil},
	{"container_memory_failures_total", "Cumulative count of memory allocation failures.", true, []string{"failure_type", "scope"}},
	{"container_oom_events_total", "Count of out of memory events observed for the container", true, nil},

	// File systems and block I/O.
	{"container_fs_inodes_free", "Number of available Inodes", false, []string{"device"}},
	{"container_fs_inodes_total", "Number of Inodes", false, []string{"device"}},
	{"container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", false, []string{"device"}},
	{"container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", false, []string{"device"}},
	{"container_fs_reads_bytes_total", "Cumulative count of bytes read", true, []string{"device"}},
	{"container_fs_reads_total", "Cumulative count of reads completed", true, []string{"device"}},
	{"container_fs_writes_bytes_total", "Cumulative count of bytes written", true, []string{"device"}},
	{"container_fs_writes_total", "Cumulative count of writes completed", true, []string{"device"}},
	{"container_blkio_device_usage_total", "Blkio Device bytes usage", true, []string{"device", "major", "minor", "operation"}},

	// Processes.
	{"container_processes", "Number of processes running inside the container.", false, nil},
	{"container_threads", "Number of threads running inside the container", false, nil},
	{"container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", false, nil},
	{"container_file_descriptors", "Number of open file descriptors for the container.", false, nil},
	{"container_sockets", "Number of open sockets for the container.", false, nil},

	// The container itself and its spec.
	{"container_last_seen", "Last time a container was seen by the exporter", false, nil},
	{"container_start_time_seconds", "Start time of the container since unix epoch in seconds.", false, nil},
	{"container_spec_cpu_period", "CPU period of the container.", false, nil},
	{"container_spec_cpu_quota", "CPU quota of the container.", false, nil},
	{"container_spec_cpu_shares", "CPU share of the container.", false, nil},
	{"container_spec_memory_limit_bytes", "Memory limit for the container.", false, nil},
	{"container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", false, nil},

	// The pod's network namespace.
	{"container_network_receive_bytes_total", "Cumulative count of bytes received", true, []string{"interface"}},
	{"container_network_receive_packets_total", "Cumulative count of packets received", true, []string{"interface"}},
	{"container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", true, []string{"interface"}},
	{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", true, []string{"interface"}},
	{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", true, []string{"interface"}},
	{"container_network_transmit_packets_total", "Cumulative count of packets transmitted", true, []string{"interface"}},
	{"container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", true, []string{"interface"}},
	{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", true, []string{"interface"}},
}

// byName indexes descriptors for the emitter.
var byName = func() map[string]descriptor {
	m := make(map[string]descriptor, len(descriptors))
	for _, d := range descriptors {
		m[d.name] = d
	}
	return m
}()

// Descriptors returns the CRI descriptors of every metric berth reports.
func Descriptors() []*runtimeapi.MetricDescriptor {
	out := make([]*runtimeapi.MetricDescriptor, 0, len(descriptors))
	for _, d := range descriptors {
		out = append(out, &runtimeapi.MetricDescriptor{
			Name: d.name, Help: d.help, LabelKeys: append(slices.Clone(baseLabels), d.labels...),
		})
	}
	return out
}

// emitter collects metrics sharing base label values.
type emitter struct {
	base []string
	out  []*runtimeapi.Metric
}

// add appends a value of the described metric name with its own label
// values. A name that is not described is a programming error the tests
// catch; it is dropped rather than sent undescribed.
func (e *emitter) add(name string, v uint64, labels ...string) {
	d, ok := byName[name]
	if !ok || len(labels) != len(d.labels) {
		return
	}
	typ := runtimeapi.MetricType_GAUGE
	if d.counter {
		typ = runtimeapi.MetricType_COUNTER
	}
	e.out = append(e.out, &runtimeapi.Metric{
		Name: name, MetricType: typ,
		LabelValues: append(slices.Clone(e.base), labels...),
		Value:       &runtimeapi.UInt64Value{Value: v},
	})
}
