package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Recovery runs in two phases around the containers manager's own, because
// finishing a stop or remove goes through PodContainers, which can only find
// its containers once it has recovered, while it looks pods up here:
//
//  1. Recover rebuilds the indexes from the records and undoes every run a
//     crash interrupted (state creating: such a pod has no containers yet).
//  2. AfterContainers().Recover finishes the rest:
//     - stopping / removing: the stop or remove is finished;
//     - ready: still ready only if its pinned namespaces are mounted and its
//     infra process lives; otherwise (after a reboot the state tmpfs is
//     empty) it is stopped, which releases its IP, and becomes NOTREADY;
//     and then every CNI attachment cached for a pod that is not ready is
//     released (GC).
//
// With no PodContainers wired, Recover runs both phases. A pod that cannot be
// reconciled is logged and kept for a retry at the next start: one broken pod
// must not keep the runtime from starting.
func (m *Manager) Recover(ctx context.Context) error {
	records, err := m.table.All()
	if err != nil {
		return fmt.Errorf("recover pods: %w", err)
	}
	for id, p := range records {
		if p.ID != id {
			return fmt.Errorf("recover pods: record %s holds pod %q", id, p.ID)
		}
		m.ids.Add(id)
		if err := m.names.Reserve(p.Key, id); err != nil {
			m.log.Error("two pod records hold one name", "pod", id, "error", err)
		}
		m.mu.Lock()
		m.pods[id] = p.clone()
		m.mu.Unlock()
	}
	for _, id := range sortedIDs(records) {
		p := records[id]
		if p.State != StateCreating {
			continue
		}
		m.log.Warn("undoing a RunPodSandbox interrupted by a crash", "pod", p.ID, "name", p.Key, "step", p.Step)
		if err := m.teardown(ctx, p, true); err != nil {
			m.log.Error("pod left as found; retried at the next start", "pod", id, "state", p.State, "step", p.Step, "error", err)
			continue
		}
		if err := m.forget(p); err != nil {
			m.log.Error("forget undone pod", "pod", id, "error", err)
		}
	}
	if m.opts.Containers == nil {
		return m.finishRecovery(ctx)
	}
	return nil
}

// AfterContainers returns phase 2 of recovery, for the daemon to run after
// the containers manager has recovered.
func (m *Manager) AfterContainers() interface{ Recover(context.Context) error } {
	return recoverFunc(m.finishRecovery)
}

type recoverFunc func(context.Context) error

func (f recoverFunc) Recover(ctx context.Context) error { return f(ctx) }

func (m *Manager) finishRecovery(ctx context.Context) error {
	var live []string
	for _, p := range m.List() {
		p, err := m.record(p.ID)
		if err != nil {
			continue
		}
		if err := m.reconcile(ctx, p); err != nil {
			m.log.Error("pod left as found; retried at the next start", "pod", p.ID, "state", p.State, "step", p.Step, "error", err)
		}
		if cur, err := m.record(p.ID); err == nil && cur.State == StateReady {
			live = append(live, p.ID)
		}
	}
	if err := m.opts.Network.GC(ctx, live); err != nil {
		m.log.Warn("CNI garbage collection", "error", err)
	}
	m.sweepOrphans()
	return nil
}

// sweepOrphans removes pinned namespaces, /dev/shm mounts and pod
// directories that no record names (a record lost to a wiped or restored
// database): nothing else would ever free them. Their CNI attachments went
// with GC above.
func (m *Manager) sweepOrphans() {
	known := func(id string) bool {
		_, err := m.record(id)
		return err == nil
	}
	for _, parent := range []string{
		filepath.Join(m.opts.State, "ns"),
		filepath.Join(m.opts.State, "pods"),
		filepath.Join(m.opts.Root, "pods"),
	} {
		entries, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, e := range entries {
			id := e.Name()
			if !e.IsDir() || known(id) {
				continue
			}
			dir := filepath.Join(parent, id)
			m.log.Warn("removing resources of a pod without a record", "pod", id, "dir", dir)
			var err error
			switch parent {
			case filepath.Join(m.opts.State, "ns"):
				err = unpinNamespaces(dir)
			case filepath.Join(m.opts.State, "pods"):
				err = removeDir(dir, filepath.Join(dir, "shm"))
			default:
				err = removeDir(dir)
			}
			if err != nil {
				m.log.Error("remove orphaned pod resources", "dir", dir, "error", err)
			}
		}
	}
}

func sortedIDs(records map[string]*Pod) []string {
	ids := make([]string, 0, len(records))
	for id := range records {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (m *Manager) reconcile(ctx context.Context, p *Pod) error {
	unlock := m.lock(p.ID)
	defer unlock()
	switch p.State {
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
	case StateNotReady, StateCreating:
		return nil
	}
	return errors.New("unknown state")
}

// broken says why a ready pod can no longer run containers, or "".
func (m *Manager) broken(p *Pod) string {
	for kind, path := range map[string]string{"net": p.NetNS, "ipc": p.IPCNS, "uts": p.UTSNS, "user": p.UserNS} {
		if path != "" && !isNamespace(path) {
			return kind + " namespace " + path + " is not mounted"
		}
	}
	if p.PIDMode == PIDPod && !processAlive(p.InfraPID, p.InfraStart) {
		return fmt.Sprintf("infra process %d is gone", p.InfraPID)
	}
	return ""
}
