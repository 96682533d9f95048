package container

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/events"
	"github.com/berth-runtime/berth/monitor"
	"github.com/berth-runtime/berth/sandbox"
)

// terminationMessagePathAnnotation is where kubelet says the termination
// message file is mounted in the container.
const terminationMessagePathAnnotation = "io.kubernetes.container.terminationMessagePath"

func newID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Create makes a container in the pod: its record, writable layer, overlay
// root and OCI spec. The process itself starts with Start. On failure
// nothing is left.
func (m *Manager) Create(ctx context.Context, podID string, cfg *runtimeapi.ContainerConfig) (_ string, retErr error) {
	meta := cfg.GetMetadata()
	if meta.GetName() == "" {
		return "", fmt.Errorf("create container: metadata.name is empty: %w", errInvalidArgument)
	}
	if cfg.GetImage().GetImage() == "" {
		return "", fmt.Errorf("create container %q: image is empty: %w", meta.GetName(), errInvalidArgument)
	}
	unblock := m.opts.Hooks.BlockSync()
	defer unblock()
	pod, err := m.opts.Pods.Get(podID)
	if err != nil {
		return "", fmt.Errorf("create container %q: %w", meta.GetName(), err)
	}
	if pod.State != sandbox.StateReady {
		return "", fmt.Errorf("create container %q: pod %s is %s, not ready: %w", meta.GetName(), pod.ID, pod.State, errFailedPrecondition)
	}
	podCfg, err := pod.SandboxConfig()
	if err != nil {
		return "", err
	}
	logPath, err := resolveLogPath(podCfg.GetLogDirectory(), cfg.GetLogPath())
	if err != nil {
		return "", fmt.Errorf("create container %q: %w", meta.GetName(), err)
	}
	img, err := m.opts.Images.ContainerImage(ctx, cfg.GetImage().GetImage())
	if err != nil {
		return "", fmt.Errorf("create container %q: image %q: %w", meta.GetName(), cfg.GetImage().GetImage(), err)
	}
	// The recorded config carries each image volume's resolved image_ref,
	// which ContainerStatus reports: work on a copy of the caller's.
	cfg = proto.Clone(cfg).(*runtimeapi.ContainerConfig)
	volImages, err := m.resolveImageVolumes(ctx, cfg)
	if err != nil {
		return "", fmt.Errorf("create container %q: %w", meta.GetName(), err)
	}

	id := newID()
	key := fmt.Sprintf("%s_%s_%s_%s_%d", meta.GetName(), pod.Name, pod.Namespace, pod.UID, meta.GetAttempt())
	if err := m.names.Reserve(key, id); err != nil {
		return "", fmt.Errorf("create container %q in pod %s: %w", meta.GetName(), pod.ID, err)
	}
	rawCfg, err := protojson.Marshal(cfg)
	if err != nil {
		m.names.Release(key, id)
		return "", err
	}
	c := &Container{
		ID: id, PodID: pod.ID, Key: key, Name: meta.GetName(), Attempt: meta.GetAttempt(),
		Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
		Image: cfg.GetImage().GetImage(), ImageID: img.ID, ImageRef: img.Ref,
		LogPath: logPath, CreatedAt: time.Now(), State: StateCreating,
		Bundle: m.bundleDir(id), Dir: m.dataDir(id), Config: rawCfg,
		StopSignal: stopSignal(cfg, img),
	}
	// The record comes first, as an intent: a crash in the middle leaves a
	// creating record that Recover tears down.
	if err := m.save(c); err != nil {
		m.names.Release(key, id)
		return "", fmt.Errorf("create container %s: %w", id, err)
	}
	defer func() {
		if retErr != nil {
			if err := m.teardown(c); err != nil {
				m.log.Warn("undo failed container create", "id", id, "error", err)
			}
		}
	}()

	for _, d := range []string{c.Bundle, c.Dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", fmt.Errorf("create container %s: %w", id, err)
		}
	}
	lowers, err := m.opts.Images.Rootfs(ctx, img.ID, id)
	if err != nil {
		return "", fmt.Errorf("create container %s: image layers: %w", id, err)
	}
	if podIDMap(pod) != nil {
		if err := traversable(m.opts.Root, c.Dir); err != nil {
			return "", fmt.Errorf("create container %s: let the pod's user namespace reach the rootfs: %w", id, err)
		}
	}
	rootfs, err := mountRootfs(c.Dir, lowers, podIDMap(pod))
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", id, err)
	}
	c.RootfsMounted = true
	if err := m.save(c); err != nil {
		return "", err
	}
	volumes, err := m.mountImageVolumes(ctx, c, cfg, volImages, podIDMap(pod))
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", id, err)
	}

	spec, err := buildSpec(specInput{
		id: id, pod: pod, podCfg: podCfg, cfg: cfg, image: img, rootfs: rootfs, dir: c.Dir, imageVolumes: volumes,
		systemd: m.opts.CgroupDriver == "systemd", cgroup2: cgroups.IsCgroup2UnifiedMode(),
		hugetlb: hugetlbAvailable(), cdi: m.cdi,
	})
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", id, err)
	}
	// Hooks may adjust the spec, or refuse the container: it is not
	// listed until created, so a refusal leaves nothing to see.
	if err := m.opts.Hooks.CreateContainer(ctx, pod, c, spec); err != nil {
		return "", fmt.Errorf("create container %s: %w", id, err)
	}
	if !hugetlbAvailable() && len(cfg.GetLinux().GetResources().GetHugepageLimits()) > 0 {
		m.log.Warn("hugepage limits dropped: the cgroup hierarchy in use has no hugetlb controller", "id", id)
	}
	c.UID, c.GID, c.Groups = spec.Process.User.UID, spec.Process.User.GID, spec.Process.User.AdditionalGids
	if p := cfg.GetAnnotations()[terminationMessagePathAnnotation]; p != "" {
		for _, mnt := range cfg.GetMounts() {
			if filepath.Clean(mnt.GetContainerPath()) == filepath.Clean(p) {
				c.TerminationMessageHostPath = mnt.GetHostPath()
			}
		}
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(c.Bundle, monitor.SpecFile), data, 0o600); err != nil {
		return "", fmt.Errorf("create container %s: write spec: %w", id, err)
	}
	c.State = StateCreated
	if err := m.save(c); err != nil {
		return "", err
	}
	m.opts.Hooks.PostCreateContainer(ctx, pod, c)
	m.opts.Events.Publish(events.Event{Type: events.Created, PodID: pod.ID, ContainerID: id})
	return id, nil
}

// resolveLogPath joins the pod's log directory and the container's log
// path, refusing a path that leaves the directory.
func resolveLogPath(dir, rel string) (string, error) {
	if rel == "" {
		return "", nil
	}
	if dir == "" {
		if !filepath.IsAbs(rel) {
			return "", fmt.Errorf("log path %q is relative and the pod has no log directory: %w", rel, errInvalidArgument)
		}
		return filepath.Clean(rel), nil
	}
	full := filepath.Join(dir, rel)
	r, err := filepath.Rel(dir, full)
	if err != nil || r == ".." || strings.HasPrefix(r, "../") || filepath.IsAbs(rel) {
		return "", fmt.Errorf("log path %q is outside the pod's log directory %s: %w", rel, dir, errInvalidArgument)
	}
	return full, nil
}

func stopSignal(cfg *runtimeapi.ContainerConfig, img *ImageConfig) string {
	if s := cfg.GetStopSignal(); s != runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		return strings.TrimPrefix(s.String(), "SIGNAL_")
	}
	if img.StopSignal != "" {
		return img.StopSignal
	}
	return "SIGTERM"
}

// hugetlbAvailable reports whether the hierarchy libcontainer uses has a
// hugetlb controller (on this kind of host it may be bound to cgroup2 while
// the rest is v1).
func hugetlbAvailable() bool {
	if cgroups.IsCgroup2UnifiedMode() {
		data, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		return err == nil && slices.Contains(strings.Fields(string(data)), "hugetlb")
	}
	_, err := os.Stat("/sys/fs/cgroup/hugetlb")
	return err == nil
}
