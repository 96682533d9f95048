package images

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// blobStore is a content-addressed store: blobs/sha256/<hex>. A blob is
// written to ingest/ first, checked against its digest and size, fsynced,
// and only then renamed into place, so a file under blobs/ is always whole
// and verified. Whatever ingest/ holds is a pull that did not finish.
type blobStore struct {
	dir    string // <images>/blobs/sha256
	ingest string // <images>/ingest
}

func newBlobStore(imagesDir string) *blobStore {
	return &blobStore{
		dir:    filepath.Join(imagesDir, "blobs", "sha256"),
		ingest: filepath.Join(imagesDir, "ingest"),
	}
}

func (s *blobStore) init() error {
	for _, d := range []string{s.dir, s.ingest} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	// Leftovers of pulls cut short: never blobs, just partial downloads.
	entries, err := os.ReadDir(s.ingest)
	if err != nil {
		return fmt.Errorf("read %s: %w", s.ingest, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.ingest, e.Name())); err != nil {
			return fmt.Errorf("remove partial download %s: %w", e.Name(), err)
		}
	}
	return nil
}

func (s *blobStore) path(d v1.Hash) string { return filepath.Join(s.dir, d.Hex) }

func (s *blobStore) has(d v1.Hash) bool {
	_, err := os.Stat(s.path(d))
	return err == nil
}

func (s *blobStore) open(d v1.Hash) (*os.File, error) {
	f, err := os.Open(s.path(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return f, err
}

func (s *blobStore) read(d v1.Hash) ([]byte, error) {
	b, err := os.ReadFile(s.path(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return b, err
}

// put stores data under digest d after checking that it is d.
func (s *blobStore) put(d v1.Hash, data []byte) error {
	if s.has(d) {
		return nil
	}
	w, err := s.writer(d, int64(len(data)))
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.discard()
		return err
	}
	return w.commit()
}

// remove deletes a blob; a missing one is fine.
func (s *blobStore) remove(d v1.Hash) error {
	if err := os.Remove(s.path(d)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove blob %s: %w", d, err)
	}
	return nil
}

// list returns the digests of every stored blob.
func (s *blobStore) list() ([]v1.Hash, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	out := make([]v1.Hash, 0, len(entries))
	for _, e := range entries {
		out = append(out, v1.Hash{Algorithm: "sha256", Hex: e.Name()})
	}
	return out, nil
}

// blobWriter receives a blob's bytes into a temporary file and hashes them.
type blobWriter struct {
	store *blobStore
	want  v1.Hash
	size  int64 // expected size; -1 if unknown
	f     *os.File
	h     hash.Hash
	n     int64
}

func (s *blobStore) writer(d v1.Hash, size int64) (*blobWriter, error) {
	if d.Algorithm != "sha256" {
		return nil, fmt.Errorf("blob %s: only sha256 digests are supported: %w", d, errdefs.ErrNotImplemented)
	}
	f, err := os.CreateTemp(s.ingest, d.Hex+"-*")
	if err != nil {
		return nil, fmt.Errorf("start blob %s: %w", d, diskError(err))
	}
	return &blobWriter{store: s, want: d, size: size, f: f, h: sha256.New()}, nil
}

func (w *blobWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("write blob %s: %w", w.want, diskError(err))
	}
	return n, nil
}

// digest is the digest of what was written so far.
func (w *blobWriter) digest() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(w.h.Sum(nil))}
}

// verify checks size and digest of what was written.
func (w *blobWriter) verify() error {
	if w.size >= 0 && w.n != w.size {
		return fmt.Errorf("blob %s: received %d bytes, the manifest says %d: %w", w.want, w.n, w.size, errdefs.ErrDataLoss)
	}
	if got := w.digest(); got != w.want {
		return fmt.Errorf("blob %s: content digest mismatch: received %s: %w", w.want, got, errdefs.ErrDataLoss)
	}
	return nil
}

// commit verifies the blob and moves it into the store durably.
func (w *blobWriter) commit() error {
	if err := w.verify(); err != nil {
		w.discard()
		return err
	}
	if err := w.f.Sync(); err != nil {
		w.discard()
		return fmt.Errorf("sync blob %s: %w", w.want, diskError(err))
	}
	if err := w.f.Close(); err != nil {
		_ = os.Remove(w.f.Name())
		return fmt.Errorf("close blob %s: %w", w.want, diskError(err))
	}
	if err := os.Chmod(w.f.Name(), 0o444); err != nil {
		_ = os.Remove(w.f.Name())
		return fmt.Errorf("seal blob %s: %w", w.want, err)
	}
	if err := os.Rename(w.f.Name(), w.store.path(w.want)); err != nil {
		_ = os.Remove(w.f.Name())
		return fmt.Errorf("store blob %s: %w", w.want, err)
	}
	return syncDir(w.store.dir)
}

// discard drops a blob that will not be committed.
func (w *blobWriter) discard() {
	_ = w.f.Close()
	_ = os.Remove(w.f.Name())
}

// syncDir makes a rename or unlink in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// diskError marks a full disk or quota as ResourceExhausted.
func diskError(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted)
	}
	return err
}

// parseDigest checks a "sha256:<hex>" string.
func parseDigest(s string) (v1.Hash, error) {
	h, err := v1.NewHash(s)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("digest %q: %w", s, errdefs.ErrInvalidArgument)
	}
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || strings.Trim(h.Hex, "0123456789abcdef") != "" {
		return v1.Hash{}, fmt.Errorf("digest %q: not a sha256 digest: %w", s, errdefs.ErrInvalidArgument)
	}
	return h, nil
}

var _ io.Writer = (*blobWriter)(nil)
