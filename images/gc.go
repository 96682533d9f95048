package images

import (
	"os"
	"path/filepath"
	"strconv"
)

// collectGarbageLocked removes the layers and blobs that no image and no
// container uses. While pulls run it only notes that a collection is due:
// a pull writes content before any record names it, and the last pull to
// finish collects. Layer directories are moved to the trash here and
// deleted by emptyTrash after the lock is released, since deleting a big
// tree takes a while. It returns the directories to delete.
func (m *Manager) collectGarbageLocked() []string {
	if m.active > 0 {
		m.gcPending = true
		return nil
	}
	m.gcPending = false
	m.usage.invalidate()

	liveLayers := map[string]bool{}
	liveBlobs := map[string]bool{}
	for _, img := range m.images {
		for _, l := range img.rec.Layers {
			liveLayers[l] = true
		}
		for _, b := range img.rec.Blobs {
			liveBlobs[b] = true
		}
	}
	for _, u := range m.rootfs {
		for _, l := range u.Layers {
			liveLayers[l] = true
		}
	}

	var trash []string
	for id, l := range m.layers {
		if liveLayers[id] {
			liveBlobs[l.Blob] = true
			continue
		}
		if err := m.layerTable.Delete(id); err != nil {
			m.log.Error("cannot forget an unused image layer; keeping it", "chain_id", id, "error", err)
			liveBlobs[l.Blob] = true
			continue
		}
		delete(m.layers, id)
		dir := filepath.Dir(m.layerPath(l.Dir))
		dst := filepath.Join(m.trashDir(), strconv.Itoa(l.Dir))
		if err := os.Rename(dir, dst); err != nil {
			// No record names it any more: the next start removes it.
			m.log.Warn("cannot move an unused image layer to the trash", "dir", dir, "error", err)
			continue
		}
		trash = append(trash, dst)
	}

	blobs, err := m.blobs.list()
	if err != nil {
		m.log.Warn("cannot list image blobs for garbage collection", "error", err)
		return trash
	}
	for _, b := range blobs {
		if liveBlobs[b.String()] {
			continue
		}
		if err := m.blobs.remove(b); err != nil {
			m.log.Warn("cannot remove an unused image blob", "blob", b.String(), "error", err)
		}
	}
	if err := syncDir(m.blobs.dir); err != nil {
		m.log.Warn("cannot sync the blob directory", "error", err)
	}
	return trash
}

// emptyTrash deletes layer directories collectGarbageLocked moved away.
func (m *Manager) emptyTrash(dirs []string) {
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			m.log.Warn("cannot delete an unused image layer; the next start will", "dir", d, "error", err)
		}
	}
}
