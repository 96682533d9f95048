package monitor

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readRecords(t *testing.T, path string) [][4]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][4]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<21)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), " ", 4)
		if len(parts) != 4 {
			t.Fatalf("malformed record %q", sc.Text())
		}
		if _, err := time.Parse(time.RFC3339Nano, parts[0]); err != nil {
			t.Fatalf("bad time in %q: %v", sc.Text(), err)
		}
		out = append(out, [4]string(parts))
	}
	return out
}

func TestCopyWritesCRIRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	w, err := OpenLog(path)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", MaxLogLine*2+10)
	input := "hello\n\nworld\n" + long + "\nno newline at end"
	if err := w.Copy(Stdout, strings.NewReader(input), false, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Copy(Stderr, strings.NewReader("tty line\r\n"), true, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got := readRecords(t, path)
	want := [][3]string{
		{"stdout", "F", "hello"},
		{"stdout", "F", ""},
		{"stdout", "F", "world"},
		{"stdout", "P", strings.Repeat("x", MaxLogLine)},
		{"stdout", "P", strings.Repeat("x", MaxLogLine)},
		{"stdout", "F", "xxxxxxxxxx"},
		{"stdout", "F", "no newline at end"},
		{"stderr", "F", "tty line"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d: %q", len(got), len(want), got)
	}
	for i := range want {
		if got[i][1] != want[i][0] || got[i][2] != want[i][1] || got[i][3] != want[i][2] {
			t.Errorf("record %d = %q %q %.20q, want %q", i, got[i][1], got[i][2], got[i][3], want[i])
		}
	}
}

func TestReopenFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	w, err := OpenLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	pr, pw := io.Pipe()
	done := make(chan error)
	go func() { done <- w.Copy(Stdout, pr, false, nil) }()
	io.WriteString(pw, "before\n")
	time.Sleep(50 * time.Millisecond)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(pw, "after\n")
	pw.Close()
	<-done
	if r := readRecords(t, path+".1"); len(r) != 1 || r[0][3] != "before" {
		t.Fatalf("rotated file: %q", r)
	}
	if r := readRecords(t, path); len(r) != 1 || r[0][3] != "after" {
		t.Fatalf("new file: %q", r)
	}
}
