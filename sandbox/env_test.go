package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cni"
	"github.com/berth-runtime/berth/state"
)

// The test network never clashes with a running daemon's berth0 and
// 10.88.0.0/16.
const (
	testBridge  = "berthtest0"
	testSubnet  = "10.250.0.0/24"
	testGateway = "10.250.0.1"
	testNetwork = "berthtest"
	testCgroup  = "/berthtest"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the infra process, as berth's own binary
	// does (`shim pod-init`).
	if len(os.Args) > 1 && os.Args[1] == InfraSubcommand {
		os.Exit(PodInit())
	}
	code := m.Run()
	if os.Geteuid() == 0 {
		// The bridge is this package's own, created by the plugin.
		_ = exec.Command("ip", "link", "del", testBridge).Run()
		// The test cgroup parent, empty once every pod is removed.
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", testCgroup))
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", testCgroup))
		for _, d := range dirs {
			_ = os.Remove(d)
		}
	}
	os.Exit(code)
}

// pluginDir is where `make cni-plugins` installs the reference plugins.
func pluginDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../bin/cni")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("CNI plugin %s missing: run `make cni-plugins`", p)
			}
			t.Skipf("CNI plugin %s missing: run `make cni-plugins`", p)
		}
	}
	return dir
}

type env struct {
	t       *testing.T
	root    string
	state   string
	confDir string
	ipamDir string
	cni     *cni.Manager
	store   *state.Store
	mgr     *Manager
	log     *slog.Logger
}

// newEnv builds a manager over real plugins, with every directory in a
// temporary one and the test bridge.
func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bin := pluginDir(t)
	base := t.TempDir()
	e := &env{
		t:       t,
		root:    filepath.Join(base, "root"),
		state:   filepath.Join(base, "state"),
		confDir: filepath.Join(base, "net.d"),
		ipamDir: filepath.Join(base, "root", "cni", "networks"),
		log:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	e.cni = cni.New(cni.Options{
		ConfDir:  e.confDir,
		BinDirs:  []string{bin},
		CacheDir: filepath.Join(e.root, "cni", "cache"),
		Default:  cni.DefaultConfig{Name: testNetwork, Bridge: testBridge, Subnet: testSubnet, IPAMDir: e.ipamDir},
		Logger:   e.log,
	})
	e.open()
	t.Cleanup(func() {
		// Remove whatever a failed test left, through berth itself.
		for _, p := range e.mgr.List() {
			if err := e.mgr.Remove(context.Background(), p.ID); err != nil {
				t.Errorf("cleanup: remove pod %s: %v", p.ID, err)
			}
		}
		e.store.Close()
	})
	return e
}

// open (re)opens the store and builds a fresh manager, as a daemon start
// does.
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
	mgr, err := New(Options{
		Root: e.root, State: e.state, Store: store, Network: e.cni,
		CgroupDriver: "cgroupfs", Logger: e.log,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.mgr = mgr
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var podSeq int

// podConfig returns a config with a unique name and the test cgroup parent.
func podConfig(name string) *runtimeapi.PodSandboxConfig {
	podSeq++
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{
			Name: name, Namespace: "test", Uid: fmt.Sprintf("uid-%s-%d", name, podSeq),
		},
		Hostname: name,
		Labels:   map[string]string{"app": name},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: testCgroup,
			// As kubelet sends for a pod without shareProcessNamespace.
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
			},
		},
	}
}

func (e *env) run(cfg *runtimeapi.PodSandboxConfig) *Pod {
	e.t.Helper()
	id, err := e.mgr.Run(context.Background(), cfg, "")
	if err != nil {
		e.t.Fatalf("run pod: %v", err)
	}
	p, err := e.mgr.Get(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// assertGone checks that nothing of pod p is left on the machine.
func (e *env) assertGone(p *Pod) {
	e.t.Helper()
	if _, err := e.mgr.Get(p.ID); err == nil {
		e.t.Errorf("pod %s still known", p.ID)
	}
	table, err := state.NewTable[Pod](e.store, "sandboxes")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := table.Get(p.ID); err == nil {
		e.t.Errorf("pod %s: record left", p.ID)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		e.t.Fatal(err)
	}
	if strings.Contains(string(mi), p.ID) {
		e.t.Errorf("pod %s: mounts left:\n%s", p.ID, grepLines(string(mi), p.ID))
	}
	for _, d := range []string{p.Dir, p.RunDir, p.NSDir} {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			e.t.Errorf("pod %s: %s left (%v)", p.ID, d, err)
		}
	}
	for _, ctrl := range []string{"memory", "cpu", "pids", "cpuset", "freezer"} {
		d := filepath.Join("/sys/fs/cgroup", ctrl, p.Cgroup.Path)
		if cgroups.IsCgroup2UnifiedMode() {
			d = filepath.Join("/sys/fs/cgroup", p.Cgroup.Path)
		}
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			e.t.Errorf("pod %s: cgroup %s left", p.ID, d)
		}
	}
	if attached, err := e.cni.Attached(p.ID); err != nil || attached {
		e.t.Errorf("pod %s: CNI attachment cached (%v)", p.ID, err)
	}
	for _, ip := range p.IPs {
		if _, err := os.Stat(filepath.Join(e.ipamDir, testNetwork, ip)); !errors.Is(err, fs.ErrNotExist) {
			e.t.Errorf("pod %s: IP %s still allocated", p.ID, ip)
		}
	}
}

// assertNoAllocations checks host-local holds no address at all, and no
// veth hangs on the test bridge.
func (e *env) assertNoAllocations() {
	e.t.Helper()
	entries, _ := os.ReadDir(filepath.Join(e.ipamDir, testNetwork))
	for _, en := range entries {
		if n := en.Name(); n != "lock" && !strings.HasPrefix(n, "last_reserved_ip") {
			e.t.Errorf("IPAM allocation left: %s", n)
		}
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", testBridge).Output(); len(strings.TrimSpace(string(out))) > 0 {
		e.t.Errorf("veths left on %s:\n%s", testBridge, out)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
