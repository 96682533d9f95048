package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A network of the test's own, so it never meets a running daemon's
// berth0 or another test's.
const restartNetwork = `{"cniVersion":"1.0.0","name":"berthit","plugins":[
 {"type":"bridge","bridge":"berthit0","isGateway":true,"ipMasq":true,"hairpinMode":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.252.0.0/24"}]],"dataDir":"%s"}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}`

func writeJSON(t testing.TB, path string, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// restartConfig is a daemon config with the test network and the binaries
// beside bin/shim.
func restartConfig(t testing.TB, dir string) string {
	t.Helper()
	netd := filepath.Join(dir, "net.d")
	os.MkdirAll(netd, 0o755)
	os.WriteFile(filepath.Join(netd, "10-berthit.conflist"), []byte(fmt.Sprintf(restartNetwork, filepath.Join(dir, "ipam"))), 0o600)
	t.Cleanup(func() { _ = runQuiet("ip", "link", "del", "berthit0") })
	return fmt.Sprintf("[cni]\nconf_dir = %q\n", netd)
}

// removeAllPods removes every pod through berth, one at a time (crictl's
// -a removes them all at once, against its own short timeout).
func (d *daemon) removeAllPods(t testing.TB) {
	t.Helper()
	out, err := d.crictl(t, "pods", "-q")
	if err != nil {
		t.Errorf("list pods for cleanup: %v %s", err, out)
		return
	}
	for _, id := range strings.Fields(out) {
		if out, err := d.crictl(t, "rmp", "-f", id); err != nil {
			t.Errorf("cleanup: rmp %s: %v %s", id, err, out)
		}
	}
}

// cleanupPods registers the removal of every pod while this daemon runs.
// Registered after the daemon's start, it runs before the daemon's stop.
func (d *daemon) cleanupPods(t testing.TB) {
	t.Cleanup(func() {
		if d.running() {
			d.removeAllPods(t)
		}
	})
}

// must runs crictl and fails the test on error.
func (d *daemon) must(t testing.TB, args ...string) string {
	t.Helper()
	out, err := d.crictl(t, args...)
	if err != nil {
		t.Fatalf("crictl %s: %v\n%s\ndaemon log tail:\n%s", strings.Join(args, " "), err, out, tail(d.logs(), 30))
	}
	return strings.TrimSpace(out)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type inspected struct {
	Status struct {
		ID         string `json:"id"`
		State      string `json:"state"`
		ExitCode   int    `json:"exitCode"`
		FinishedAt string `json:"finishedAt"`
		Reason     string `json:"reason"`
		LogPath    string `json:"logPath"`
	} `json:"status"`
	Info struct {
		Pid int `json:"pid"`
	} `json:"info"`
}

func (d *daemon) inspect(t testing.TB, id string) inspected {
	t.Helper()
	var out inspected
	if err := json.Unmarshal([]byte(d.must(t, "inspect", id)), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestIntegrationKill9Restart kills the daemon with SIGKILL while pods and
// containers run, lets one container exit and another keep logging while it
// is down, starts it again and checks that everything is found as it is.
func TestIntegrationKill9Restart(t *testing.T) {
	reg := startRegistry(t, "busybox")
	image := reg + "/e2e-test-images/busybox:1.29-2"
	dir := t.TempDir()
	cfg := restartConfig(t, dir)
	d := startDaemonWithConfig(t, dir, cfg)
	d.must(t, "pull", image)

	logDir := filepath.Join(dir, "logs")
	pod := writeJSON(t, filepath.Join(dir, "pod.json"), map[string]any{
		"metadata":      map[string]any{"name": "restart", "namespace": "it", "uid": "restart-uid"},
		"log_directory": logDir,
		"linux":         map[string]any{},
	})
	container := func(name string, args ...string) string {
		return writeJSON(t, filepath.Join(dir, name+".json"), map[string]any{
			"metadata": map[string]any{"name": name},
			"image":    map[string]any{"image": image},
			"command":  args,
			"log_path": name + ".log",
		})
	}
	podID := d.must(t, "runp", pod)
	ipBefore := d.must(t, "inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", podID)
	counter := d.must(t, "create", podID, container("counter", "sh", "-c", "i=0; while true; i=$((i+1)); do echo $i; sleep 0.01; done"), pod)
	quitter := d.must(t, "create", podID, container("quitter", "sh", "-c", "sleep 2; exit 3"), pod)
	d.must(t, "start", counter)
	d.must(t, "start", quitter)
	counterPid := d.inspect(t, counter).Info.Pid

	// SIGKILL: no chance to clean up. The containers must not notice.
	d.kill()
	killedAt := time.Now()
	time.Sleep(3 * time.Second) // the quitter exits meanwhile; the counter keeps writing
	restartedAt := time.Now()

	d = startDaemonWithConfig(t, dir, cfg)
	// A failing test still removes its pod through berth.
	d.cleanupPods(t)
	c := d.inspect(t, counter)
	if c.Status.State != "CONTAINER_RUNNING" || c.Info.Pid != counterPid {
		t.Fatalf("counter after restart: %+v (pid was %d)", c, counterPid)
	}
	q := d.inspect(t, quitter)
	if q.Status.State != "CONTAINER_EXITED" || q.Status.ExitCode != 3 || q.Status.Reason != "Error" || strings.HasPrefix(q.Status.FinishedAt, "1970") {
		t.Fatalf("quitter after restart: %+v", q)
	}
	if ip := d.must(t, "inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", podID); ip != ipBefore || ip == "" {
		t.Fatalf("pod IP %q after restart, was %q", ip, ipBefore)
	}
	if pods := d.must(t, "pods", "-q"); pods != podID {
		t.Fatalf("pods after restart: %q", pods)
	}
	if out := d.must(t, "exec", "-s", counter, "echo", "still here"); out != "still here" {
		t.Fatalf("exec after restart: %q", out)
	}
	d.must(t, "stop", "-t", "1", counter)
	if st := d.inspect(t, counter).Status.State; st != "CONTAINER_EXITED" {
		t.Fatalf("stop after restart: %s", st)
	}
	// The log counts on from 1 without a gap or a repeat across the outage.
	data, err := os.ReadFile(filepath.Join(logDir, "counter.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var prev time.Time
	duringOutage := 0
	for i, l := range lines {
		parts := strings.SplitN(l, " ", 4)
		if len(parts) != 4 || parts[1] != "stdout" || parts[2] != "F" || parts[3] != strconv.Itoa(i+1) {
			t.Fatalf("log line %d is %q", i+1, l)
		}
		at, err := time.Parse(time.RFC3339Nano, parts[0])
		if err != nil {
			t.Fatalf("log line %d: %v", i+1, err)
		}
		// The container writes every ~10ms: a long silence is a stall.
		if !prev.IsZero() && at.Sub(prev) > time.Second {
			t.Fatalf("log stalls %v before line %d", at.Sub(prev), i+1)
		}
		if at.After(killedAt) && at.Before(restartedAt) {
			duringOutage++
		}
		prev = at
	}
	if duringOutage < 50 {
		t.Fatalf("only %d lines logged in the 3s the daemon was down", duringOutage)
	}
	d.must(t, "rmp", "-f", podID)
	if out := d.must(t, "ps", "-a", "-q"); out != "" {
		t.Fatalf("containers left: %q", out)
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func runQuiet(name string, args ...string) error {
	return exec.Command(name, args...).Run()
}
