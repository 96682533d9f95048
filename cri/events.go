package cri

import (
	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/events"
)

// GetContainerEvents streams container and pod lifecycle events, each with
// the pod's status and its containers' statuses, as kubelet's evented PLEG
// expects. A subscriber that falls too far behind is cut off (the stream
// ends) rather than holding the runtime up; kubelet then relists.
func (s *Server) GetContainerEvents(req *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	ch, cancel := s.opts.Events.Subscribe()
	defer cancel()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case e, ok := <-ch:
			if !ok {
				return errdefs.ErrUnavailable.WithMessage("event subscriber fell behind; resubscribe")
			}
			if err := stream.Send(s.eventResponse(e)); err != nil {
				return err
			}
		}
	}
}

func (s *Server) eventResponse(e events.Event) *runtimeapi.ContainerEventResponse {
	id := e.ContainerID
	if id == "" {
		id = e.PodID
	}
	resp := &runtimeapi.ContainerEventResponse{
		ContainerId:        id,
		ContainerEventType: runtimeapi.ContainerEventType(e.Type),
		CreatedAt:          e.Time.UnixNano(),
	}
	if p, err := s.opts.Sandboxes.Get(e.PodID); err == nil {
		resp.PodSandboxStatus = podStatus(p)
	}
	for _, c := range s.opts.Containers.List() {
		if c.PodID == e.PodID {
			if st, err := containerStatus(c); err == nil {
				resp.ContainersStatuses = append(resp.ContainersStatuses, st)
			}
		}
	}
	return resp
}
