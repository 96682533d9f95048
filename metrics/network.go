package metrics

import (
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/sandbox"
)

// podContainerName is the container label of pod-level metrics: cAdvisor
// reports a pod's network through its pause container, "POD".
const podContainerName = "POD"

// networkMetrics reports the counters of the interfaces in the pod's
// network namespace (loopback aside).
func networkMetrics(p *sandbox.Pod, ifs []sandbox.InterfaceStats) []*runtimeapi.Metric {
	e := &emitter{base: []string{podContainerName, p.ID, "", p.Name, p.Namespace, p.Name}}
	for _, i := range ifs {
		e.add("container_network_receive_bytes_total", i.RxBytes, i.Name)
		e.add("container_network_receive_packets_total", i.RxPackets, i.Name)
		e.add("container_network_receive_packets_dropped_total", i.RxDropped, i.Name)
		e.add("container_network_receive_errors_total", i.RxErrors, i.Name)
		e.add("container_network_transmit_bytes_total", i.TxBytes, i.Name)
		e.add("container_network_transmit_packets_total", i.TxPackets, i.Name)
		e.add("container_network_transmit_packets_dropped_total", i.TxDropped, i.Name)
		e.add("container_network_transmit_errors_total", i.TxErrors, i.Name)
	}
	return e.out
}
