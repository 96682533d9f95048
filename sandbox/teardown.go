package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-runtime/berth/events"
)

// Stop stops the pod: its containers, its infra process, its network (CNI
// DEL, which releases the IP) and its namespaces and /dev/shm. The record
// stays, NOTREADY, until Remove. Stopping a stopped pod succeeds; an
// unknown pod is NotFound (kubelet treats that as done).
func (m *Manager) Stop(ctx context.Context, id string) error {
	p, err := m.record(id)
	if err != nil {
		return err
	}
	unlock := m.lock(p.ID)
	defer unlock()
	if p, err = m.record(p.ID); err != nil {
		return err // removed while we waited
	}
	if p.State == StateNotReady {
		return nil
	}
	if p.State == StateRemoving {
		return nil // a remove is finishing the job
	}
	if err := m.stop(ctx, p); err != nil {
		return fmt.Errorf("stop pod %s: %w", p.ID, err)
	}
	return nil
}

// stop is Stop without the lookup and lock: the intent is recorded first,
// so a crash part-way is finished by Recover.
func (m *Manager) stop(ctx context.Context, p *Pod) error {
	p.State = StateStopping
	if err := m.save(p); err != nil {
		return err
	}
	if err := m.stopContainers(ctx, p); err != nil {
		return err
	}
	// Hooks hear of the stop with the containers stopped and the pod's
	// network and namespaces still there.
	if err := m.opts.Hooks.StopPodSandbox(ctx, p.clone()); err != nil {
		m.log.Warn("a pod hook failed on stop; stopping anyway", "pod", p.ID, "error", err)
	}
	if err := m.release(ctx, p); err != nil {
		return err
	}
	p.State = StateNotReady
	p.Step = ""
	p.IPs = nil
	p.InfraPID, p.InfraStart = 0, 0
	if err := m.save(p); err != nil {
		return err
	}
	m.opts.Events.Publish(events.Event{Type: events.Stopped, PodID: p.ID})
	return nil
}

// networkTeardownTimeout bounds one pod's CNI DEL.
const networkTeardownTimeout = 2 * time.Minute

// stopContainers stops every container of the pod.
func (m *Manager) stopContainers(ctx context.Context, p *Pod) error {
	if m.opts.Containers == nil {
		return nil
	}
	p.Step = "stop containers"
	if err := m.opts.Containers.StopAll(ctx, p.ID, m.opts.StopGrace); err != nil {
		return fmt.Errorf("%s: %w", p.Step, err)
	}
	return nil
}

// release frees what a pod holds while it runs; its containers are stopped
// or removed already. Each step tolerates "already done", so it runs again
// safely after a crash or a failure.
func (m *Manager) release(ctx context.Context, p *Pod) error {
	p.Step = "stop infra process"
	if err := m.stopInfra(p); err != nil {
		return fmt.Errorf("%s: %w", p.Step, err)
	}
	if !p.HostNetwork && (p.NetworkStarted || p.Network != "") {
		p.Step = "tear down pod network"
		// CNI DEL runs to its end even when the caller gives up (kubelet's
		// deadline, crictl's timeout): plugins killed half-way leave
		// iptables rules and IP allocations behind. It has its own bound.
		delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), networkTeardownTimeout)
		err := m.opts.Network.Teardown(delCtx, p.attachment(), p.Network)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", p.Step, err)
		}
		p.NetworkStarted, p.Network = false, ""
		if err := m.save(p); err != nil {
			return err
		}
	}
	p.Step = "unpin namespaces"
	if err := unpinNamespaces(p.NSDir); err != nil {
		return fmt.Errorf("%s: %w", p.Step, err)
	}
	p.Step = "unmount shm"
	if p.ShmPath != "" {
		if err := unmountAll(p.ShmPath); err != nil {
			return fmt.Errorf("%s: %w", p.Step, err)
		}
	}
	return nil
}

// stopInfra kills the pod's infra process, if any, and whatever else is
// still in the pod cgroup (a crash between forking the infra and recording
// its pid leaves it findable there).
func (m *Manager) stopInfra(p *Pod) error {
	var errs []error
	if p.InfraPID > 0 {
		if err := killProcess(p.InfraPID, p.InfraStart, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
		m.mu.Lock()
		in := m.infras[p.ID]
		delete(m.infras, p.ID)
		m.mu.Unlock()
		if in != nil {
			<-in.exited // reaped by the goroutine that started it
		}
	}
	if p.PIDMode == PIDPod {
		if err := m.killCgroup(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killCgroup kills every process left in the pod cgroup itself (not its
// children: containers are the containers manager's).
func (m *Manager) killCgroup(p *Pod) error {
	cg, err := cgroupManager(p.Cgroup)
	if err != nil || !cgroupExists(cg) {
		return nil
	}
	pids, err := cg.GetPids()
	if err != nil {
		return nil
	}
	var errs []error
	for _, pid := range pids {
		start, err := procStartTime(pid)
		if err != nil {
			continue
		}
		if err := killProcess(pid, start, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Remove removes the pod and everything it owns: containers, namespaces,
// mounts, cgroup, files and record. Removing an unknown pod succeeds.
func (m *Manager) Remove(ctx context.Context, id string) error {
	p, err := m.record(id)
	if errors.Is(err, errNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	unlock := m.lock(p.ID)
	defer unlock()
	if p, err = m.record(p.ID); errors.Is(err, errNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	wasRunning := p.State == StateReady || p.State == StateStopping
	p.State = StateRemoving
	if err := m.save(p); err != nil {
		return fmt.Errorf("remove pod %s: %w", p.ID, err)
	}
	if err := m.teardown(ctx, p, false); err != nil {
		return fmt.Errorf("remove pod %s: %w", p.ID, err)
	}
	// A pod removed without a stop first is stopped by the removal: hooks
	// hear of both, in order.
	if wasRunning {
		if err := m.opts.Hooks.StopPodSandbox(ctx, p.clone()); err != nil {
			m.log.Warn("a pod hook failed on stop", "pod", p.ID, "error", err)
		}
	}
	if err := m.opts.Hooks.RemovePodSandbox(ctx, p.clone()); err != nil {
		m.log.Warn("a pod hook failed on removal; removing anyway", "pod", p.ID, "error", err)
	}
	if err := m.forget(p); err != nil {
		return fmt.Errorf("remove pod %s: %w", p.ID, err)
	}
	m.opLocks.Forget(p.ID)
	m.log.Info("pod sandbox removed", "pod", p.ID, "name", p.Key)
	m.opts.Events.Publish(events.Event{Type: events.Deleted, PodID: p.ID})
	return nil
}

// teardown releases everything p may own, in the reverse order of Run. It
// is the undo of a failed Run (creating: no containers exist yet) and the
// body of Remove.
func (m *Manager) teardown(ctx context.Context, p *Pod, creating bool) error {
	if !creating && m.opts.Containers != nil {
		p.Step = "remove containers"
		if err := m.opts.Containers.RemoveAll(ctx, p.ID); err != nil {
			return fmt.Errorf("%s: %w", p.Step, err)
		}
	}
	// Removed containers need no stop; a pod being created has none.
	if err := m.release(ctx, p); err != nil {
		return err
	}
	p.Step = "remove pod files"
	if err := removeDir(p.RunDir, p.ShmPath); err != nil {
		return fmt.Errorf("%s: %w", p.Step, err)
	}
	if err := removeDir(p.Dir); err != nil {
		return fmt.Errorf("%s: %w", p.Step, err)
	}
	p.Step = "remove pod cgroup"
	if err := destroyCgroup(p.Cgroup); err != nil {
		return fmt.Errorf("%s: %w", p.Step, err)
	}
	return nil
}
