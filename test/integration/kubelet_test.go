package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The kubelet test's own pod network.
const kubeletNetwork = `{"cniVersion":"1.0.0","name":"berthkl","plugins":[
 {"type":"bridge","bridge":"berthkl0","isGateway":true,"ipMasq":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.254.0.0/24"}]],"dataDir":"%s"}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}`

func kubeletDaemonConfig(t testing.TB, dir string) string {
	t.Helper()
	netd := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(netd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(netd, "10-berthkl.conflist"), []byte(fmt.Sprintf(kubeletNetwork, filepath.Join(dir, "ipam"))), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = runQuiet("ip", "link", "del", "berthkl0") })
	return fmt.Sprintf("[cni]\nconf_dir = %q\n", netd)
}

// TestKubelet runs a real kubelet (v1.37, standalone: static pods, no API
// server) on bin/shim and checks through kubelet and through crictl that
// its pods run, restart, log, report stats, survive berth's restarts and
// go away with their manifests.
func TestKubelet(t *testing.T) {
	reg := startRegistry(t, "busybox,pause")
	image := reg + "/e2e-test-images/busybox:1.29-2"
	dir := t.TempDir()
	d := startDaemonWithConfig(t, dir, kubeletDaemonConfig(t, dir))
	k := startKubelet(t, d)
	_, podNet, _ := net.ParseCIDR("10.254.0.0/24")

	// The pods that must keep running, untouched, through berth's restarts.
	sleep := "trap 'exit 0' TERM; while true; do sleep 1; done"
	hostnet := k.writeManifest(t, staticPod("hostnet", map[string]any{
		"hostNetwork": true,
		"containers":  []any{busybox("main", image, sleep)},
	}))
	cni := k.writeManifest(t, staticPod("cni", map[string]any{
		"containers": []any{busybox("main", image, sleep)},
	}))
	shared := k.writeManifest(t, staticPod("shared", map[string]any{
		"volumes": []any{map[string]any{"name": "data", "emptyDir": map[string]any{}}},
		"containers": []any{
			withMounts(busybox("writer", image, "echo from-writer > /data/note; "+sleep), "data:/data"),
			withMounts(busybox("reader", image, sleep), "data:/data"),
		},
	}))
	pulled := k.writeManifest(t, staticPod("pulled", map[string]any{
		"containers": []any{map[string]any{"name": "pause", "image": reg + "/pause:3.9", "imagePullPolicy": "Always"}},
	}))
	logger := k.writeManifest(t, staticPod("logger", map[string]any{
		"containers": []any{busybox("logger", image, "for i in 1 2 3; do echo kubelet-line-$i; done; "+sleep)},
	}))
	stable := []string{hostnet, cni, shared, pulled, logger}
	for _, name := range stable {
		k.waitRunning(t, name, 2*time.Minute)
	}

	pods := k.pods(t)
	// Standalone, kubelet knows no node IP to give a host-network pod.
	if ip := pods[hostnet].Status.PodIP; ip != "" && podNet.Contains(net.ParseIP(ip)) {
		t.Errorf("host-network pod IP %q: want the host's", ip)
	}
	if ip := pods[cni].Status.PodIP; !podNet.Contains(net.ParseIP(ip)) {
		t.Errorf("CNI pod IP %q: want one in %s", ip, podNet)
	}
	// crictl sees the same pods, ready, and the same IP.
	for _, name := range stable {
		id := d.must(t, "pods", "-q", "--name", "^"+name+"$", "--state", "ready")
		if id == "" || strings.Contains(id, "\n") {
			t.Fatalf("crictl pods --name %s: %q", name, id)
		}
		if name == hostnet {
			if mode := d.must(t, "inspectp", "-o", "go-template", "--template", "{{.status.linux.namespaces.options.network}}", id); mode != "NODE" {
				t.Errorf("host-network pod's network namespace mode: %q", mode)
			}
		}
		if name == cni {
			if ip := d.must(t, "inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", id); ip != pods[cni].Status.PodIP {
				t.Errorf("crictl sees IP %q for %s, kubelet %q", ip, name, pods[cni].Status.PodIP)
			}
		}
	}
	// The emptyDir is one directory for both containers.
	reader := containerID(t, pods[shared], "reader")
	waitFor(t, "the writer's note, read by the other container", 10*time.Second, func() bool {
		out, err := d.crictl(t, "exec", "-s", reader, "cat", "/data/note")
		return err == nil && strings.TrimSpace(out) == "from-writer"
	})
	// kubelet pulled the image itself (Always) through berth.
	if !strings.Contains(d.logs(), "pause:3.9") || !strings.Contains(d.must(t, "images"), "pause") {
		t.Errorf("pause:3.9 was not pulled through berth")
	}
	// kubelet reads the container's CRI log back.
	waitFor(t, "kubelet /containerLogs", 30*time.Second, func() bool {
		body, err := k.get("/containerLogs/default/"+logger+"/logger", true)
		return err == nil && strings.Contains(string(body), "kubelet-line-1\nkubelet-line-2\nkubelet-line-3\n")
	})
	checkSummary(t, k, cni)

	// berth restarts, gracefully and not, under the running kubelet: the
	// same containers stay, and kubelet counts no restart.
	before := containerIDs(k.pods(t), stable)
	for _, kill := range []bool{false, true} {
		if kill {
			d.kill()
		} else if code := d.stop(t); code != 0 {
			t.Fatalf("berth exited %d on SIGTERM", code)
		}
		d.start(t)
		// Long enough for several of kubelet's relists and a pod sync.
		time.Sleep(12 * time.Second)
		for _, name := range stable {
			k.waitRunning(t, name, 30*time.Second)
		}
		if after := containerIDs(k.pods(t), stable); !slices.Equal(before, after) {
			t.Fatalf("after berth's restart (kill %v), containers\n%v\nwere\n%v", kill, after, before)
		}
	}

	// Restarts kubelet makes: a failing liveness probe and an exit 1 under
	// OnFailure.
	probed := k.writeManifest(t, staticPod("probed", map[string]any{
		"containers": []any{withProbe(busybox("main", image, "touch /tmp/healthy; sleep 3; rm /tmp/healthy; "+sleep))},
	}))
	failing := k.writeManifest(t, staticPod("failing", map[string]any{
		"restartPolicy": "OnFailure",
		"containers":    []any{busybox("main", image, "sleep 1; exit 1")},
	}))
	for _, name := range []string{probed, failing} {
		waitFor(t, name+" restarted by kubelet", 90*time.Second, func() bool {
			p := k.pods(t)[name]
			return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1
		})
	}

	// manifest → Running, one pod at a time.
	for _, hostNetwork := range []bool{true, false} {
		var took []time.Duration
		for i := range 5 {
			start := time.Now()
			name := k.writeManifest(t, latencyPod(i, hostNetwork, image))
			k.waitRunning(t, name, time.Minute)
			took = append(took, time.Since(start))
		}
		slices.Sort(took)
		t.Logf("kubelet on berth: manifest → Running, median of 5 (hostNetwork %v): %v (all: %v)", hostNetwork, took[2].Round(time.Millisecond), took)
	}

	// Deleting every manifest removes every pod from berth.
	entries, err := os.ReadDir(k.manifests)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(k.manifests, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "berth without pods after the manifests went", 2*time.Minute, func() bool {
		out, err := d.crictl(t, "pods", "-q")
		return err == nil && strings.TrimSpace(out) == ""
	})
	if out := d.must(t, "ps", "-a", "-q"); out != "" {
		t.Errorf("containers left after their pods went: %q", out)
	}
	checkNoPodLeft(t, dir)
	if !strings.Contains(k.logs(), `"Using cgroup driver setting received from the CRI runtime" cgroupDriver="cgroupfs"`) {
		t.Errorf("kubelet did not take berth's cgroup driver")
	}

	// No CRI call failed for a reason of berth's: Unavailable only while it
	// restarted, NotFound only for what kubelet asks after removal, and
	// Canceled only where kubelet gave up on its own call.
	for code, lines := range criErrors(k.logs()) {
		if code != "Unavailable" && code != "NotFound" && code != "Canceled" {
			t.Errorf("kubelet saw %d CRI errors with code %s, e.g.\n%s", len(lines), code, strings.Join(lines[:min(3, len(lines))], "\n"))
		}
	}
	// berth's side: every request it failed, it failed with NotFound.
	for l := range strings.SplitSeq(d.logs(), "\n") {
		if strings.Contains(l, "CRI request failed") && !strings.Contains(l, "code=NotFound") {
			t.Errorf("berth failed a kubelet request: %s", l)
		}
	}
}

// checkNoPodLeft: with every pod gone, berth holds no veth on the test
// bridge, no IP address and no mount under its directories.
func checkNoPodLeft(t *testing.T, dir string) {
	t.Helper()
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", "berthkl0").CombinedOutput(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("veths left on the pod bridge:\n%s", out)
	}
	ips, _ := filepath.Glob(filepath.Join(dir, "ipam", "berthkl", "10.*"))
	if len(ips) > 0 {
		t.Errorf("IP addresses still allocated: %v", ips)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for l := range strings.SplitSeq(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			t.Errorf("mount left: %s", f[4])
		}
	}
}

func withMounts(c map[string]any, mounts ...string) map[string]any {
	var ms []any
	for _, m := range mounts {
		name, path, _ := strings.Cut(m, ":")
		ms = append(ms, map[string]any{"name": name, "mountPath": path})
	}
	c["volumeMounts"] = ms
	return c
}

func withProbe(c map[string]any) map[string]any {
	c["livenessProbe"] = map[string]any{
		"exec":             map[string]any{"command": []string{"cat", "/tmp/healthy"}},
		"periodSeconds":    1,
		"failureThreshold": 1,
	}
	return c
}

// containerID is the CRI id of the pod's container called name
// (kubelet reports "berth://<id>").
func containerID(t *testing.T, p kubePod, name string) string {
	t.Helper()
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == name {
			_, id, ok := strings.Cut(c.ContainerID, "://")
			if !ok || !strings.HasPrefix(c.ContainerID, "berth://") {
				t.Fatalf("container %s has id %q", name, c.ContainerID)
			}
			return id
		}
	}
	t.Fatalf("pod %s has no container %s", p.Metadata.Name, name)
	return ""
}

// containerIDs lists pod/container=id@restarts for the named pods.
func containerIDs(pods map[string]kubePod, names []string) []string {
	var out []string
	for _, n := range names {
		for _, c := range pods[n].Status.ContainerStatuses {
			out = append(out, fmt.Sprintf("%s/%s=%s@%d", n, c.Name, c.ContainerID, c.RestartCount))
		}
	}
	slices.Sort(out)
	return out
}

// checkSummary: kubelet's summary API has cpu and memory for the pod and
// its container, which kubelet takes from berth's CRI stats.
func checkSummary(t *testing.T, k *kubelet, pod string) {
	t.Helper()
	type usage struct {
		CPU *struct {
			UsageCoreNanoSeconds *uint64 `json:"usageCoreNanoSeconds"`
		} `json:"cpu"`
		Memory *struct {
			WorkingSetBytes *uint64 `json:"workingSetBytes"`
		} `json:"memory"`
	}
	var last string
	found := func() bool {
		body, err := k.get("/stats/summary", true)
		if err != nil {
			last = err.Error()
			return false
		}
		last = string(body)
		var summary struct {
			Pods []struct {
				PodRef struct {
					Name string `json:"name"`
				} `json:"podRef"`
				usage
				Containers []struct {
					Name string `json:"name"`
					usage
				} `json:"containers"`
			} `json:"pods"`
		}
		if json.Unmarshal(body, &summary) != nil {
			return false
		}
		has := func(u usage) bool {
			return u.CPU != nil && u.CPU.UsageCoreNanoSeconds != nil && *u.CPU.UsageCoreNanoSeconds > 0 &&
				u.Memory != nil && u.Memory.WorkingSetBytes != nil && *u.Memory.WorkingSetBytes > 0
		}
		for _, p := range summary.Pods {
			if p.PodRef.Name == pod {
				return has(p.usage) && len(p.Containers) == 1 && has(p.Containers[0].usage)
			}
		}
		return false
	}
	for deadline := time.Now().Add(time.Minute); !found(); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("no cpu and memory for pod %s in kubelet's summary; last answer:\n%s", pod, last)
		}
	}
}
