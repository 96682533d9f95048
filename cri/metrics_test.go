package cri

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type fakeMetrics struct{ pods int }

func (f fakeMetrics) Descriptors() []*runtimeapi.MetricDescriptor {
	return []*runtimeapi.MetricDescriptor{{Name: "container_x", Help: "x", LabelKeys: []string{"id"}}}
}

func (f fakeMetrics) PodSandboxMetrics() []*runtimeapi.PodSandboxMetrics {
	out := make([]*runtimeapi.PodSandboxMetrics, f.pods)
	for i := range out {
		out[i] = &runtimeapi.PodSandboxMetrics{PodSandboxId: fmt.Sprint(i)}
	}
	return out
}

type metricsStream struct {
	runtimeapi.RuntimeService_StreamPodSandboxMetricsServer
	msgs []*runtimeapi.StreamPodSandboxMetricsResponse
}

func (s *metricsStream) Send(r *runtimeapi.StreamPodSandboxMetricsResponse) error {
	s.msgs = append(s.msgs, r)
	return nil
}

func TestMetricsRPCs(t *testing.T) {
	ctx := context.Background()
	s := NewServer(Options{Metrics: fakeMetrics{pods: streamChunk + 1}})
	d, err := s.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil || len(d.GetDescriptors()) != 1 {
		t.Fatalf("descriptors: %v, %v", d, err)
	}
	m, err := s.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil || len(m.GetPodMetrics()) != streamChunk+1 {
		t.Fatalf("pod metrics: %d, %v", len(m.GetPodMetrics()), err)
	}
	stream := &metricsStream{}
	if err := s.StreamPodSandboxMetrics(&runtimeapi.StreamPodSandboxMetricsRequest{}, stream); err != nil {
		t.Fatal(err)
	}
	if len(stream.msgs) != 2 || len(stream.msgs[1].GetPodSandboxMetrics()) != 1 {
		t.Errorf("stream sent %d chunks, want %d pods in 2", len(stream.msgs), streamChunk+1)
	}

	// Without a collector the RPCs say so, rather than report nothing.
	s = NewServer(Options{})
	if _, err := s.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{}); codeOf(err) != codes.Unimplemented {
		t.Errorf("descriptors without a collector: %v", err)
	}
	if err := s.StreamPodSandboxMetrics(&runtimeapi.StreamPodSandboxMetricsRequest{}, &metricsStream{}); codeOf(err) != codes.Unimplemented {
		t.Errorf("stream without a collector: %v", err)
	}
}
