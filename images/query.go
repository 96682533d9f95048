package images

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
)

// lookupLocked finds the image s names: an image ID (with or without
// "sha256:"), a repo:tag or repo@digest name in any form kubelet or crictl
// write it ("busybox", "docker.io/library/busybox:latest",
// "name:tag@sha256:…"), or a unique prefix of an ID. Names win over ID
// prefixes, as in containerd: "abc" is an image name before it is an ID.
// It returns the name that matched ("" for an ID).
func (m *Manager) lookupLocked(s string) (*image, string, error) {
	if s == "" {
		return nil, "", fmt.Errorf("empty image reference: %w", errdefs.ErrInvalidArgument)
	}
	hexPart := strings.TrimPrefix(s, "sha256:")
	if isHex(hexPart) && len(hexPart) == 64 {
		if img := m.images["sha256:"+hexPart]; img != nil {
			return img, "", nil
		}
		return nil, "", fmt.Errorf("image %s: %w", s, errdefs.ErrNotFound)
	}
	r, parseErr := parseReference(s)
	if parseErr == nil {
		if id, ok := m.names[r.name()]; ok {
			return m.images[id], r.name(), nil
		}
	}
	if isHex(hexPart) {
		id, err := m.ids.Resolve(hexPart)
		if err == nil {
			return m.images["sha256:"+id], "", nil
		}
		if !errdefs.IsNotFound(err) {
			return nil, "", fmt.Errorf("image %s: %w", s, err)
		}
	}
	if parseErr != nil {
		return nil, "", parseErr
	}
	return nil, "", fmt.Errorf("image %s: %w", s, errdefs.ErrNotFound)
}

func isHex(s string) bool {
	return s != "" && strings.Trim(s, "0123456789abcdef") == ""
}

// Get returns the image ref names (see lookupLocked for the forms), or an
// error wrapping errdefs.ErrNotFound.
func (m *Manager) Get(ref string) (*Image, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	img, _, err := m.lookupLocked(ref)
	if err != nil {
		return nil, err
	}
	return img.public(), nil
}

// List returns every image, or only the one filter names when filter is
// not empty (none if it names nothing).
func (m *Manager) List(filter string) ([]*Image, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if filter != "" {
		img, _, err := m.lookupLocked(filter)
		if errdefs.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []*Image{img.public()}, nil
	}
	out := make([]*Image, 0, len(m.images))
	for _, img := range m.images {
		out = append(out, img.public())
	}
	slices.SortFunc(out, func(a, b *Image) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Remove removes what ref names. An ID removes the image with all its
// names. A name removes that name; removing the last tag removes the image
// (its digest names are only where it came from, as in Docker), and so
// does removing the last name of an image pulled by digest. Content no
// other image or container uses is freed. Removing an image berth does not
// have succeeds.
func (m *Manager) Remove(ref string) error {
	m.mu.Lock()
	img, name, err := m.lookupLocked(ref)
	if errdefs.IsNotFound(err) {
		m.mu.Unlock()
		return nil
	}
	if err != nil {
		m.mu.Unlock()
		return err
	}
	rec := img.rec
	rec.RepoTags = slices.DeleteFunc(slices.Clone(rec.RepoTags), func(s string) bool { return s == name })
	rec.RepoDigests = slices.DeleteFunc(slices.Clone(rec.RepoDigests), func(s string) bool { return s == name })
	whole := name == "" || len(rec.RepoTags) == 0

	var trash []string
	if whole {
		if err = m.imageTable.Delete(rec.ID); err == nil {
			m.dropImageLocked(img)
			trash = m.collectGarbageLocked()
			m.log.Info("removed image", "image", rec.ID, "names", img.names(), "by", ref)
		}
	} else if err = m.imageTable.Put(rec.ID, &rec); err == nil {
		m.dropImageLocked(img)
		m.addImageLocked(&image{rec: rec, config: img.config, rawConfig: img.rawConfig})
		m.log.Info("removed image name", "image", rec.ID, "name", name)
	}
	m.mu.Unlock()
	m.emptyTrash(trash)
	if err != nil {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	return nil
}
