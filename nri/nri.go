// Package nri lets Node Resource Interface plugins see, adjust and refuse
// berth's pods and containers, through containerd's NRI adaptation (the
// same library containerd and CRI-O use, so plugins written for them work
// here). It implements the lifecycle hooks of the sandbox and container
// managers.
package nri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/sandbox"
)

// Config is the [nri] section of berth's configuration.
type Config struct {
	Enable bool
	// SocketPath is where external plugins connect.
	SocketPath string
	// PluginPath holds plugins berth starts itself; PluginConfigPath their
	// drop-in configuration.
	PluginPath       string
	PluginConfigPath string
	// RegistrationTimeout bounds a plugin's registration, RequestTimeout
	// each call to a plugin.
	RegistrationTimeout time.Duration
	RequestTimeout      time.Duration
	// DisableConnections refuses external plugins (only PluginPath ones).
	DisableConnections bool
}

// Pods is what NRI needs of the sandbox manager.
type Pods interface {
	List() []*sandbox.Pod
	Get(id string) (*sandbox.Pod, error)
}

// Containers is what NRI needs of the container manager.
type Containers interface {
	List() []*container.Container
	Spec(c *container.Container) (json.RawMessage, error)
	// SetResources applies a plugin's update without telling the plugins.
	SetResources(id string, r *runtimeapi.LinuxContainerResources) error
}

// NRI relays berth's pod and container lifecycle to the plugins. Its
// events are serialised, and a plugin that connects is synchronised with
// the pods and containers of that moment, never between two events.
type NRI struct {
	log        *slog.Logger
	pods       Pods
	containers Containers
	nri        *adaptation.Adaptation

	// mu serialises events and plugin synchronisation.
	mu sync.Mutex
}

// New returns the NRI relay of cfg; Start begins serving plugins.
func New(cfg Config, log *slog.Logger, pods Pods, containers Containers, version string) (*NRI, error) {
	n := &NRI{log: log, pods: pods, containers: containers}
	if cfg.RegistrationTimeout > 0 {
		adaptation.SetPluginRegistrationTimeout(cfg.RegistrationTimeout)
	}
	if cfg.RequestTimeout > 0 {
		adaptation.SetPluginRequestTimeout(cfg.RequestTimeout)
	}
	opts := []adaptation.Option{
		adaptation.WithPluginPath(cfg.PluginPath),
		adaptation.WithPluginConfigPath(cfg.PluginConfigPath),
		adaptation.WithSocketPath(cfg.SocketPath),
	}
	if cfg.DisableConnections {
		opts = append(opts, adaptation.WithDisabledExternalConnections())
	}
	if !cfg.DisableConnections {
		if err := os.MkdirAll(filepath.Dir(cfg.SocketPath), 0o755); err != nil {
			return nil, fmt.Errorf("nri: socket directory: %w", err)
		}
	}
	a, err := adaptation.New("berth", version, n.synchronize, n.update, opts...)
	if err != nil {
		return nil, fmt.Errorf("nri: %w", err)
	}
	n.nri = a
	return n, nil
}

// Start listens for plugins and starts those in the plugin path. Call it
// once berth's state is recovered: plugins are synchronised with it.
func (n *NRI) Start() error {
	if err := n.nri.Start(); err != nil {
		return fmt.Errorf("nri: start: %w", err)
	}
	return nil
}

// Stop disconnects every plugin and closes the socket.
func (n *NRI) Stop() { n.nri.Stop() }

// BlockSync implements sandbox.Hooks and container.Hooks.
func (n *NRI) BlockSync() func() {
	b := n.nri.BlockPluginSync()
	return b.Unblock
}

// synchronize hands a connecting plugin every pod and container.
func (n *NRI) synchronize(ctx context.Context, cb adaptation.SyncCB) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var pods []*api.PodSandbox
	for _, p := range n.pods.List() {
		if p.State != sandbox.StateCreating {
			pods = append(pods, podToNRI(p))
		}
	}
	var ctrs []*api.Container
	for _, c := range n.containers.List() {
		if c.State != container.StateCreating && c.State != container.StateRemoving {
			ctrs = append(ctrs, containerToNRI(c, n.specOf(c)))
		}
	}
	updates, err := cb(ctx, pods, ctrs)
	if err != nil {
		return err
	}
	return n.apply(updates)
}

// update carries out a plugin's unsolicited container updates and returns
// those that failed.
func (n *NRI) update(_ context.Context, updates []*adaptation.ContainerUpdate) ([]*adaptation.ContainerUpdate, error) {
	var failed []*adaptation.ContainerUpdate
	for _, u := range updates {
		if err := n.updateOne(u); err != nil {
			n.log.Warn("NRI plugin's container update failed", "container", u.GetContainerId(), "error", err)
			failed = append(failed, u)
		}
	}
	return failed, nil
}

// apply carries out container updates a plugin asked for with an event;
// one that fails, unless the plugin said to ignore that, is an error.
func (n *NRI) apply(updates []*api.ContainerUpdate) error {
	var errs []error
	for _, u := range updates {
		if err := n.updateOne(u); err != nil && !u.GetIgnoreFailure() {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (n *NRI) updateOne(u *api.ContainerUpdate) error {
	res := u.GetLinux().GetResources()
	if res == nil {
		return nil
	}
	if err := n.containers.SetResources(u.GetContainerId(), mergeResources(nil, res.ToOCI())); err != nil {
		return fmt.Errorf("update container %s: %w", u.GetContainerId(), err)
	}
	return nil
}

func (n *NRI) specOf(c *container.Container) *specs.Spec {
	raw, err := n.containers.Spec(c)
	if err != nil {
		return nil
	}
	var spec specs.Spec
	if json.Unmarshal(raw, &spec) != nil {
		return nil
	}
	return &spec
}

// RunPodSandbox implements sandbox.Hooks: a plugin's error refuses the pod.
func (n *NRI) RunPodSandbox(ctx context.Context, p *sandbox.Pod) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.nri.RunPodSandbox(ctx, &api.RunPodSandboxRequest{Pod: podToNRI(p)}); err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	return nil
}

// UpdatePodSandbox implements sandbox.Hooks: a plugin's error refuses the
// resize.
func (n *NRI) UpdatePodSandbox(ctx context.Context, p *sandbox.Pod, overhead, resources *runtimeapi.LinuxContainerResources) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, err := n.nri.UpdatePodSandbox(ctx, &api.UpdatePodSandboxRequest{
		Pod:                    podToNRI(p),
		OverheadLinuxResources: nriResources(overhead),
		LinuxResources:         nriResources(resources),
	})
	if err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	return nil
}

// PostUpdatePodSandbox implements sandbox.Hooks.
func (n *NRI) PostUpdatePodSandbox(ctx context.Context, p *sandbox.Pod) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.nri.PostUpdatePodSandbox(ctx, &api.PostUpdatePodSandboxRequest{Pod: podToNRI(p)}); err != nil {
		n.log.WarnContext(ctx, "NRI event failed", "event", "PostUpdatePodSandbox", "pod", p.ID, "error", err)
	}
}

// StopPodSandbox implements sandbox.Hooks.
func (n *NRI) StopPodSandbox(ctx context.Context, p *sandbox.Pod) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nri.StopPodSandbox(ctx, &api.StopPodSandboxRequest{Pod: podToNRI(p)})
}

// RemovePodSandbox implements sandbox.Hooks.
func (n *NRI) RemovePodSandbox(ctx context.Context, p *sandbox.Pod) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nri.RemovePodSandbox(ctx, &api.RemovePodSandboxRequest{Pod: podToNRI(p)})
}

// CreateContainer implements container.Hooks: plugins may adjust spec,
// update other containers, or refuse the container.
func (n *NRI) CreateContainer(ctx context.Context, pod *sandbox.Pod, c *container.Container, spec *specs.Spec) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	resp, err := n.nri.CreateContainer(ctx, &api.CreateContainerRequest{
		Pod:       podToNRI(pod),
		Container: containerToNRI(c, spec),
	})
	if err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	if err := adjust(spec, resp.GetAdjust()); err != nil {
		return fmt.Errorf("NRI: apply plugins' adjustment: %w", err)
	}
	if err := n.apply(resp.GetUpdate()); err != nil {
		return fmt.Errorf("NRI: apply plugins' updates: %w", err)
	}
	for _, e := range resp.GetEvict() {
		n.log.Warn("NRI plugin asked to evict a container; berth does not evict", "container", e.GetContainerId(), "reason", e.GetReason())
	}
	return nil
}

// PostCreateContainer implements container.Hooks.
func (n *NRI) PostCreateContainer(ctx context.Context, pod *sandbox.Pod, c *container.Container) {
	n.tell(ctx, "PostCreateContainer", func(p *api.PodSandbox, ctr *api.Container) error {
		return n.nri.PostCreateContainer(ctx, &api.PostCreateContainerRequest{Pod: p, Container: ctr})
	}, pod, c)
}

// StartContainer implements container.Hooks: a plugin's error refuses
// the start.
func (n *NRI) StartContainer(ctx context.Context, pod *sandbox.Pod, c *container.Container) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.nri.StartContainer(ctx, &api.StartContainerRequest{Pod: podToNRI(pod), Container: containerToNRI(c, n.specOf(c))}); err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	return nil
}

// UpdateContainer implements container.Hooks: plugins may change the
// resources kubelet asked for, update other containers, or refuse.
func (n *NRI) UpdateContainer(ctx context.Context, pod *sandbox.Pod, c *container.Container, r *runtimeapi.LinuxContainerResources) (*runtimeapi.LinuxContainerResources, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	resp, err := n.nri.UpdateContainer(ctx, &api.UpdateContainerRequest{
		Pod:            podOrID(pod, c),
		Container:      containerToNRI(c, n.specOf(c)),
		LinuxResources: nriResources(r),
	})
	if err != nil {
		return nil, fmt.Errorf("NRI: %w", err)
	}
	var others []*api.ContainerUpdate
	for _, u := range resp.GetUpdate() {
		switch {
		case u == nil:
		case u.GetContainerId() == c.ID:
			if res := u.GetLinux().GetResources(); res != nil {
				r = mergeResources(r, res.ToOCI())
			}
		default:
			others = append(others, u)
		}
	}
	if err := n.apply(others); err != nil {
		return nil, fmt.Errorf("NRI: apply plugins' updates: %w", err)
	}
	return r, nil
}

// PostUpdateContainer implements container.Hooks.
func (n *NRI) PostUpdateContainer(ctx context.Context, pod *sandbox.Pod, c *container.Container) {
	n.tell(ctx, "PostUpdateContainer", func(p *api.PodSandbox, ctr *api.Container) error {
		return n.nri.PostUpdateContainer(ctx, &api.PostUpdateContainerRequest{Pod: p, Container: ctr})
	}, pod, c)
}

// PostStartContainer implements container.Hooks.
func (n *NRI) PostStartContainer(ctx context.Context, pod *sandbox.Pod, c *container.Container) {
	n.tell(ctx, "PostStartContainer", func(p *api.PodSandbox, ctr *api.Container) error {
		return n.nri.PostStartContainer(ctx, &api.PostStartContainerRequest{Pod: p, Container: ctr})
	}, pod, c)
}

// StopContainer implements container.Hooks.
func (n *NRI) StopContainer(ctx context.Context, pod *sandbox.Pod, c *container.Container) {
	n.tell(ctx, "StopContainer", func(p *api.PodSandbox, ctr *api.Container) error {
		resp, err := n.nri.StopContainer(ctx, &api.StopContainerRequest{Pod: p, Container: ctr})
		if err != nil {
			return err
		}
		return n.apply(resp.GetUpdate())
	}, pod, c)
}

// RemoveContainer implements container.Hooks.
func (n *NRI) RemoveContainer(ctx context.Context, pod *sandbox.Pod, c *container.Container) {
	n.tell(ctx, "RemoveContainer", func(p *api.PodSandbox, ctr *api.Container) error {
		return n.nri.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: p, Container: ctr})
	}, pod, c)
}

// tell delivers an event plugins cannot refuse; a failure is logged.
func (n *NRI) tell(ctx context.Context, event string, send func(*api.PodSandbox, *api.Container) error, pod *sandbox.Pod, c *container.Container) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := send(podOrID(pod, c), containerToNRI(c, n.specOf(c))); err != nil {
		n.log.WarnContext(ctx, "NRI event failed", "event", event, "container", c.ID, "error", err)
	}
}
