package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
)

// Containers manages containers (container.Manager).
type Containers interface {
	Create(ctx context.Context, podID string, cfg *runtimeapi.ContainerConfig) (string, error)
	Start(ctx context.Context, id string) error
	Stop(ctx context.Context, id string, timeout time.Duration) error
	Remove(ctx context.Context, id string) error
	// Get resolves an ID or unique ID prefix; unknown is ErrNotFound.
	Get(id string) (*container.Container, error)
	List() []*container.Container
	// Spec returns the container's OCI runtime spec.
	Spec(c *container.Container) (json.RawMessage, error)
	ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (*container.ExecResult, error)
	UpdateResources(ctx context.Context, id string, r *runtimeapi.LinuxContainerResources) error
	ReopenLog(id string) error
	Stats(id string) (*runtimeapi.ContainerStats, error)
	ListStats(keep func(*container.Container) bool) []*runtimeapi.ContainerStats
}

// CreateContainer creates a container in a ready pod.
func (s *Server) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	if req.GetConfig() == nil {
		return nil, fmt.Errorf("container config is required: %w", errdefs.ErrInvalidArgument)
	}
	id, err := s.opts.Containers.Create(ctx, req.GetPodSandboxId(), req.GetConfig())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

// StartContainer starts a created container.
func (s *Server) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	if err := s.opts.Containers.Start(ctx, req.GetContainerId()); err != nil {
		return nil, err
	}
	return &runtimeapi.StartContainerResponse{}, nil
}

// StopContainer stops a container; stopping one that is gone succeeds
// (api.proto: idempotent).
func (s *Server) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	if req.GetTimeout() < 0 {
		return nil, fmt.Errorf("stop timeout %d is negative: %w", req.GetTimeout(), errdefs.ErrInvalidArgument)
	}
	err := s.opts.Containers.Stop(ctx, req.GetContainerId(), time.Duration(req.GetTimeout())*time.Second)
	if err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

// RemoveContainer removes a container; removing one that is gone succeeds.
func (s *Server) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	if err := s.opts.Containers.Remove(ctx, req.GetContainerId()); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// ContainerStatus reports one container; an unknown one is NotFound.
func (s *Server) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	c, err := s.opts.Containers.Get(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	st, err := containerStatus(c)
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if req.GetVerbose() {
		info := map[string]any{"pid": c.Pid, "sandboxID": c.PodID, "monitorPid": c.Monitor.Pid, "bundle": c.Bundle}
		if spec, err := s.opts.Containers.Spec(c); err == nil {
			info["runtimeSpec"] = spec
		}
		data, err := json.Marshal(info)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(data)}
	}
	return resp, nil
}

// ListContainers lists containers, filtered by ID prefix, pod, state and
// labels.
func (s *Server) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	items, err := s.listContainers(req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListContainersResponse{Containers: items}, nil
}

// StreamContainers sends the filtered list in chunks, then ends.
func (s *Server) StreamContainers(req *runtimeapi.StreamContainersRequest, stream runtimeapi.RuntimeService_StreamContainersServer) error {
	items, err := s.listContainers(req.GetFilter())
	if err != nil {
		return err
	}
	for start := 0; start < len(items); start += streamChunk {
		end := min(start+streamChunk, len(items))
		if err := stream.Send(&runtimeapi.StreamContainersResponse{Containers: items[start:end]}); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) listContainers(f *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	var out []*runtimeapi.Container
	for _, c := range s.filterContainers(f.GetId(), f.GetPodSandboxId(), f.GetLabelSelector()) {
		if f.GetState() != nil && c.CRIState() != f.GetState().GetState() {
			continue
		}
		out = append(out, &runtimeapi.Container{
			Id: c.ID, PodSandboxId: c.PodID, Metadata: containerMetadata(c),
			Image: &runtimeapi.ImageSpec{Image: c.Image}, ImageRef: c.ImageRef, ImageId: c.ImageID,
			State: c.CRIState(), CreatedAt: c.CreatedAt.UnixNano(),
			Labels: c.Labels, Annotations: c.Annotations,
		})
	}
	return out, nil
}

// filterContainers applies the ID prefix, pod ID prefix and label filters
// every list and stats call shares.
func (s *Server) filterContainers(id, podID string, selector map[string]string) []*container.Container {
	var out []*container.Container
	for _, c := range s.opts.Containers.List() {
		// Not there until created (and approved by NRI plugins).
		if c.State == container.StateCreating {
			continue
		}
		if id != "" && !strings.HasPrefix(c.ID, id) {
			continue
		}
		if podID != "" && !strings.HasPrefix(c.PodID, podID) {
			continue
		}
		if !labelsMatch(c.Labels, selector) {
			continue
		}
		out = append(out, c)
	}
	return out
}

func containerMetadata(c *container.Container) *runtimeapi.ContainerMetadata {
	return &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: c.Attempt}
}

func containerStatus(c *container.Container) (*runtimeapi.ContainerStatus, error) {
	cfg, err := c.ContainerConfig()
	if err != nil {
		return nil, err
	}
	st := &runtimeapi.ContainerStatus{
		Id: c.ID, Metadata: containerMetadata(c), State: c.CRIState(),
		CreatedAt: c.CreatedAt.UnixNano(),
		Image:     &runtimeapi.ImageSpec{Image: c.Image}, ImageRef: c.ImageRef, ImageId: c.ImageID,
		ExitCode: c.ExitCode, Reason: c.Reason, Message: c.Message,
		Labels: c.Labels, Annotations: c.Annotations,
		Mounts: cfg.GetMounts(), LogPath: c.LogPath,
		User: &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{
			Uid: int64(c.UID), Gid: int64(c.GID), SupplementalGroups: groups(c.GID, c.Groups),
		}},
	}
	if !c.StartedAt.IsZero() {
		st.StartedAt = c.StartedAt.UnixNano()
	}
	if !c.FinishedAt.IsZero() {
		st.FinishedAt = c.FinishedAt.UnixNano()
	}
	if r := cfg.GetLinux().GetResources(); r != nil {
		st.Resources = &runtimeapi.ContainerResources{Linux: r}
	}
	if sig, ok := runtimeapi.Signal_value["SIGNAL_"+c.StopSignal]; ok {
		st.StopSignal = runtimeapi.Signal(sig)
	}
	return st, nil
}

// groups is the process's group list as `id -G` shows it and kubelet
// expects it reported: the primary group, then the supplementary ones.
func groups(gid uint32, extra []uint32) []int64 {
	out := []int64{int64(gid)}
	for _, v := range extra {
		if !slices.Contains(out, int64(v)) {
			out = append(out, int64(v))
		}
	}
	return out
}

// UpdateContainerResources changes a container's cgroup limits.
func (s *Server) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	if err := s.opts.Containers.UpdateResources(ctx, req.GetContainerId(), req.GetLinux()); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

// ReopenContainerLog makes the container's monitor reopen its log file
// after kubelet rotated it.
func (s *Server) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	if err := s.opts.Containers.ReopenLog(req.GetContainerId()); err != nil {
		return nil, err
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}

// ExecSync runs a command in a container and returns its output and exit
// code; a timeout is DeadlineExceeded.
func (s *Server) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if len(req.GetCmd()) == 0 {
		return nil, fmt.Errorf("exec: cmd is empty: %w", errdefs.ErrInvalidArgument)
	}
	if req.GetTimeout() < 0 {
		return nil, fmt.Errorf("exec: timeout %d is negative: %w", req.GetTimeout(), errdefs.ErrInvalidArgument)
	}
	r, err := s.opts.Containers.ExecSync(ctx, req.GetContainerId(), req.GetCmd(), time.Duration(req.GetTimeout())*time.Second)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecSyncResponse{Stdout: r.Stdout, Stderr: r.Stderr, ExitCode: r.ExitCode}, nil
}
