package container

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
)

// Sample is a running container's raw usage, as the metrics package turns
// it into cAdvisor-style metrics: the cgroup's counters, where its cgroups
// are (for the files libcontainer does not read), its processes, and its
// writable layer.
type Sample struct {
	Container *Container
	At        time.Time
	Cgroup    *cgroups.Stats
	// CgroupPaths are the container's cgroup directories by controller
	// ("" on cgroup v2).
	CgroupPaths map[string]string
	Pids        []int
	// WritableBytes and WritableInodes are the writable layer's use;
	// LayerDir the directory the layers' file system is measured at.
	WritableBytes, WritableInodes uint64
	LayerDir                      string
}

// Sample reads a running container's usage. A container that is not
// running has no cgroup to read: that is errFailedPrecondition.
func (m *Manager) Sample(idOrPrefix string) (*Sample, error) {
	c, err := m.get(idOrPrefix)
	if err != nil {
		return nil, err
	}
	if c.State != StateRunning {
		return nil, fmt.Errorf("sample container %s: it is %s: %w", c.ID, c.State, errFailedPrecondition)
	}
	lc, err := libcontainer.Load(m.runcRoot, c.ID)
	if err != nil {
		return nil, fmt.Errorf("sample container %s: %v: %w", c.ID, err, errFailedPrecondition)
	}
	now := time.Now()
	st, err := lc.Stats()
	if err != nil || st.CgroupStats == nil {
		return nil, fmt.Errorf("sample container %s: cgroup stats: %v: %w", c.ID, err, errFailedPrecondition)
	}
	state, err := lc.State()
	if err != nil {
		return nil, fmt.Errorf("sample container %s: state: %w", c.ID, err)
	}
	pids, _ := lc.Processes() // the cgroup may empty meanwhile: no processes
	fs := m.writableLayer(c, now)
	return &Sample{
		Container: c, At: now, Cgroup: st.CgroupStats, CgroupPaths: state.CgroupPaths, Pids: pids,
		WritableBytes: fs.GetUsedBytes().GetValue(), WritableInodes: fs.GetInodesUsed().GetValue(),
		LayerDir: filepath.Join(m.opts.Root, "containers"),
	}, nil
}
