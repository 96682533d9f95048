// Package integration drives the built bin/shim as a user would: as a
// process, through crictl.
package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// repoRoot is two levels up from this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(filepath.Dir(wd))
}

// shimBinary is the bin/shim that `make build` made.
func shimBinary(t testing.TB) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "bin", "shim")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s missing: run `make build` first", p)
	}
	return p
}

func crictlBinary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("crictl")
	if err != nil {
		if os.Getenv("BERTH_REQUIRE_TOOLS") != "" {
			t.Fatal("crictl not on PATH: run hack/setup.sh")
		}
		t.Skip("crictl not on PATH (run hack/setup.sh, or `make integration`)")
	}
	return p
}

// daemon is one bin/shim process with its own socket, root and state.
type daemon struct {
	cmd    *exec.Cmd
	socket string
	// logPath is the daemon's output (a file: the daemon writes it while
	// the test reads).
	logPath string
	dir     string
	config  string
	// exited is closed once the current process has ended and been
	// waited for; only its goroutine waits.
	exited chan struct{}
}

// running reports whether the current daemon process is still alive.
func (d *daemon) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// kill ends the current process with SIGKILL and waits for it.
func (d *daemon) kill() {
	if d.exited != nil && d.running() {
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

// startDaemon starts bin/shim with a config of its own CNI directory plus
// extraConfig.
func startDaemon(t testing.TB, extraConfig string) *daemon {
	t.Helper()
	dir := t.TempDir()
	return startDaemonWithConfig(t, dir, "[cni]\nconf_dir = \""+filepath.Join(dir, "net.d")+"\"\n"+extraConfig)
}

func startDaemonWithConfig(t testing.TB, dir, body string) *daemon {
	t.Helper()
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{socket: filepath.Join(dir, "berth.sock"), logPath: filepath.Join(dir, fmt.Sprintf("berth-%d.log", time.Now().UnixNano())), dir: dir, config: cfg}
	// Whichever process d holds when the test ends (restart replaces it).
	t.Cleanup(d.kill)
	d.start(t)
	return d
}

// start runs the daemon process, its output appended to d.logPath, and
// returns once its socket accepts connections (a socket file left by a
// killed daemon does not count).
func (d *daemon) start(t testing.TB) {
	t.Helper()
	logFile, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	d.cmd = exec.Command(shimBinary(t), "serve", "--config", d.config, "--socket", d.socket,
		"--root", filepath.Join(d.dir, "root"), "--state", filepath.Join(d.dir, "state"), "--log-level", "debug")
	d.cmd.Stdout = logFile
	d.cmd.Stderr = logFile
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	d.exited = exited
	go func() { _ = d.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("daemon exited at start; log:\n%s", d.logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not listen on its socket; log:\n%s", d.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logs returns what the daemon has written so far.
func (d *daemon) logs() string {
	data, _ := os.ReadFile(d.logPath)
	return string(data)
}

func (d *daemon) crictl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ep := "unix://" + d.socket
	cmd := exec.Command(crictlBinary(t), append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "10s"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		// crictl prints the runtime's error on stderr; keep it for the caller.
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

// stop sends SIGTERM and returns the exit code.
func (d *daemon) stop(t testing.TB) int {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("daemon ignored SIGTERM; log:\n%s", d.logs())
	}
	return d.cmd.ProcessState.ExitCode()
}

func TestIntegrationCrictlVersionAndInfo(t *testing.T) {
	d := startDaemon(t, "")
	out, err := d.crictl(t, "version")
	if err != nil || !strings.Contains(out, "RuntimeName:  berth") || !strings.Contains(out, "RuntimeApiVersion:  v1") {
		t.Fatalf("crictl version: %v\n%s", err, out)
	}
	out, err = d.crictl(t, "info")
	if err != nil {
		t.Fatalf("crictl info: %v\n%s", err, out)
	}
	var info struct {
		Status struct {
			Conditions []struct {
				Type    string `json:"type"`
				Status  bool   `json:"status"`
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"conditions"`
		} `json:"status"`
		Config struct {
			Socket string `json:"socket"`
			Root   string `json:"root"`
		} `json:"config"`
		CgroupDriver string `json:"cgroupDriver"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("crictl info is not JSON: %v\n%s", err, out)
	}
	if info.Config.Socket != d.socket || info.Config.Root != filepath.Join(d.dir, "root") {
		t.Fatalf("effective config not shown: %+v", info.Config)
	}
	if info.CgroupDriver != "cgroupfs" && info.CgroupDriver != "systemd" {
		t.Fatalf("cgroup driver: %q", info.CgroupDriver)
	}
	conds := map[string]bool{}
	for _, c := range info.Status.Conditions {
		conds[c.Type] = c.Status
		if !c.Status && (c.Reason == "" || c.Message == "") {
			t.Errorf("false condition %s without reason and message", c.Type)
		}
	}
	if !conds["RuntimeReady"] {
		t.Fatalf("RuntimeReady not true: %s", out)
	}
	if _, ok := conds["NetworkReady"]; !ok {
		t.Fatalf("no NetworkReady condition: %s", out)
	}
	// One debug line per RPC, with method and duration.
	if logs := d.logs(); !strings.Contains(logs, "method=Version") || !strings.Contains(logs, "duration=") {
		t.Fatalf("no per-RPC debug line:\n%s", logs)
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit code after SIGTERM: %d\n%s", code, d.logs())
	}
	if _, err := os.Stat(d.socket); !os.IsNotExist(err) {
		t.Fatal("socket left after stop")
	}
}

func TestIntegrationUnknownRPCFailsCleanly(t *testing.T) {
	d := startDaemon(t, "")
	// crictl pods needs ListPodSandbox; until it exists the daemon must say
	// Unimplemented (or answer for real), and keep serving.
	out, err := d.crictl(t, "inspect", "no-such-container")
	if err == nil {
		t.Fatalf("inspect of an unknown container succeeded: %s", out)
	}
	if _, err := d.crictl(t, "version"); err != nil {
		t.Fatalf("daemon stopped serving after a failed request: %v", err)
	}
	d.stop(t)
}

// runShim runs bin/shim to completion and returns its exit code and output.
func runShim(t testing.TB, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(shimBinary(t), args...)
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState.ExitCode(), string(out)
}

func TestIntegrationBadStartsExitOneWithOneLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[log]\nlevel = \"loud\"\n"), 0o600)
	unknown := filepath.Join(dir, "unknown.toml")
	os.WriteFile(unknown, []byte("sockett = \"/x\"\n"), 0o600)
	empty := filepath.Join(dir, "empty.toml")
	os.WriteFile(empty, nil, 0o600)
	file := filepath.Join(dir, "afile")
	os.WriteFile(file, nil, 0o600)

	d := startDaemon(t, "")
	defer d.stop(t)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad value", []string{"serve", "--config", bad, "--socket", filepath.Join(dir, "a.sock"), "--root", filepath.Join(dir, "ra")}, "log.level"},
		{"unknown key", []string{"serve", "--config", unknown, "--socket", filepath.Join(dir, "b.sock"), "--root", filepath.Join(dir, "rb")}, "sockett"},
		{"missing named config", []string{"serve", "--config", filepath.Join(dir, "none.toml")}, "none.toml"},
		{"unwritable root", []string{"serve", "--config", empty, "--socket", filepath.Join(dir, "c.sock"), "--root", filepath.Join(file, "root"), "--state", filepath.Join(dir, "sc")}, "root"},
		{"second daemon", []string{"serve", "--config", empty, "--socket", d.socket, "--root", filepath.Join(dir, "rd"), "--state", filepath.Join(dir, "sd")}, "another daemon"},
		{"bad flag", []string{"serve", "--no-such-flag"}, "no-such-flag"},
	} {
		code, out := runShim(t, tc.args...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last := lines[len(lines)-1]
		if code != 1 || !strings.HasPrefix(last, "shim: ") || !strings.Contains(last, tc.want) {
			t.Errorf("%s: exit %d, output:\n%s", tc.name, code, out)
		}
		if tc.name != "bad flag" && len(lines) != 1 {
			t.Errorf("%s: want one line, got:\n%s", tc.name, out)
		}
	}
	// Nothing half-made by the refused starts.
	for _, p := range []string{"a.sock", "b.sock", "c.sock", "ra", "rb", "rd", "sc", "sd"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("refused start left %s", p)
		}
	}
}

func TestIntegrationConfigDefault(t *testing.T) {
	code, out := runShim(t, "config", "default")
	if code != 0 || !strings.Contains(out, `socket = "/run/berth/berth.sock"`) || !strings.Contains(out, "# ") {
		t.Fatalf("config default: %d\n%s", code, out)
	}
	// The printed file is a valid config that a daemon accepts as it is.
	d := startDaemonWithConfig(t, t.TempDir(), out)
	if _, err := d.crictl(t, "version"); err != nil {
		t.Fatalf("daemon on the default file: %v", err)
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
