package cri

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/sandbox"
)

// RunPodSandbox creates and starts a pod sandbox.
func (s *Server) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	if req.GetConfig() == nil {
		return nil, fmt.Errorf("pod sandbox config is required: %w", errdefs.ErrInvalidArgument)
	}
	// Only the default handler exists; a RuntimeClass naming another must
	// fail rather than silently run with the default.
	if h := req.GetRuntimeHandler(); h != "" {
		return nil, fmt.Errorf("runtime handler %q is not configured: %w", h, errdefs.ErrNotFound)
	}
	id, err := s.opts.Sandboxes.Run(ctx, req.GetConfig(), req.GetRuntimeHandler())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

// StopPodSandbox stops a pod; stopping a pod that is gone succeeds
// (api.proto: idempotent).
func (s *Server) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	if err := s.opts.Sandboxes.Stop(ctx, req.GetPodSandboxId()); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// RemovePodSandbox removes a pod and all it holds; removing a pod that is
// gone succeeds.
func (s *Server) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	if err := s.opts.Sandboxes.Remove(ctx, req.GetPodSandboxId()); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// UpdatePodSandboxResources applies an in-place pod resize to the pod
// cgroup. Kubelet calls it after resizing its own pod cgroup and treats it
// as best effort.
func (s *Server) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	if err := s.opts.Sandboxes.UpdateResources(ctx, req.GetPodSandboxId(), req.GetOverhead(), req.GetResources()); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdatePodSandboxResourcesResponse{}, nil
}

// PodSandboxStatus reports one pod; an unknown pod is NotFound.
func (s *Server) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	p, err := s.opts.Sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: podStatus(p), Timestamp: nowNano()}
	if req.GetVerbose() {
		info, err := podInfo(p)
		if err != nil {
			return nil, err
		}
		resp.Info = info
	}
	return resp, nil
}

// ListPodSandbox lists pods matching the filter.
func (s *Server) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	items, err := s.listPods(req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListPodSandboxResponse{Items: items}, nil
}

// streamChunk is how many items each message of a Stream* RPC carries, far
// below the 16 MiB message limit.
const streamChunk = 100

// StreamPodSandboxes sends the filtered list in chunks, then ends.
func (s *Server) StreamPodSandboxes(req *runtimeapi.StreamPodSandboxesRequest, stream runtimeapi.RuntimeService_StreamPodSandboxesServer) error {
	items, err := s.listPods(req.GetFilter())
	if err != nil {
		return err
	}
	for start := 0; start < len(items); start += streamChunk {
		end := min(start+streamChunk, len(items))
		if err := stream.Send(&runtimeapi.StreamPodSandboxesResponse{PodSandboxes: items[start:end]}); err != nil {
			return err
		}
	}
	return nil
}

// listPods applies a PodSandboxFilter: ID (or unique prefix), state, label
// selector (all must match).
func (s *Server) listPods(f *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	pods, err := s.filterPods(f.GetId(), f.GetLabelSelector())
	if err != nil {
		return nil, err
	}
	items := []*runtimeapi.PodSandbox{}
	for _, p := range pods {
		item := podItem(p)
		if f.GetState() != nil && item.State != f.GetState().GetState() {
			continue
		}
		items = append(items, item)
	}
	return items, nil
}

// filterPods returns the pods with id (a full ID or unique prefix; "" for
// all) whose labels include selector. An unknown ID matches nothing.
func (s *Server) filterPods(id string, selector map[string]string) ([]*sandbox.Pod, error) {
	var pods []*sandbox.Pod
	if id != "" {
		p, err := s.opts.Sandboxes.Get(id)
		if errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		pods = []*sandbox.Pod{p}
	} else {
		pods = s.opts.Sandboxes.List()
	}
	out := pods[:0]
	for _, p := range pods {
		// A pod still being made is not there yet: kubelet must not see
		// it half-made, nor NRI plugins before they approved it.
		if p.State == sandbox.StateCreating {
			continue
		}
		if labelsMatch(p.Labels, selector) {
			out = append(out, p)
		}
	}
	return out, nil
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// podState maps the record's state: a pod is READY only when fully built.
func podState(p *sandbox.Pod) runtimeapi.PodSandboxState {
	if p.State == sandbox.StateReady {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

func podMetadata(p *sandbox.Pod) *runtimeapi.PodSandboxMetadata {
	return &runtimeapi.PodSandboxMetadata{Name: p.Name, Uid: p.UID, Namespace: p.Namespace, Attempt: p.Attempt}
}

func podItem(p *sandbox.Pod) *runtimeapi.PodSandbox {
	return &runtimeapi.PodSandbox{
		Id:             p.ID,
		Metadata:       podMetadata(p),
		State:          podState(p),
		CreatedAt:      p.CreatedAt.UnixNano(),
		Labels:         p.Labels,
		Annotations:    p.Annotations,
		RuntimeHandler: p.RuntimeHandler,
	}
}

func namespaceMode(host bool) runtimeapi.NamespaceMode {
	if host {
		return runtimeapi.NamespaceMode_NODE
	}
	return runtimeapi.NamespaceMode_POD
}

func podStatus(p *sandbox.Pod) *runtimeapi.PodSandboxStatus {
	st := &runtimeapi.PodSandboxStatus{
		Id:             p.ID,
		Metadata:       podMetadata(p),
		State:          podState(p),
		CreatedAt:      p.CreatedAt.UnixNano(),
		Network:        &runtimeapi.PodSandboxNetworkStatus{},
		Labels:         p.Labels,
		Annotations:    p.Annotations,
		RuntimeHandler: p.RuntimeHandler,
	}
	if len(p.IPs) > 0 {
		st.Network.Ip = p.IPs[0]
		for _, ip := range p.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	pid := runtimeapi.NamespaceMode_CONTAINER
	switch p.PIDMode {
	case sandbox.PIDPod:
		pid = runtimeapi.NamespaceMode_POD
	case sandbox.PIDHost:
		pid = runtimeapi.NamespaceMode_NODE
	}
	st.Linux = &runtimeapi.LinuxPodSandboxStatus{
		Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{
			Network: namespaceMode(p.HostNetwork),
			Ipc:     namespaceMode(p.HostIPC),
			Pid:     pid,
		}},
	}
	return st
}

// podInfo is the verbose status (`crictl inspectp`): one JSON document
// under "info" with where the pod's pieces are.
func podInfo(p *sandbox.Pod) (map[string]string, error) {
	info := map[string]any{
		"pid":            p.InfraPID,
		"netns":          p.NetNS,
		"ipcns":          p.IPCNS,
		"utsns":          p.UTSNS,
		"pidns":          p.PIDNSPath(),
		"cgroup":         p.Cgroup,
		"hostname":       p.Hostname,
		"resolvConfPath": p.ResolvConfPath,
		"hostsPath":      p.HostsPath,
		"shmPath":        p.ShmPath,
		"network":        p.Network,
		"portMappings":   p.PortMappings,
		"state":          p.State,
		"config":         p.Config,
	}
	data, err := json.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("encode pod info: %w", err)
	}
	return map[string]string{"info": string(data)}, nil
}
