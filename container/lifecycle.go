package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/events"
	"github.com/berth-runtime/berth/monitor"
	"github.com/berth-runtime/berth/monitor/launch"
)

// startTimeout bounds how long a monitor may take to create and start its
// container.
const startTimeout = 2 * time.Minute

// maxTerminationMessage is how much of the termination message file is
// read, as kubelet's limit.
const maxTerminationMessage = 4096

// Start runs a created container's process under a new monitor.
func (m *Manager) Start(ctx context.Context, idOrPrefix string) error {
	c, err := m.get(idOrPrefix)
	if err != nil {
		return err
	}
	unlock := m.lock(c.ID)
	defer unlock()
	if c, err = m.get(c.ID); err != nil {
		return err
	}
	if c.State != StateCreated {
		return fmt.Errorf("start container %s: it is %s, not created: %w", c.ID, c.State, errFailedPrecondition)
	}
	pod, err := m.opts.Pods.Get(c.PodID)
	if err != nil || pod.State != "ready" {
		return fmt.Errorf("start container %s: its pod %s is not ready: %w", c.ID, c.PodID, errFailedPrecondition)
	}
	if err := m.opts.Hooks.StartContainer(ctx, pod, c); err != nil {
		return fmt.Errorf("start container %s: %w", c.ID, err)
	}
	cfg, err := c.ContainerConfig()
	if err != nil {
		return err
	}
	if c.LogPath != "" {
		if err := os.MkdirAll(dirOf(c.LogPath), 0o755); err != nil {
			return fmt.Errorf("start container %s: log directory: %w", c.ID, err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	// Taken before the spawn: a process that exits at once may finish
	// before Spawn returns, and must not finish before it started.
	startedAt := time.Now()
	handle, pid, err := monitor.Spawn(sctx, append(slices.Clone(m.opts.Helper), launch.Subcommand), m.opts.MonitorBinary, c.Bundle, monitor.Options{
		ID: c.ID, RuncRoot: m.runcRoot, LogPath: c.LogPath,
		Stdin: cfg.GetStdin(), StdinOnce: cfg.GetStdinOnce(), TTY: cfg.GetTty(),
		SystemdCgroup: m.opts.CgroupDriver == "systemd",
	})
	if err != nil {
		// The process never ran: the container is done, with the reason.
		c.State, c.FinishedAt, c.ExitCode = StateExited, time.Now(), 128
		c.Reason, c.Message = "StartError", err.Error()
		if serr := m.save(c); serr != nil {
			m.log.Warn("record failed start", "id", c.ID, "error", serr)
		}
		return fmt.Errorf("start container %s: %w", c.ID, err)
	}
	c.State, c.Pid, c.Monitor, c.StartedAt = StateRunning, pid, handle, startedAt
	exited := make(chan struct{})
	m.mu.Lock()
	m.exited[c.ID] = exited
	m.mu.Unlock()
	if err := m.save(c); err != nil {
		return err
	}
	m.opts.Hooks.PostStartContainer(ctx, pod, c)
	m.opts.Events.Publish(events.Event{Type: events.Started, PodID: c.PodID, ContainerID: c.ID})
	go m.watchExit(c.ID, handle, exited)
	return nil
}

func dirOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "."
}

// watchExit waits for the container's monitor to finish and records the
// exit it wrote.
func (m *Manager) watchExit(id string, h monitor.Handle, exited chan struct{}) {
	defer close(exited)
	if err := h.Wait(context.Background()); err != nil {
		m.log.Error("wait for container monitor", "id", id, "error", err)
		return
	}
	unlock := m.lock(id)
	defer unlock()
	m.recordExit(id)
}

// recordExit moves a running container whose monitor is gone to exited,
// from the monitor's exit record. Without one (the monitor died) the
// container is killed: nobody holds its output or can learn its exit.
func (m *Manager) recordExit(id string) {
	c, err := m.get(id)
	if err != nil || c.State != StateRunning {
		return
	}
	e, err := monitor.ReadExit(c.Bundle)
	switch {
	case err == nil:
		c.ExitCode, c.FinishedAt = int32(e.ExitCode), e.FinishedAt
		switch {
		case e.OOMKilled:
			c.Reason = "OOMKilled"
		case e.ExitCode == 0:
			c.Reason = "Completed"
		default:
			c.Reason = "Error"
		}
	default:
		m.log.Warn("container monitor ended without an exit record; killing the container", "id", id, "error", err)
		if lc, lerr := libcontainer.Load(m.runcRoot, id); lerr == nil {
			_ = lc.Signal(unix.SIGKILL)
		}
		c.ExitCode, c.FinishedAt = 255, time.Now()
		c.Reason, c.Message = "Error", "the container's monitor exited unexpectedly"
	}
	if c.TerminationMessageHostPath != "" && c.Message == "" {
		c.Message = readTerminationMessage(c.TerminationMessageHostPath)
	}
	c.State = StateExited
	if err := m.save(c); err != nil {
		m.log.Error("record container exit", "id", id, "error", err)
		return
	}
	m.opts.Hooks.StopContainer(context.Background(), m.podOf(c), c)
	m.opts.Events.Publish(events.Event{Type: events.Stopped, PodID: c.PodID, ContainerID: c.ID})
}

func readTerminationMessage(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, maxTerminationMessage)
	n, _ := f.Read(buf)
	return string(buf[:n])
}

// Stop sends the container its stop signal and, after timeout, SIGKILL.
// Stopping a container that is not running succeeds.
func (m *Manager) Stop(ctx context.Context, idOrPrefix string, timeout time.Duration) error {
	c, err := m.get(idOrPrefix)
	if err != nil {
		return err
	}
	if c.State != StateRunning {
		if c.State == StateCreated {
			// Never started: nothing runs; it is simply done.
			unlock := m.lock(c.ID)
			defer unlock()
			if c, err = m.get(c.ID); err == nil && c.State == StateCreated {
				c.State, c.FinishedAt, c.Reason = StateExited, time.Now(), "Completed"
				return m.save(c)
			}
		}
		return nil
	}
	m.mu.RLock()
	exited := m.exited[c.ID]
	m.mu.RUnlock()
	if exited == nil {
		return fmt.Errorf("stop container %s: no exit watch: %w", c.ID, errFailedPrecondition)
	}
	lc, err := libcontainer.Load(m.runcRoot, c.ID)
	if err != nil {
		// The container state is gone: the monitor is finishing.
		<-exited
		return nil
	}
	if timeout > 0 {
		sig, err := parseSignal(c.StopSignal)
		if err != nil {
			sig = int(unix.SIGTERM)
		}
		if err := lc.Signal(syscall.Signal(sig)); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
			m.log.Warn("send stop signal", "id", c.ID, "signal", c.StopSignal, "error", err)
		}
		select {
		case <-exited:
			return nil
		case <-time.After(timeout):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := lc.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		m.log.Warn("kill container", "id", c.ID, "error", err)
	}
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Remove stops the container if it runs and deletes everything of it but
// its log file (kubelet owns log files). Removing an unknown container
// succeeds.
func (m *Manager) Remove(ctx context.Context, idOrPrefix string) error {
	c, err := m.get(idOrPrefix)
	if errors.Is(err, errNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := m.Stop(ctx, c.ID, 0); err != nil {
		return fmt.Errorf("remove container %s: %w", c.ID, err)
	}
	unlock := m.lock(c.ID)
	defer unlock()
	if c, err = m.get(c.ID); errors.Is(err, errNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	c.State = StateRemoving
	if err := m.save(c); err != nil {
		return err
	}
	if err := m.teardown(c); err != nil {
		return fmt.Errorf("remove container %s: %w", c.ID, err)
	}
	m.opts.Hooks.RemoveContainer(ctx, m.podOf(c), c)
	m.opts.Events.Publish(events.Event{Type: events.Deleted, PodID: c.PodID, ContainerID: c.ID})
	return nil
}

// teardown releases every resource a container record can own and deletes
// the record. Each step tolerates what is already gone, so it finishes a
// remove or undoes a create alike, after a crash too.
func (m *Manager) teardown(c *Container) error {
	if lc, err := libcontainer.Load(m.runcRoot, c.ID); err == nil {
		_ = lc.Signal(unix.SIGKILL)
		if err := destroyWhenStopped(lc); err != nil {
			return err
		}
	}
	if err := unmountImageVolumes(c.Dir); err != nil {
		return err
	}
	if err := unmountRootfs(c.Dir); err != nil {
		return err
	}
	if err := m.releaseImageVolumes(c); err != nil {
		return err
	}
	if err := m.opts.Images.ReleaseRootfs(c.ID); err != nil {
		return fmt.Errorf("release image layers: %w", err)
	}
	for _, d := range []string{c.Bundle, c.Dir} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("remove %s: %w", d, err)
		}
	}
	return m.forget(c)
}

// destroyWhenStopped destroys the libcontainer state, which it refuses
// while the init runs: a just-killed init takes a moment to go.
func destroyWhenStopped(lc *libcontainer.Container) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := lc.Destroy()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("destroy container state: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StopAll stops every container of the pod (sandbox.PodContainers).
func (m *Manager) StopAll(ctx context.Context, podID string, grace time.Duration) error {
	var errs []error
	for _, c := range m.List() {
		if c.PodID == podID {
			if err := m.Stop(ctx, c.ID, grace); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// RemoveAll removes every container of the pod (sandbox.PodContainers).
func (m *Manager) RemoveAll(ctx context.Context, podID string) error {
	var errs []error
	for _, c := range m.List() {
		if c.PodID == podID {
			if err := m.Remove(ctx, c.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
