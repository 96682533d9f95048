package integration

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-runtime/berth/test/testutil"
)

// kubeletBinary is the kubelet hack/kubelet.sh builds (or $BERTH_KUBELET).
func kubeletBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("BERTH_KUBELET")
	if p == "" {
		p = filepath.Join(toolsBin(), "kubelet")
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("BERTH_REQUIRE_TOOLS") != "" {
			t.Fatalf("kubelet not installed: run hack/kubelet.sh")
		}
		t.Skip("kubelet not installed (run hack/kubelet.sh, or `make kubelet`)")
	}
	return p
}

// kubeletNode is the name the test's kubelet runs as; static pods are named
// <manifest name>-<node>.
const kubeletNode = "berth-node"

// kubeletSysctls are the host settings kubelet sets at start
// (setupKernelTunables), put back when the test ends.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// hostPaths kubelet creates outside its --root-dir, whatever its config.
var kubeletHostPaths = []string{"/var/lib/kubelet/device-plugins", "/var/lib/kubelet", "/var/log/containers"}

// restoreHostAfterKubelet records what kubelet changes on the host and, when
// the test ends, puts it back: sysctls, the bind mount of its root dir, the
// /kubepods cgroups, and the directories it makes under /var. Register it
// before the pods' removal so that it runs after it (cgroups with
// processes cannot go).
func restoreHostAfterKubelet(t testing.TB, rootDir string) {
	t.Helper()
	if _, err := os.Stat("/sys/fs/cgroup/memory/kubepods"); err == nil {
		if left := testutil.RemoveCgroup("kubepods"); len(left) > 0 {
			t.Skipf("a kubelet's /kubepods cgroups are in use on this machine (%s): not running a second one", left[0])
		}
	}
	saved := map[string][]byte{}
	for _, s := range kubeletSysctls {
		if v, err := os.ReadFile("/proc/sys/" + s); err == nil {
			saved[s] = v
		}
	}
	var made []string
	for _, p := range kubeletHostPaths {
		if _, err := os.Stat(p); os.IsNotExist(err) {
			made = append(made, p)
		}
	}
	t.Cleanup(func() {
		for s, v := range saved {
			if err := os.WriteFile("/proc/sys/"+s, v, 0o644); err != nil {
				t.Errorf("restore sysctl %s: %v", s, err)
			}
		}
		// kubelet makes its root dir a shared bind mount of itself.
		for range 10 {
			if syscall.Unmount(rootDir, syscall.MNT_DETACH) != nil {
				break
			}
		}
		if left := testutil.RemoveCgroup("kubepods"); len(left) > 0 {
			t.Errorf("kubelet cgroups left: %v", left)
		}
		for _, p := range made { // deepest first, as listed
			if err := os.RemoveAll(p); err != nil {
				t.Errorf("remove %s: %v", p, err)
			}
		}
	})
}

// kubelet is one kubelet process in standalone mode (no API server)
// running the static pods in its manifests directory on a berth daemon.
type kubelet struct {
	cmd       *exec.Cmd
	exited    chan struct{}
	dir       string
	manifests string
	logPath   string
	port      int // HTTPS: logs, exec, stats
	readOnly  int // HTTP: /pods, /stats
	client    *http.Client
}

// startKubelet writes a KubeletConfiguration for d and starts kubelet on
// it. Every port is on 127.0.0.1, away from kubelet's defaults, and every
// directory is the test's own.
func startKubelet(t testing.TB, d *daemon) *kubelet {
	t.Helper()
	bin := kubeletBinary(t)
	// Not t.TempDir: a benchmark's long name would push kubelet's unix
	// sockets under the root dir past their 108-byte limit.
	dir, err := os.MkdirTemp("", "kubelet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	k := &kubelet{dir: dir, port: freePort(t), readOnly: freePort(t)}
	k.manifests = filepath.Join(k.dir, "manifests")
	k.logPath = filepath.Join(k.dir, "kubelet.log")
	rootDir := filepath.Join(k.dir, "root")
	for _, p := range []string{k.manifests, rootDir} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	restoreHostAfterKubelet(t, rootDir)
	// Pods the kubelet made are removed through berth after kubelet has
	// stopped and before the host is restored.
	d.cleanupPods(t)

	ep := "unix://" + d.socket
	config := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"staticPodPath":            k.manifests,
		"fileCheckFrequency":       "1s",
		"syncFrequency":            "10s",
		"address":                  "127.0.0.1",
		"port":                     k.port,
		"readOnlyPort":             k.readOnly,
		"healthzBindAddress":       "127.0.0.1",
		"healthzPort":              freePort(t),
		"containerRuntimeEndpoint": ep,
		"imageServiceEndpoint":     ep,
		// Deliberately not berth's driver: berth's RuntimeConfig answer
		// (cgroupfs here) must win, as the test checks in kubelet's log.
		"cgroupDriver":           "systemd",
		"failCgroupV1":           false,
		"failSwapOn":             false,
		"authentication":         map[string]any{"anonymous": map[string]any{"enabled": true}, "webhook": map[string]any{"enabled": false}},
		"authorization":          map[string]any{"mode": "AlwaysAllow"},
		"podLogsDir":             filepath.Join(k.dir, "pod-logs"),
		"volumePluginDir":        filepath.Join(k.dir, "volume-plugins"),
		"makeIPTablesUtilChains": false,
		"serializeImagePulls":    false,
		// The test machine's disk is shared: never evict or collect the
		// test's own pods and images for a host's full disk.
		"evictionHard":                map[string]string{"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"resolvConf":                  "/etc/resolv.conf",
	}
	cfgPath := writeJSON(t, filepath.Join(k.dir, "kubelet.json"), config)

	logFile, err := os.Create(k.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	k.cmd = exec.Command(bin, "--config", cfgPath, "--root-dir", rootDir, "--hostname-override", kubeletNode, "--v", "2")
	k.cmd.Stdout, k.cmd.Stderr = logFile, logFile
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k.exited = make(chan struct{})
	go func() { _ = k.cmd.Wait(); close(k.exited) }()
	t.Cleanup(func() {
		k.stop(t)
		keepLogs(t, k.logPath, d.logPath)
	})
	k.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		// kubelet serves a self-signed certificate it made at start.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	waitFor(t, "kubelet's read-only port", 60*time.Second, func() bool {
		select {
		case <-k.exited:
			t.Fatalf("kubelet exited at start:\n%s", tail(k.logs(), 40))
		default:
		}
		_, err := k.get("/healthz", false)
		return err == nil
	})
	return k
}

func (k *kubelet) logs() string {
	data, _ := os.ReadFile(k.logPath)
	return string(data)
}

// stop ends kubelet with SIGTERM (kubelet leaves its pods running, as on
// a node).
func (k *kubelet) stop(t testing.TB) {
	select {
	case <-k.exited:
		return
	default:
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("kubelet ignored SIGTERM")
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
}

// get fetches path from kubelet's read-only port, or its main HTTPS port.
func (k *kubelet) get(path string, secure bool) ([]byte, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d%s", k.readOnly, path)
	if secure {
		url = fmt.Sprintf("https://127.0.0.1:%d%s", k.port, path)
	}
	resp, err := k.client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// kubePod is the part of a v1.Pod the test reads from kubelet's /pods.
type kubePod struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Status struct {
		Phase             string `json:"phase"`
		PodIP             string `json:"podIP"`
		ContainerStatuses []struct {
			Name         string `json:"name"`
			RestartCount int    `json:"restartCount"`
			ContainerID  string `json:"containerID"`
			Ready        bool   `json:"ready"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

// pods is kubelet's own view of its pods, by name.
func (k *kubelet) pods(t testing.TB) map[string]kubePod {
	t.Helper()
	body, err := k.get("/pods", false)
	if err != nil {
		t.Fatalf("kubelet /pods: %v", err)
	}
	var list struct {
		Items []kubePod `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("kubelet /pods: %v", err)
	}
	out := map[string]kubePod{}
	for _, p := range list.Items {
		out[p.Metadata.Name] = p
	}
	return out
}

// writeManifest puts a static pod's manifest in place atomically (kubelet
// watches the directory and must never read half a file) and returns the
// name kubelet gives the pod.
func (k *kubelet) writeManifest(t testing.TB, pod map[string]any) string {
	t.Helper()
	name := pod["metadata"].(map[string]any)["name"].(string)
	tmp := writeJSON(t, filepath.Join(k.dir, name+".json"), pod)
	if err := os.Rename(tmp, filepath.Join(k.manifests, name+".json")); err != nil {
		t.Fatal(err)
	}
	return name + "-" + kubeletNode
}

// waitRunning waits until kubelet reports the pod Running with every
// container ready, and returns it.
func (k *kubelet) waitRunning(t testing.TB, name string, timeout time.Duration) kubePod {
	t.Helper()
	var pod kubePod
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		pod, ok = k.pods(t)[name]
		if ok && pod.Status.Phase == "Running" && len(pod.Status.ContainerStatuses) > 0 {
			ready := true
			for _, c := range pod.Status.ContainerStatuses {
				ready = ready && c.Ready
			}
			if ready {
				return pod
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not running after %v: %+v\nkubelet log tail:\n%s", name, timeout, pod, tail(grepLines(k.logs(), name), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// criErrors are kubelet's log lines about CRI calls that failed, by gRPC
// code.
var criError = regexp.MustCompile(`rpc error: code = ([A-Za-z]+)`)

func criErrors(log string) map[string][]string {
	out := map[string][]string{}
	for l := range strings.SplitSeq(log, "\n") {
		if m := criError.FindStringSubmatch(l); m != nil {
			out[m[1]] = append(out[m[1]], l)
		}
	}
	return out
}

// staticPod is a pod manifest of busybox containers.
func staticPod(name string, spec map[string]any) map[string]any {
	spec["terminationGracePeriodSeconds"] = 1
	return map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata":   map[string]any{"name": name, "namespace": "default"},
		"spec":       spec,
	}
}

func busybox(name, image string, script string) map[string]any {
	return map[string]any{"name": name, "image": image, "command": []string{"sh", "-c", script}}
}

// keepLogs copies the given logs into $BERTH_TEST_ARTIFACTS/<test name>
// when that is set, for a look after the test's directories are gone.
func keepLogs(t testing.TB, paths ...string) {
	dir := os.Getenv("BERTH_TEST_ARTIFACTS")
	if dir == "" {
		return
	}
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("keep logs: %v", err)
		return
	}
	for _, p := range paths {
		if data, err := os.ReadFile(p); err == nil {
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(p)), data, 0o644)
		}
	}
}
