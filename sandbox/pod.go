// Package sandbox builds and tears down pods: the shared network, IPC and UTS
// namespaces (pinned by bind mount, with no pause image), the pod's PID
// namespace init when asked for, the pod cgroup, the per-pod resolv.conf,
// hosts, hostname and /dev/shm, and the pod's CNI attachment.
//
// Every pod is a record in the state database written before the first side
// effect of RunPodSandbox (a write-ahead record: its state says which
// operation was under way), and every resource a pod can own is found from
// that record alone. Teardown is idempotent, so undoing a failed run,
// finishing a stop or remove that a crash interrupted, and a plain remove are
// the same code.
package sandbox

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cni"
)

// State is the lifecycle state of a pod record.
type State string

// Pod states. Creating, Stopping and Removing are the intents of an
// operation in progress; Recover finishes or undoes them after a crash.
const (
	StateCreating State = "creating"
	StateReady    State = "ready"
	StateStopping State = "stopping"
	StateNotReady State = "notready"
	StateRemoving State = "removing"
)

// PIDMode says where the pod's processes live.
type PIDMode string

// PID modes, from NamespaceOption.pid.
const (
	// PIDContainer gives every container its own PID namespace (the
	// default).
	PIDContainer PIDMode = "container"
	// PIDPod shares one PID namespace, held by the pod's init process.
	PIDPod PIDMode = "pod"
	// PIDHost uses the host's PID namespace.
	PIDHost PIDMode = "host"
)

// Pod is one pod sandbox as recorded: the persistent record and the API the
// containers issue builds on. Paths are empty where the pod uses the host's
// resource instead (host network, IPC, PID).
type Pod struct {
	ID string `json:"id"`
	// Key is the reserved name: name_namespace_uid_attempt.
	Key            string            `json:"key"`
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	UID            string            `json:"uid"`
	Attempt        uint32            `json:"attempt"`
	Labels         map[string]string `json:"labels,omitempty"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	RuntimeHandler string            `json:"runtimeHandler,omitempty"`
	CreatedAt      time.Time         `json:"createdAt"`
	State          State             `json:"state"`
	// Step is the step of the operation in progress, for logs after a
	// crash.
	Step string `json:"step,omitempty"`

	HostNetwork bool    `json:"hostNetwork,omitempty"`
	HostIPC     bool    `json:"hostIPC,omitempty"`
	PIDMode     PIDMode `json:"pidMode"`
	Hostname    string  `json:"hostname"`

	// NetNS, IPCNS and UTSNS are the pinned namespace files containers
	// join (configs.Namespace{Path: …}).
	NetNS string `json:"netns,omitempty"`
	IPCNS string `json:"ipcns,omitempty"`
	UTSNS string `json:"utsns,omitempty"`
	// UserNS is the pod's pinned user namespace, empty when the pod uses
	// the host's; UIDMappings and GIDMappings are its id maps (one range
	// each, from container id 0).
	UserNS      string                 `json:"userns,omitempty"`
	UIDMappings []specs.LinuxIDMapping `json:"uidMappings,omitempty"`
	GIDMappings []specs.LinuxIDMapping `json:"gidMappings,omitempty"`
	// NSDir holds the pinned namespace files.
	NSDir string `json:"nsDir"`

	// Dir holds HostnamePath, HostsPath and ResolvConfPath, which
	// containers bind-mount at /etc/hostname, /etc/hosts and
	// /etc/resolv.conf.
	Dir            string `json:"dir"`
	HostnamePath   string `json:"hostnamePath"`
	HostsPath      string `json:"hostsPath"`
	ResolvConfPath string `json:"resolvConfPath"`
	// ShmPath is the pod's /dev/shm (a tmpfs), empty with host IPC: then
	// containers bind the host's /dev/shm.
	ShmPath string `json:"shmPath,omitempty"`
	// RunDir is the pod's volatile directory (under the state dir).
	RunDir string `json:"runDir"`

	// Cgroup is the pod cgroup; containers go beneath it.
	Cgroup CgroupRef `json:"cgroup"`

	// Network is the CNI network the pod was attached to (empty with host
	// network); IPs are its addresses, IPv4 first.
	Network string `json:"network,omitempty"`
	// NetworkStarted is set before CNI ADD runs: teardown then owes a DEL.
	NetworkStarted bool              `json:"networkStarted,omitempty"`
	IPs            []string          `json:"ips,omitempty"`
	PortMappings   []cni.PortMapping `json:"portMappings,omitempty"`
	DNS            *cni.DNS          `json:"dns,omitempty"`
	Bandwidth      *cni.Bandwidth    `json:"bandwidth,omitempty"`

	// InfraPID and InfraStart identify the pod's PID namespace init (PID
	// mode pod); the start time (field 22 of /proc/pid/stat) tells it from
	// a later process that reused the pid.
	InfraPID   int    `json:"infraPid,omitempty"`
	InfraStart uint64 `json:"infraStart,omitempty"`

	// Config is the PodSandboxConfig as protojson, for the containers
	// issue (security context, log directory…).
	Config json.RawMessage `json:"config,omitempty"`
}

// PIDNSPath is the PID namespace containers of the pod join: the infra's,
// for PID mode pod; empty otherwise (a new namespace per container, or the
// host's with PIDHost).
func (p *Pod) PIDNSPath() string {
	if p.PIDMode != PIDPod || p.InfraPID == 0 {
		return ""
	}
	return fmt.Sprintf("/proc/%d/ns/pid", p.InfraPID)
}

// SandboxConfig decodes the recorded config.
func (p *Pod) SandboxConfig() (*runtimeapi.PodSandboxConfig, error) {
	cfg := &runtimeapi.PodSandboxConfig{}
	if len(p.Config) == 0 {
		return cfg, nil
	}
	if err := protojson.Unmarshal(p.Config, cfg); err != nil {
		return nil, fmt.Errorf("pod %s: decode config: %w", p.ID, err)
	}
	return cfg, nil
}

// clone returns a copy the caller may keep and change.
func (p *Pod) clone() *Pod {
	c := *p
	c.Labels = maps.Clone(p.Labels)
	c.Annotations = maps.Clone(p.Annotations)
	c.IPs = slices.Clone(p.IPs)
	c.PortMappings = slices.Clone(p.PortMappings)
	c.UIDMappings = slices.Clone(p.UIDMappings)
	c.GIDMappings = slices.Clone(p.GIDMappings)
	c.Config = slices.Clone(p.Config)
	if p.DNS != nil {
		d := *p.DNS
		c.DNS = &d
	}
	if p.Bandwidth != nil {
		b := *p.Bandwidth
		c.Bandwidth = &b
	}
	return &c
}

// attachment rebuilds the CNI attachment from the record, the same for ADD
// and for every later DEL.
func (p *Pod) attachment() cni.Attachment {
	return cni.Attachment{
		PodID:        p.ID,
		Name:         p.Name,
		Namespace:    p.Namespace,
		UID:          p.UID,
		NetNS:        p.NetNS,
		PortMappings: p.PortMappings,
		DNS:          p.DNS,
		Bandwidth:    p.Bandwidth,
	}
}

// nameKey is the reserved name of a pod, kubelet's makeSandboxName parts.
func nameKey(m *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("%s_%s_%s_%d", m.GetName(), m.GetNamespace(), m.GetUid(), m.GetAttempt())
}
