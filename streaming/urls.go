package streaming

import (
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Request kinds: the first element of a streaming URL's path.
const (
	kindExec        = "exec"
	kindAttach      = "attach"
	kindPortForward = "portforward"
)

// GetExec validates an exec request and returns the URL to run it at.
func (s *Server) GetExec(req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if err := validateStreams(req.GetContainerId(), req.GetTty(), req.GetStdin(), req.GetStdout(), req.GetStderr()); err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	u, err := s.issue(kindExec, req)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecResponse{Url: u}, nil
}

// GetAttach validates an attach request and returns the URL to attach at.
func (s *Server) GetAttach(req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if err := validateStreams(req.GetContainerId(), req.GetTty(), req.GetStdin(), req.GetStdout(), req.GetStderr()); err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	u, err := s.issue(kindAttach, req)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.AttachResponse{Url: u}, nil
}

// GetPortForward validates a port-forward request and returns the URL to
// forward through.
func (s *Server) GetPortForward(req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, fmt.Errorf("port-forward: pod_sandbox_id is required: %w", errdefs.ErrInvalidArgument)
	}
	for _, p := range req.GetPort() {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("port-forward: port %d is outside 1-65535: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	u, err := s.issue(kindPortForward, req)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PortForwardResponse{Url: u}, nil
}

// validateStreams applies the protocol's rules to an exec or attach: a
// terminal merges stderr into stdout, and a session needs a stream.
func validateStreams(id string, tty, stdin, stdout, stderr bool) error {
	switch {
	case id == "":
		return fmt.Errorf("container_id is required: %w", errdefs.ErrInvalidArgument)
	case tty && stderr:
		return fmt.Errorf("tty and stderr cannot both be set (a terminal has one output): %w", errdefs.ErrInvalidArgument)
	case !stdin && !stdout && !stderr:
		return fmt.Errorf("one of stdin, stdout and stderr must be set: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

func (s *Server) issue(kind string, req any) (string, error) {
	s.mu.Lock()
	base := s.base
	s.mu.Unlock()
	if base == nil {
		return "", fmt.Errorf("streaming server is not running: %w", errdefs.ErrUnavailable)
	}
	token, err := s.tokens.issue(kind, req)
	if err != nil {
		return "", err
	}
	return base.JoinPath(kind, token).String(), nil
}
