package streaming

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cni"
	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/sandbox"
	"github.com/berth-runtime/berth/state"
	"github.com/berth-runtime/berth/test/testutil"
	"github.com/berth-runtime/berth/test/testutil/reexec"
)

// The adapter's tests run real containers in host-network pods through the
// real pod and container managers, as the container package's own tests
// do; the protocol tests (server_test.go) use fakes.

// testCgroup is this package's own, so parallel package tests never clash.
const testCgroup = "/berthstream"

var (
	monitorBinary string
	busyboxLayer  string
)

// The test binary stands in for bin/shim and berth-runc when berth and
// libcontainer re-execute them.
func init() { reexec.Serve() }

func TestMain(m *testing.M) {
	os.Exit(testutil.RootMain(m, "streaming", func(dir, monitor string) error {
		monitorBinary = monitor
		busyboxLayer = filepath.Join(dir, "layer")
		return testutil.BusyboxRootfs(busyboxLayer)
	}, func() []string {
		if left := testutil.RemoveCgroup(strings.TrimPrefix(testCgroup, "/")); len(left) > 0 {
			return []string{fmt.Sprintf("cgroups left: %v", left)}
		}
		return nil
	}))
}

// busyboxImage serves one image from the unpacked layer.
type busyboxImage struct {
	mu    sync.Mutex
	users map[string]bool
}

func (i *busyboxImage) ContainerImage(ctx context.Context, ref string) (*container.ImageConfig, error) {
	if ref != "busybox" {
		return nil, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	return &container.ImageConfig{ID: "sha256:busybox", Ref: "example.test/busybox@sha256:0", Name: "busybox", Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}}, nil
}

func (i *busyboxImage) Rootfs(ctx context.Context, imageID, containerID string) ([]string, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.users[containerID] = true
	return []string{busyboxLayer}, nil
}

func (i *busyboxImage) ReleaseRootfs(containerID string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	delete(i.users, containerID)
	return nil
}

// noNetwork is the pod network of tests that only run host-network pods.
type noNetwork struct{}

func (noNetwork) Setup(ctx context.Context, a cni.Attachment) (*cni.Result, error) {
	return nil, errors.New("these tests run host-network pods only")
}
func (noNetwork) Teardown(ctx context.Context, a cni.Attachment, network string) error { return nil }
func (noNetwork) GC(ctx context.Context, live []string) error                          { return nil }

type env struct {
	t      *testing.T
	base   string
	store  *state.Store
	pods   *sandbox.Manager
	mgr    *container.Manager
	images *busyboxImage
	rt     *runtime
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, base: t.TempDir(), images: &busyboxImage{users: map[string]bool{}}}
	e.open()
	t.Cleanup(func() {
		for _, p := range e.pods.List() {
			if err := e.pods.Remove(context.Background(), p.ID); err != nil {
				t.Errorf("cleanup: remove pod %s: %v", p.ID, err)
			}
		}
		if n := len(e.mgr.List()); n != 0 {
			t.Errorf("%d containers left after removing every pod", n)
		}
		e.store.Close()
	})
	return e
}

// open builds the managers over the store, as a daemon start does: calling
// it again is a daemon restart.
func (e *env) open() {
	e.t.Helper()
	if e.store != nil {
		e.store.Close()
	}
	root, st := filepath.Join(e.base, "root"), filepath.Join(e.base, "state")
	store, err := state.Open(filepath.Join(root, "meta.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	log := testLogger(e.t)
	pods, err := sandbox.New(sandbox.Options{Root: root, State: st, Store: store, Network: noNetwork{}, CgroupDriver: "cgroupfs", Logger: log})
	if err != nil {
		e.t.Fatal(err)
	}
	mgr, err := container.New(container.Options{Root: root, State: st, Store: store, Pods: pods, Images: e.images, MonitorBinary: monitorBinary, Helper: []string{os.Args[0]}, CgroupDriver: "cgroupfs", Logger: log})
	if err != nil {
		e.t.Fatal(err)
	}
	pods.SetContainers(mgr)
	if err := pods.Recover(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	if err := mgr.Recover(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.store, e.pods, e.mgr = store, pods, mgr
	e.rt = &runtime{containers: mgr, pods: pods, log: log}
}

var seq int

func (e *env) pod() *sandbox.Pod {
	e.t.Helper()
	seq++
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("p%d", seq), Namespace: "test", Uid: fmt.Sprintf("uid%d-%d", seq, time.Now().UnixNano())},
		LogDirectory: filepath.Join(e.base, "logs", fmt.Sprint(seq)),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: testCgroup,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER},
			},
		},
	}
	id, err := e.pods.Run(context.Background(), cfg, "")
	if err != nil {
		e.t.Fatalf("run pod: %v", err)
	}
	p, err := e.pods.Get(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// run creates and starts a busybox container; mod adjusts its config.
func (e *env) run(p *sandbox.Pod, name string, mod func(*runtimeapi.ContainerConfig), args ...string) *container.Container {
	e.t.Helper()
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: "busybox"},
		Command:  args,
		LogPath:  name + ".log",
	}
	if mod != nil {
		mod(cfg)
	}
	id, err := e.mgr.Create(context.Background(), p.ID, cfg)
	if err != nil {
		e.t.Fatalf("create: %v", err)
	}
	if err := e.mgr.Start(context.Background(), id); err != nil {
		e.t.Fatalf("start: %v", err)
	}
	c, err := e.mgr.Get(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// waitState polls until the container reaches want.
func (e *env) waitState(id string, want container.State) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := e.mgr.Get(id)
		if err != nil {
			e.t.Fatal(err)
		}
		if c.State == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s is %s, want %s", id, c.State, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
