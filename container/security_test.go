package container

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// status reads a field of /proc/1/status inside the container.
func (e *env) status(id, field string) string {
	e.t.Helper()
	out, _ := e.exec(id, "grep", "^"+field+":", "/proc/1/status")
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), field+":"))
}

func withSC(cfg *runtimeapi.ContainerConfig, sc *runtimeapi.LinuxContainerSecurityContext) *runtimeapi.ContainerConfig {
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: sc}
	return cfg
}

func capMask(t *testing.T, hex string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		t.Fatalf("cap mask %q: %v", hex, err)
	}
	return v
}

func TestCapabilities(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	const capNetAdmin, capSysAdmin, capChown = 12, 21, 0

	def := e.run(p, config("default", "sleep", "1000"))
	eff := capMask(t, e.status(def.ID, "CapEff"))
	if eff&(1<<capChown) == 0 || eff&(1<<capSysAdmin) != 0 || eff&(1<<capNetAdmin) != 0 {
		t.Fatalf("default caps %x", eff)
	}
	added := e.run(p, withSC(config("added", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{
		Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}, DropCapabilities: []string{"CHOWN"}},
	}))
	eff = capMask(t, e.status(added.ID, "CapEff"))
	if eff&(1<<capNetAdmin) == 0 || eff&(1<<capChown) != 0 {
		t.Fatalf("add/drop caps %x", eff)
	}
	none := e.run(p, withSC(config("none", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{
		Capabilities: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}},
	}))
	if eff := capMask(t, e.status(none.ID, "CapEff")); eff != 0 {
		t.Fatalf("drop ALL left %x", eff)
	}
	// ALL and privileged give what the runtime itself holds (this machine's
	// root lacks CAP_SYS_RESOURCE), and start.
	all := e.run(p, withSC(config("all", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{
		Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"ALL"}},
	}))
	own := capMask(t, strings.TrimSpace(strings.TrimPrefix(grepStatus(t, "CapBnd"), "CapBnd:")))
	if eff := capMask(t, e.status(all.ID, "CapEff")); eff != own {
		t.Fatalf("ALL gave %x, runtime holds %x", eff, own)
	}
	priv := e.run(p, withSC(config("priv", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{Privileged: true}))
	if eff := capMask(t, e.status(priv.ID, "CapEff")); eff != own {
		t.Fatalf("privileged gave %x", eff)
	}
	// Privileged: no masked paths, writable sysfs, host devices.
	if _, code := e.exec(priv.ID, "sh", "-c", "test -w /sys/kernel && ls /dev | grep -q -e loop -e vd -e null"); code != 0 {
		t.Fatal("privileged container lacks writable sysfs or host devices")
	}
	// Ambient capabilities reach a non-root process.
	amb := e.run(p, withSC(config("ambient", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{
		RunAsUser:    &runtimeapi.Int64Value{Value: 1000},
		Capabilities: &runtimeapi.Capability{AddAmbientCapabilities: []string{"NET_ADMIN"}},
	}))
	if eff := capMask(t, e.status(amb.ID, "CapAmb")); eff&(1<<capNetAdmin) == 0 {
		t.Fatalf("ambient caps %x", eff)
	}
}

func grepStatus(t *testing.T, field string) string {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, field+":") {
			return l
		}
	}
	t.Fatalf("no %s", field)
	return ""
}

func TestSeccompAndNoNewPrivs(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	unconfined := e.run(p, config("nil", "sleep", "1000"))
	if s := e.status(unconfined.ID, "Seccomp"); s != "0" {
		t.Fatalf("nil profile: Seccomp %s", s)
	}
	def := e.run(p, withSC(config("default", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{
		Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}, NoNewPrivs: true,
	}))
	if s := e.status(def.ID, "Seccomp"); s != "2" {
		t.Fatalf("RuntimeDefault: Seccomp %s", s)
	}
	if s := e.status(def.ID, "NoNewPrivs"); s != "1" {
		t.Fatalf("no_new_privs: %s", s)
	}
	// The default profile refuses what it should (unshare of a user ns
	// without CAP_SYS_ADMIN is allowed by it, but mount is not).
	if out, code := e.exec(def.ID, "sh", "-c", "mount -t tmpfs x /mnt"); code == 0 {
		t.Fatalf("mount allowed under the default profile: %s", out)
	}
	// Localhost: a profile that denies sethostname.
	profile := filepath.Join(e.base, "deny-hostname.json")
	os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644)
	local := e.run(p, withSC(config("local", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{
		Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"SYS_ADMIN"}},
		Seccomp:      &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: profile},
	}))
	if _, code := e.exec(local.ID, "hostname", "x"); code == 0 {
		t.Fatal("localhost profile did not block sethostname")
	}
	for name, sp := range map[string]*runtimeapi.SecurityProfile{
		"missing":  {ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: filepath.Join(e.base, "none.json")},
		"relative": {ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "rel.json"},
	} {
		_, err := e.mgr.Create(context.Background(), p.ID, withSC(config(name, "true"), &runtimeapi.LinuxContainerSecurityContext{Seccomp: sp}))
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s profile: %v", name, err)
		}
	}
	bad := filepath.Join(e.base, "bad.json")
	os.WriteFile(bad, []byte(`{not json`), 0o644)
	_, err := e.mgr.Create(context.Background(), p.ID, withSC(config("bad", "true"), &runtimeapi.LinuxContainerSecurityContext{
		Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: bad}}))
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unparsable profile: %v", err)
	}
}

func TestUsersAndGroups(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	id := func(c *Container) string {
		out, _ := e.exec(c.ID, "id")
		return strings.TrimSpace(out)
	}
	uid := e.run(p, withSC(config("uid", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{
		RunAsUser: &runtimeapi.Int64Value{Value: 1234}, RunAsGroup: &runtimeapi.Int64Value{Value: 5678},
		SupplementalGroups: []int64{42},
	}))
	if got := id(uid); !strings.HasPrefix(got, "uid=1234 gid=5678") || !strings.Contains(got, "42") {
		t.Fatalf("run_as_user/group: %s", got)
	}
	if c, _ := e.mgr.Get(uid.ID); c.UID != 1234 || c.GID != 5678 || len(c.Groups) != 1 {
		t.Fatalf("recorded user: %+v", c)
	}
	// By name, from the image's /etc/passwd: www-data is 33:33.
	named := e.run(p, withSC(config("named", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "www-data"}))
	if got := id(named); !strings.HasPrefix(got, "uid=33(www-data) gid=33(www-data)") {
		t.Fatalf("run_as_username: %s", got)
	}
	// Merge (the default) adds the groups the image's /etc/group gives the
	// user; Strict only the ones asked for.
	merge := e.run(p, withSC(config("merge", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{
		RunAsUsername: "www-data", SupplementalGroups: []int64{1234},
	}))
	if out, _ := e.exec(merge.ID, "id", "-G"); strings.TrimSpace(out) != "33 1234 50000" {
		t.Fatalf("Merge groups: %q", out)
	}
	strict := e.run(p, withSC(config("strict", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{
		RunAsUsername: "www-data", SupplementalGroups: []int64{1234},
		SupplementalGroupsPolicy: runtimeapi.SupplementalGroupsPolicy_Strict,
	}))
	if out, _ := e.exec(strict.ID, "id", "-G"); strings.TrimSpace(out) != "33 1234" {
		t.Fatalf("Strict groups: %q", out)
	}
	ctx := context.Background()
	for name, sc := range map[string]*runtimeapi.LinuxContainerSecurityContext{
		"unknown name":      {RunAsUsername: "nobody-here"},
		"negative uid":      {RunAsUser: &runtimeapi.Int64Value{Value: -1}},
		"group without uid": {RunAsGroup: &runtimeapi.Int64Value{Value: 1}},
		"negative group":    {RunAsUser: &runtimeapi.Int64Value{Value: 1}, SupplementalGroups: []int64{-5}},
	} {
		if _, err := e.mgr.Create(ctx, p.ID, withSC(config("bad", "true"), sc)); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestReadonlyRootfsAndMaskedPaths(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	ro := e.run(p, withSC(config("ro", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{ReadonlyRootfs: true}))
	if _, code := e.exec(ro.ID, "touch", "/x"); code == 0 {
		t.Fatal("read-only root is writable")
	}
	if _, code := e.exec(ro.ID, "touch", "/dev/shm/x"); code != 0 {
		t.Fatal("/dev/shm not writable under a read-only root")
	}
	def := e.run(p, config("def", "sleep", "1000"))
	// /proc/timer_list is masked by default: empty inside, not on the host.
	if host, _ := os.ReadFile("/proc/timer_list"); len(host) > 0 {
		if out, _ := e.exec(def.ID, "cat", "/proc/timer_list"); out != "" {
			t.Fatalf("/proc/timer_list not masked: %.40q", out)
		}
	}
	if _, code := e.exec(def.ID, "sh", "-c", "echo 1 > /proc/sys/kernel/domainname"); code == 0 {
		t.Fatal("/proc/sys writable by default")
	}
	custom := e.run(p, withSC(config("custom", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{
		MaskedPaths: []string{"/etc/passwd"}, ReadonlyPaths: []string{"/tmp"},
	}))
	if out, _ := e.exec(custom.ID, "cat", "/etc/passwd"); strings.Contains(out, "root:") {
		t.Fatal("masked path readable")
	}
	if _, code := e.exec(custom.ID, "touch", "/tmp/x"); code == 0 {
		t.Fatal("read-only path writable")
	}
}

// This host has neither AppArmor nor SELinux: asking for no confinement
// works, asking for a profile is refused rather than ignored.
func TestMACProfiles(t *testing.T) {
	if DetectHostSecurity().AppArmor || DetectHostSecurity().SELinux {
		t.Skip("the host has AppArmor or SELinux; this test is about hosts without")
	}
	e := newEnv(t)
	p := e.pod(true)
	ctx := context.Background()
	ok := e.run(p, withSC(config("unconfined", "sleep", "1000"), &runtimeapi.LinuxContainerSecurityContext{
		Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined},
	}))
	if ok.State != StateRunning {
		t.Fatalf("unconfined: %s", ok.State)
	}
	for name, sc := range map[string]*runtimeapi.LinuxContainerSecurityContext{
		"apparmor": {Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "my-profile"}},
		"selinux":  {SelinuxOptions: &runtimeapi.SELinuxOption{Type: "container_t"}},
	} {
		_, err := e.mgr.Create(ctx, p.ID, withSC(config(name, "true"), sc))
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "not enabled") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
