package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/sandbox"
)

// usernsHost is the host id of the pod's root in these tests.
const usernsHost = 100000

// usernsPod runs a pod with its own user namespace mapping 0-65535 to
// usernsHost-.
func (e *env) usernsPod(pid runtimeapi.NamespaceMode) *sandbox.Pod {
	e.t.Helper()
	seq++
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: usernsHost, Length: 65536}}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("u%d", seq), Namespace: "test", Uid: fmt.Sprintf("uid%d-%d", seq, time.Now().UnixNano())},
		Hostname:     fmt.Sprintf("u%d", seq),
		LogDirectory: filepath.Join(e.base, "logs", fmt.Sprint(seq)),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: testCgroup,
			// Written by the daemon into namespaces the pod's user
			// namespace owns.
			Sysctls: map[string]string{"net.ipv4.ip_unprivileged_port_start": "80", "kernel.shm_rmid_forced": "1"},
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{
					Pid:           pid,
					UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping},
				},
			},
		},
	}
	return e.runPod(cfg)
}

// letUsernsIn opens the test's temporary directories (0700, above berth's
// root, so berth leaves them alone as it does /var/lib) to the pod's root.
func (e *env) letUsernsIn() {
	for d := e.base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			e.t.Fatal(err)
		}
	}
}

func hostOwner(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
}

// TestUserNamespacePod runs containers in a pod with a user namespace: the
// mapping shows in /proc/self/uid_map, the image's root-owned files appear
// owned by root, what the container writes is owned by the mapped root on
// the host, a volume's owners are mapped, the pod's containers share its
// user namespace, and removing the pod leaves no mount, pinned namespace or
// process behind.
func TestUserNamespacePod(t *testing.T) {
	e := newEnv(t)
	e.letUsernsIn()
	vol := t.TempDir()
	if err := os.WriteFile(filepath.Join(vol, "by-root"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "by-1000"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(vol, "by-1000"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	p := e.usernsPod(runtimeapi.NamespaceMode_CONTAINER)
	if p.UserNS == "" {
		t.Fatal("pod has no user namespace")
	}
	cfg := config("u", "sleep", "1000")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol}}
	c := e.run(p, cfg)

	if out, _ := e.exec(c.ID, "cat", "/proc/self/uid_map"); strings.Join(strings.Fields(out), " ") != fmt.Sprintf("0 %d 65536", usernsHost) {
		t.Fatalf("uid_map inside: %q", out)
	}
	if out, _ := e.exec(c.ID, "id", "-u"); strings.TrimSpace(out) != "0" {
		t.Fatalf("id -u: %q", out)
	}
	if out, _ := e.exec(c.ID, "stat", "-c", "%u:%g", "/bin/busybox", "/"); strings.Fields(out)[0] != "0:0" || strings.Fields(out)[1] != "0:0" {
		t.Fatalf("rootfs owners inside: %q", out)
	}
	if out, code := e.exec(c.ID, "sh", "-c", "echo hi > /written && mkdir /made && stat -c %u /written"); code != 0 || strings.TrimSpace(out) != "0" {
		t.Fatalf("write to the rootfs: %d %q", code, out)
	}
	if got, want := hostOwner(t, filepath.Join(c.Dir, "upper", "written")), fmt.Sprintf("%d:%d", usernsHost, usernsHost); got != want {
		t.Fatalf("a file the container wrote is owned by %s on the host, want %s", got, want)
	}
	if out, _ := e.exec(c.ID, "stat", "-c", "%u", "/vol/by-root", "/vol/by-1000"); strings.Join(strings.Fields(out), " ") != "0 1000" {
		t.Fatalf("volume owners inside: %q (want 0 1000)", out)
	}
	if out, code := e.exec(c.ID, "sh", "-c", "touch /vol/new"); code != 0 {
		t.Fatalf("root cannot write the idmapped volume: %q", out)
	}
	if got := hostOwner(t, filepath.Join(vol, "new")); got != "0:0" {
		t.Fatalf("file written to the volume is %s on the host, want 0:0 (idmapped back)", got)
	}
	// A second container shares the pod's user (and network) namespace.
	c2 := e.run(p, config("u2", "sleep", "1000"))
	ns1, _ := e.exec(c.ID, "readlink", "/proc/self/ns/user")
	ns2, _ := e.exec(c2.ID, "readlink", "/proc/self/ns/user")
	if ns1 != ns2 || ns1 == "" {
		t.Fatalf("containers in different user namespaces: %q %q", ns1, ns2)
	}
	host, _ := os.Readlink("/proc/self/ns/user")
	if strings.TrimSpace(ns1) == host {
		t.Fatal("container is in the host's user namespace")
	}
	if out, _ := e.exec(c.ID, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start", "/proc/sys/kernel/shm_rmid_forced"); strings.Join(strings.Fields(out), " ") != "80 1" {
		t.Fatalf("pod sysctls inside: %q", out)
	}
	if out, _ := e.exec(c.ID, "hostname"); strings.TrimSpace(out) != p.Hostname {
		t.Fatalf("hostname %q, want %q", out, p.Hostname)
	}

	e.cleanup()
	if left := mountsUnder(t, e.base); len(left) > 0 {
		t.Fatalf("mounts left after removing the pod: %v", left)
	}
	if _, err := os.Stat(p.NSDir); !os.IsNotExist(err) {
		t.Fatalf("namespace dir %s left: %v", p.NSDir, err)
	}
}

// TestUserNamespaceSharedPID: with a shared PID namespace the helper that
// made the user namespace stays as the pod's init, and containers join its
// PID namespace, which the user namespace owns.
func TestUserNamespaceSharedPID(t *testing.T) {
	e := newEnv(t)
	e.letUsernsIn()
	p := e.usernsPod(runtimeapi.NamespaceMode_POD)
	if p.InfraPID == 0 {
		t.Fatal("no infra process")
	}
	cfg := config("s", "sleep", "1000")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
	}}
	c := e.run(p, cfg)
	if out, _ := e.exec(c.ID, "cat", "/proc/self/uid_map"); !strings.Contains(out, fmt.Sprint(usernsHost)) {
		t.Fatalf("uid_map inside: %q", out)
	}
	// PID 1 is the pod's init, not the container's process.
	if out, _ := e.exec(c.ID, "cat", "/proc/1/cmdline"); strings.Contains(out, "sleep") {
		t.Fatalf("PID 1 is %q, want the pod's init", out)
	}
	infra := p.InfraPID
	e.cleanup()
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", infra)); err == nil {
		t.Fatalf("infra process %d still alive", infra)
	}
	if left := mountsUnder(t, e.base); len(left) > 0 {
		t.Fatalf("mounts left: %v", left)
	}
}

// TestUserNamespaceSurvivesRestart: a new daemon over the same state finds
// the pod's pinned user namespace and its running container, execs in it,
// and still tears everything down.
func TestUserNamespaceSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	e.letUsernsIn()
	p := e.usernsPod(runtimeapi.NamespaceMode_CONTAINER)
	c := e.run(p, config("r", "sleep", "1000"))
	e.open()
	if got, err := e.pods.Get(p.ID); err != nil || got.State != sandbox.StateReady || got.UserNS != p.UserNS {
		t.Fatalf("pod after restart: %+v %v", got, err)
	}
	if out, _ := e.exec(c.ID, "cat", "/proc/self/uid_map"); !strings.Contains(out, fmt.Sprint(usernsHost)) {
		t.Fatalf("uid_map after restart: %q", out)
	}
	e.cleanup()
	if left := mountsUnder(t, e.base); len(left) > 0 {
		t.Fatalf("mounts left: %v", left)
	}
}
