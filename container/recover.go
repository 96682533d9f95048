package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/berth-runtime/berth/monitor"
)

// Recover rebuilds the manager from the state database at daemon start:
// names and IDs are indexed again, half-done creates and removes are
// finished, containers that exited while the daemon was away get their
// exit recorded, and running ones are watched again through their monitors.
func (m *Manager) Recover(ctx context.Context) error {
	all, err := m.table.All()
	if err != nil {
		return fmt.Errorf("recover containers: %w", err)
	}
	var errs []error
	for id, c := range all {
		m.mu.Lock()
		m.containers[id] = c.clone()
		m.mu.Unlock()
		m.ids.Add(id)
		if err := m.names.Reserve(c.Key, id); err != nil {
			errs = append(errs, err)
		}
	}
	for id, c := range all {
		switch c.State {
		case StateCreating, StateRemoving:
			m.log.Info("finishing interrupted container operation", "id", id, "state", c.State)
			if err := m.teardown(c); err != nil {
				errs = append(errs, fmt.Errorf("container %s: %w", id, err))
			}
		case StateCreated:
			if _, err := os.Stat(filepath.Join(c.Bundle, monitor.SpecFile)); errors.Is(err, os.ErrNotExist) {
				// The volatile bundle is gone: the host rebooted.
				c.State, c.Reason, c.Message = StateExited, "Unknown", "the host restarted before the container started"
				if err := m.save(c); err != nil {
					errs = append(errs, err)
				}
			}
		case StateRunning:
			exited := make(chan struct{})
			m.mu.Lock()
			m.exited[id] = exited
			m.mu.Unlock()
			if c.Monitor.Alive() {
				go m.watchExit(id, c.Monitor, exited)
				continue
			}
			m.recordExit(id)
			close(exited)
		}
	}
	m.log.Info("containers recovered", "count", len(all))
	return errors.Join(errs...)
}
