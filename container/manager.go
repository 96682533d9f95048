// Package container runs containers inside berth's pods: it builds each
// container's OCI spec from the CRI config, the image and the pod, mounts
// its overlay root, and hands the container to a berth-monitor process,
// which creates it with libcontainer and outlives the daemon. The daemon
// reaches running containers through libcontainer's state (signals, exec,
// cgroup updates and stats) and the monitor's control socket.
package container

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/berth-runtime/berth/events"
	"github.com/berth-runtime/berth/sandbox"
	"github.com/berth-runtime/berth/state"
)

// Pods looks up the pod a container belongs to (sandbox.Manager).
type Pods interface {
	Get(id string) (*sandbox.Pod, error)
}

// Images gives containers their image and root filesystem layers.
type Images interface {
	// ContainerImage resolves an image name, digest reference or ID
	// (prefix) to its config; an unknown image is errdefs.ErrNotFound.
	ContainerImage(ctx context.Context, ref string) (*ImageConfig, error)
	// Rootfs returns the image's unpacked layer directories, top layer
	// first, and records that the container uses them.
	Rootfs(ctx context.Context, imageID, containerID string) ([]string, error)
	// ReleaseRootfs drops the container's use of its image's layers.
	ReleaseRootfs(containerID string) error
}

// Options configure a Manager.
type Options struct {
	// Root is berth's persistent directory: writable layers go to
	// <root>/containers/<id>.
	Root string
	// State is berth's volatile directory: bundles go to
	// <state>/containers/<id>, libcontainer's state to <state>/runc.
	State  string
	Store  *state.Store
	Pods   Pods
	Images Images
	// Helper is the command of berth-runc, the small libcontainer binary
	// that starts containers (launch.Subcommand; then it becomes the
	// monitor). Empty means berth-runc beside this executable.
	Helper []string
	// MonitorBinary is berth-monitor, which the launcher becomes.
	MonitorBinary string
	// CgroupDriver is "cgroupfs" or "systemd".
	CgroupDriver string
	// CDISpecDirs are the directories of CDI spec files, highest priority
	// last; empty means DefaultCDISpecDirs.
	CDISpecDirs []string
	// Events receives container lifecycle events; may be nil.
	Events *events.Broadcaster
	// Hooks hear of every container's lifecycle; may be nil.
	Hooks  Hooks
	Logger *slog.Logger
}

// HelperBinaryName is berth-runc, installed beside bin/shim.
const HelperBinaryName = "berth-runc"

// Manager owns every container.
type Manager struct {
	opts     Options
	log      *slog.Logger
	table    *state.Table[Container]
	ids      *state.IDIndex
	names    *state.Registrar
	runcRoot string
	events   *events.Broadcaster
	cdi      *cdiRegistry

	mu         sync.RWMutex
	containers map[string]*Container
	// exited is closed when a running container's exit is recorded.
	exited map[string]chan struct{}
	// opLocks serialise lifecycle operations on one container.
	opLocks state.KeyedMutex
	// cpu keeps the last CPU sample per container for nano-core usage.
	cpu map[string]cpuSample
}

// New returns a manager; call Recover before serving.
func New(opts Options) (*Manager, error) {
	if opts.Store == nil || opts.Pods == nil || opts.Images == nil || opts.MonitorBinary == "" {
		return nil, fmt.Errorf("container manager: store, pods, images and monitor binary are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.Helper) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("container manager: find own executable: %w", err)
		}
		opts.Helper = []string{filepath.Join(filepath.Dir(exe), HelperBinaryName)}
	}
	if opts.Events == nil {
		opts.Events = events.New()
	}
	if opts.Hooks == nil {
		opts.Hooks = noHooks{}
	}
	if opts.CgroupDriver == "" {
		opts.CgroupDriver = "cgroupfs"
	}
	table, err := state.NewTable[Container](opts.Store, "containers")
	if err != nil {
		return nil, err
	}
	cdi, err := newCDIRegistry(opts.CDISpecDirs)
	if err != nil {
		return nil, fmt.Errorf("container manager: %w", err)
	}
	return &Manager{
		opts:       opts,
		log:        opts.Logger,
		table:      table,
		ids:        state.NewIDIndex(),
		names:      state.NewRegistrar(),
		runcRoot:   filepath.Join(opts.State, "runc"),
		events:     opts.Events,
		cdi:        cdi,
		containers: map[string]*Container{},
		exited:     map[string]chan struct{}{},
		cpu:        map[string]cpuSample{},
	}, nil
}

func (m *Manager) lock(id string) func() { return m.opLocks.Lock(id) }

// get returns a copy of the record of the container whose ID starts with
// idOrPrefix.
func (m *Manager) get(idOrPrefix string) (*Container, error) {
	id, err := m.ids.Resolve(idOrPrefix)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", idOrPrefix, err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, ok := m.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", idOrPrefix, errNotFound)
	}
	return c.clone(), nil
}

// Get returns the container's record.
func (m *Manager) Get(idOrPrefix string) (*Container, error) { return m.get(idOrPrefix) }

// List returns copies of every container record.
func (m *Manager) List() []*Container {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*Container, 0, len(m.containers))
	for _, c := range m.containers {
		out = append(out, c.clone())
	}
	return out
}

// save persists c and makes it the in-memory record.
func (m *Manager) save(c *Container) error {
	if err := m.table.Put(c.ID, c); err != nil {
		return err
	}
	m.mu.Lock()
	m.containers[c.ID] = c.clone()
	m.mu.Unlock()
	m.ids.Add(c.ID)
	return nil
}

// forget deletes c's record everywhere.
func (m *Manager) forget(c *Container) error {
	if err := m.table.Delete(c.ID); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.containers, c.ID)
	delete(m.exited, c.ID)
	delete(m.cpu, c.ID)
	m.mu.Unlock()
	m.ids.Delete(c.ID)
	m.names.Release(c.Key, c.ID)
	m.opLocks.Forget(c.ID)
	return nil
}

func (m *Manager) bundleDir(id string) string { return filepath.Join(m.opts.State, "containers", id) }
func (m *Manager) dataDir(id string) string   { return filepath.Join(m.opts.Root, "containers", id) }
