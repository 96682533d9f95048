package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/sandbox"
)

// Streaming hands out the URLs of exec, attach and port-forward sessions
// (streaming.Server). It checks the protocol's rules; the handlers here
// check the containers and pods.
type Streaming interface {
	GetExec(*runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error)
	GetAttach(*runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error)
	GetPortForward(*runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error)
	// URL is where the server listens, shown by verbose Status.
	URL() string
}

// Exec returns the URL of a session running a command in a running
// container.
func (s *Server) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if len(req.GetCmd()) == 0 {
		return nil, fmt.Errorf("exec: cmd is empty: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.runningContainer("exec in", req.GetContainerId())
	if err != nil {
		return nil, err
	}
	streaming, err := s.streaming()
	if err != nil {
		return nil, err
	}
	// The full ID: a prefix could name another container by the time the
	// client connects.
	req = &runtimeapi.ExecRequest{ContainerId: c.ID, Cmd: req.GetCmd(), Tty: req.GetTty(), Stdin: req.GetStdin(), Stdout: req.GetStdout(), Stderr: req.GetStderr()}
	return streaming.GetExec(req)
}

// Attach returns the URL of a session attached to a running container's
// main process.
func (s *Server) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	c, err := s.runningContainer("attach to", req.GetContainerId())
	if err != nil {
		return nil, err
	}
	streaming, err := s.streaming()
	if err != nil {
		return nil, err
	}
	req = &runtimeapi.AttachRequest{ContainerId: c.ID, Tty: req.GetTty(), Stdin: req.GetStdin(), Stdout: req.GetStdout(), Stderr: req.GetStderr()}
	return streaming.GetAttach(req)
}

// PortForward returns the URL of a session forwarding TCP connections to
// ports of a ready pod.
func (s *Server) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	for _, p := range req.GetPort() {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("port-forward: port %d is outside 1-65535: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	pod, err := s.opts.Sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if pod.State != sandbox.StateReady {
		return nil, fmt.Errorf("port-forward to pod %s: it is %s, not ready: %w", pod.ID, pod.State, errdefs.ErrFailedPrecondition)
	}
	streaming, err := s.streaming()
	if err != nil {
		return nil, err
	}
	return streaming.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: pod.ID, Port: req.GetPort()})
}

// runningContainer resolves a container that a session can reach: unknown
// is NotFound, not running is FailedPrecondition.
func (s *Server) runningContainer(what, id string) (*container.Container, error) {
	if id == "" {
		return nil, fmt.Errorf("%s container: container_id is required: %w", what, errdefs.ErrInvalidArgument)
	}
	c, err := s.opts.Containers.Get(id)
	if err != nil {
		return nil, err
	}
	if c.State != container.StateRunning {
		return nil, fmt.Errorf("%s container %s: it is %s, not running: %w", what, c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	return c, nil
}

func (s *Server) streaming() (Streaming, error) {
	if s.opts.Streaming == nil {
		return nil, fmt.Errorf("no streaming server: %w", errdefs.ErrUnavailable)
	}
	return s.opts.Streaming, nil
}
