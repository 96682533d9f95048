package sandbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Recover rebuilds the in-memory indexes from the records and reconciles
// each pod with the machine, before the daemon answers:
//   - creating: a RunPodSandbox a crash interrupted; it is undone and forgotten
//     (kubelet retries the run).
//   - stopping / removing: the stop or remove is finished.
//   - ready: still ready only if its pinned namespaces are mounted and its
//     infra process lives; otherwise (after a reboot the state tmpfs is
//     empty) it is stopped, which releases its IP, and becomes NOTREADY.
//
// Then every CNI attachment cached for a pod that is not ready is released
// (GC). A pod that cannot be reconciled is logged and kept for a retry at
// the next start: one broken pod must not keep the runtime from starting.
func (m *Manager) Recover(ctx context.Context) error {
	records, err := m.table.All()
	if err != nil {
		return fmt.Errorf("recover pods: %w", err)
	}
	ids := make([]string, 0, len(records))
	for id, p := range records {
		if p.ID != id {
			return fmt.Errorf("recover pods: record %s holds pod %q", id, p.ID)
		}
		ids = append(ids, id)
		m.ids.Add(id)
		if err := m.names.Reserve(p.Key, id); err != nil {
			m.log.Error("two pod records hold one name", "pod", id, "error", err)
		}
		m.mu.Lock()
		m.pods[id] = p.clone()
		m.mu.Unlock()
	}
	slices.Sort(ids)
	var live []string
	for _, id := range ids {
		p := records[id]
		if err := m.reconcile(ctx, p); err != nil {
			m.log.Error("pod left as found; retried at the next start", "pod", id, "state", p.State, "step", p.Step, "error", err)
		}
		if cur, err := m.Get(id); err == nil && cur.State == StateReady {
			live = append(live, id)
		}
	}
	if err := m.opts.Network.GC(ctx, live); err != nil {
		m.log.Warn("CNI garbage collection", "error", err)
	}
	return nil
}

func (m *Manager) reconcile(ctx context.Context, p *Pod) error {
	switch p.State {
	case StateCreating:
		m.log.Warn("undoing a RunPodSandbox interrupted by a crash", "pod", p.ID, "name", p.Key, "step", p.Step)
		if err := m.teardown(ctx, p, true); err != nil {
			return err
		}
		return m.forget(p)
	case StateRemoving:
		m.log.Info("finishing an interrupted RemovePodSandbox", "pod", p.ID, "step", p.Step)
		if err := m.teardown(ctx, p, false); err != nil {
			return err
		}
		return m.forget(p)
	case StateStopping:
		m.log.Info("finishing an interrupted StopPodSandbox", "pod", p.ID, "step", p.Step)
		return m.stop(ctx, p)
	case StateReady:
		if why := m.broken(p); why != "" {
			m.log.Warn("pod lost its namespaces; stopping it", "pod", p.ID, "reason", why)
			return m.stop(ctx, p)
		}
		return nil
	case StateNotReady:
		return nil
	}
	return errors.New("unknown state")
}

// broken says why a ready pod can no longer run containers, or "".
func (m *Manager) broken(p *Pod) string {
	for kind, path := range map[string]string{"net": p.NetNS, "ipc": p.IPCNS, "uts": p.UTSNS} {
		if path != "" && !isNamespace(path) {
			return kind + " namespace " + path + " is not mounted"
		}
	}
	if p.PIDMode == PIDPod && !processAlive(p.InfraPID, p.InfraStart) {
		return fmt.Sprintf("infra process %d is gone", p.InfraPID)
	}
	return ""
}
