package container

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCreateStartExitLogs(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	cfg := config("c1", "sh", "-c", "echo out; echo err >&2; echo $FROM_IMAGE $FROM_CONFIG $HOME; pwd; exit 3")
	cfg.Envs = []*runtimeapi.KeyValue{{Key: "FROM_CONFIG", Value: []byte("2")}}
	cfg.WorkingDir = "/tmp"
	cfg.Labels = map[string]string{"l": "v"}
	id, err := e.mgr.Create(context.Background(), p.ID, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := e.mgr.Get(id)
	if c.State != StateCreated || c.Labels["l"] != "v" || c.ImageRef != "example.test/busybox@sha256:0" {
		t.Fatalf("created: %+v", c)
	}
	if err := e.mgr.Start(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	c = e.waitState(id, StateExited)
	if c.ExitCode != 3 || c.Reason != "Error" || c.StartedAt.IsZero() || c.FinishedAt.Before(c.StartedAt) {
		t.Fatalf("exited: %+v", c)
	}
	got := logText(t, c.LogPath)
	for _, want := range []string{"stdout:out", "stderr:err", "stdout:1 2 /root", "stdout:/tmp"} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	if err := e.mgr.Start(context.Background(), id); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("start of an exited container: %v", err)
	}
	if err := e.mgr.Remove(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if err := e.mgr.Remove(context.Background(), id); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := e.mgr.Get(id); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("after remove: %v", err)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("container directory left")
	}
}

func TestStopSignalThenKill(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	// Handles TERM: a graceful stop completes.
	graceful := e.run(p, config("graceful", "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done"))
	time.Sleep(200 * time.Millisecond)
	if err := e.mgr.Stop(context.Background(), graceful.ID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if c, _ := e.mgr.Get(graceful.ID); c.State != StateExited || c.ExitCode != 0 || c.Reason != "Completed" {
		t.Fatalf("graceful: %+v", c)
	}
	// Ignores TERM (PID 1 without a handler): killed after the timeout.
	stubborn := e.run(p, config("stubborn", "sleep", "1000"))
	start := time.Now()
	if err := e.mgr.Stop(context.Background(), stubborn.ID, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Fatalf("killed before the timeout: %v", el)
	}
	if c, _ := e.mgr.Get(stubborn.ID); c.ExitCode != 137 {
		t.Fatalf("stubborn: %+v", c)
	}
	// Timeout 0 kills at once; stopping again succeeds.
	now := e.run(p, config("now", "sleep", "1000"))
	start = time.Now()
	if err := e.mgr.Stop(context.Background(), now.ID, 0); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("timeout 0 did not kill at once")
	}
	if err := e.mgr.Stop(context.Background(), now.ID, 0); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	// Remove of a running container stops it first.
	running := e.run(p, config("running", "sleep", "1000"))
	if err := e.mgr.Remove(context.Background(), running.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(running.Pid)); err == nil {
		if data, _ := os.ReadFile("/proc/" + strconv.Itoa(running.Pid) + "/cmdline"); strings.Contains(string(data), "sleep") {
			t.Fatal("removed container's process still runs")
		}
	}
}

func TestExecSync(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	c := e.run(p, config("exec", "sleep", "1000"))
	out, code := e.exec(c.ID, "sh", "-c", "echo hi; echo $FROM_IMAGE; exit 4")
	if out != "hi\n1\n" || code != 4 {
		t.Fatalf("exec: %q %d", out, code)
	}
	r, err := e.mgr.ExecSync(context.Background(), c.ID, []string{"sh", "-c", "echo o; echo e >&2"}, 0)
	if err != nil || string(r.Stdout) != "o\n" || string(r.Stderr) != "e\n" {
		t.Fatalf("separate streams: %+v %v", r, err)
	}
	// A missing command is an exit status naming it, not a failed call.
	out, code = e.exec(c.ID, "no-such-command")
	if code != 127 || !strings.Contains(out, "no-such-command") {
		t.Fatalf("missing command: %q %d", out, code)
	}
	// Timeout: the process and its children die, the call says so.
	start := time.Now()
	_, err = e.mgr.ExecSync(context.Background(), c.ID, []string{"sh", "-c", "sleep 100 & sleep 101"}, time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("timeout took %v", time.Since(start))
	}
	// Killed children of the exec become zombies of PID 1 (`[sleep]`);
	// none may still run.
	out, _ = e.exec(c.ID, "ps")
	for _, l := range strings.Split(out, "\n") {
		if strings.HasSuffix(l, "sleep 100") || strings.HasSuffix(l, "sleep 101") {
			t.Fatalf("timed-out exec left processes:\n%s", out)
		}
	}
	// A background child holding the output open does not hang the call.
	start = time.Now()
	if _, code := e.exec(c.ID, "sh", "-c", "sleep 30 & echo started"); code != 0 {
		t.Fatal(code)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("exec waited for a background child")
	}
	// Output over the cap is a clear error.
	_, err = e.mgr.ExecSync(context.Background(), c.ID, []string{"sh", "-c", "head -c 17000000 /dev/zero"}, 0)
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("over the cap: %v", err)
	}
	// Exec into a container that is not running.
	if err := e.mgr.Stop(context.Background(), c.ID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.ExecSync(context.Background(), c.ID, []string{"true"}, 0); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("exec in a stopped container: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	ctx := context.Background()
	if _, err := e.mgr.Create(ctx, "no-such-pod", config("x", "true")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown pod: %v", err)
	}
	bad := config("x", "true")
	bad.LogPath = "../../escape.log"
	if _, err := e.mgr.Create(ctx, p.ID, bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("log path outside: %v", err)
	}
	img := config("x", "true")
	img.Image.Image = "nope"
	if _, err := e.mgr.Create(ctx, p.ID, img); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown image: %v", err)
	}
	caps := config("x", "true")
	caps.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"NOT_A_CAP"}}}}
	if _, err := e.mgr.Create(ctx, p.ID, caps); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "NOT_A_CAP") {
		t.Errorf("unknown capability: %v", err)
	}
	// A failed create leaves nothing; the name is free again.
	id, err := e.mgr.Create(ctx, p.ID, config("x", "no-such-command"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.Create(ctx, p.ID, config("x", "true")); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("same name twice: %v", err)
	}
	if err := e.mgr.Start(ctx, id); err == nil || !strings.Contains(err.Error(), "no-such-command") {
		t.Errorf("start of a missing command: %v", err)
	}
	if err := e.mgr.Start(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("start unknown: %v", err)
	}
	// A stopped pod takes no new containers.
	if err := e.pods.Stop(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.Create(ctx, p.ID, config("y", "true")); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("create in a stopped pod: %v", err)
	}
}

func TestPodFilesMountsAndNetwork(t *testing.T) {
	e := newEnv(t)
	p := e.pod(false)
	hostDir := filepath.Join(e.base, "vol", "missing") // created on demand
	cfg := config("mounts", "sleep", "1000")
	cfg.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/rw", HostPath: hostDir},
		{ContainerPath: "/ro", HostPath: hostDir, Readonly: true},
	}
	c := e.run(p, cfg)
	second := e.run(p, config("second", "sleep", "1000"))
	if _, err := os.Stat(hostDir); err != nil {
		t.Fatalf("missing host path not created: %v", err)
	}
	if out, code := e.exec(c.ID, "sh", "-c", "echo x > /rw/f && cat /ro/f"); code != 0 || out != "x\n" {
		t.Fatalf("bind mount: %q %d", out, code)
	}
	if out, code := e.exec(c.ID, "sh", "-c", "echo y > /ro/g"); code == 0 {
		t.Fatalf("read-only mount writable: %q", out)
	}
	if out, _ := e.exec(c.ID, "hostname"); strings.TrimSpace(out) != p.Hostname {
		t.Fatalf("hostname %q, want %q", out, p.Hostname)
	}
	for _, f := range []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"} {
		if _, code := e.exec(c.ID, "test", "-s", f); code != 0 {
			t.Errorf("%s missing or empty", f)
		}
	}
	// Containers of a pod share its network and IPC (/dev/shm).
	if _, code := e.exec(c.ID, "sh", "-c", "echo shared > /dev/shm/x"); code != 0 {
		t.Fatal("write /dev/shm")
	}
	if out, _ := e.exec(second.ID, "cat", "/dev/shm/x"); out != "shared\n" {
		t.Fatalf("/dev/shm not shared: %q", out)
	}
	ip := p.IPs[0]
	if out, _ := e.exec(second.ID, "ip", "-4", "addr", "show", "eth0"); !strings.Contains(out, ip) {
		t.Fatalf("pod IP %s not on eth0:\n%s", ip, out)
	}
	// Own PID namespace each: PID 1 is the container's own command.
	if out, _ := e.exec(c.ID, "cat", "/proc/1/cmdline"); !strings.HasPrefix(out, "sleep") {
		t.Fatalf("pid 1 is %q", out)
	}
	// Image volume: an empty directory of the container's own.
	if _, code := e.exec(c.ID, "sh", "-c", "test -d /data && touch /data/x"); code != 0 {
		t.Fatal("image volume /data missing or read-only")
	}
}

func TestOOMKilled(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	cfg := config("oom", "sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}}
	c := e.run(p, cfg)
	c = e.waitState(c.ID, StateExited)
	if c.Reason != "OOMKilled" || c.ExitCode == 0 {
		mlog, _ := os.ReadFile(filepath.Join(c.Bundle, "monitor.log"))
		t.Fatalf("oom: exit %d reason %q\nlog:\n%s\nmonitor:\n%s", c.ExitCode, c.Reason, logText(t, c.LogPath), mlog)
	}
}

func TestOOMScoreAdjClamped(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	cfg := config("oomadj", "sh", "-c", "cat /proc/self/oom_score_adj; sleep 1000")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{OomScoreAdj: -998}}
	c := e.run(p, cfg)
	own, _ := os.ReadFile("/proc/self/oom_score_adj")
	out, _ := e.exec(c.ID, "cat", "/proc/1/oom_score_adj")
	// With CAP_SYS_RESOURCE the value is applied; without it, clamped to
	// what this process has. Either way the container runs.
	if strings.TrimSpace(out) != "-998" && strings.TrimSpace(out) != strings.TrimSpace(string(own)) {
		t.Fatalf("oom_score_adj %q", out)
	}
	cfg2 := config("oomadj2", "sleep", "1000")
	cfg2.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{OomScoreAdj: 500}}
	c2 := e.run(p, cfg2)
	if out, _ := e.exec(c2.ID, "cat", "/proc/1/oom_score_adj"); strings.TrimSpace(out) != "500" {
		t.Fatalf("raising oom_score_adj: %q", out)
	}
}

func TestUpdateResourcesAndStats(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	cfg := config("res", "sh", "-c", "while true; do :; done")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{
		CpuShares: 512, MemoryLimitInBytes: 64 << 20, MemorySwapLimitInBytes: 96 << 20, OomScoreAdj: 300,
	}}
	c := e.run(p, cfg)
	cg := filepath.Join(p.Cgroup.ContainerParent(), c.ID)
	read := func(ctrl, file string) string {
		data, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctrl, cg, file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(data))
	}
	if read("cpu", "cpu.shares") != "512" || read("memory", "memory.limit_in_bytes") != strconv.Itoa(64<<20) {
		t.Fatal("create-time limits not applied")
	}
	// Swap: the memory+swap limit (v1's memsw; v2's memory.swap.max is
	// the difference, which libcontainer computes).
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil {
		if got := read("memory", "memory.memsw.limit_in_bytes"); got != strconv.Itoa(96<<20) {
			t.Fatalf("memory+swap limit %s", got)
		}
	}
	if out, _ := e.exec(c.ID, "cat", "/proc/1/oom_score_adj"); strings.TrimSpace(out) != "300" {
		t.Fatalf("oom_score_adj %q", out)
	}
	err := e.mgr.UpdateResources(context.Background(), c.ID, &runtimeapi.LinuxContainerResources{
		CpuShares: 256, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 96 << 20, CpusetCpus: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	if read("cpu", "cpu.shares") != "256" || read("cpu", "cpu.cfs_quota_us") != "50000" ||
		read("memory", "memory.limit_in_bytes") != strconv.Itoa(96<<20) || read("cpuset", "cpuset.cpus") != "0" {
		t.Fatal("updated limits not applied")
	}
	cfgNow, _ := e.mgr.Get(c.ID)
	if rec, _ := cfgNow.ContainerConfig(); rec.GetLinux().GetResources().GetCpuShares() != 256 {
		t.Fatal("update not recorded")
	}
	e.mgr.Stats(c.ID)
	time.Sleep(300 * time.Millisecond)
	st, err := e.mgr.Stats(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetCpu().GetUsageCoreNanoSeconds().GetValue() == 0 || st.GetCpu().GetUsageNanoCores().GetValue() == 0 ||
		st.GetMemory().GetWorkingSetBytes().GetValue() == 0 || st.GetWritableLayer().GetInodesUsed() == nil {
		t.Fatalf("stats: %v", st)
	}
}

func TestRecoverAfterRestart(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	running := e.run(p, config("running", "sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; sleep 0.02; done"))
	quick := e.run(p, config("quick", "sh", "-c", "sleep 0.5; exit 7"))
	time.Sleep(200 * time.Millisecond)
	// A new daemon over the same state: the old one's records and monitors.
	e.open()
	if c, _ := e.mgr.Get(running.ID); c.State != StateRunning || c.Pid != running.Pid {
		t.Fatalf("running after restart: %+v", c)
	}
	c := e.waitState(quick.ID, StateExited)
	if c.ExitCode != 7 {
		t.Fatalf("exit while restarting: %+v", c)
	}
	if out, code := e.exec(running.ID, "echo", "alive"); code != 0 || out != "alive\n" {
		t.Fatalf("exec after restart: %q", out)
	}
	if err := e.mgr.Stop(context.Background(), running.ID, 0); err != nil {
		t.Fatal(err)
	}
	// The log counts on without a gap or a repeat.
	lines := strings.Split(logText(t, running.LogPath), "\n")
	for i, l := range lines {
		if l != "stdout:"+strconv.Itoa(i+1) {
			t.Fatalf("log line %d is %q", i, l)
		}
	}
}

func TestTerminationMessageDevicesAndMountKinds(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	msgFile := filepath.Join(e.base, "termination-log")
	os.WriteFile(msgFile, nil, 0o666)
	cfg := config("term", "sh", "-c", "echo 'all done' > /dev/termination-log; exit 0")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/dev/termination-log", HostPath: msgFile}}
	cfg.Annotations = map[string]string{terminationMessagePathAnnotation: "/dev/termination-log"}
	c := e.run(p, cfg)
	c = e.waitState(c.ID, StateExited)
	if c.Message != "all done\n" || c.Reason != "Completed" {
		t.Fatalf("termination message %q, reason %q", c.Message, c.Reason)
	}

	dev := config("dev", "sleep", "1000")
	// /dev/kmsg is not among the devices every container gets; opening it
	// for writing needs "w" in the device's permissions.
	dev.Devices = []*runtimeapi.Device{
		{HostPath: "/dev/kmsg", ContainerPath: "/dev/kmsg-r", Permissions: "r"},
	}
	d := e.run(p, dev)
	if _, code := e.exec(d.ID, "test", "-c", "/dev/kmsg-r"); code != 0 {
		t.Fatal("device node missing")
	}
	if _, code := e.exec(d.ID, "sh", "-c", "exec 3>/dev/kmsg-r"); code == 0 {
		t.Fatal("device writable with permissions r")
	}
	devW := config("devw", "sleep", "1000")
	devW.Devices = []*runtimeapi.Device{{HostPath: "/dev/kmsg", ContainerPath: "/dev/kmsg-w", Permissions: "rw"}}
	dw := e.run(p, devW)
	if out, code := e.exec(dw.ID, "sh", "-c", "exec 3>/dev/kmsg-w"); code != 0 {
		t.Fatalf("device not writable with permissions rw: %s", out)
	}
	bad := config("baddev", "true")
	bad.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/x", Permissions: "rwz"}}
	if _, err := e.mgr.Create(context.Background(), p.ID, bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad device permissions: %v", err)
	}

	// A file where the image has a directory, and the reverse.
	file := filepath.Join(e.base, "afile")
	os.WriteFile(file, []byte("x"), 0o644)
	for name, m := range map[string]*runtimeapi.Mount{
		"file over dir": {ContainerPath: "/etc", HostPath: file},
		"dir over file": {ContainerPath: "/etc/passwd", HostPath: e.base},
	} {
		cfg := config("kind", "true")
		cfg.Mounts = []*runtimeapi.Mount{m}
		if _, err := e.mgr.Create(context.Background(), p.ID, cfg); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
