package archive

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
)

// maxSymlinkHops bounds symlink resolution as the kernel does (MAXSYMLINKS).
const maxSymlinkHops = 40

// cleanEntryName turns a tar entry name into a clean path relative to the
// layer root ("" for the root itself). A name that climbs above the root
// with ".." is rejected rather than clamped: no real layer needs it, and a
// layer that tries it is hostile. A leading "/" is dropped, as tar does.
func cleanEntryName(name string) (string, error) {
	depth := 0
	var out []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			if depth == 0 {
				return "", fmt.Errorf("%q climbs out with \"..\": %w", name, ErrUnsafePath)
			}
			depth--
			out = out[:len(out)-1]
		default:
			depth++
			out = append(out, c)
		}
	}
	return strings.Join(out, "/"), nil
}

// resolveDir resolves every component of p (a clean relative path) that is
// a symlink this archive made, the way the kernel would inside the
// container: an absolute target restarts from the layer root, a relative
// one from the link's directory. A ".." that climbs above the root means
// the link leads out of the layer, which is an error.
func (a *applier) resolveDir(p string) (string, error) {
	var out []string
	todo := splitPath(p)
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(out) == 0 {
				return "", fmt.Errorf("%q leads out through a symlink: %w", p, ErrUnsafePath)
			}
			out = out[:len(out)-1]
			continue
		}
		cur := path.Join(append(out, c)...)
		target, isLink := a.symlinks[cur]
		if !isLink {
			out = append(out, c)
			continue
		}
		if hops++; hops > maxSymlinkHops {
			return "", fmt.Errorf("%q: too many levels of symlinks: %w", p, syscall.ELOOP)
		}
		if path.IsAbs(target) {
			out = out[:0]
		}
		todo = append(splitPath(target), todo...)
	}
	return path.Join(out...), nil
}

func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// forgetUnder drops the bookkeeping of symlinks and pending directory
// times at or below p after p was removed.
func (a *applier) forgetUnder(p string) {
	under := func(k string) bool { return k == p || strings.HasPrefix(k, p+"/") }
	for k := range a.symlinks {
		if under(k) {
			delete(a.symlinks, k)
		}
	}
	a.dirTimes = slices.DeleteFunc(a.dirTimes, func(d pendingTimes) bool { return under(d.path) })
}

// dirCache keeps directory descriptors of recently used parents open:
// entries of a layer come grouped by directory, and opening a deep path
// through os.Root costs one openat per component.
type dirCache struct {
	root *os.Root
	fds  map[string]*os.File
}

const dirCacheSize = 64

// open returns a descriptor of the directory at the resolved path p,
// creating missing directories (0755, root-owned) as tar extractors do for
// parents the archive does not list.
func (c *dirCache) open(p string) (*os.File, error) {
	if f, ok := c.fds[p]; ok {
		return f, nil
	}
	name := p
	if name == "" {
		name = "."
	}
	f, err := c.root.OpenFile(name, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := c.root.MkdirAll(name, 0o755); err != nil {
			return nil, fmt.Errorf("create parent directory %q: %w", p, err)
		}
		f, err = c.root.OpenFile(name, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open parent directory %q: %w", p, err)
	}
	if len(c.fds) >= dirCacheSize {
		// Callers hold at most one cached descriptor at a time and take it
		// after this call, so closing them all here is safe.
		c.clear()
	}
	c.fds[p] = f
	return f, nil
}

// evictUnder closes the descriptors of p and the directories below it; it
// runs before p is removed, so no cached descriptor names a directory that
// is gone. Descriptors of other directories, such as p's parent that the
// caller holds, stay valid.
func (c *dirCache) evictUnder(p string) {
	for k, f := range c.fds {
		if k == p || strings.HasPrefix(k, p+"/") {
			_ = f.Close()
			delete(c.fds, k)
		}
	}
}

// clear closes every cached descriptor.
func (c *dirCache) clear() {
	for k, f := range c.fds {
		_ = f.Close()
		delete(c.fds, k)
	}
}
