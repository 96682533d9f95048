package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
)

// criVersion is the CRI API version berth speaks.
const criVersion = "v1"

// Version reports the runtime's name and version.
func (s *Server) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           "0.1.0", // version of the kubelet runtime API (fixed by the CRI)
		RuntimeName:       s.opts.RuntimeName,
		RuntimeVersion:    s.opts.RuntimeVersion,
		RuntimeApiVersion: criVersion,
	}, nil
}

// Status reports whether the runtime and the pod network are ready.
func (s *Server) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	runtimeReady := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	networkReady := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if err := s.opts.Network.Ready(); err != nil {
		networkReady.Status = false
		networkReady.Reason = "NetworkPluginNotReady"
		networkReady.Message = err.Error()
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{runtimeReady, networkReady}},
		RuntimeHandlers: []*runtimeapi.RuntimeHandler{{
			Name: "",
			Features: &runtimeapi.RuntimeHandlerFeatures{
				// Mounts with recursive_read_only become runc's "rro"
				// (mount_setattr, kernel 5.12 and later).
				RecursiveReadOnlyMounts: true,
				// Pods with UsernsOptions mode POD get a user namespace that
				// owns their net/IPC/UTS namespaces, and idmapped rootfs
				// layers and volumes (kernel 6.3 and later for tmpfs).
				UserNamespaces: true,
			},
		}},
		Features: &runtimeapi.RuntimeFeatures{
			// Merge and Strict are honoured, and ContainerStatus.user
			// reports the ids the process really has.
			SupplementalGroupsPolicy: true,
			// UserNamespacesHostNetwork stays false: a pod user namespace
			// cannot mount sysfs over the host's network namespace, and
			// RunPodSandbox refuses the combination.
		},
	}
	if req.GetVerbose() {
		info, err := s.verboseInfo()
		if err != nil {
			return nil, err
		}
		resp.Info = info
	}
	return resp, nil
}

func (s *Server) verboseInfo() (map[string]string, error) {
	cfg, err := json.Marshal(s.opts.EffectiveConfig)
	if err != nil {
		return nil, fmt.Errorf("encode effective config: %w", err)
	}
	cidr, err := json.Marshal(s.opts.Network.PodCIDR())
	if err != nil {
		return nil, fmt.Errorf("encode pod CIDR: %w", err)
	}
	driver, _ := json.Marshal(s.opts.CgroupDriver)
	security, _ := json.Marshal(container.DetectHostSecurity())
	info := map[string]string{
		"config":       string(cfg),
		"podCIDR":      string(cidr),
		"cgroupDriver": string(driver),
		// Which security modules containers can be confined with here.
		"security": string(security),
	}
	if s.opts.Streaming != nil {
		u, _ := json.Marshal(s.opts.Streaming.URL())
		info["streamingURL"] = string(u)
	}
	return info, nil
}

// RuntimeConfig reports the cgroup driver; kubelet reads it once at start
// and uses it over its own setting.
func (s *Server) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	driver := runtimeapi.CgroupDriver_CGROUPFS
	if s.opts.CgroupDriver == "systemd" {
		driver = runtimeapi.CgroupDriver_SYSTEMD
	}
	return &runtimeapi.RuntimeConfigResponse{
		Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: driver},
	}, nil
}

// UpdateRuntimeConfig records the pod CIDR kubelet hands down.
func (s *Server) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	cidr := req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()
	if cidr == "" {
		// kubelet sends an empty config when it has no CIDR; nothing to keep.
		return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
	}
	// Dual-stack nodes get "v4cidr,v6cidr".
	for _, c := range strings.Split(cidr, ",") {
		if _, _, err := net.ParseCIDR(strings.TrimSpace(c)); err != nil {
			return nil, fmt.Errorf("pod CIDR %q: %w", cidr, errdefs.ErrInvalidArgument)
		}
	}
	if err := s.opts.Network.SetPodCIDR(cidr); err != nil {
		return nil, fmt.Errorf("update pod CIDR: %w", err)
	}
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}
