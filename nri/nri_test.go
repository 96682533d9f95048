package nri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/sandbox"
)

type fakePods struct{ pods []*sandbox.Pod }

func (f *fakePods) List() []*sandbox.Pod { return f.pods }
func (f *fakePods) Get(id string) (*sandbox.Pod, error) {
	for _, p := range f.pods {
		if p.ID == id {
			return p, nil
		}
	}
	return nil, errors.New("not found")
}

type fakeContainers struct {
	mu      sync.Mutex
	ctrs    []*container.Container
	updates map[string]*runtimeapi.LinuxContainerResources
}

func (f *fakeContainers) List() []*container.Container { return f.ctrs }
func (f *fakeContainers) Spec(*container.Container) (json.RawMessage, error) {
	return json.Marshal(&specs.Spec{Process: &specs.Process{Args: []string{"sleep", "1"}}})
}
func (f *fakeContainers) SetResources(id string, r *runtimeapi.LinuxContainerResources) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates[id] = r
	return nil
}

// plugin is an NRI plugin, served by NRI's own stub over the socket: it
// records what it hears, refuses pods named "refused", adjusts every
// container and asks for an update of another.
type plugin struct {
	mu     sync.Mutex
	synced []string
	events []string
	ready  chan struct{}
}

func (p *plugin) record(e string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, e)
}

func (p *plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	p.mu.Lock()
	for _, x := range pods {
		p.synced = append(p.synced, "pod "+x.GetName())
	}
	for _, x := range ctrs {
		p.synced = append(p.synced, "container "+x.GetName()+" "+x.GetState().String())
	}
	p.mu.Unlock()
	close(p.ready)
	return nil, nil
}

func (p *plugin) RunPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("RunPodSandbox " + pod.GetName() + " " + pod.GetNamespace() + " " + pod.GetUid())
	if pod.GetName() == "refused" {
		return errors.New("not this one")
	}
	return nil
}

func (p *plugin) UpdatePodSandbox(_ context.Context, pod *api.PodSandbox, _, res *api.LinuxResources) error {
	p.record(fmt.Sprintf("UpdatePodSandbox %s %d", pod.GetName(), res.GetMemory().GetLimit().GetValue()))
	return nil
}

func (p *plugin) StopPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("StopPodSandbox " + pod.GetName())
	return nil
}

func (p *plugin) CreateContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	p.record("CreateContainer " + pod.GetName() + "/" + c.GetName() + " " + c.GetArgs()[0])
	adjust := &api.ContainerAdjustment{}
	adjust.AddEnv("FROM_PLUGIN", "yes")
	adjust.AddAnnotation("example.com/plugin", "seen")
	adjust.SetLinuxMemoryLimit(64 << 20)
	update := &api.ContainerUpdate{ContainerId: "other"}
	update.SetLinuxCPUShares(512)
	return adjust, []*api.ContainerUpdate{update}, nil
}

// UpdateContainer keeps the container on CPU 0 whatever kubelet asks.
func (p *plugin) UpdateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container, r *api.LinuxResources) ([]*api.ContainerUpdate, error) {
	p.record("UpdateContainer " + c.GetName())
	pin := &api.ContainerUpdate{ContainerId: c.GetId()}
	pin.SetLinuxCPUSetCPUs("0")
	return []*api.ContainerUpdate{pin}, nil
}

func (p *plugin) StopContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	p.record("StopContainer " + c.GetName() + " " + c.GetState().String())
	return nil, nil
}

func TestPluginSeesAdjustsAndRefuses(t *testing.T) {
	dir := t.TempDir()
	pods := &fakePods{pods: []*sandbox.Pod{
		{ID: "p1", Name: "old", Namespace: "ns", UID: "u1", State: sandbox.StateReady},
		{ID: "p0", Name: "half-made", State: sandbox.StateCreating},
	}}
	ctrs := &fakeContainers{updates: map[string]*runtimeapi.LinuxContainerResources{}, ctrs: []*container.Container{
		{ID: "c1", PodID: "p1", Name: "old-ctr", State: container.StateRunning, CreatedAt: time.Now()},
	}}
	socket := filepath.Join(dir, "nri.sock")
	n, err := New(Config{
		SocketPath: socket, PluginPath: filepath.Join(dir, "plugins"), PluginConfigPath: filepath.Join(dir, "conf.d"),
		RegistrationTimeout: 5 * time.Second, RequestTimeout: 2 * time.Second,
	}, slog.Default(), pods, ctrs, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)

	p := &plugin{ready: make(chan struct{})}
	s, err := stub.New(p, stub.WithSocketPath(socket), stub.WithPluginName("test"), stub.WithPluginIdx("10"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	select {
	case <-p.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("plugin never synchronised")
	}
	// The snapshot has what exists, not what is still being made.
	if want := []string{"pod old", "container old-ctr CONTAINER_RUNNING"}; !slices.Equal(p.synced, want) {
		t.Fatalf("synchronised with %v, want %v", p.synced, want)
	}

	pod := &sandbox.Pod{ID: "p2", Name: "web", Namespace: "ns", UID: "u2", IPs: []string{"10.0.0.2"}}
	if err := n.RunPodSandbox(ctx, pod); err != nil {
		t.Fatalf("run pod: %v", err)
	}
	if err := n.RunPodSandbox(ctx, &sandbox.Pod{ID: "p3", Name: "refused"}); err == nil {
		t.Fatal("a plugin's refusal did not fail RunPodSandbox")
	}
	if err := n.UpdatePodSandbox(ctx, pod, nil, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 30}); err != nil {
		t.Fatalf("update pod: %v", err)
	}

	c := &container.Container{ID: "c2", PodID: "p2", Name: "app", State: container.StateCreating, CreatedAt: time.Now()}
	spec := &specs.Spec{Process: &specs.Process{Args: []string{"/app"}, Env: []string{"PATH=/bin"}}, Linux: &specs.Linux{}}
	if err := n.CreateContainer(ctx, pod, c, spec); err != nil {
		t.Fatalf("create container: %v", err)
	}
	if !slices.Contains(spec.Process.Env, "FROM_PLUGIN=yes") || spec.Annotations["example.com/plugin"] != "seen" ||
		spec.Linux.Resources == nil || spec.Linux.Resources.Memory == nil || *spec.Linux.Resources.Memory.Limit != 64<<20 {
		t.Fatalf("adjustment not applied: env %v, annotations %v, resources %+v", spec.Process.Env, spec.Annotations, spec.Linux.Resources)
	}
	if u := ctrs.updates["other"]; u == nil || u.CpuShares != 512 {
		t.Fatalf("update of another container: %+v", ctrs.updates)
	}

	// kubelet's update: the plugin's pinning wins, the rest is kubelet's.
	c.State = container.StateRunning
	got, err := n.UpdateContainer(ctx, pod, c, &runtimeapi.LinuxContainerResources{CpuShares: 256, CpusetCpus: "1", OomScoreAdj: 500})
	if err != nil {
		t.Fatalf("update container: %v", err)
	}
	if got.GetCpusetCpus() != "0" || got.GetCpuShares() != 256 || got.GetOomScoreAdj() != 500 {
		t.Fatalf("update after the plugin: %v", got)
	}

	c.State = container.StateExited
	n.StopContainer(ctx, pod, c)
	if err := n.StopPodSandbox(ctx, pod); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"RunPodSandbox web ns u2", "RunPodSandbox refused  ", "UpdatePodSandbox web 1073741824",
		"CreateContainer web/app /app", "UpdateContainer app", "StopContainer app CONTAINER_STOPPED", "StopPodSandbox web",
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Equal(p.events, want) {
		t.Fatalf("events %q, want %q", p.events, want)
	}
}
