// Package archive unpacks image layer tarballs into directories that
// overlayfs can stack as lower layers. It does the job of containerd's
// archive.Apply with the overlay whiteout converter, for a layer unpacked
// on its own into an empty directory:
//
//   - whiteouts (".wh.name") become 0/0 character devices and opaque
//     markers (".wh..wh..opq") the trusted.overlay.opaque=y xattr on their
//     directory, the form overlayfs reads;
//   - regular files, directories, symlinks (kept exactly as written), hard
//     links, device nodes and fifos are made with their modes, owners,
//     xattrs and times;
//   - nothing is ever written outside the directory: an entry whose name
//     climbs out with "..", an entry written through a symlink that leads
//     out, and a hard link to anything outside are rejected with an error
//     naming the entry.
//
// Every write goes through a directory file descriptor opened by os.Root
// and a single path component, so even a flaw in the symlink bookkeeping
// below cannot make the kernel follow a path out of the layer.
package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// ErrUnsafePath marks an entry that would write outside the layer.
var ErrUnsafePath = errors.New("path escapes the layer directory")

// EntryError is the error of one tar entry; Entry is its name as written in
// the archive.
type EntryError struct {
	Entry string
	Err   error
}

func (e *EntryError) Error() string { return fmt.Sprintf("layer entry %q: %v", e.Entry, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// Stats describes an unpacked layer.
type Stats struct {
	Entries int64 // tar entries applied
	Bytes   int64 // bytes of regular file content written
}

// Apply unpacks the uncompressed tar stream r into dir, which must exist
// and be empty (a layer is unpacked once, into a fresh directory). On error
// dir holds a partial layer: the caller removes it.
func Apply(ctx context.Context, dir string, r io.Reader) (Stats, error) {
	a, err := newApplier(dir)
	if err != nil {
		return Stats{}, err
	}
	defer a.close()

	var st Stats
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("read layer tar: %w", err)
		}
		n, err := a.apply(hdr, tr)
		if err != nil {
			return st, &EntryError{Entry: hdr.Name, Err: err}
		}
		st.Entries++
		st.Bytes += n
	}
	// Directory times last: creating entries inside a directory changes its
	// mtime, so setting it earlier would not stick.
	if err := a.setDirTimes(); err != nil {
		return st, err
	}
	return st, nil
}

// applier holds the state of one unpack.
type applier struct {
	dir  string
	root *os.Root
	// symlinks maps each symlink this archive created (by its resolved
	// path inside the layer) to its target. The layer starts empty, so this
	// is every symlink there is, and parent paths resolve without asking
	// the file system.
	symlinks map[string]string
	parents  dirCache
	dirTimes []pendingTimes
	buf      []byte
}

type pendingTimes struct {
	path         string // resolved path inside the layer; "" is the root
	atime, mtime time.Time
}

func newApplier(dir string) (*applier, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open layer directory: %w", err)
	}
	return &applier{
		dir:      dir,
		root:     root,
		symlinks: map[string]string{},
		parents:  dirCache{root: root, fds: map[string]*os.File{}},
		buf:      make([]byte, 128<<10),
	}, nil
}

func (a *applier) close() {
	a.parents.clear()
	_ = a.root.Close()
}
