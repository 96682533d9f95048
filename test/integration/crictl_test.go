package integration

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// background runs a long-lived crictl command (events, port-forward,
// attach) with its output in a file; stop ends it by PID.
type background struct {
	cmd *exec.Cmd
	out string
}

func (d *daemon) background(t testing.TB, args ...string) *background {
	return d.backgroundStdin(t, "", args...)
}

func (d *daemon) backgroundStdin(t testing.TB, stdin string, args ...string) *background {
	t.Helper()
	ep := "unix://" + d.socket
	b := &background{out: filepath.Join(t.TempDir(), "out")}
	f, err := os.Create(b.out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b.cmd = exec.Command(crictlBinary(t), append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep}, args...)...)
	b.cmd.Stdout, b.cmd.Stderr = f, f
	if stdin != "" {
		b.cmd.Stdin = strings.NewReader(stdin)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.stop)
	return b
}

func (b *background) stop() {
	if b.cmd.ProcessState == nil {
		_ = b.cmd.Process.Kill()
		_ = b.cmd.Wait()
	}
}

func (b *background) output() string {
	data, _ := os.ReadFile(b.out)
	return string(data)
}

// waitFor polls until cond holds or fails the test after timeout.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func jsonField(t testing.TB, doc string, path ...string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, doc)
	}
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("no %q in %s", p, doc)
		}
		v = m[p]
	}
	return v
}

// TestIntegrationCrictlCommands drives every crictl command that maps to a
// CRI call against bin/shim and checks what each prints, as a user would.
func TestIntegrationCrictlCommands(t *testing.T) {
	reg := startRegistry(t, "busybox")
	image := reg + "/e2e-test-images/busybox:1.29-2"
	dir := t.TempDir()
	d := startDaemonWithConfig(t, dir, restartConfig(t, dir))
	d.cleanupPods(t)
	events := d.background(t, "events")

	if out := d.must(t, "version"); !strings.Contains(out, "RuntimeName:  berth") {
		t.Fatalf("version: %s", out)
	}
	if cond := jsonField(t, d.must(t, "info"), "status", "conditions"); cond == nil {
		t.Fatal("info has no conditions")
	}

	// Images.
	if out := d.must(t, "pull", image); !strings.Contains(out, "Image is up to date for sha256:") {
		t.Fatalf("pull: %s", out)
	}
	if out := d.must(t, "images"); !strings.Contains(out, reg+"/e2e-test-images/busybox") || !strings.Contains(out, "1.29-2") {
		t.Fatalf("images: %s", out)
	}
	imageID, _ := jsonField(t, d.must(t, "inspecti", image), "status", "id").(string)
	if !strings.HasPrefix(imageID, "sha256:") {
		t.Fatalf("inspecti id %q", imageID)
	}
	if out := d.must(t, "imagefsinfo"); !strings.Contains(out, "mountpoint") || !strings.Contains(out, "usedBytes") {
		t.Fatalf("imagefsinfo: %s", out)
	}

	// Pods.
	logDir := filepath.Join(dir, "logs")
	pod := writeJSON(t, filepath.Join(dir, "pod.json"), map[string]any{
		"metadata":      map[string]any{"name": "cli", "namespace": "it", "uid": "cli-uid"},
		"log_directory": logDir,
		"port_mappings": []map[string]any{},
		"linux":         map[string]any{},
	})
	podID := d.must(t, "runp", pod)
	if out := d.must(t, "pods"); !strings.Contains(out, podID[:13]) || !strings.Contains(out, "Ready") {
		t.Fatalf("pods: %s", out)
	}
	if st := jsonField(t, d.must(t, "inspectp", podID), "status", "state"); st != "SANDBOX_READY" {
		t.Fatalf("inspectp state %v", st)
	}
	if out := d.must(t, "statsp", "--id", podID); !strings.Contains(out, "cli") {
		t.Fatalf("statsp: %s", out)
	}

	// Containers.
	ctr := func(name string, args ...string) string {
		return writeJSON(t, filepath.Join(dir, name+".json"), map[string]any{
			"metadata":   map[string]any{"name": name},
			"image":      map[string]any{"image": image},
			"command":    args,
			"log_path":   name + ".log",
			"stdin":      name == "attachee",
			"stdin_once": name == "attachee",
		})
	}
	server := d.must(t, "create", podID, ctr("server", "sh", "-c", "echo hello from server; while true; do echo pong | nc -l -p 8080; done"), pod)
	if out := d.must(t, "ps", "-a"); !strings.Contains(out, server[:13]) || !strings.Contains(out, "Created") {
		t.Fatalf("ps after create: %s", out)
	}
	d.must(t, "start", server)
	if out := d.must(t, "ps"); !strings.Contains(out, "Running") || !strings.Contains(out, "server") {
		t.Fatalf("ps after start: %s", out)
	}
	if st := jsonField(t, d.must(t, "inspect", server), "status", "state"); st != "CONTAINER_RUNNING" {
		t.Fatalf("inspect state %v", st)
	}
	waitFor(t, "server log", 10*time.Second, func() bool {
		out, _ := d.crictl(t, "logs", server)
		return strings.Contains(out, "hello from server")
	})
	if out := d.must(t, "exec", "-s", server, "sh", "-c", "echo $((6*7))"); out != "42" {
		t.Fatalf("exec -s: %q", out)
	}
	if out := d.must(t, "exec", server, "echo", "streamed"); out != "streamed" {
		t.Fatalf("exec: %q", out)
	}
	if out := d.must(t, "stats", "--id", server); !strings.Contains(out, "server") {
		t.Fatalf("stats: %s", out)
	}
	d.must(t, "update", "--memory", "104857600", server)
	if limit := jsonField(t, d.must(t, "inspect", server), "status", "resources", "linux", "memoryLimitInBytes"); limit != "104857600" && limit != float64(104857600) {
		t.Fatalf("update: memory limit %v", limit)
	}

	// port-forward: a local port to the server's 8080 in the pod.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	local := l.Addr().(*net.TCPAddr).Port
	l.Close()
	pf := d.background(t, "port-forward", podID, strings.Join([]string{itoa(local), "8080"}, ":"))
	var reply string
	waitFor(t, "port-forward", 15*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+itoa(local), time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		reply, _ = bufio.NewReader(c).ReadString('\n')
		return reply == "pong\n"
	})
	pf.stop()

	// attach: stdin in, output back.
	attachee := d.must(t, "create", podID, ctr("attachee", "sh", "-c", "read x; echo got-$x"), pod)
	d.must(t, "start", attachee)
	at := d.backgroundStdin(t, "berth\n", "attach", "-i", attachee)
	waitFor(t, "attach output", 10*time.Second, func() bool { return strings.Contains(at.output(), "got-berth") })
	at.stop()

	// Stop and remove.
	d.must(t, "stop", "-t", "1", server)
	if st := jsonField(t, d.must(t, "inspect", server), "status", "state"); st != "CONTAINER_EXITED" {
		t.Fatalf("after stop: %v", st)
	}
	d.must(t, "rm", server)
	d.must(t, "stopp", podID)
	if st := jsonField(t, d.must(t, "inspectp", podID), "status", "state"); st != "SANDBOX_NOTREADY" {
		t.Fatalf("after stopp: %v", st)
	}
	d.must(t, "rmp", podID)
	if out := d.must(t, "pods", "-q"); out != "" {
		t.Fatalf("pods after rmp: %q", out)
	}
	d.must(t, "rmi", image)
	if out := d.must(t, "images", "-q"); out != "" {
		t.Fatalf("images after rmi: %q", out)
	}

	// events streamed the container lifecycle.
	waitFor(t, "events", 5*time.Second, func() bool {
		out := events.output()
		return strings.Contains(out, server) && strings.Contains(out, "CONTAINER_DELETED_EVENT")
	})
	events.stop()

	// Bad input: berth's own error text, a non-zero exit, and it keeps serving.
	for _, args := range [][]string{
		{"inspect", "no-such-container"},
		{"inspectp", "no-such-pod"},
		{"start", "no-such-container"},
		{"exec", "-s", "no-such-container", "true"},
		{"logs", "no-such-container"},
		{"create", "no-such-pod", ctr("orphan", "true"), pod},
	} {
		out, err := d.crictl(t, args...)
		if err == nil || !strings.Contains(out, "not found") {
			t.Errorf("crictl %s: err %v, output %q", strings.Join(args, " "), err, out)
		}
	}
	if out, err := d.crictl(t, "pull", "127.0.0.1:1/nothing:here"); err == nil || !strings.Contains(out, "RegistryUnavailable") {
		t.Errorf("pull from nowhere: %v %q", err, out)
	}
	if out, err := d.crictl(t, "runp", "--no-such-flag", pod); err == nil || out == "" {
		t.Errorf("bad flag: %v %q", err, out)
	}
	d.must(t, "version")
	if !strings.Contains(d.logs(), "CRI request failed") {
		t.Error("failed requests not logged")
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
