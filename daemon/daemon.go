// Package daemon assembles berth: it owns the socket, the state database and
// the gRPC server, recovers state before answering, and shuts down cleanly.
// It never touches containers on the way down: they outlive the daemon.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cni"
	"github.com/berth-runtime/berth/config"
	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/cri"
	"github.com/berth-runtime/berth/events"
	"github.com/berth-runtime/berth/images"
	"github.com/berth-runtime/berth/metrics"
	"github.com/berth-runtime/berth/nri"
	"github.com/berth-runtime/berth/sandbox"
	"github.com/berth-runtime/berth/state"
	"github.com/berth-runtime/berth/streaming"
)

// maxMsgSize matches kubelet's CRI client limit (cri-client utils.go).
const maxMsgSize = 16 << 20

// RuntimeName is what Version reports.
const RuntimeName = "berth"

// ErrSocketInUse means a live daemon already answers on the socket.
var ErrSocketInUse = errors.New("another daemon is serving on the socket")

// Recoverer rebuilds one part of the runtime from the state database before
// the server opens.
type Recoverer interface {
	Recover(ctx context.Context) error
}

// Options are the parts of a daemon that are not configuration.
type Options struct {
	Version string
	Logger  *slog.Logger
	// Register adds further gRPC services beside the CRI ones.
	Register func(*grpc.Server)
	// MonitorBinary is the berth-monitor executable and Helper the
	// berth-runc command; empty means the ones beside this executable.
	MonitorBinary string
	Helper        []string
	// BeforeReady runs after recovery and before the server opens; tests
	// use it to hold the daemon in its recovering state.
	BeforeReady func(ctx context.Context) error
}

// Daemon is a running berth.
type Daemon struct {
	cfg      *config.Config
	log      *slog.Logger
	store    *state.Store
	listener net.Listener
	grpc     *grpc.Server
	cri      *cri.Server
	stream   *streaming.Server
	nri      *nri.NRI // nil unless enabled
	served   chan error

	stopOnce sync.Once
}

// Start brings the daemon up: socket, state, server, recovery. On error it
// undoes what it made, so a failed start leaves nothing behind.
func Start(ctx context.Context, cfg *config.Config, opts Options) (d *Daemon, retErr error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	var undo []func()
	defer func() {
		if retErr != nil {
			for _, f := range slices.Backward(undo) {
				f()
			}
		}
	}()

	if err := checkSocket(cfg.Socket); err != nil {
		return nil, err
	}
	for _, dir := range []string{filepath.Dir(cfg.Socket), cfg.Root, cfg.State} {
		created, err := mkdirAll(dir, 0o711)
		if err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
		undo = append(undo, func() { removeEmpty(created) })
	}

	store, err := state.Open(filepath.Join(cfg.Root, "meta.db"))
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = store.Close() })

	network := cni.New(cni.Options{
		ConfDir: cfg.CNI.ConfDir,
		// The configured directories, then cni/ beside the berth binary.
		BinDirs:  cni.OwnBinDirs(cfg.CNI.BinDirs),
		CacheDir: filepath.Join(cfg.Root, "cni", "cache"),
		// The default network keeps host-local's usual IPAM directory:
		// the file outlives this daemon's root, so it must not name it.
		Default: cni.DefaultNetwork(),
		Logger:  log,
	})
	lifecycle := events.New()
	sandboxes, err := sandbox.New(sandbox.Options{
		Events:       lifecycle,
		Root:         cfg.Root,
		State:        cfg.State,
		Store:        store,
		Network:      network,
		CgroupDriver: cfg.CgroupDriver(),
		Logger:       log,
	})
	if err != nil {
		return nil, err
	}
	imageStore, err := images.New(images.Options{
		Root:                cfg.Root,
		Store:               store,
		Registries:          registries(cfg),
		PullProgressTimeout: cfg.Images.PullProgressTimeout.Duration,
		Logger:              log,
	})
	if err != nil {
		return nil, err
	}
	monitorBinary, helper := opts.MonitorBinary, opts.Helper
	if monitorBinary == "" {
		if monitorBinary, err = besideExecutable(MonitorBinaryName); err != nil {
			return nil, err
		}
	}
	if len(helper) == 0 {
		h, err := besideExecutable(container.HelperBinaryName)
		if err != nil {
			return nil, err
		}
		helper = []string{h}
	}
	containers, err := container.New(container.Options{
		Root:          cfg.Root,
		State:         cfg.State,
		Store:         store,
		Pods:          sandboxes,
		Images:        containerImages{imageStore},
		MonitorBinary: monitorBinary,
		Helper:        helper,
		CgroupDriver:  cfg.CgroupDriver(),
		CDISpecDirs:   cfg.CDI.SpecDirs,
		Events:        lifecycle,
		Logger:        log,
	})
	if err != nil {
		return nil, err
	}
	sandboxes.SetContainers(containers)
	var plugins *nri.NRI
	if cfg.NRI.Enable {
		plugins, err = nri.New(nri.Config{
			SocketPath:          cfg.NRI.SocketPath,
			PluginPath:          cfg.NRI.PluginPath,
			PluginConfigPath:    cfg.NRI.PluginConfigPath,
			RegistrationTimeout: cfg.NRI.PluginRegistrationTimeout.Duration,
			RequestTimeout:      cfg.NRI.PluginRequestTimeout.Duration,
			DisableConnections:  cfg.NRI.DisableConnections,
		}, log, sandboxes, containers, opts.Version)
		if err != nil {
			return nil, err
		}
		sandboxes.SetHooks(plugins)
		containers.SetHooks(plugins)
	}
	// The streaming server listens before the daemon is ready, so a bad
	// address or certificate fails the start; its URLs are handed out
	// only by RPCs, which wait for recovery.
	streaming.LogLibraryTo(log)
	logrusToSlog(log)
	stream, err := streaming.New(streaming.Options{
		Address:    cfg.Streaming.Address,
		Port:       cfg.Streaming.Port,
		TokenTTL:   cfg.Streaming.TokenTTL.Duration,
		TLSCert:    cfg.Streaming.TLSCert,
		TLSKey:     cfg.Streaming.TLSKey,
		Containers: containers,
		Pods:       sandboxes,
		Logger:     log,
	})
	if err != nil {
		return nil, err
	}
	if err := stream.Start(); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = stream.Stop() })
	criServer := cri.NewServer(cri.Options{
		RuntimeName:     RuntimeName,
		RuntimeVersion:  opts.Version,
		CgroupDriver:    cfg.CgroupDriver(),
		EffectiveConfig: cfg,
		Network:         network,
		Sandboxes:       sandboxes,
		Containers:      containers,
		Images:          imageStore,
		Streaming:       stream,
		Metrics:         metrics.New(sandboxes, containers, log),
		Events:          lifecycle,
		Logger:          log,
	})

	lis, err := listen(cfg.Socket)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = lis.Close(); _ = os.Remove(cfg.Socket) })

	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(criServer.UnaryInterceptor),
		grpc.ChainStreamInterceptor(criServer.StreamInterceptor),
		grpc.MaxRecvMsgSize(maxMsgSize),
		grpc.MaxSendMsgSize(maxMsgSize),
	)
	runtimeapi.RegisterRuntimeServiceServer(srv, criServer)
	runtimeapi.RegisterImageServiceServer(srv, criServer)
	if opts.Register != nil {
		opts.Register(srv)
	}

	d = &Daemon{cfg: cfg, log: log, store: store, listener: lis, grpc: srv, cri: criServer, stream: stream, served: make(chan error, 1)}
	// Serve at once: until recovery is done every call answers Unavailable,
	// which kubelet retries, instead of a refused connection.
	go func() { d.served <- srv.Serve(lis) }()
	undo = append(undo, srv.Stop)

	// Images first (containers hold their layers), then pods, then the
	// containers that live in them.
	// Pods recover in two phases: indexes and undo of interrupted runs
	// before the containers, finishing stops and removes after them
	// (sandbox/recover.go).
	recoverers := []Recoverer{imageStore, sandboxes, containers, sandboxes.AfterContainers()}
	for _, r := range recoverers {
		if err := r.Recover(ctx); err != nil {
			return nil, fmt.Errorf("recover state: %w", err)
		}
	}
	// Plugins are synchronised with the recovered pods and containers.
	if plugins != nil {
		if err := plugins.Start(); err != nil {
			return nil, err
		}
		undo = append(undo, plugins.Stop)
		d.nri = plugins
	}
	if opts.BeforeReady != nil {
		if err := opts.BeforeReady(ctx); err != nil {
			return nil, err
		}
	}
	criServer.SetReady()
	log.Info("berth is serving", "socket", cfg.Socket, "root", cfg.Root, "state", cfg.State, "version", opts.Version, "cgroup_driver", cfg.CgroupDriver())
	return d, nil
}

// Done is closed when the gRPC server stops serving on its own.
func (d *Daemon) Done() <-chan error { return d.served }

// Stop stops accepting requests, lets in-flight ones finish for at most the
// configured shutdown timeout, then closes them and releases the socket and
// the state database.
func (d *Daemon) Stop() {
	d.stopOnce.Do(func() {
		timeout := d.cfg.ShutdownTimeout.Duration
		finished := make(chan struct{})
		go func() {
			d.grpc.GracefulStop()
			close(finished)
		}()
		select {
		case <-finished:
		case <-time.After(timeout):
			d.log.Warn("in-flight requests outlived the shutdown timeout; closing them", "timeout", timeout)
			d.grpc.Stop()
			<-finished
		}
		if d.nri != nil {
			d.nri.Stop()
		}
		// After the RPCs, so no URL is handed out any more: sessions end,
		// exec'd processes are killed (kubelet runs them again).
		if err := d.stream.Stop(); err != nil {
			d.log.Error("stop streaming server", "error", err)
		}
		if err := d.store.Close(); err != nil {
			d.log.Error("close state database", "error", err)
		}
		// Closing the listener unlinks the socket already; this covers a
		// listener closed by Stop before Serve took it over.
		_ = os.Remove(d.cfg.Socket)
		d.log.Info("berth stopped")
	})
}

// checkSocket refuses a socket a live daemon answers on and removes a stale
// one that nobody answers on.
func checkSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("socket %s: exists and is not a socket", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("%w: %s", ErrSocketInUse, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

func listen(path string) (net.Listener, error) {
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// Only root and the socket's group may drive the runtime.
	if err := os.Chmod(path, 0o660); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return lis, nil
}

// mkdirAll is os.MkdirAll that returns the directories it created, outermost
// first, so a failed start can remove exactly those.
func mkdirAll(dir string, perm os.FileMode) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return nil, err
	}
	slices.Reverse(missing)
	return missing, nil
}

func removeEmpty(dirs []string) {
	for _, d := range slices.Backward(dirs) {
		_ = os.Remove(d) // fails, as wanted, on a directory that is not empty
	}
}

// registries turns the configuration's registry table into the image
// store's.
func registries(cfg *config.Config) map[string]images.RegistryConfig {
	out := make(map[string]images.RegistryConfig, len(cfg.Registries))
	for host, r := range cfg.Registries {
		out[host] = images.RegistryConfig{Mirrors: r.Mirrors, Insecure: r.Insecure}
	}
	return out
}

// MonitorBinaryName is the container monitor, installed beside bin/shim.
const MonitorBinaryName = "berth-monitor"

// besideExecutable finds one of berth's binaries next to this one.
func besideExecutable(name string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable: %w", err)
	}
	p := filepath.Join(filepath.Dir(exe), name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s: %w (build it with `make build`)", name, err)
	}
	return p, nil
}
