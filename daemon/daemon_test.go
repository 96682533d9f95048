package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/config"

	"github.com/berth-runtime/berth/test/testutil"
)

var monitorBinary, helperBinary string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "berth-daemon-test")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		if monitorBinary, err = testutil.BuildMonitor(dir); err != nil {
			fmt.Println(err)
			return 1
		}
		if helperBinary, err = testutil.BuildRunc(dir); err != nil {
			fmt.Println(err)
			return 1
		}
		return m.Run()
	}())
}

// start starts a daemon with the test's monitor binary.
func start(cfg *config.Config, opts Options) (*Daemon, error) {
	opts.MonitorBinary = monitorBinary
	opts.Helper = []string{helperBinary}
	return Start(context.Background(), cfg, opts)
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Socket = filepath.Join(dir, "run", "berth.sock")
	cfg.Root = filepath.Join(dir, "root")
	cfg.State = filepath.Join(dir, "state")
	cfg.CNI.ConfDir = filepath.Join(dir, "net.d")
	cfg.ShutdownTimeout = config.Duration{Duration: 2 * time.Second}
	return cfg
}

func dial(t *testing.T, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestStartServeStop(t *testing.T) {
	cfg := testConfig(t)
	d, err := start(cfg, Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(cfg.Socket)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket: %v mode %v", err, fi.Mode())
	}
	rt := runtimeapi.NewRuntimeServiceClient(dial(t, cfg.Socket))
	v, err := rt.Version(context.Background(), &runtimeapi.VersionRequest{})
	if err != nil || v.RuntimeName != "berth" || v.RuntimeVersion != "test" || v.RuntimeApiVersion != "v1" {
		t.Fatalf("version: %v %v", err, v)
	}
	// An RPC not built yet must say so, never fake success.
	_, err = rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{})
	if c := status.Code(err); c != codes.Unimplemented && c != codes.InvalidArgument {
		t.Fatalf("unbuilt RPC answered %v", err)
	}
	d.Stop()
	if _, err := os.Stat(cfg.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after stop: %v", err)
	}
}

func TestUnavailableWhileRecovering(t *testing.T) {
	cfg := testConfig(t)
	release := make(chan struct{})
	checked := make(chan error, 1)
	go func() {
		// Wait for the socket, ask while the daemon is held in recovery.
		for i := 0; i < 200; i++ {
			if _, err := os.Stat(cfg.Socket); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		rt := runtimeapi.NewRuntimeServiceClient(dial(t, cfg.Socket))
		_, err := rt.Version(context.Background(), &runtimeapi.VersionRequest{})
		checked <- err
		close(release)
	}()
	d, err := start(cfg, Options{BeforeReady: func(ctx context.Context) error {
		<-release
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	if err := <-checked; status.Code(err) != codes.Unavailable {
		t.Fatalf("during recovery: %v, want Unavailable", err)
	}
	rt := runtimeapi.NewRuntimeServiceClient(dial(t, cfg.Socket))
	if _, err := rt.Version(context.Background(), &runtimeapi.VersionRequest{}); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestSecondDaemonRefused(t *testing.T) {
	cfg := testConfig(t)
	d, err := start(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	second := *cfg
	second.Root = filepath.Join(t.TempDir(), "root2")
	if _, err := start(&second, Options{}); !errors.Is(err, ErrSocketInUse) {
		t.Fatalf("second daemon on the socket: %v", err)
	}
	if _, err := os.Stat(second.Root); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("refused daemon created its root")
	}
	// The first one still serves.
	rt := runtimeapi.NewRuntimeServiceClient(dial(t, cfg.Socket))
	if _, err := rt.Version(context.Background(), &runtimeapi.VersionRequest{}); err != nil {
		t.Fatalf("first daemon after refusal: %v", err)
	}
	// Same root, other socket: the state database lock refuses it.
	third := *cfg
	third.Socket = filepath.Join(t.TempDir(), "other.sock")
	if _, err := start(&third, Options{}); err == nil {
		t.Fatal("second daemon on the same root started")
	}
	if _, err := os.Stat(third.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("refused daemon left its socket")
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		t.Fatal(err)
	}
	// A socket file nobody listens on, as a killed daemon leaves.
	l, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	d, err := start(cfg, Options{})
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	d.Stop()
}

func TestBadPathsLeaveNothing(t *testing.T) {
	cfg := testConfig(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.State = filepath.Join(file, "state") // a path through a regular file
	if _, err := start(cfg, Options{}); err == nil {
		t.Fatal("started with an unusable state dir")
	}
	for _, p := range []string{cfg.Socket, filepath.Dir(cfg.Socket), cfg.Root} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after a failed start", p)
		}
	}
	// A socket path that is a regular file is not taken over.
	cfg = testConfig(t)
	os.MkdirAll(filepath.Dir(cfg.Socket), 0o755)
	os.WriteFile(cfg.Socket, []byte("x"), 0o600)
	if _, err := start(cfg, Options{}); err == nil {
		t.Fatal("started over a regular file")
	}
}

// Stop waits for in-flight requests, but no longer than the shutdown
// timeout; a stream that never ends is cut then.
func TestStopIsBounded(t *testing.T) {
	cfg := testConfig(t)
	cfg.ShutdownTimeout = config.Duration{Duration: 300 * time.Millisecond}
	hs := health.NewServer()
	d, err := start(cfg, Options{Register: func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) }})
	if err != nil {
		t.Fatal(err)
	}
	watch, err := healthpb.NewHealthClient(dial(t, cfg.Socket)).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d.Stop()
	if el := time.Since(start); el < 250*time.Millisecond || el > 3*time.Second {
		t.Fatalf("stop took %v; want about the 300ms timeout", el)
	}
	if _, err := watch.Recv(); err == nil {
		t.Fatal("in-flight stream survived stop")
	}
}
