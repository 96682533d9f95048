// Package state keeps berth's metadata crash-safe on disk and indexes it in
// memory. The disk side is bbolt: every committed transaction is fsynced and
// copy-on-write, so a daemon killed at any instant reopens to the last commit.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Store is the on-disk metadata database.
type Store struct {
	db   *bolt.DB
	path string
}

// ErrLocked means another process holds the database open.
var ErrLocked = errors.New("state database is in use by another process")

// Open opens (creating if needed) the database at path. It never waits long
// for the file lock: a second daemon must fail fast, not hang.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open state %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Path returns the database file.
func (s *Store) Path() string { return s.path }

// Close releases the database.
func (s *Store) Close() error { return s.db.Close() }

// Table is one bucket of JSON records of type T, keyed by ID.
type Table[T any] struct {
	store  *Store
	bucket []byte
}

// NewTable returns the table named name, creating its bucket.
func NewTable[T any](s *Store, name string) (*Table[T], error) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(name))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create table %s: %w", name, err)
	}
	return &Table[T]{store: s, bucket: []byte(name)}, nil
}

// Put writes the record for id, replacing any earlier one, durably.
func (t *Table[T]) Put(id string, v *T) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", t.bucket, id, err)
	}
	err = t.store.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(t.bucket).Put([]byte(id), data)
	})
	if err != nil {
		return fmt.Errorf("write %s/%s: %w", t.bucket, id, err)
	}
	return nil
}

// Get reads the record for id; a missing record is errdefs.ErrNotFound.
func (t *Table[T]) Get(id string) (*T, error) {
	var data []byte
	err := t.store.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(t.bucket).Get([]byte(id)); v != nil {
			data = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", t.bucket, id, err)
	}
	if data == nil {
		return nil, fmt.Errorf("%s %s: %w", t.bucket, id, errdefs.ErrNotFound)
	}
	v := new(T)
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("decode %s/%s: %w", t.bucket, id, err)
	}
	return v, nil
}

// Delete removes the record for id; removing a missing record succeeds.
func (t *Table[T]) Delete(id string) error {
	err := t.store.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(t.bucket).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", t.bucket, id, err)
	}
	return nil
}

// All returns every record keyed by ID. A record that fails to decode is
// reported, not skipped: silently dropping a pod would leak its resources.
func (t *Table[T]) All() (map[string]*T, error) {
	out := map[string]*T{}
	err := t.store.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(t.bucket).ForEach(func(k, data []byte) error {
			v := new(T)
			if err := json.Unmarshal(data, v); err != nil {
				return fmt.Errorf("decode %s/%s: %w", t.bucket, k, err)
			}
			out[string(k)] = v
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", t.bucket, err)
	}
	return out, nil
}
