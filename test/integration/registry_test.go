package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// toolsBin is where hack/setup.sh installs the test tools.
func toolsBin() string {
	if d := os.Getenv("BERTH_TOOLS"); d != "" {
		return filepath.Join(d, "bin")
	}
	return "/var/cache/berth-tools/bin"
}

var listening = regexp.MustCompile(`listening on (127\.0\.0\.1:[0-9]+)`)

// startRegistry runs a real OCI registry (distribution) on a free loopback
// port, holding the given test images pushed by hack/testimages, and
// returns its host:port. It stops with the test.
func startRegistry(t testing.TB, images string) string {
	t.Helper()
	bin := filepath.Join(toolsBin(), "registry")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("BERTH_REQUIRE_TOOLS") != "" {
			t.Fatalf("registry not installed: run hack/setup.sh")
		}
		t.Skip("registry not installed (run hack/setup.sh)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "registry.yml")
	os.WriteFile(cfg, []byte("version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: "+
		filepath.Join(dir, "data")+"\nhttp:\n  addr: 127.0.0.1:0\n"), 0o600)
	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var addr string
	for i := 0; i < 100 && addr == ""; i++ {
		time.Sleep(100 * time.Millisecond)
		logs, _ := os.ReadFile(logPath)
		if m := listening.FindSubmatch(logs); m != nil {
			addr = string(m[1])
		}
	}
	if addr == "" {
		logs, _ := os.ReadFile(logPath)
		t.Fatalf("registry did not start:\n%s", logs)
	}
	push := exec.Command("go", "run", "./hack/testimages", "-registry", addr, "-only", images)
	push.Dir = repoRoot(t)
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("push test images: %v\n%s", err, out)
	}
	return addr
}
