package cri

import (
	"context"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/sandbox"
)

func nowNano() int64 { return time.Now().UnixNano() }

// PodSandboxStats reports one pod's usage; an unknown pod is NotFound.
func (s *Server) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	p, err := s.opts.Sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	st, err := s.opts.Sandboxes.Stats(p.ID)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: podStats(p, st)}, nil
}

// ListPodSandboxStats reports the usage of the pods matching the filter. A
// pod that vanishes or cannot be read meanwhile is left out, not an error:
// one bad pod must not blind kubelet's summary to all the others.
func (s *Server) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	items, err := s.listPodStats(req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: items}, nil
}

// StreamPodSandboxStats sends the filtered stats in chunks, then ends.
func (s *Server) StreamPodSandboxStats(req *runtimeapi.StreamPodSandboxStatsRequest, stream runtimeapi.RuntimeService_StreamPodSandboxStatsServer) error {
	items, err := s.listPodStats(req.GetFilter())
	if err != nil {
		return err
	}
	for start := 0; start < len(items); start += streamChunk {
		end := min(start+streamChunk, len(items))
		if err := stream.Send(&runtimeapi.StreamPodSandboxStatsResponse{PodSandboxStats: items[start:end]}); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) listPodStats(f *runtimeapi.PodSandboxStatsFilter) ([]*runtimeapi.PodSandboxStats, error) {
	pods, err := s.filterPods(f.GetId(), f.GetLabelSelector())
	if err != nil {
		return nil, err
	}
	items := []*runtimeapi.PodSandboxStats{}
	for _, p := range pods {
		st, err := s.opts.Sandboxes.Stats(p.ID)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			s.log.Warn("pod stats", "pod", p.ID, "error", err)
			continue
		}
		items = append(items, podStats(p, st))
	}
	return items, nil
}

func u64(v uint64) *runtimeapi.UInt64Value { return &runtimeapi.UInt64Value{Value: v} }

func podStats(p *sandbox.Pod, st *sandbox.Stats) *runtimeapi.PodSandboxStats {
	ts := st.Timestamp.UnixNano()
	linux := &runtimeapi.LinuxPodSandboxStats{}
	if st.HasCgroup {
		linux.Cpu = &runtimeapi.CpuUsage{
			Timestamp:            ts,
			UsageCoreNanoSeconds: u64(st.CPUUsageNanos),
			UsageNanoCores:       u64(st.CPUNanoCores),
		}
		linux.Memory = &runtimeapi.MemoryUsage{
			Timestamp:       ts,
			WorkingSetBytes: u64(st.MemoryWorkingSet),
			AvailableBytes:  u64(st.MemoryAvailable),
			UsageBytes:      u64(st.MemoryUsage),
			RssBytes:        u64(st.MemoryRSS),
			PageFaults:      u64(st.PageFaults),
			MajorPageFaults: u64(st.MajorPageFaults),
		}
		linux.Process = &runtimeapi.ProcessUsage{Timestamp: ts, ProcessCount: u64(st.Processes)}
	}
	if len(st.Interfaces) > 0 {
		net := &runtimeapi.NetworkUsage{Timestamp: ts}
		for _, i := range st.Interfaces {
			u := &runtimeapi.NetworkInterfaceUsage{
				Name: i.Name, RxBytes: u64(i.RxBytes), RxErrors: u64(i.RxErrors),
				TxBytes: u64(i.TxBytes), TxErrors: u64(i.TxErrors),
			}
			net.Interfaces = append(net.Interfaces, u)
			if i.Name == "eth0" || net.DefaultInterface == nil {
				net.DefaultInterface = u
			}
		}
		linux.Network = net
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{
			Id: p.ID, Metadata: podMetadata(p), Labels: p.Labels, Annotations: p.Annotations,
		},
		Linux: linux,
	}
}
