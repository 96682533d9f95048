// Package cni drives the pod network through libcni and the reference
// plugins. It reads the first network configuration in the configuration
// directory each time it is needed, so edited files take effect without a
// restart.
package cni

import (
	"errors"
	"fmt"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
)

// Options locate configuration and plugins.
type Options struct {
	ConfDir string
	BinDirs []string
}

// Manager is berth's view of the pod network.
type Manager struct {
	opts Options

	mu      sync.Mutex
	podCIDR string
}

// New returns a manager for the given directories.
func New(opts Options) *Manager { return &Manager{opts: opts} }

// configExtensions are the file endings libcni and kubelet's peers accept.
var configExtensions = []string{".conf", ".conflist", ".json"}

// load returns the first network configuration list, in file name order.
func (m *Manager) load() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(m.opts.ConfDir, configExtensions)
	if err != nil {
		return nil, fmt.Errorf("read CNI config dir %s: %w", m.opts.ConfDir, err)
	}
	var errs []error
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
		return list, nil
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("no usable CNI config in %s: %w", m.opts.ConfDir, errors.Join(errs...))
	}
	return nil, fmt.Errorf("no CNI config in %s", m.opts.ConfDir)
}

// Ready reports whether a usable configuration exists and every plugin it
// names is installed.
func (m *Manager) Ready() error {
	list, err := m.load()
	if err != nil {
		return err
	}
	for _, p := range list.Plugins {
		if _, err := invoke.FindInPath(p.Network.Type, m.opts.BinDirs); err != nil {
			return fmt.Errorf("network %s: plugin %s: %w", list.Name, p.Network.Type, err)
		}
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
