package images

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// FsUsage is the disk use of one directory tree.
type FsUsage struct {
	// Path is the directory measured. kubelet finds the file system (and
	// its capacity) from it, as it does from containerd's snapshotter path.
	Path       string
	UsedBytes  uint64 // allocated blocks, not apparent sizes
	InodesUsed uint64 // hard-linked files count once
	Timestamp  time.Time
}

// usageMaxAge bounds how stale a reported usage can be when nothing
// changed through the manager (kubelet asks every few seconds, and walking
// a large store each time would cost more than the answer is worth).
const usageMaxAge = 10 * time.Second

type usageCache struct {
	dirty atomic.Bool
	mu    sync.Mutex
	at    time.Time
	image FsUsage
	ctr   FsUsage
}

// invalidate makes the next FsUsage measure again: a pull or removal
// changed the store.
func (c *usageCache) invalidate() { c.dirty.Store(true) }

// FsUsage measures the image store and the containers' writable layer
// directory.
func (m *Manager) FsUsage(ctx context.Context) (images, containers FsUsage, err error) {
	c := &m.usage
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dirty.Load() && time.Since(c.at) < usageMaxAge {
		return c.image, c.ctr, nil
	}
	c.dirty.Store(false)
	if c.image, err = measure(ctx, m.dir); err != nil {
		c.dirty.Store(true)
		return FsUsage{}, FsUsage{}, err
	}
	if c.ctr, err = measure(ctx, m.containers); err != nil {
		c.dirty.Store(true)
		return FsUsage{}, FsUsage{}, err
	}
	c.at = time.Now()
	return c.image, c.ctr, nil
}

// measure walks dir like du: blocks allocated and inodes used.
func measure(ctx context.Context, dir string) (FsUsage, error) {
	u := FsUsage{Path: dir, Timestamp: time.Now()}
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return err
		}
		if st.Nlink > 1 && !d.IsDir() {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		u.UsedBytes += uint64(st.Blocks) * 512
		u.InodesUsed++
		return nil
	})
	return u, err
}
