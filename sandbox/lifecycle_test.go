package sandbox

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Items 1, 2, 6: a pod gets its own net/ipc/uts namespaces, hostname and
// files, stops keeping its record and releasing its IP, and is removed
// without a trace; stop and remove are idempotent.
func TestRunStopRemove(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := podConfig("lifecycle")
	cfg.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.10.10.10"}, Searches: []string{"svc.example", "example"}, Options: []string{"ndots:5"}}
	p := e.run(cfg)

	if p.State != StateReady || len(p.IPs) != 1 || !strings.HasPrefix(p.IPs[0], "10.250.0.") {
		t.Fatalf("pod = %s, IPs %v", p.State, p.IPs)
	}
	for kind, path := range map[string]string{"net": p.NetNS, "ipc": p.IPCNS, "uts": p.UTSNS} {
		if !isNamespace(path) {
			t.Errorf("%s namespace %q not pinned", kind, path)
		}
		host, _ := os.Readlink("/proc/self/ns/" + kind)
		var pod string
		_ = inNamespaces(map[string]string{kind: path}, func() error {
			pod, _ = os.Readlink("/proc/thread-self/ns/" + kind)
			return nil
		})
		if pod == host || pod == "" {
			t.Errorf("%s namespace of the pod is the host's (%s)", kind, pod)
		}
	}
	// The hostname lives in the pod's UTS namespace.
	var hostname string
	_ = inNamespaces(map[string]string{"uts": p.UTSNS}, func() error {
		b, err := os.ReadFile("/proc/sys/kernel/hostname")
		hostname = strings.TrimSpace(string(b))
		return err
	})
	if hostname != "lifecycle" {
		t.Errorf("hostname in the pod = %q", hostname)
	}
	if h, _ := os.Hostname(); h == "lifecycle" {
		t.Error("the host was renamed")
	}
	want := map[string]string{
		p.HostnamePath:   "lifecycle\n",
		p.ResolvConfPath: "search svc.example example\nnameserver 10.10.10.10\noptions ndots:5\n",
	}
	for path, content := range want {
		if b, err := os.ReadFile(path); err != nil || string(b) != content {
			t.Errorf("%s = %q, %v; want %q", path, b, err, content)
		}
	}
	if b, _ := os.ReadFile(p.HostsPath); !strings.Contains(string(b), p.IPs[0]+"\tlifecycle\n") || !strings.Contains(string(b), "127.0.0.1\tlocalhost") {
		t.Errorf("hosts = %q", b)
	}
	if ok, err := isMountPoint(p.ShmPath); err != nil || !ok {
		t.Errorf("shm %s not mounted: %v", p.ShmPath, err)
	}
	if p.PIDNSPath() != "" || p.InfraPID != 0 {
		t.Errorf("a pod without a shared PID namespace has an infra process %d", p.InfraPID)
	}

	// Stop: the IP is released and the namespaces go, the record stays.
	for range 2 {
		if err := e.mgr.Stop(ctx, p.ID[:12]); err != nil {
			t.Fatalf("stop: %v", err)
		}
	}
	stopped, err := e.mgr.Get(p.ID)
	if err != nil || stopped.State != StateNotReady || len(stopped.IPs) != 0 {
		t.Fatalf("after stop: %+v, %v", stopped, err)
	}
	if isNamespace(p.NetNS) {
		t.Error("net namespace still pinned after stop")
	}
	e.assertNoAllocations()

	for range 2 {
		if err := e.mgr.Remove(ctx, p.ID); err != nil {
			t.Fatalf("remove: %v", err)
		}
	}
	e.assertGone(p)
	e.assertNoAllocations()
	if err := e.mgr.Remove(ctx, "0123456789abcdef"); err != nil {
		t.Errorf("remove of an unknown pod: %v", err)
	}
	if err := e.mgr.Stop(ctx, "0123456789abcdef"); !errdefs.IsNotFound(err) {
		t.Errorf("stop of an unknown pod = %v, want NotFound", err)
	}
}

// Item 2: without DNSConfig the pod gets the host's resolv.conf.
func TestResolvConfFromHost(t *testing.T) {
	e := newEnv(t)
	hostFile := t.TempDir() + "/resolv.conf"
	if err := os.WriteFile(hostFile, []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := hostResolvConf
	hostResolvConf = hostFile
	t.Cleanup(func() { hostResolvConf = old })
	p := e.run(podConfig("hostdns"))
	if b, _ := os.ReadFile(p.ResolvConfPath); string(b) != "nameserver 192.0.2.53\n" {
		t.Errorf("resolv.conf = %q", b)
	}
}

// Item 7: a name is reserved for its pod; the next attempt is a new name.
func TestNameReserved(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := podConfig("dup")
	first := e.run(cfg)
	_, err := e.mgr.Run(ctx, cfg, "")
	if !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), first.ID) {
		t.Fatalf("second run = %v; want AlreadyExists naming %s", err, first.ID)
	}
	cfg.Metadata.Attempt++
	second := e.run(cfg)
	if second.ID == first.ID {
		t.Fatal("same ID")
	}
	// Removing a pod frees its name.
	if err := e.mgr.Remove(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	cfg.Metadata.Attempt--
	e.run(cfg)
}

// Item 1: host namespace options use the host's namespaces, and no pinned
// file, veth or IP exists for them.
func TestHostNamespaces(t *testing.T) {
	e := newEnv(t)
	cfg := podConfig("hostns")
	cfg.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_NODE,
		Ipc:     runtimeapi.NamespaceMode_NODE,
		Pid:     runtimeapi.NamespaceMode_NODE,
	}
	p := e.run(cfg)
	if p.NetNS != "" || p.IPCNS != "" || p.UTSNS != "" || p.ShmPath != "" || len(p.IPs) != 0 || p.PIDMode != PIDHost || p.InfraPID != 0 {
		t.Errorf("host-namespace pod = %s", mustJSON(p))
	}
	if _, err := os.Stat(p.NSDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ns dir made for a host-namespace pod")
	}
	hosts, _ := os.ReadFile("/etc/hosts")
	if b, _ := os.ReadFile(p.HostsPath); string(b) != string(hosts) {
		t.Errorf("host-network pod hosts = %q, want the host's", b)
	}
	e.assertNoAllocations()
	if err := e.mgr.Remove(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	e.assertGone(p)
}
