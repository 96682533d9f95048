package state

import (
	"errors"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestIDIndex(t *testing.T) {
	x := NewIDIndex()
	x.Add("abcdef")
	x.Add("abcxyz")
	x.Add("abc")
	for _, tc := range []struct {
		prefix, want string
		err          error
	}{
		{"abcd", "abcdef", nil},
		{"abcx", "abcxyz", nil},
		{"abc", "abc", nil}, // an exact match wins over longer IDs
		{"ab", "", errdefs.ErrInvalidArgument},
		{"zz", "", errdefs.ErrNotFound},
		{"", "", errdefs.ErrInvalidArgument},
	} {
		got, err := x.Resolve(tc.prefix)
		if got != tc.want || (tc.err == nil) != (err == nil) || (tc.err != nil && !errors.Is(err, tc.err)) {
			t.Errorf("Resolve(%q) = %q, %v; want %q, %v", tc.prefix, got, err, tc.want, tc.err)
		}
	}
	x.Delete("abcdef")
	if _, err := x.Resolve("abcd"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestRegistrar(t *testing.T) {
	r := NewRegistrar()
	if err := r.Reserve("pod_ns_uid_0", "id1"); err != nil {
		t.Fatal(err)
	}
	if err := r.Reserve("pod_ns_uid_0", "id1"); err != nil {
		t.Fatalf("same holder again: %v", err)
	}
	err := r.Reserve("pod_ns_uid_0", "id2")
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second holder: %v", err)
	}
	r.Release("pod_ns_uid_0", "id2") // not the holder: no effect
	if err := r.Reserve("pod_ns_uid_0", "id2"); err == nil {
		t.Fatal("release by a non-holder freed the name")
	}
	r.Release("pod_ns_uid_0", "id1")
	if err := r.Reserve("pod_ns_uid_0", "id2"); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestKeyedMutex(t *testing.T) {
	var k KeyedMutex
	unlockA := k.Lock("a")
	// Another key is not held up.
	k.Lock("b")()
	got := make(chan struct{})
	go func() { k.Lock("a")(); close(got) }()
	select {
	case <-got:
		t.Fatal("second Lock of a held key did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	unlockA()
	<-got
	k.Forget("a")
	k.Lock("a")()
}
