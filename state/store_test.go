package state

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

type record struct {
	ID      string            `json:"id"`
	Labels  map[string]string `json:"labels"`
	Payload []byte            `json:"payload"`
}

func TestMain(m *testing.M) {
	// The crash test re-executes this binary as a writer that is killed.
	if path := os.Getenv("BERTH_STATE_CRASH_WRITER"); path != "" {
		crashWriter(path)
		return
	}
	os.Exit(m.Run())
}

func TestTableRoundTrip(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tbl, err := NewTable[record](s, "pods")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.Get("a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	want := &record{ID: "a", Labels: map[string]string{"k": "v"}}
	if err := tbl.Put("a", want); err != nil {
		t.Fatal(err)
	}
	got, err := tbl.Get("a")
	if err != nil || got.Labels["k"] != "v" {
		t.Fatalf("get: %v %+v", err, got)
	}
	all, err := tbl.All()
	if err != nil || len(all) != 1 {
		t.Fatalf("all: %v %v", err, all)
	}
	if err := tbl.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if err := tbl.Delete("a"); err != nil {
		t.Fatalf("delete must be idempotent: %v", err)
	}
	if all, _ := tbl.All(); len(all) != 0 {
		t.Fatalf("after delete: %v", all)
	}
}

func TestReopenKeepsRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	tbl, _ := NewTable[record](s, "containers")
	for i := range 10 {
		if err := tbl.Put(strconv.Itoa(i), &record{ID: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tbl, _ = NewTable[record](s, "containers")
	if all, err := tbl.All(); err != nil || len(all) != 10 {
		t.Fatalf("reopen: %v, %d records", err, len(all))
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	// bbolt's flock is per open file description, so a second Open in this
	// process contends exactly as a second daemon would.
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	_, err = Open(path)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("second open waited too long")
	}
}

// crashWriter writes records as fast as it can until it is killed.
func crashWriter(path string) {
	s, err := Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	tbl, err := NewTable[record](s, "pods")
	if err != nil {
		os.Exit(2)
	}
	fmt.Println("ready")
	for i := 0; ; i++ {
		id := strconv.Itoa(i % 50)
		if i%7 == 0 {
			_ = tbl.Delete(id)
			continue
		}
		_ = tbl.Put(id, &record{ID: id, Payload: make([]byte, rand.IntN(8192))})
	}
}

// A writer killed with SIGKILL at random moments never leaves a database
// that fails to open or a record that fails to decode.
func TestSIGKILLNeverCorrupts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	for round := range 15 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "BERTH_STATE_CRASH_WRITER="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 6)
		if _, err := out.Read(buf); err != nil {
			t.Fatalf("round %d: writer did not start: %v", round, err)
		}
		time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()

		s, err := Open(path)
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		tbl, err := NewTable[record](s, "pods")
		if err != nil {
			t.Fatal(err)
		}
		all, err := tbl.All()
		if err != nil {
			t.Fatalf("round %d: load after SIGKILL: %v", round, err)
		}
		for id, r := range all {
			if r.ID != id {
				t.Fatalf("round %d: record %s holds %s", round, id, r.ID)
			}
		}
		s.Close()
	}
}
