package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/state"
)

// assertNothingLeft checks that a failed run left no pod behind: no record,
// no name reservation, no pod directories or mounts, no cgroup under the
// test parent, no IP and no veth.
func (e *env) assertNothingLeft(cfg *runtimeapi.PodSandboxConfig) {
	e.t.Helper()
	if pods := e.mgr.List(); len(pods) != 0 {
		e.t.Errorf("pods left: %s", mustJSON(pods))
	}
	table, _ := state.NewTable[Pod](e.store, "sandboxes")
	if all, _ := table.All(); len(all) != 0 {
		e.t.Errorf("records left: %d", len(all))
	}
	for _, d := range []string{filepath.Join(e.root, "pods"), filepath.Join(e.state, "pods"), filepath.Join(e.state, "ns")} {
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			e.t.Errorf("%s not empty: %v", d, entries)
		}
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), e.state) {
		e.t.Errorf("mounts left under %s:\n%s", e.state, grepLines(string(mi), e.state))
	}
	for _, ctrl := range []string{"memory", "cpu", "pids", "cpuset"} {
		if entries, _ := os.ReadDir(filepath.Join("/sys/fs/cgroup", ctrl, testCgroup)); countDirs(entries) != 0 {
			e.t.Errorf("cgroups left under %s/%s", ctrl, testCgroup)
		}
	}
	e.assertNoAllocations()
	// The name is free again: the same config runs (when it can).
	_ = cfg
}

func countDirs(entries []os.DirEntry) int {
	n := 0
	for _, en := range entries {
		if en.IsDir() {
			n++
		}
	}
	return n
}

// Items 8 and 9: a conflist naming a missing plugin fails the run at the
// network step, after the bridge plugin made a veth and host-local an IP;
// everything is undone. Status reports the network not ready.
func TestMissingPluginLeavesNothing(t *testing.T) {
	e := newEnv(t)
	conf := `{"cniVersion":"1.1.0","name":"` + testNetwork + `","plugins":[
	  {"type":"bridge","bridge":"` + testBridge + `","isGateway":true,"ipMasq":true,
	   "ipam":{"type":"host-local","ranges":[[{"subnet":"` + testSubnet + `"}]],"dataDir":"` + e.ipamDir + `"}},
	  {"type":"berth-no-such-plugin"}]}`
	if err := os.MkdirAll(e.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.confDir, "50-broken.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.cni.Ready(); err == nil || !strings.Contains(err.Error(), "berth-no-such-plugin") {
		t.Errorf("Ready = %v; want an error naming the missing plugin", err)
	}
	cfg := podConfig("broken-net")
	_, err := e.mgr.Run(context.Background(), cfg, "")
	if err == nil || !strings.Contains(err.Error(), "set up pod network") || !strings.Contains(err.Error(), "berth-no-such-plugin") {
		t.Fatalf("run = %v; want a network step error naming the plugin", err)
	}
	e.assertNothingLeft(cfg)
	// The name was released with the rest.
	if err := os.Remove(filepath.Join(e.confDir, "50-broken.conflist")); err != nil {
		t.Fatal(err)
	}
	e.run(cfg)
}

// Item 8: failures at other steps undo what came before and name the step.
func TestFailedStepsAreUndone(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, step string
		edit       func(*runtimeapi.PodSandboxConfig)
		code       func(error) bool
	}{
		{"cgroup", "create pod cgroup", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpusetCpus: "4096-4097"}
		}, func(error) bool { return true }},
		{"unknown sysctl", "apply sysctls", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net.ipv4.berth_no_such_sysctl": "1"}
		}, errdefs.IsInvalidArgument},
		{"bad sysctl value", "apply sysctls", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "not-a-number"}
		}, errdefs.IsInvalidArgument},
		{"infra", "start infra process", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
		}, func(error) bool { return true }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "infra" {
				old := e.mgr.opts.InfraCommand
				e.mgr.opts.InfraCommand = []string{"/nonexistent/berth"}
				defer func() { e.mgr.opts.InfraCommand = old }()
			}
			cfg := podConfig("fail-" + strings.ReplaceAll(tc.name, " ", "-"))
			tc.edit(cfg)
			_, err := e.mgr.Run(context.Background(), cfg, "")
			if err == nil || !strings.Contains(err.Error(), tc.step) || !tc.code(err) {
				t.Fatalf("run = %v; want a failure at %q", err, tc.step)
			}
			e.assertNothingLeft(cfg)
		})
	}
}

// Item 2: allowed sysctls are set inside the pod only; others are refused
// before anything is built.
func TestSysctls(t *testing.T) {
	e := newEnv(t)
	cfg := podConfig("sysctls")
	cfg.Linux.Sysctls = map[string]string{
		"net.ipv4.ip_unprivileged_port_start": "81",
		"net/ipv4/ping_group_range":           "0 12345",
		"kernel.shmmni":                       "1234",
		"kernel.msgmax":                       "4321",
		"kernel.sem":                          "251 32000 32 129",
		"fs.mqueue.msg_max":                   "42",
	}
	host := readSysctls(t, nil, cfg.Linux.Sysctls)
	p := e.run(cfg)
	got := readSysctls(t, map[string]string{"net": p.NetNS, "ipc": p.IPCNS}, cfg.Linux.Sysctls)
	want := map[string]string{
		"net.ipv4.ip_unprivileged_port_start": "81", "net/ipv4/ping_group_range": "0\t12345",
		"kernel.shmmni": "1234", "kernel.msgmax": "4321", "kernel.sem": "251\t32000\t32\t129", "fs.mqueue.msg_max": "42",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("pod %s = %q, want %q", k, got[k], v)
		}
	}
	if after := readSysctls(t, nil, cfg.Linux.Sysctls); mustJSON(after) != mustJSON(host) {
		t.Errorf("host sysctls changed: %v → %v", host, after)
	}

	for _, tc := range []struct {
		name    string
		sysctls map[string]string
		ns      *runtimeapi.NamespaceOption
	}{
		{"not namespaced", map[string]string{"kernel.hostname": "x"}, nil},
		{"vm", map[string]string{"vm.swappiness": "1"}, nil},
		{"net with host network", map[string]string{"net.ipv4.ip_forward": "1"}, &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER}},
		{"ipc with host ipc", map[string]string{"kernel.shmmax": "1"}, &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER}},
	} {
		cfg := podConfig("bad-sysctl")
		cfg.Linux.Sysctls = tc.sysctls
		if tc.ns != nil {
			cfg.Linux.SecurityContext.NamespaceOptions = tc.ns
		}
		_, err := e.mgr.Run(context.Background(), cfg, "")
		for name := range tc.sysctls {
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), name) {
				t.Errorf("%s: run = %v; want InvalidArgument naming %s", tc.name, err, name)
			}
		}
	}
}

func readSysctls(t *testing.T, nsPaths map[string]string, names map[string]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := inNamespaces(nsPaths, func() error {
		for raw := range names {
			b, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(normalizeSysctl(raw), ".", "/")))
			if err != nil {
				return err
			}
			out[raw] = strings.TrimSpace(string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
