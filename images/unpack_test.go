package images

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/images/archive"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// TestPulledLayersStackInOverlay pulls an image whose upper layer deletes
// a file and empties a directory, mounts overlayfs over the lower
// directories Rootfs returns, and checks the container's view.
func TestPulledLayersStackInOverlay(t *testing.T) {
	requireRoot(t)
	reg := newTestRegistry(t)
	img := buildImage(t, imageSpec{oci: true, layers: []v1.Layer{
		layerOf(t, "gzip", true, tarBytes(t, dirEntry("etc"), fileEntry("etc/keep", "k"), fileEntry("etc/drop", "d"),
			dirEntry("cache"), fileEntry("cache/old", "o"), linkEntry("etc/link", "/etc/keep"), hardlinkEntry("etc/hard", "etc/keep"))),
		layerOf(t, "zstd", true, tarBytes(t, dirEntry("etc"), fileEntry("etc/.wh.drop", ""),
			dirEntry("cache"), fileEntry("cache/.wh..wh..opq", ""), fileEntry("cache/new", "n"))),
	}})
	reg.push(t, "layered:1", img)
	e := newTestEnv(t)
	id := e.pull(reg.host + "/layered:1")
	rootfs, err := e.m.Rootfs(context.Background(), id, "overlay-test")
	if err != nil {
		t.Fatal(err)
	}
	merged := t.TempDir()
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(rootfs.LowerDirs, ":")); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	for p, want := range map[string]string{"etc/keep": "k", "etc/hard": "k", "etc/link": "k", "cache/new": "n"} {
		// etc/link is absolute: it resolves through the host's /etc here,
		// so read it as a link instead.
		if p == "etc/link" {
			if got, err := os.Readlink(filepath.Join(merged, p)); err != nil || got != "/etc/keep" {
				t.Errorf("symlink kept as written: %q, %v", got, err)
			}
			continue
		}
		if b, err := os.ReadFile(filepath.Join(merged, p)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", p, b, err, want)
		}
	}
	for _, p := range []string{"etc/drop", "cache/old"} {
		if _, err := os.Lstat(filepath.Join(merged, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is visible through the whiteout: %v", p, err)
		}
	}
}

func TestHostileLayersAreRejected(t *testing.T) {
	reg := newTestRegistry(t)
	e := newTestEnv(t)
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		entry   string
	}{
		{"dot-dot", []tarEntry{fileEntry("../../escaped", "x")}, "../../escaped"},
		{"through symlink", []tarEntry{linkEntry("up", "../../../.."), fileEntry("up/escaped", "x")}, "up/escaped"},
		{"hard link out", []tarEntry{hardlinkEntry("hl", "../../../etc/passwd")}, "hl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layer := layerOf(t, "gzip", true, tarBytes(t, tc.entries...))
			reg.push(t, "hostile:"+strings.ReplaceAll(tc.name, " ", "-"), buildImage(t, imageSpec{oci: true, layers: []v1.Layer{layer}}))
			_, err := e.m.Pull(context.Background(), reg.host+"/hostile:"+strings.ReplaceAll(tc.name, " ", "-"), nil)
			var ee *archive.EntryError
			if !errors.As(err, &ee) || ee.Entry != tc.entry || !errors.Is(err, archive.ErrUnsafePath) {
				t.Fatalf("error %v, want the unsafe entry %q named", err, tc.entry)
			}
			if !strings.Contains(err.Error(), tc.entry) {
				t.Errorf("message %q does not name the entry", err)
			}
			assertNoTrace(t, e, layerDigest(t, layer))
			if _, err := os.Lstat(filepath.Join(e.root, "escaped")); !errors.Is(err, os.ErrNotExist) {
				t.Error("a file escaped the layer")
			}
		})
	}
}

// TestFullDiskLeavesNoImage pulls onto a tmpfs too small for the image.
func TestFullDiskLeavesNoImage(t *testing.T) {
	requireRoot(t)
	reg := newTestRegistry(t)
	layer := bigLayer(t, 3<<20, 9)
	reg.push(t, "huge:1", buildImage(t, imageSpec{oci: true, layers: []v1.Layer{layer}}))

	root := t.TempDir()
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=2m"); err != nil {
		t.Skipf("tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	e := &testEnv{t: t, root: root, opts: Options{Root: root, Logger: testLogger(t)}}
	e.open()
	t.Cleanup(e.close)

	_, err := e.m.Pull(context.Background(), reg.host+"/huge:1", nil)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("error %v, want ResourceExhausted from a full disk", err)
	}
	assertNoTrace(t, e, layerDigest(t, layer))
	e.reopen()
	if imgs, _ := e.m.List(""); len(imgs) != 0 {
		t.Errorf("images after restart: %v", imgs)
	}
}

func TestFsUsageMeasuresTheStore(t *testing.T) {
	reg := newTestRegistry(t)
	layer := bigLayer(t, 1<<20, 7)
	reg.push(t, "sized:1", buildImage(t, imageSpec{oci: true, layers: []v1.Layer{layer}}))
	e := newTestEnv(t)
	before, ctrs, err := e.m.FsUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ctrs.Path != filepath.Join(e.root, "containers") || ctrs.InodesUsed < 1 {
		t.Errorf("container fs usage %+v: the containers directory must exist and be reported", ctrs)
	}
	if fi, err := os.Stat(ctrs.Path); err != nil || !fi.IsDir() {
		t.Errorf("containers directory: %v", err)
	}
	id := e.pull(reg.host + "/sized:1")
	after, _, err := e.m.FsUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The blob and the unpacked file are both at least 1 MiB on disk.
	if after.UsedBytes < before.UsedBytes+2<<20 || after.InodesUsed <= before.InodesUsed {
		t.Errorf("usage before %+v after %+v: the pull is not counted", before, after)
	}
	if after.Path != filepath.Join(e.root, "images") || after.Timestamp.IsZero() {
		t.Errorf("usage %+v", after)
	}
	if err := e.m.Remove(id); err != nil {
		t.Fatal(err)
	}
	gone, _, _ := e.m.FsUsage(context.Background())
	if gone.UsedBytes >= after.UsedBytes {
		t.Errorf("usage did not drop after removal: %d → %d", after.UsedBytes, gone.UsedBytes)
	}
}

// syncBuffer is a log sink safe for the pull's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLongPullLogsProgress(t *testing.T) {
	reg := newTestRegistry(t)
	layer := bigLayer(t, 512<<10, 8)
	reg.push(t, "trickle:1", buildImage(t, imageSpec{oci: true, layers: []v1.Layer{layer}}))
	body := layer.(*testLayer).compressed
	d := layerDigest(t, layer)
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			return false
		}
		for i := 0; i < len(body); i += 64 << 10 {
			w.Write(body[i:min(i+64<<10, len(body))])
			w.(http.Flusher).Flush()
			time.Sleep(40 * time.Millisecond)
		}
		return true
	})
	var logs syncBuffer
	e := newTestEnv(t, func(o *Options) {
		o.ProgressLogInterval = 100 * time.Millisecond
		o.PullProgressTimeout = 2 * time.Second
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	e.pull(reg.host + "/trickle:1")
	out := logs.String()
	if !strings.Contains(out, `msg="pulling image"`) || !strings.Contains(out, "total_bytes=") || !strings.Contains(out, "layers=1") {
		t.Errorf("no progress lines in:\n%s", out)
	}
	if !strings.Contains(out, `level=INFO msg="pulled image"`) {
		t.Errorf("no completion line in:\n%s", out)
	}
}
