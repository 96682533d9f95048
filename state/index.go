package state

import (
	"fmt"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
)

// IDIndex resolves full IDs from unique prefixes, as crictl users type
// shortened IDs.
type IDIndex struct {
	mu  sync.RWMutex
	ids map[string]struct{}
}

// NewIDIndex returns an empty index.
func NewIDIndex() *IDIndex { return &IDIndex{ids: map[string]struct{}{}} }

// Add indexes id.
func (x *IDIndex) Add(id string) {
	x.mu.Lock()
	x.ids[id] = struct{}{}
	x.mu.Unlock()
}

// Delete forgets id.
func (x *IDIndex) Delete(id string) {
	x.mu.Lock()
	delete(x.ids, id)
	x.mu.Unlock()
}

// Resolve returns the one ID that starts with prefix. No match is
// ErrNotFound; several matches is ErrInvalidArgument.
func (x *IDIndex) Resolve(prefix string) (string, error) {
	if prefix == "" {
		return "", fmt.Errorf("empty id: %w", errdefs.ErrInvalidArgument)
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	if _, ok := x.ids[prefix]; ok {
		return prefix, nil
	}
	found := ""
	for id := range x.ids {
		if strings.HasPrefix(id, prefix) {
			if found != "" {
				return "", fmt.Errorf("id prefix %q matches more than one: %w", prefix, errdefs.ErrInvalidArgument)
			}
			found = id
		}
	}
	if found == "" {
		return "", fmt.Errorf("id %q: %w", prefix, errdefs.ErrNotFound)
	}
	return found, nil
}

// Registrar reserves unique names for IDs, so two creates of the same pod or
// container name cannot both succeed.
type Registrar struct {
	mu     sync.Mutex
	byName map[string]string
}

// NewRegistrar returns an empty registrar.
func NewRegistrar() *Registrar { return &Registrar{byName: map[string]string{}} }

// Reserve binds name to id. Reserving a name already bound to another id is
// ErrAlreadyExists naming the holder; reserving it again for the same id is
// a no-op.
func (r *Registrar) Reserve(name, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if holder, ok := r.byName[name]; ok && holder != id {
		return fmt.Errorf("name %q is reserved for %s: %w", name, holder, errdefs.ErrAlreadyExists)
	}
	r.byName[name] = id
	return nil
}

// Release frees name if it is bound to id.
func (r *Registrar) Release(name, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byName[name] == id {
		delete(r.byName, name)
	}
}
