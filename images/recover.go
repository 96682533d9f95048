package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// Recover loads the image store from the database and the disk, drops
// records whose content is gone, and removes what interrupted pulls and
// removals left behind. The daemon calls it before it serves.
func (m *Manager) Recover(ctx context.Context) error {
	for _, d := range []string{m.layersDir(), m.trashDir(), m.emptyLayerDir(), m.containers} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("images: create %s: %w", d, err)
		}
	}
	if err := m.blobs.init(); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	if err := removeChildren(m.trashDir()); err != nil {
		return fmt.Errorf("images: empty trash: %w", err)
	}

	layers, err := m.layerTable.All()
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	images, err := m.imageTable.All()
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	users, err := m.rootfsTable.All()
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}

	m.mu.Lock()
	trash, err := m.rebuildLocked(layers, images, users)
	m.mu.Unlock()
	m.emptyTrash(trash)
	if err != nil {
		return err
	}
	m.log.Info("image store recovered", "images", len(images), "layers", len(layers), "containers_using_layers", len(users))
	return nil
}

// rebuildLocked fills the in-memory state from the records, dropping those
// whose content is gone, and collects garbage. It returns the layer
// directories moved to the trash.
func (m *Manager) rebuildLocked(layers map[string]*layerRecord, images map[string]*imageRecord, users map[string]*rootfsRecord) ([]string, error) {
	for id, l := range layers {
		if err := m.checkLayer(l); err != nil {
			m.log.Warn("dropping an image layer whose content is gone", "chain_id", id, "error", err)
			if err := m.layerTable.Delete(id); err != nil {
				return nil, fmt.Errorf("images: %w", err)
			}
			delete(layers, id)
			continue
		}
		m.layers[id] = l
		m.nextDir = max(m.nextDir, l.Dir+1)
	}
	for id, rec := range images {
		img, err := m.loadImage(rec)
		if err != nil {
			m.log.Warn("dropping an image whose content is gone; pull it again", "image", id, "names", rec.RepoTags, "error", err)
			if err := m.imageTable.Delete(id); err != nil {
				return nil, fmt.Errorf("images: %w", err)
			}
			delete(images, id)
			continue
		}
		m.addImageLocked(img)
	}
	if err := m.settleNameConflictsLocked(images); err != nil {
		return nil, err
	}
	for id, u := range users {
		m.rootfs[id] = u
		for _, l := range u.Layers {
			if m.layers[l] == nil {
				m.log.Warn("a container's image layer is gone", "container", id, "chain_id", l)
			}
		}
	}
	if err := m.removeUnrecordedLayerDirs(); err != nil {
		return nil, err
	}
	return m.collectGarbageLocked(), nil
}

// checkLayer confirms a layer's directory and blob exist.
func (m *Manager) checkLayer(l *layerRecord) error {
	if _, err := os.Stat(m.layerPath(l.Dir)); err != nil {
		return err
	}
	h, err := parseDigest(l.Blob)
	if err != nil {
		return err
	}
	if !m.blobs.has(h) {
		return fmt.Errorf("blob %s is missing", l.Blob)
	}
	return nil
}

// loadImage rebuilds an image from its record, checking its content.
func (m *Manager) loadImage(rec *imageRecord) (*image, error) {
	for _, l := range rec.Layers {
		if m.layers[l] == nil {
			return nil, fmt.Errorf("layer %s is missing", l)
		}
	}
	for _, b := range rec.Blobs {
		h, err := parseDigest(b)
		if err != nil {
			return nil, err
		}
		if !m.blobs.has(h) {
			return nil, fmt.Errorf("blob %s is missing", b)
		}
	}
	cfg, raw, err := m.loadConfig(rec.ID)
	if err != nil {
		return nil, err
	}
	return &image{rec: *rec, config: cfg, rawConfig: raw}, nil
}

// settleNameConflictsLocked gives a name two records claim to the one
// updated last. Moving a tag writes the new holder before the old one, so a
// crash in between leaves both claiming it; the newer claim is the truth.
func (m *Manager) settleNameConflictsLocked(recs map[string]*imageRecord) error {
	holders := map[string][]string{}
	for id := range m.images {
		for _, n := range m.images[id].names() {
			holders[n] = append(holders[n], id)
		}
	}
	for n, ids := range holders {
		if len(ids) < 2 {
			continue
		}
		slices.SortFunc(ids, func(a, b string) int { return recs[b].UpdatedAt.Compare(recs[a].UpdatedAt) })
		m.names[n] = ids[0]
		for _, loser := range ids[1:] {
			img := m.images[loser]
			img.rec.RepoTags = slices.DeleteFunc(img.rec.RepoTags, func(s string) bool { return s == n })
			img.rec.RepoDigests = slices.DeleteFunc(img.rec.RepoDigests, func(s string) bool { return s == n })
			if err := m.imageTable.Put(loser, &img.rec); err != nil {
				return fmt.Errorf("images: %w", err)
			}
		}
	}
	return nil
}

// removeUnrecordedLayerDirs deletes layer directories no record names:
// unpacks that never committed.
func (m *Manager) removeUnrecordedLayerDirs() error {
	recorded := map[int]bool{}
	for _, l := range m.layers {
		recorded[l.Dir] = true
	}
	entries, err := os.ReadDir(m.layersDir())
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err == nil && recorded[n] {
			continue
		}
		if err == nil {
			m.nextDir = max(m.nextDir, n+1)
		}
		m.log.Info("removing an unpacked layer no image records (an interrupted pull)", "dir", e.Name())
		if err := os.RemoveAll(filepath.Join(m.layersDir(), e.Name())); err != nil {
			return fmt.Errorf("images: remove %s: %w", e.Name(), err)
		}
	}
	return nil
}

// removeChildren empties dir.
func removeChildren(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
