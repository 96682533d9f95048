package sandbox

import (
	"context"
	"crypto/sha512"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/state"
)

// Item 1: PID mode POD gets an infra process as PID 1 of a new PID
// namespace, inside the pod's net namespace and cgroup; it survives a daemon
// restart (found again by pid and start time) and dies at stop.
func TestInfraPIDNamespace(t *testing.T) {
	e := newEnv(t)
	cfg := podConfig("sharedpid")
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	p := e.run(cfg)
	if p.InfraPID == 0 || !processAlive(p.InfraPID, p.InfraStart) {
		t.Fatalf("no infra process: %s", mustJSON(p))
	}
	link := func(pid int, kind string) string {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
		return l
	}
	if link(p.InfraPID, "pid") == link(os.Getpid(), "pid") {
		t.Error("infra shares the host PID namespace")
	}
	var podNet string
	_ = inNamespaces(map[string]string{"net": p.NetNS}, func() error {
		podNet, _ = os.Readlink("/proc/thread-self/ns/net")
		return nil
	})
	if got := link(p.InfraPID, "net"); got != podNet {
		t.Errorf("infra net ns %s, pod %s", got, podNet)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.InfraPID))
	if !strings.Contains(string(status), "NSpid:\t"+fmt.Sprint(p.InfraPID)+"\t1\n") {
		t.Errorf("infra is not PID 1 of its namespace:\n%s", grepLines(string(status), "NSpid"))
	}
	procs, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", p.Cgroup.Path, "cgroup.procs"))
	if strings.TrimSpace(string(procs)) != fmt.Sprint(p.InfraPID) {
		t.Errorf("pod cgroup procs = %q, want the infra %d", procs, p.InfraPID)
	}
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", p.InfraPID)); cwd != p.RunDir {
		t.Errorf("infra cwd = %s, want the pod's run dir %s", cwd, p.RunDir)
	}
	if p.PIDNSPath() != fmt.Sprintf("/proc/%d/ns/pid", p.InfraPID) {
		t.Errorf("PIDNSPath = %s", p.PIDNSPath())
	}

	// A daemon restart: a new manager over the same database.
	e.open()
	if err := e.mgr.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	again, err := e.mgr.Get(p.ID)
	if err != nil || again.State != StateReady {
		t.Fatalf("after restart: %v %v", again, err)
	}
	if err := e.mgr.Stop(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(p.InfraPID, p.InfraStart) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if processAlive(p.InfraPID, p.InfraStart) {
		t.Error("infra alive after stop")
	}
}

// editRecord changes a pod's record behind the manager's back, as a crash
// at some step would have left it.
func (e *env) editRecord(id string, edit func(*Pod)) {
	e.t.Helper()
	table, err := state.NewTable[Pod](e.store, "sandboxes")
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := table.Get(id)
	if err != nil {
		e.t.Fatal(err)
	}
	edit(p)
	if err := table.Put(id, p); err != nil {
		e.t.Fatal(err)
	}
}

// Recover (PEERS §5.4): a run, stop or remove a crash interrupted is undone
// or finished from the write-ahead record, and a pod whose namespaces are
// gone (a reboot) becomes NOTREADY with its IP released.
func TestRecover(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creating := e.run(podConfig("crash-in-run"))
	stopping := e.run(podConfig("crash-in-stop"))
	removing := e.run(podConfig("crash-in-remove"))
	rebooted := e.run(podConfig("rebooted"))
	healthy := e.run(podConfig("healthy"))

	e.editRecord(creating.ID, func(p *Pod) { p.State, p.Step = StateCreating, "start infra process" })
	e.editRecord(stopping.ID, func(p *Pod) { p.State, p.Step = StateStopping, "tear down pod network" })
	e.editRecord(removing.ID, func(p *Pod) { p.State, p.Step = StateRemoving, "remove pod files" })
	// A reboot empties the state tmpfs (the pinned namespaces are gone)
	// and the netfilter tables: drop the pod's masquerade rules as the
	// reboot would, since the bridge plugin needs the netns to find them.
	if err := unpinNamespaces(rebooted.NSDir); err != nil {
		t.Fatal(err)
	}
	// The bridge plugin's chain and comment (plugins pkg/utils).
	chain := fmt.Sprintf("CNI-%x", sha512.Sum512([]byte(testNetwork+rebooted.ID)))[:28]
	for _, args := range [][]string{
		{"-t", "nat", "-D", "POSTROUTING", "-s", rebooted.IPs[0], "-j", chain, "-m", "comment", "--comment", fmt.Sprintf("name: %q id: %q", testNetwork, rebooted.ID)},
		{"-t", "nat", "-F", chain},
		{"-t", "nat", "-X", chain},
	} {
		if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v: %s", args, err, out)
		}
	}

	e.open()
	if err := e.mgr.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	e.assertGone(creating)
	e.assertGone(removing)
	for _, p := range []*Pod{stopping, rebooted} {
		got, err := e.mgr.Get(p.ID)
		if err != nil || got.State != StateNotReady || len(got.IPs) != 0 {
			t.Errorf("%s after recover: %v, %v", p.Name, got, err)
		}
		if _, err := os.Stat(filepath.Join(e.ipamDir, testNetwork, p.IPs[0])); err == nil {
			t.Errorf("%s: IP %s not released", p.Name, p.IPs[0])
		}
	}
	got, err := e.mgr.Get(healthy.ID)
	if err != nil || got.State != StateReady || !isNamespace(got.NetNS) {
		t.Errorf("healthy pod after recover: %v, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(e.ipamDir, testNetwork, healthy.IPs[0])); err != nil {
		t.Errorf("healthy pod lost its IP: %v", err)
	}
	// The name index was rebuilt: the healthy pod's name is still taken.
	cfg := podConfig("healthy")
	cfg.Metadata.Uid = healthy.UID
	if _, err := e.mgr.Run(ctx, cfg, ""); err == nil || !strings.Contains(err.Error(), healthy.ID) {
		t.Errorf("rerun of a recovered pod's name = %v", err)
	}
	// Short IDs resolve after a restart too.
	if p, err := e.mgr.Get(healthy.ID[:10]); err != nil || p.ID != healthy.ID {
		t.Errorf("prefix lookup after recover: %v", err)
	}
}

// Item 9: 50 pods created and removed leave nothing: no pinned namespace or
// other mount, veth, IP, cgroup, directory or record.
func TestFiftyPods(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	e := newEnv(t)
	ctx := context.Background()
	var pods []*Pod
	for i := range 50 {
		pods = append(pods, e.run(podConfig(fmt.Sprintf("many-%d", i))))
	}
	seen := map[string]bool{}
	for _, p := range pods {
		if seen[p.IPs[0]] {
			t.Errorf("IP %s given twice", p.IPs[0])
		}
		seen[p.IPs[0]] = true
	}
	for i, p := range pods {
		if i%2 == 0 { // half stopped first, half removed directly
			if err := e.mgr.Stop(ctx, p.ID); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.mgr.Remove(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		e.assertGone(p)
	}
	e.assertNothingLeft(nil)
}

// Item 5: the pod cgroup sits under the config's cgroup parent and carries
// the pod's resources plus its overhead.
func TestPodCgroupResources(t *testing.T) {
	e := newEnv(t)
	cfg := podConfig("resources")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000}
	cfg.Linux.Overhead = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20, CpuShares: 100, CpuQuota: 10000, CpuPeriod: 100000}
	p := e.run(cfg)
	if p.Cgroup.Path != testCgroup+"/"+p.ID || p.Cgroup.ContainerParent() != p.Cgroup.Path {
		t.Errorf("cgroup = %+v", p.Cgroup)
	}
	read := func(ctrl, file string) string {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctrl, p.Cgroup.Path, file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	for _, c := range []struct{ ctrl, file, want string }{
		{"memory", "memory.limit_in_bytes", fmt.Sprint(80 << 20)},
		{"cpu", "cpu.shares", "612"},
		{"cpu", "cpu.cfs_quota_us", "60000"},
	} {
		if got := read(c.ctrl, c.file); got != c.want {
			t.Errorf("%s = %s, want %s", c.file, got, c.want)
		}
	}
	// An in-place resize: new resources, same overhead.
	err := e.mgr.UpdateResources(context.Background(), p.ID[:8], cfg.Linux.Overhead, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20, CpuShares: 1024, CpuQuota: 100000, CpuPeriod: 100000})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ ctrl, file, want string }{
		{"memory", "memory.limit_in_bytes", fmt.Sprint(144 << 20)},
		{"cpu", "cpu.shares", "1124"},
		{"cpu", "cpu.cfs_quota_us", "110000"},
	} {
		if got := read(c.ctrl, c.file); got != c.want {
			t.Errorf("after resize %s = %s, want %s", c.file, got, c.want)
		}
	}
	updated, _ := e.mgr.Get(p.ID)
	if cfg, err := updated.SandboxConfig(); err != nil || cfg.GetLinux().GetResources().GetMemoryLimitInBytes() != 128<<20 {
		t.Errorf("recorded config not updated: %v", err)
	}
	if err := e.mgr.Remove(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	e.assertGone(p)
}

func TestPodCgroupRef(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef"
	for _, c := range []struct {
		driver, parent string
		want           CgroupRef
		bad            bool
	}{
		{"cgroupfs", "/kubepods/besteffort/pod123", CgroupRef{Path: "/kubepods/besteffort/pod123/" + id}, false},
		{"cgroupfs", "", CgroupRef{Path: "/berth/" + id}, false},
		{"cgroupfs", "kubepods.slice", CgroupRef{}, true},
		{"systemd", "kubepods-besteffort-pod123.slice", CgroupRef{Systemd: true, Parent: "kubepods-besteffort-pod123.slice", Name: "kubepods-besteffort-pod123-berth0123456789abcdef.slice"}, false},
		{"systemd", "kubepods-besteffort.slice:berth:x", CgroupRef{Systemd: true, Parent: "kubepods-besteffort.slice", Name: "kubepods-besteffort-berth0123456789abcdef.slice"}, false},
		{"systemd", "", CgroupRef{Systemd: true, Parent: "berth.slice", Name: "berth-berth0123456789abcdef.slice"}, false},
		{"systemd", "/kubepods/pod1", CgroupRef{}, true},
	} {
		got, err := podCgroupRef(c.driver, c.parent, id)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("podCgroupRef(%s, %q) = %+v, %v; want %+v (error %v)", c.driver, c.parent, got, err, c.want, c.bad)
		}
	}
}

// A pod whose record is lost (a wiped database) still has its IP released
// (CNI GC at start) and its pinned namespaces, /dev/shm and directories
// removed.
func TestRecoverSweepsOrphans(t *testing.T) {
	e := newEnv(t)
	p := e.run(podConfig("orphan"))
	table, err := state.NewTable[Pod](e.store, "sandboxes")
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Delete(p.ID); err != nil {
		t.Fatal(err)
	}
	e.open()
	if err := e.mgr.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The cgroup's parent is not derivable without the record; remove it
	// by its recorded handle, as an operator would.
	if err := destroyCgroup(p.Cgroup); err != nil {
		t.Fatal(err)
	}
	e.assertGone(p)
	e.assertNoAllocations()
}
