package container

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/errdefs"
)

// TestSample reads a running container's raw usage, as the metrics
// collector does, and refuses a container that no longer runs.
func TestSample(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	c := e.run(p, config("sampled", "sleep", "60"))
	s, err := e.mgr.Sample(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Container.ID != c.ID || s.Cgroup == nil || len(s.Pids) == 0 || len(s.CgroupPaths) == 0 {
		t.Errorf("sample: container %s, cgroup %v, pids %v, paths %v", s.Container.ID, s.Cgroup != nil, s.Pids, s.CgroupPaths)
	}
	if s.Cgroup.MemoryStats.Usage.Usage == 0 || s.LayerDir == "" {
		t.Errorf("memory usage %d, layer dir %q", s.Cgroup.MemoryStats.Usage.Usage, s.LayerDir)
	}
	if err := e.mgr.Stop(context.Background(), c.ID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.Sample(c.ID); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("sample of a stopped container: %v, want FailedPrecondition", err)
	}
	if _, err := e.mgr.Sample("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("sample of an unknown container: %v, want NotFound", err)
	}
}
