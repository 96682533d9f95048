package metrics

import (
	"log/slog"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/cgroups"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/sandbox"
)

// Pods are the pods metrics are reported for (sandbox.Manager).
type Pods interface {
	List() []*sandbox.Pod
	Stats(id string) (*sandbox.Stats, error)
}

// Containers are the containers metrics are reported for
// (container.Manager).
type Containers interface {
	List() []*container.Container
	// Sample reads a running container's usage; a container that is not
	// running is errdefs.ErrFailedPrecondition.
	Sample(id string) (*container.Sample, error)
}

// Collector gathers the metrics of every pod on demand; it keeps nothing
// between calls.
type Collector struct {
	pods       Pods
	containers Containers
	log        *slog.Logger
}

// New returns a collector over the pod and container managers.
func New(pods Pods, containers Containers, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.Default()
	}
	return &Collector{pods: pods, containers: containers, log: log}
}

// Descriptors returns the descriptors of every metric the collector
// reports.
func (c *Collector) Descriptors() []*runtimeapi.MetricDescriptor { return Descriptors() }

// PodSandboxMetrics reports every pod's metrics: its network at pod level
// and each running container's own. A pod or container that goes away or
// cannot be read meanwhile is left out, not an error: one bad container
// must not blind kubelet to all the others.
func (c *Collector) PodSandboxMetrics() []*runtimeapi.PodSandboxMetrics {
	byPod := map[string][]*container.Container{}
	for _, ctr := range c.containers.List() {
		if ctr.State == container.StateRunning {
			byPod[ctr.PodID] = append(byPod[ctr.PodID], ctr)
		}
	}
	cgroup2 := cgroups.IsCgroup2UnifiedMode()
	var out []*runtimeapi.PodSandboxMetrics
	for _, p := range c.pods.List() {
		pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: p.ID}
		if st, err := c.pods.Stats(p.ID); err == nil {
			pm.Metrics = networkMetrics(p, st.Interfaces)
		} else if !errdefs.IsNotFound(err) {
			c.log.Warn("pod metrics", "pod", p.ID, "error", err)
		}
		for _, ctr := range byPod[p.ID] {
			m, err := c.container(p, ctr.ID, cgroup2)
			if err != nil {
				if !errdefs.IsNotFound(err) && !errdefs.IsFailedPrecondition(err) {
					c.log.Warn("container metrics", "container", ctr.ID, "error", err)
				}
				continue
			}
			pm.ContainerMetrics = append(pm.ContainerMetrics, m)
		}
		out = append(out, pm)
	}
	return out
}

func (c *Collector) container(p *sandbox.Pod, id string, cgroup2 bool) (*runtimeapi.ContainerMetrics, error) {
	s, err := c.containers.Sample(id)
	if err != nil {
		return nil, err
	}
	cfg, err := s.Container.ContainerConfig()
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerMetrics{
		ContainerId: id,
		Metrics: containerMetrics(containerInput{
			sample: s, podName: p.Name, podNamespace: p.Namespace,
			resources: cfg.GetLinux().GetResources(),
			procs:     countProcesses(s.Pids),
			oomKills:  oomKills(s.CgroupPaths, cgroup2),
			fs:        statFS(s.LayerDir),
			cgroup2:   cgroup2,
		}),
	}, nil
}
