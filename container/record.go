package container

import (
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/monitor"
)

// State is a container's lifecycle state.
type State string

// Container states. Creating and Removing are intents: Recover finishes or
// undoes them after a crash.
const (
	StateCreating State = "creating"
	StateCreated  State = "created"
	StateRunning  State = "running"
	StateExited   State = "exited"
	StateRemoving State = "removing"
)

// Container is one container's persistent record.
type Container struct {
	ID    string `json:"id"`
	PodID string `json:"podId"`
	// Key is the reserved name: name_podname_podnamespace_poduid_attempt.
	Key         string            `json:"key"`
	Name        string            `json:"name"`
	Attempt     uint32            `json:"attempt"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`

	// Image is the image as the config named it; ImageID the resolved
	// image ID; ImageRef the digest reference kubelet reports.
	Image    string `json:"image"`
	ImageID  string `json:"imageId"`
	ImageRef string `json:"imageRef"`

	LogPath    string    `json:"logPath,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	State      State     `json:"state"`
	Pid        int       `json:"pid,omitempty"`
	ExitCode   int32     `json:"exitCode"`
	Reason     string    `json:"reason,omitempty"`
	Message    string    `json:"message,omitempty"`

	Monitor monitor.Handle `json:"monitor"`
	// Bundle is the volatile directory (spec, monitor socket, exit record);
	// Dir the persistent one (writable layer, image volumes).
	Bundle string `json:"bundle"`
	Dir    string `json:"dir"`
	// RootfsMounted says the overlay root is mounted at Dir/rootfs.
	RootfsMounted bool `json:"rootfsMounted,omitempty"`
	// ImageVolumes are the images mounted into the container, each holding
	// its image's layers until the container is removed.
	ImageVolumes []ImageVolume `json:"imageVolumes,omitempty"`

	StopSignal string `json:"stopSignal,omitempty"`
	// TerminationMessageHostPath is the host side of the termination
	// message mount, read into Message when the container exits.
	TerminationMessageHostPath string   `json:"terminationMessageHostPath,omitempty"`
	UID                        uint32   `json:"uid"`
	GID                        uint32   `json:"gid"`
	Groups                     []uint32 `json:"groups,omitempty"`

	// Config is the ContainerConfig as protojson (mounts, resources,
	// stdin/tty); UpdateContainerResources rewrites its resources.
	Config json.RawMessage `json:"config"`
}

// ContainerConfig decodes the recorded config.
func (c *Container) ContainerConfig() (*runtimeapi.ContainerConfig, error) {
	cfg := &runtimeapi.ContainerConfig{}
	if err := protojson.Unmarshal(c.Config, cfg); err != nil {
		return nil, fmt.Errorf("container %s: decode config: %w", c.ID, err)
	}
	return cfg, nil
}

func (c *Container) clone() *Container {
	d := *c
	d.Labels = maps.Clone(c.Labels)
	d.Annotations = maps.Clone(c.Annotations)
	d.Config = append(json.RawMessage(nil), c.Config...)
	d.Groups = append([]uint32(nil), c.Groups...)
	d.ImageVolumes = append([]ImageVolume(nil), c.ImageVolumes...)
	return &d
}

// CRIState maps the record's state to the CRI's.
func (c *Container) CRIState() runtimeapi.ContainerState {
	switch c.State {
	case StateCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case StateRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case StateExited:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}
