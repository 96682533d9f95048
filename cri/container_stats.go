package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
)

// ContainerStats reports one container's resource use.
func (s *Server) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	st, err := s.opts.Containers.Stats(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: st}, nil
}

// ListContainerStats reports the resource use of the containers the filter
// selects.
func (s *Server) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	return &runtimeapi.ListContainerStatsResponse{Stats: s.listContainerStats(req.GetFilter())}, nil
}

// StreamContainerStats sends the filtered stats in chunks, then ends.
func (s *Server) StreamContainerStats(req *runtimeapi.StreamContainerStatsRequest, stream runtimeapi.RuntimeService_StreamContainerStatsServer) error {
	items := s.listContainerStats(req.GetFilter())
	for start := 0; start < len(items); start += streamChunk {
		end := min(start+streamChunk, len(items))
		if err := stream.Send(&runtimeapi.StreamContainerStatsResponse{ContainerStats: items[start:end]}); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) listContainerStats(f *runtimeapi.ContainerStatsFilter) []*runtimeapi.ContainerStats {
	keep := map[string]bool{}
	for _, c := range s.filterContainers(f.GetId(), f.GetPodSandboxId(), f.GetLabelSelector()) {
		keep[c.ID] = true
	}
	return s.opts.Containers.ListStats(func(c *container.Container) bool { return keep[c.ID] })
}
