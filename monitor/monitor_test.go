package monitor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	. "github.com/berth-runtime/berth/monitor"
	"github.com/berth-runtime/berth/monitor/launch"
	"github.com/berth-runtime/berth/test/testutil"
	"github.com/berth-runtime/berth/test/testutil/reexec"
)

var (
	monitorBinary string
	launcher      []string
)

// The test binary is the launcher (as berth-runc is) and libcontainer's
// init.
func init() { reexec.Serve() }

func TestMain(m *testing.M) {
	launcher = []string{os.Args[0], launch.Subcommand}
	os.Exit(testutil.RootMain(m, "monitor", func(_, monitor string) error {
		monitorBinary = monitor
		return nil
	}, nil))
}

type fixture struct {
	bundle, runcRoot, logPath, id string
}

// newContainer writes a bundle for a busybox container running args and
// spawns its monitor. Cleanup destroys everything.
func newContainer(t *testing.T, opts Options, args ...string) (*fixture, Handle, int) {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{
		bundle:   filepath.Join(dir, "bundle"),
		runcRoot: filepath.Join(dir, "runc"),
		logPath:  filepath.Join(dir, "logs", "0.log"),
		id:       fmt.Sprintf("mon%d", time.Now().UnixNano()),
	}
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{f.bundle, rootfs, filepath.Dir(f.logPath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := testutil.BusyboxRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	spec := specconv.Example()
	spec.Root = &specs.Root{Path: rootfs}
	spec.Process.Terminal = opts.TTY
	spec.Process.ConsoleSize = &specs.Box{Height: 40, Width: 120}
	spec.Process.Args = args
	spec.Linux.CgroupsPath = "/berthmon/" + f.id
	data, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(f.bundle, SpecFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	opts.ID, opts.RuncRoot, opts.LogPath = f.id, f.runcRoot, f.logPath
	h, pid, err := Spawn(context.Background(), launcher, monitorBinary, f.bundle, opts)
	if err != nil {
		t.Fatalf("spawn: %v", err)
	}
	t.Cleanup(func() {
		if c, err := libcontainer.Load(f.runcRoot, f.id); err == nil {
			_ = c.Signal(os.Kill)
			_ = h.Wait(context.Background())
			_ = c.Destroy()
		}
		if left := testutil.RemoveCgroup("berthmon"); len(left) > 0 {
			t.Errorf("cgroups left: %v", left)
		}
	})
	return f, h, pid
}

func waitExit(t *testing.T, f *fixture, h Handle) *Exit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.Wait(ctx); err != nil {
		t.Fatalf("monitor did not exit: %v", err)
	}
	e, err := ReadExit(f.bundle)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(f.bundle, LogFile))
		t.Fatalf("exit record: %v\nmonitor log:\n%s", err, log)
	}
	return e
}

func logLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func TestContainerRunsLogsAndExits(t *testing.T) {
	f, h, pid := newContainer(t, Options{}, "sh", "-c", "echo out; echo err >&2; exit 3")
	// The container runs at once and may be done already: only its PID
	// is known for sure.
	if pid <= 0 || h.Pid <= 0 {
		t.Fatalf("pid %d, monitor %d", pid, h.Pid)
	}
	e := waitExit(t, f, h)
	if e.ExitCode != 3 || e.Pid != pid || e.OOMKilled {
		t.Fatalf("exit: %+v", e)
	}
	lines := logLines(t, f.logPath)
	joined := strings.Join(lines, "\n")
	if len(lines) != 2 || !strings.Contains(joined, " stdout F out") || !strings.Contains(joined, " stderr F err") {
		t.Fatalf("log:\n%s", joined)
	}
}

func TestManyLinesNoLoss(t *testing.T) {
	f, h, _ := newContainer(t, Options{}, "sh", "-c", "seq 1 100000")
	if e := waitExit(t, f, h); e.ExitCode != 0 {
		t.Fatalf("exit %d", e.ExitCode)
	}
	lines := logLines(t, f.logPath)
	if len(lines) != 100000 {
		t.Fatalf("%d lines, want 100000", len(lines))
	}
	for i, l := range lines {
		if want := fmt.Sprintf(" stdout F %d", i+1); !strings.HasSuffix(l, want) {
			t.Fatalf("line %d = %q", i, l)
		}
	}
}

func TestLongLineSplitIntoPartials(t *testing.T) {
	// 1 MiB of 'a' then a newline.
	f, h, _ := newContainer(t, Options{}, "sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' a; echo")
	waitExit(t, f, h)
	lines := logLines(t, f.logPath)
	if len(lines) != 1<<20/MaxLogLine {
		t.Fatalf("%d records, want %d", len(lines), 1<<20/MaxLogLine)
	}
	total := 0
	for i, l := range lines {
		parts := strings.SplitN(l, " ", 4)
		tag := "P"
		if i == len(lines)-1 {
			tag = "F"
		}
		if parts[2] != tag {
			t.Fatalf("record %d tag %s, want %s", i, parts[2], tag)
		}
		total += len(parts[3])
	}
	if total != 1<<20 {
		t.Fatalf("%d bytes logged", total)
	}
}

func TestReopenLogAndAttach(t *testing.T) {
	f, h, _ := newContainer(t, Options{Stdin: true, StdinOnce: true}, "sh", "-c", "read line; echo got:$line; cat")
	conn, br, err := Attach(f.bundle, true, true, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(conn, FrameStdin, []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	kind, payload, err := ReadFrame(br)
	if err != nil || kind != FrameStdout || string(payload) != "got:hello\n" {
		t.Fatalf("attach output: %d %q %v", kind, payload, err)
	}
	if err := os.Rename(f.logPath, f.logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := ReopenLog(f.bundle); err != nil {
		t.Fatal(err)
	}
	WriteFrame(conn, FrameStdin, []byte("second\n"))
	if _, p, err := ReadFrame(br); err != nil || string(p) != "second\n" {
		t.Fatalf("cat echo: %q %v", p, err)
	}
	// stdin_once: closing the first attach closes the container's stdin,
	// so cat ends and the container exits.
	conn.Close()
	if e := waitExit(t, f, h); e.ExitCode != 0 {
		t.Fatalf("exit %d", e.ExitCode)
	}
	if l := logLines(t, f.logPath); len(l) != 1 || !strings.HasSuffix(l[0], " second") {
		t.Fatalf("after reopen: %q", l)
	}
	if l := logLines(t, f.logPath+".1"); len(l) != 1 || !strings.HasSuffix(l[0], " got:hello") {
		t.Fatalf("before reopen: %q", l)
	}
}

func TestTTY(t *testing.T) {
	f, h, _ := newContainer(t, Options{TTY: true}, "sh", "-c", "stty size; test -t 1 && echo isatty; sleep 0.3; stty size")
	// The initial size comes from the spec; a resize changes it.
	time.Sleep(100 * time.Millisecond)
	if err := Resize(f.bundle, 100, 30); err != nil {
		t.Fatal(err)
	}
	waitExit(t, f, h)
	joined := strings.Join(logLines(t, f.logPath), "\n")
	if !strings.Contains(joined, "stdout F 40 120") || !strings.Contains(joined, "stdout F isatty") || !strings.Contains(joined, "stdout F 30 100") {
		t.Fatalf("tty log:\n%s", joined)
	}
}

func TestKilledReportsSignalExit(t *testing.T) {
	f, h, _ := newContainer(t, Options{}, "sleep", "1000")
	if !h.Alive() {
		t.Fatal("monitor of a running container is not alive")
	}
	c, err := libcontainer.Load(f.runcRoot, f.id)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, f, h); e.ExitCode != 137 {
		t.Fatalf("exit %d, want 137", e.ExitCode)
	}
}

func TestMissingCommandNamedAtStart(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "b")
	rootfs := filepath.Join(dir, "rootfs")
	os.MkdirAll(bundle, 0o755)
	if err := testutil.BusyboxRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	spec := specconv.Example()
	spec.Root = &specs.Root{Path: rootfs}
	spec.Process.Terminal = false
	spec.Process.Args = []string{"no-such-command"}
	spec.Linux.CgroupsPath = "/berthmon/missing"
	data, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(bundle, SpecFile), data, 0o600)
	_, _, err := Spawn(context.Background(), launcher, monitorBinary, bundle, Options{ID: "missing", RuncRoot: filepath.Join(dir, "runc")})
	if err == nil || !strings.Contains(err.Error(), "no-such-command") {
		t.Fatalf("spawn with a missing command: %v", err)
	}
	if left := testutil.RemoveCgroup("berthmon"); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
}

func TestBadBundleFailsCreate(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "b")
	os.MkdirAll(bundle, 0o755)
	os.WriteFile(filepath.Join(bundle, SpecFile), []byte("{}"), 0o600)
	_, _, err := Spawn(context.Background(), launcher, monitorBinary, bundle, Options{ID: "bad", RuncRoot: filepath.Join(dir, "runc")})
	if err == nil || !strings.Contains(err.Error(), "no process") {
		t.Fatalf("spawn of a bad bundle: %v", err)
	}
}
