package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOverlayViewOfUnpackedLayers mounts overlayfs over layers unpacked
// one by one and checks that the merged view is what the image means:
// whiteouts hide lower files, opaque directories hide lower content, and
// files survive where nothing deleted them.
func TestOverlayViewOfUnpackedLayers(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	layers := [][]entry{
		{ // bottom
			dir("etc"), file("etc/passwd", "root"), file("etc/group", "root"),
			dir("var/cache"), file("var/cache/old1", "1"), file("var/cache/old2", "2"),
			dir("usr/bin"), file("usr/bin/tool", "v1"), symlink("bin", "usr/bin"),
		},
		{ // middle: delete a file, make a directory opaque, replace a file
			dir("etc"), whiteout("etc/.wh.group"),
			dir("var/cache"), whiteout("var/cache/.wh..wh..opq"), file("var/cache/fresh", "f"),
			dir("usr/bin"), file("usr/bin/tool", "v2"),
		},
		{ // top: delete a whole directory, recreate a deleted name
			whiteout(".wh.usr"), dir("etc"), file("etc/group", "again"),
		},
	}
	var lowers []string
	for i, es := range layers {
		dir := filepath.Join(base, "layers", string(rune('0'+i)), "fs")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := Apply(context.Background(), dir, bytes.NewReader(tarOf(t, es...))); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		lowers = append(lowers, dir)
	}
	slices.Reverse(lowers) // overlayfs wants the top layer first

	merged := filepath.Join(base, "merged")
	if err := os.Mkdir(merged, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(lowers, ":")); err != nil {
		t.Skipf("overlayfs not available: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", merged, err)
		}
	})

	want := map[string]string{
		"etc/passwd":      "root",  // untouched since the bottom layer
		"etc/group":       "again", // deleted in the middle, recreated on top
		"var/cache/fresh": "f",
	}
	for p, content := range want {
		if b, err := os.ReadFile(filepath.Join(merged, p)); err != nil || string(b) != content {
			t.Errorf("%s = %q, %v; want %q", p, b, err, content)
		}
	}
	gone := []string{"var/cache/old1", "var/cache/old2", "usr", "usr/bin/tool"}
	for _, p := range gone {
		if _, err := os.Lstat(filepath.Join(merged, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s should be hidden in the merged view: %v", p, err)
		}
	}
	if target, err := os.Readlink(filepath.Join(merged, "bin")); err != nil || target != "usr/bin" {
		t.Errorf("bin -> %q, %v", target, err)
	}
	entries, err := os.ReadDir(filepath.Join(merged, "var/cache"))
	if err != nil || len(entries) != 1 {
		t.Errorf("opaque var/cache lists %v, %v; want only fresh", entries, err)
	}
}
