// Package cni drives the pod network through libcni and the reference
// plugins. It reads the network configuration in the configuration directory
// each time it is needed, so edited files take effect without a restart.
package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
)

// Options locate configuration, plugins and the attachment cache.
type Options struct {
	// ConfDir holds the network configuration files.
	ConfDir string
	// BinDirs are searched in order for plugin binaries. OwnBinDirs appends
	// berth's own plugin directory to a configured list.
	BinDirs []string
	// CacheDir is libcni's record of every attachment (the result and the
	// config used at ADD), which DEL and GC read back. It lives under
	// berth's root, so a reboot keeps it and stale IPs can still be released.
	CacheDir string
	// Default is the network written to ConfDir when it holds no
	// configuration at all. The zero value means DefaultNetwork().
	Default DefaultConfig
	Logger  *slog.Logger
}

// Manager is berth's view of the pod network.
type Manager struct {
	opts Options
	cni  *libcni.CNIConfig
	log  *slog.Logger

	mu      sync.Mutex
	podCIDR string
}

// New returns a manager for the given directories.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Default == (DefaultConfig{}) {
		opts.Default = DefaultNetwork()
	}
	return &Manager{
		opts: opts,
		cni:  libcni.NewCNIConfigWithCacheDir(opts.BinDirs, opts.CacheDir, nil),
		log:  opts.Logger,
	}
}

// OwnBinDirs returns configured followed by the cni/ directory beside the
// running executable, where `make cni-plugins` installs the reference
// plugins next to bin/shim. The configured directories come first so an
// operator's plugins win over berth's.
func OwnBinDirs(configured []string) []string {
	dirs := slices.Clone(configured)
	exe, err := os.Executable()
	if err != nil {
		return dirs
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	own := filepath.Join(filepath.Dir(exe), "cni")
	if !slices.Contains(dirs, own) {
		dirs = append(dirs, own)
	}
	return dirs
}

// configExtensions are the file endings libcni and kubelet's peers accept.
var configExtensions = []string{".conf", ".conflist", ".json"}

// load returns the network configuration list in use: the first usable file
// in name order, skipping berth's own default when an operator's file
// exists (so a CNI add-on installed later takes over without anyone having to
// delete berth's file). With no file at all it writes the default first.
func (m *Manager) load() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(m.opts.ConfDir, configExtensions)
	if err != nil {
		return nil, fmt.Errorf("read CNI config dir %s: %w", m.opts.ConfDir, err)
	}
	if len(files) == 0 {
		path, err := writeDefault(m.opts.ConfDir, m.opts.Default)
		if err != nil {
			return nil, fmt.Errorf("no CNI config in %s, and writing the default failed: %w", m.opts.ConfDir, err)
		}
		m.log.Info("no CNI config found; wrote berth's default network", "file", path, "bridge", m.opts.Default.Bridge, "subnet", m.opts.Default.Subnet)
		files = []string{path}
	}
	var errs []error
	var fallback *libcni.NetworkConfigList
	for _, f := range files {
		list, err := libcni.NetworkConfFromFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		if len(list.Plugins) == 0 {
			errs = append(errs, fmt.Errorf("%s: no plugins", f))
			continue
		}
		if isDefault(list) && len(files) > 1 {
			if fallback == nil {
				fallback = list
			}
			continue
		}
		return list, nil
	}
	if fallback != nil {
		return fallback, nil
	}
	return nil, fmt.Errorf("no usable CNI config in %s: %w", m.opts.ConfDir, errors.Join(errs...))
}

// Ready reports whether a usable configuration exists and every plugin it
// names, and the loopback plugin, is installed, and whether the plugins
// answer STATUS (CNI 1.1) without error.
func (m *Manager) Ready() error {
	list, err := m.load()
	if err != nil {
		return err
	}
	lo, err := loopbackList()
	if err != nil {
		return err
	}
	for _, p := range append(slices.Clone(list.Plugins), lo.Plugins...) {
		if _, err := invoke.FindInPath(p.Network.Type, m.opts.BinDirs); err != nil {
			return fmt.Errorf("network %s: plugin %s: %w", list.Name, p.Network.Type, err)
		}
	}
	if err := m.cni.GetStatusNetworkList(context.Background(), list); err != nil {
		return fmt.Errorf("network %s: status: %w", list.Name, err)
	}
	return nil
}

// SetPodCIDR records the node's pod CIDR.
func (m *Manager) SetPodCIDR(cidr string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.podCIDR = cidr
	return nil
}

// PodCIDR returns the recorded pod CIDR.
func (m *Manager) PodCIDR() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.podCIDR
}
