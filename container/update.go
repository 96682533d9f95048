package container

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	// Updating a running container's cgroup sets its device rules again,
	// which needs the devices manager registered.
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/monitor"
	"github.com/berth-runtime/berth/sandbox"
)

// UpdateResources is kubelet's update of the container's cgroup limits:
// hooks may change it first, then it applies at once when the container
// runs, and for its start when it is only created.
func (m *Manager) UpdateResources(ctx context.Context, idOrPrefix string, r *runtimeapi.LinuxContainerResources) error {
	return m.updateResources(ctx, idOrPrefix, r, true)
}

// SetResources applies r as given, without telling the hooks: the update
// comes from them (an NRI plugin's).
func (m *Manager) SetResources(idOrPrefix string, r *runtimeapi.LinuxContainerResources) error {
	return m.updateResources(context.Background(), idOrPrefix, r, false)
}

func (m *Manager) updateResources(ctx context.Context, idOrPrefix string, r *runtimeapi.LinuxContainerResources, tellHooks bool) error {
	if r == nil {
		return nil
	}
	c, err := m.get(idOrPrefix)
	if err != nil {
		return err
	}
	unlock := m.lock(c.ID)
	defer unlock()
	if c, err = m.get(c.ID); err != nil {
		return err
	}
	if c.State != StateCreated && c.State != StateRunning {
		return fmt.Errorf("update container %s: it is %s: %w", c.ID, c.State, errFailedPrecondition)
	}
	var pod *sandbox.Pod
	if tellHooks {
		pod = m.podOf(c)
		if r, err = m.opts.Hooks.UpdateContainer(ctx, pod, c, r); err != nil {
			return fmt.Errorf("update container %s: %w", c.ID, err)
		}
	}
	spec, err := readSpec(c.Bundle)
	if err != nil {
		return fmt.Errorf("update container %s: %w", c.ID, err)
	}
	if err := setResources(spec, r, hugetlbAvailable()); err != nil {
		return fmt.Errorf("update container %s: %w", c.ID, err)
	}
	if c.State == StateRunning {
		lc, err := libcontainer.Load(m.runcRoot, c.ID)
		if err != nil {
			return fmt.Errorf("update container %s: %w", c.ID, err)
		}
		cg, err := specconv.CreateCgroupConfig(&specconv.CreateOpts{
			CgroupName: c.ID, UseSystemdCgroup: m.opts.CgroupDriver == "systemd", Spec: spec,
		}, nil)
		if err != nil {
			return fmt.Errorf("update container %s: %v: %w", c.ID, err, errInvalidArgument)
		}
		cfg := lc.Config()
		// Device rules are not the update's business: keep the ones the
		// container started with.
		cg.Resources.Devices = cfg.Cgroups.Resources.Devices
		cfg.Cgroups.Resources = cg.Resources
		if err := lc.Set(cfg); err != nil {
			return fmt.Errorf("update container %s: %w", c.ID, err)
		}
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Bundle, monitor.SpecFile), data, 0o600); err != nil {
		return fmt.Errorf("update container %s: %w", c.ID, err)
	}
	cfg, err := c.ContainerConfig()
	if err != nil {
		return err
	}
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	cfg.Linux.Resources = r
	if c.Config, err = protojson.Marshal(cfg); err != nil {
		return err
	}
	if err := m.save(c); err != nil {
		return err
	}
	if tellHooks {
		m.opts.Hooks.PostUpdateContainer(ctx, pod, c)
	}
	return nil
}

// ReopenLog makes the container's monitor reopen its log file.
func (m *Manager) ReopenLog(idOrPrefix string) error {
	c, err := m.get(idOrPrefix)
	if err != nil {
		return err
	}
	if c.State != StateRunning {
		return fmt.Errorf("reopen log of container %s: it is %s, not running: %w", c.ID, c.State, errFailedPrecondition)
	}
	if err := monitor.ReopenLog(c.Bundle); err != nil {
		return fmt.Errorf("reopen log of container %s: %w", c.ID, err)
	}
	return nil
}

// Spec returns the container's OCI spec (verbose status), if it has one.
func (m *Manager) Spec(c *Container) (json.RawMessage, error) {
	data, err := os.ReadFile(filepath.Join(c.Bundle, monitor.SpecFile))
	if err != nil {
		return nil, err
	}
	return data, nil
}
