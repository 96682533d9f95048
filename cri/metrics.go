package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Metrics reports cAdvisor-style pod and container metrics
// (metrics.Collector).
type Metrics interface {
	Descriptors() []*runtimeapi.MetricDescriptor
	PodSandboxMetrics() []*runtimeapi.PodSandboxMetrics
}

func (s *Server) metrics() (Metrics, error) {
	if s.opts.Metrics == nil {
		return nil, fmt.Errorf("metrics are not configured: %w", errdefs.ErrNotImplemented)
	}
	return s.opts.Metrics, nil
}

// ListMetricDescriptors lists the metrics ListPodSandboxMetrics reports.
func (s *Server) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	m, err := s.metrics()
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListMetricDescriptorsResponse{Descriptors: m.Descriptors()}, nil
}

// ListPodSandboxMetrics reports every pod's metrics.
func (s *Server) ListPodSandboxMetrics(ctx context.Context, req *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	m, err := s.metrics()
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListPodSandboxMetricsResponse{PodMetrics: m.PodSandboxMetrics()}, nil
}

// StreamPodSandboxMetrics sends every pod's metrics in chunks, then ends.
func (s *Server) StreamPodSandboxMetrics(req *runtimeapi.StreamPodSandboxMetricsRequest, stream runtimeapi.RuntimeService_StreamPodSandboxMetricsServer) error {
	m, err := s.metrics()
	if err != nil {
		return err
	}
	items := m.PodSandboxMetrics()
	for start := 0; start < len(items); start += streamChunk {
		end := min(start+streamChunk, len(items))
		if err := stream.Send(&runtimeapi.StreamPodSandboxMetricsResponse{PodSandboxMetrics: items[start:end]}); err != nil {
			return err
		}
	}
	return nil
}
