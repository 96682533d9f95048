package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/berth-runtime/berth/cni"
	"github.com/berth-runtime/berth/events"
	"github.com/berth-runtime/berth/state"
)

// Network attaches pods to the pod network (cni.Manager).
type Network interface {
	Setup(ctx context.Context, a cni.Attachment) (*cni.Result, error)
	Teardown(ctx context.Context, a cni.Attachment, network string) error
	GC(ctx context.Context, live []string) error
}

// PodContainers is what the sandbox needs from the containers of a pod; the
// containers issue implements it. Until then a nil PodContainers means a pod
// has no containers.
type PodContainers interface {
	// StopAll stops every container of the pod: its stop signal, up to
	// grace, then SIGKILL. Stopping stopped containers succeeds.
	StopAll(ctx context.Context, podID string, grace time.Duration) error
	// RemoveAll removes every container of the pod, stopped or not.
	RemoveAll(ctx context.Context, podID string) error
}

// Options configure a Manager.
type Options struct {
	// Root is berth's persistent directory: pod files go to
	// <root>/pods/<id>/.
	Root string
	// State is berth's volatile directory (tmpfs): pinned namespaces go to
	// <state>/ns/<id>/, the pod's /dev/shm to <state>/pods/<id>/shm.
	State string
	Store *state.Store
	// Network is required; Containers may be nil.
	Network    Network
	Containers PodContainers
	// CgroupDriver is "cgroupfs" or "systemd".
	CgroupDriver string
	// InfraCommand runs PodInit; the pod ID is appended. The default is
	// this executable with InfraSubcommand.
	InfraCommand []string
	// StopGrace is how long StopPodSandbox lets containers that are still
	// running handle their stop signal. The default, 0, kills them at once
	// as containerd does: kubelet has stopped them with the pod's own grace
	// period already, and its StopPodSandbox call has a deadline of its own.
	StopGrace time.Duration
	// ShmSize is the size of each pod's /dev/shm; default DefaultShmSize.
	ShmSize int64
	// Events receives the pods' lifecycle events (GetContainerEvents
	// reports a pod's own under its ID); may be nil.
	Events *events.Broadcaster
	// Hooks hear of every pod's run, stop and removal; may be nil.
	Hooks  Hooks
	Logger *slog.Logger
}

// Manager owns every pod sandbox.
type Manager struct {
	opts  Options
	log   *slog.Logger
	table *state.Table[Pod]
	ids   *state.IDIndex
	names *state.Registrar

	mu   sync.RWMutex
	pods map[string]*Pod
	// infras are the infra processes this daemon started (and so reaps).
	infras map[string]*infra
	// opLocks serialise Run/Stop/Remove of one pod.
	opLocks state.KeyedMutex
	// cpu keeps the last CPU sample per pod for usage_nano_cores.
	cpu map[string]cpuSample
}

// New returns a manager. Call Recover before serving.
func New(opts Options) (*Manager, error) {
	if opts.Store == nil || opts.Network == nil {
		return nil, fmt.Errorf("sandbox manager: store and network are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Events == nil {
		opts.Events = events.New()
	}
	if opts.Hooks == nil {
		opts.Hooks = noHooks{}
	}
	if opts.ShmSize == 0 {
		opts.ShmSize = DefaultShmSize
	}
	if opts.CgroupDriver == "" {
		opts.CgroupDriver = "cgroupfs"
	}
	if len(opts.InfraCommand) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("sandbox manager: find own executable for the infra process: %w", err)
		}
		opts.InfraCommand = []string{exe, InfraSubcommand}
	}
	table, err := state.NewTable[Pod](opts.Store, "sandboxes")
	if err != nil {
		return nil, err
	}
	return &Manager{
		opts:   opts,
		log:    opts.Logger,
		table:  table,
		ids:    state.NewIDIndex(),
		names:  state.NewRegistrar(),
		pods:   map[string]*Pod{},
		infras: map[string]*infra{},
		cpu:    map[string]cpuSample{},
	}, nil
}

// SetContainers wires the containers manager, which is built after this one
// because it looks pods up here.
func (m *Manager) SetContainers(c PodContainers) { m.opts.Containers = c }

// SetHooks installs the pods' lifecycle hooks; call it before serving.
func (m *Manager) SetHooks(h Hooks) { m.opts.Hooks = h }

func (m *Manager) lock(id string) func() { return m.opLocks.Lock(id) }

// Get returns a copy of the pod whose ID is id or starts with it, as
// observed now (see observe).
func (m *Manager) Get(id string) (*Pod, error) {
	p, err := m.record(id)
	if err != nil {
		return nil, err
	}
	return observe(p), nil
}

// record returns a copy of the pod's record as written.
func (m *Manager) record(id string) (*Pod, error) {
	full, err := m.ids.Resolve(id)
	if err != nil {
		return nil, fmt.Errorf("pod sandbox %w", err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	p, ok := m.pods[full]
	if !ok {
		return nil, fmt.Errorf("pod sandbox %s: %w", id, errNotFound)
	}
	return p.clone(), nil
}

// observe reports a ready pod whose infra process died as not ready: its
// PID namespace, and every container in it, is gone. The record is left
// alone; StopPodSandbox, which kubelet sends next, tidies up.
func observe(p *Pod) *Pod {
	if p.State == StateReady && p.PIDMode == PIDPod && !processAlive(p.InfraPID, p.InfraStart) {
		p.State = StateNotReady
	}
	return p
}

// List returns a copy of every pod, oldest first.
func (m *Manager) List() []*Pod {
	m.mu.RLock()
	out := make([]*Pod, 0, len(m.pods))
	for _, p := range m.pods {
		out = append(out, observe(p.clone()))
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Pod) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// save writes p durably and publishes it to readers.
func (m *Manager) save(p *Pod) error {
	if err := m.table.Put(p.ID, p); err != nil {
		return err
	}
	m.mu.Lock()
	m.pods[p.ID] = p.clone()
	m.mu.Unlock()
	return nil
}

// forget deletes the record and every index entry of p.
func (m *Manager) forget(p *Pod) error {
	if err := m.table.Delete(p.ID); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.pods, p.ID)
	delete(m.infras, p.ID)
	delete(m.cpu, p.ID)
	m.mu.Unlock()
	m.ids.Delete(p.ID)
	m.names.Release(p.Key, p.ID)
	return nil
}

// paths fills in the deterministic locations of a pod's resources, so that
// the record written before the first side effect names everything a crash
// could leave behind.
func (m *Manager) paths(p *Pod) {
	p.Dir = filepath.Join(m.opts.Root, "pods", p.ID)
	p.HostnamePath = filepath.Join(p.Dir, "hostname")
	p.HostsPath = filepath.Join(p.Dir, "hosts")
	p.ResolvConfPath = filepath.Join(p.Dir, "resolv.conf")
	p.RunDir = filepath.Join(m.opts.State, "pods", p.ID)
	p.NSDir = filepath.Join(m.opts.State, "ns", p.ID)
	if !p.HostIPC {
		p.ShmPath = filepath.Join(p.RunDir, "shm")
	}
}
