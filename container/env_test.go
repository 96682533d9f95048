package container

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cni"
	"github.com/berth-runtime/berth/sandbox"
	"github.com/berth-runtime/berth/state"
	"github.com/berth-runtime/berth/test/testutil"
	"github.com/berth-runtime/berth/test/testutil/reexec"
)

// The test network and cgroup never clash with a running daemon's or with
// the sandbox package's tests.
const (
	testBridge  = "berthct0"
	testSubnet  = "10.251.0.0/24"
	testNetwork = "berthct"
	testCgroup  = "/berthct"
)

var (
	monitorBinary string
	// busyboxLayer is one unpacked layer holding a busybox userland.
	busyboxLayer string
	// dataLayers are the two layers of the "data" image, top first, which
	// image volume tests mount.
	dataLayers []string
)

// The test binary stands in for bin/shim and berth-runc when berth and
// libcontainer re-execute them.
func init() { reexec.Serve() }

func TestMain(m *testing.M) {
	os.Exit(testutil.RootMain(m, "container", func(dir, monitor string) error {
		monitorBinary = monitor
		busyboxLayer = filepath.Join(dir, "layer")
		if err := testutil.BusyboxRootfs(busyboxLayer); err != nil {
			return err
		}
		var err error
		dataLayers, err = dataImage(dir)
		return err
	}, func() []string {
		_ = exec.Command("ip", "link", "del", testBridge).Run()
		if left := testutil.RemoveCgroup(strings.TrimPrefix(testCgroup, "/")); len(left) > 0 {
			return []string{fmt.Sprintf("cgroups left: %v", left)}
		}
		return nil
	}))
}

// dataImage writes the "data" image's two layers: etc/marker in the
// bottom one, replaced by the top one, and a file of each's own.
func dataImage(dir string) ([]string, error) {
	files := []map[string]string{
		{"etc/marker": "top\n", "top": "top layer\n"},
		{"etc/marker": "base\n", "etc/base": "base layer\n"},
	}
	var layers []string
	for i, fs := range files {
		layer := filepath.Join(dir, fmt.Sprintf("data%d", i))
		for name, content := range fs {
			p := filepath.Join(layer, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				return nil, err
			}
		}
		layers = append(layers, layer)
	}
	return layers, nil
}

// testImages serves two images from unpacked layers, busybox and data (no
// command, for image volumes): the image store is not what these tests are
// about.
type testImages struct {
	mu    sync.Mutex
	users map[string]bool
}

func (i *testImages) ContainerImage(ctx context.Context, ref string) (*ImageConfig, error) {
	if ref == "data" || ref == "sha256:data" {
		return &ImageConfig{ID: "sha256:data", Ref: "example.test/data@sha256:1", Name: "data"}, nil
	}
	if ref != "busybox" {
		return nil, fmt.Errorf("image %q: %w", ref, errNotFound)
	}
	return &ImageConfig{
		ID: "sha256:busybox", Ref: "example.test/busybox@sha256:0", Name: "busybox",
		Env: []string{"PATH=/bin", "FROM_IMAGE=1"}, Cmd: []string{"sh"}, Volumes: []string{"/data"},
	}, nil
}

func (i *testImages) Rootfs(ctx context.Context, imageID, containerID string) ([]string, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.users[containerID] = true
	if imageID == "sha256:data" {
		return dataLayers, nil
	}
	return []string{busyboxLayer}, nil
}

func (i *testImages) ReleaseRootfs(containerID string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	delete(i.users, containerID)
	return nil
}

type env struct {
	t      testing.TB
	base   string
	root   string
	state  string
	store  *state.Store
	pods   *sandbox.Manager
	mgr    *Manager
	images *testImages
	net    *cni.Manager
	log    *slog.Logger
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newEnv(t *testing.T) *env { return newEnvTB(t) }

// newEnvTB builds pods and containers managers over real plugins, with
// every directory in a temporary one.
func newEnvTB(t testing.TB) *env {
	t.Helper()
	bin, err := filepath.Abs("../bin/cni")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bin, "bridge")); err != nil {
		t.Fatalf("CNI plugins missing in %s: run `make cni-plugins`", bin)
	}
	base := t.TempDir()
	e := &env{
		t: t, base: base,
		root:   filepath.Join(base, "root"),
		state:  filepath.Join(base, "state"),
		images: &testImages{users: map[string]bool{}},
		log:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if _, quiet := t.(*testing.B); quiet {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.net = cni.New(cni.Options{
		ConfDir:  filepath.Join(base, "net.d"),
		BinDirs:  []string{bin},
		CacheDir: filepath.Join(e.root, "cni", "cache"),
		Default:  cni.DefaultConfig{Name: testNetwork, Bridge: testBridge, Subnet: testSubnet, IPAMDir: filepath.Join(e.root, "cni", "networks")},
		Logger:   e.log,
	})
	e.open()
	t.Cleanup(e.cleanup)
	return e
}

// cleanup removes every pod (and so every container) through berth itself
// and checks nothing is left. It may run more than once.
func (e *env) cleanup() {
	if e.store == nil {
		return
	}
	t := e.t
	for _, p := range e.pods.List() {
		if err := e.pods.Remove(context.Background(), p.ID); err != nil {
			t.Errorf("cleanup: remove pod %s: %v", p.ID, err)
		}
	}
	if n := len(e.mgr.List()); n != 0 {
		t.Errorf("%d containers left after removing every pod", n)
	}
	if len(e.images.users) != 0 {
		t.Errorf("image layers still held: %v", e.images.users)
	}
	e.store.Close()
	e.store = nil
}

// open builds the managers over the store, as a daemon start does.
func (e *env) open() {
	e.t.Helper()
	if e.store != nil {
		e.store.Close()
	}
	store, err := state.Open(filepath.Join(e.root, "meta.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.store = store
	pods, err := sandbox.New(sandbox.Options{Root: e.root, State: e.state, Store: store, Network: e.net, CgroupDriver: "cgroupfs", Logger: e.log})
	if err != nil {
		e.t.Fatal(err)
	}
	// The test binary is berth-runc too (TestMain).
	mgr, err := New(Options{Root: e.root, State: e.state, Store: store, Pods: pods, Images: e.images,
		MonitorBinary: monitorBinary, Helper: []string{os.Args[0]}, CgroupDriver: "cgroupfs", Logger: e.log})
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
	e.pods, e.mgr = pods, mgr
}

var seq int

// pod runs a pod; hostNetwork pods skip CNI to keep most tests fast.
func (e *env) pod(hostNetwork bool) *sandbox.Pod {
	e.t.Helper()
	seq++
	mode := runtimeapi.NamespaceMode_POD
	if hostNetwork {
		mode = runtimeapi.NamespaceMode_NODE
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("p%d", seq), Namespace: "test", Uid: fmt.Sprintf("uid%d-%d", seq, time.Now().UnixNano())},
		Hostname:     fmt.Sprintf("p%d", seq),
		LogDirectory: filepath.Join(e.base, "logs", fmt.Sprint(seq)),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: testCgroup,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: mode, Pid: runtimeapi.NamespaceMode_CONTAINER},
			},
		},
	}
	return e.runPod(cfg)
}

// runPod runs the pod and returns its record.
func (e *env) runPod(cfg *runtimeapi.PodSandboxConfig) *sandbox.Pod {
	e.t.Helper()
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

func config(name string, args ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: "busybox"},
		Command:  args,
		LogPath:  name + ".log",
	}
}

// run creates and starts a container.
func (e *env) run(p *sandbox.Pod, cfg *runtimeapi.ContainerConfig) *Container {
	e.t.Helper()
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
func (e *env) waitState(id string, want State) *Container {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := e.mgr.Get(id)
		if err != nil {
			e.t.Fatal(err)
		}
		if c.State == want {
			return c
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s is %s, want %s", id, c.State, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) exec(id string, args ...string) (string, int32) {
	e.t.Helper()
	r, err := e.mgr.ExecSync(context.Background(), id, args, 10*time.Second)
	if err != nil {
		e.t.Fatalf("exec %v: %v", args, err)
	}
	return string(r.Stdout) + string(r.Stderr), r.ExitCode
}

func logText(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if parts := strings.SplitN(l, " ", 4); len(parts) == 4 {
			lines = append(lines, parts[1]+":"+parts[3])
		}
	}
	return strings.Join(lines, "\n")
}
