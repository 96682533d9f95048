// Package cri serves the CRI v1 RuntimeService and ImageService over gRPC.
// Handlers validate, convert between protobuf and berth's own types and
// delegate; the packages behind them do the work. Errors leave handlers as
// plain Go errors wrapping errdefs sentinels and become gRPC codes in one
// place (errors.go).
package cri

import (
	"context"
	"log/slog"
	"sync/atomic"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/events"
	"github.com/berth-runtime/berth/sandbox"
)

// Network is the pod network as the runtime status sees it.
type Network interface {
	// Ready returns nil when pods can be networked, else why not.
	Ready() error
	// SetPodCIDR records the node's pod CIDR handed down by kubelet.
	SetPodCIDR(cidr string) error
	// PodCIDR returns the last pod CIDR recorded.
	PodCIDR() string
}

// Sandboxes manages pod sandboxes (sandbox.Manager).
type Sandboxes interface {
	Run(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, runtimeHandler string) (string, error)
	Stop(ctx context.Context, id string) error
	Remove(ctx context.Context, id string) error
	// Get resolves an ID or unique ID prefix; unknown is ErrNotFound.
	Get(id string) (*sandbox.Pod, error)
	List() []*sandbox.Pod
	Stats(id string) (*sandbox.Stats, error)
	// UpdateResources applies a pod resize to the pod cgroup.
	UpdateResources(ctx context.Context, id string, overhead, resources *runtimeapi.LinuxContainerResources) error
}

// Options are what the server is built from; cmd/shim wires them.
type Options struct {
	// RuntimeName and RuntimeVersion are reported by Version.
	RuntimeName    string
	RuntimeVersion string
	// CgroupDriver is "cgroupfs" or "systemd", reported by RuntimeConfig.
	CgroupDriver string
	// EffectiveConfig is shown, as JSON, by verbose Status (`crictl info`).
	EffectiveConfig any
	Network         Network
	Sandboxes       Sandboxes
	Containers      Containers
	Images          Images
	// Streaming serves exec, attach and port-forward sessions; nil
	// answers those RPCs Unavailable.
	Streaming Streaming
	// Metrics reports cAdvisor-style metrics; nil answers the metrics
	// RPCs Unimplemented.
	Metrics Metrics
	// Events carries pod and container lifecycle events.
	Events *events.Broadcaster
	Logger *slog.Logger
}

// Server implements the CRI services. The Unimplemented types are embedded
// by value, as grpc requires, so every RPC berth has not built answers
// codes.Unimplemented rather than a fake success.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	opts  Options
	log   *slog.Logger
	ready atomic.Bool
}

// NewServer returns a server that answers Unavailable until SetReady.
func NewServer(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Server{opts: opts, log: opts.Logger}
}

// SetReady opens the server to requests once state is recovered.
func (s *Server) SetReady() { s.ready.Store(true) }
