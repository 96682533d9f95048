package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// entry is one tar member for a test archive.
type entry struct {
	name, link string
	typ        byte
	mode       int64
	uid, gid   int
	body       string
	xattrs     map[string]string
	major      int64
	minor      int64
}

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }
func file(name, body string) entry {
	return entry{name: name, typ: tar.TypeReg, mode: 0o644, body: body}
}
func symlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) entry { return entry{name: name, typ: tar.TypeLink, link: target} }
func whiteout(name string) entry         { return file(name, "") }
func tarOf(t *testing.T, es ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		hdr := &tar.Header{
			Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode,
			Uid: e.uid, Gid: e.gid, Size: int64(len(e.body)), ModTime: testTime,
			Devmajor: e.major, Devminor: e.minor, Format: tar.FormatPAX,
		}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords[paxXattrPrefix+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: owners, device nodes and trusted xattrs")
	}
}

// unpack applies es into a fresh layer directory inside a parent directory
// that also holds a sentinel, so escapes are visible.
func unpack(t *testing.T, es ...entry) (layer string, err error) {
	t.Helper()
	parent := t.TempDir()
	layer = filepath.Join(parent, "layer", "fs")
	if err := os.MkdirAll(layer, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Apply(context.Background(), layer, bytes.NewReader(tarOf(t, es...)))
	return layer, err
}

func TestApplyKeepsEveryKindOfEntry(t *testing.T) {
	requireRoot(t)
	setuid := file("bin/su", "#!su")
	setuid.mode = 0o4755
	owned := file("home/user/.profile", "export X=1")
	owned.uid, owned.gid, owned.mode = 1000, 1001, 0o600
	withXattr := file("bin/ping", "ping")
	withXattr.xattrs = map[string]string{"trusted.berth.test": "v", "user.comment": "hi"}
	tmp := dir("tmp")
	tmp.mode = 0o1777
	char := entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3}
	block := entry{name: "dev/loop0", typ: tar.TypeBlock, mode: 0o660, major: 7, minor: 0}
	fifo := entry{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600}
	rootEntry := dir("./")
	rootEntry.mode = 0o750

	layer, err := unpack(t,
		rootEntry, dir("bin"), setuid, withXattr, dir("home/user"), owned, tmp,
		symlink("lib", "usr/lib"), symlink("etc/alt", "/usr/bin/real"), symlink("dangling", "../../nowhere"),
		file("usr/bin/real", "real"), hardlink("usr/bin/alias", "usr/bin/real"),
		char, block, fifo,
	)
	if err != nil {
		t.Fatal(err)
	}

	st := lstat(t, layer, ".")
	if st.Mode&0o7777 != 0o750 {
		t.Errorf("root mode %o, want 750", st.Mode&0o7777)
	}
	if st := lstat(t, layer, "bin/su"); st.Mode&0o7777 != 0o4755 {
		t.Errorf("setuid file mode %o, want 4755", st.Mode&0o7777)
	}
	if st := lstat(t, layer, "home/user/.profile"); st.Uid != 1000 || st.Gid != 1001 || st.Mode&0o777 != 0o600 {
		t.Errorf("owned file uid=%d gid=%d mode=%o", st.Uid, st.Gid, st.Mode&0o777)
	}
	if st := lstat(t, layer, "tmp"); st.Mode&0o7777 != 0o1777 {
		t.Errorf("sticky dir mode %o", st.Mode&0o7777)
	}
	for _, name := range []string{"bin/su", "tmp", "bin"} {
		if st := lstat(t, layer, name); st.Mtim.Sec != testTime.Unix() {
			t.Errorf("%s mtime %d, want %d", name, st.Mtim.Sec, testTime.Unix())
		}
	}
	for name, want := range withXattr.xattrs {
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(filepath.Join(layer, "bin/ping"), name, buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("xattr %s = %q, %v; want %q", name, buf[:n], err, want)
		}
	}
	for name, want := range map[string]string{"lib": "usr/lib", "etc/alt": "/usr/bin/real", "dangling": "../../nowhere"} {
		if got, err := os.Readlink(filepath.Join(layer, name)); err != nil || got != want {
			t.Errorf("symlink %s -> %q, %v; want %q kept as written", name, got, err, want)
		}
	}
	a, b := lstat(t, layer, "usr/bin/real"), lstat(t, layer, "usr/bin/alias")
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link: inodes %d/%d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if st := lstat(t, layer, "dev/null"); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("char device mode %o rdev %d", st.Mode, st.Rdev)
	}
	if st := lstat(t, layer, "dev/loop0"); st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(7, 0) {
		t.Errorf("block device mode %o rdev %d", st.Mode, st.Rdev)
	}
	if st := lstat(t, layer, "run/fifo"); st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo mode %o", st.Mode)
	}
}

func TestApplyConvertsWhiteouts(t *testing.T) {
	requireRoot(t)
	layer, err := unpack(t,
		dir("etc"), whiteout("etc/.wh.passwd"),
		dir("var/cache"), whiteout("var/cache/.wh..wh..opq"), file("var/cache/new", "n"),
		whiteout(".wh..wh.plnk"),
	)
	if err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, layer, "etc/passwd"); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout is mode %o rdev %d, want a 0/0 char device", st.Mode, st.Rdev)
	}
	if _, err := os.Lstat(filepath.Join(layer, "etc/.wh.passwd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the .wh. file itself must not be kept: %v", err)
	}
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(layer, "var/cache"), opaqueXattr, buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr = %q, %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(layer, "var/cache/.wh..wh..opq")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the opaque marker file must not be kept: %v", err)
	}
}

func TestApplyRejectsEscapes(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		name    string
		entries []entry
		bad     string // the entry the error must name
	}{
		{"dot-dot name", []entry{file("../evil", "x")}, "../evil"},
		{"dot-dot inside name", []entry{dir("a"), file("a/../../evil", "x")}, "a/../../evil"},
		{"write through relative symlink out", []entry{symlink("up", "../.."), file("up/evil", "x")}, "up/evil"},
		{"write through chained symlinks out", []entry{symlink("a", "b/.."), symlink("b", ".."), file("a/evil", "x")}, "a/evil"},
		{"write through absolute symlink climbing", []entry{symlink("abs", "/../.."), file("abs/evil", "x")}, "abs/evil"},
		{"hard link to outside", []entry{hardlink("hl", "../outside")}, "hl"},
		{"hard link through symlink out", []entry{symlink("up", "../.."), hardlink("hl", "up/outside")}, "hl"},
		{"hard link to absolute path outside", []entry{hardlink("hl", "/../outside")}, "hl"},
		{"whiteout of parent", []entry{dir("d"), whiteout("d/.wh..")}, "d/.wh.."},
		{"symlink loop", []entry{symlink("loop", "loop"), file("loop/x", "x")}, "loop/x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			layer, err := unpack(t, tc.entries...)
			var ee *EntryError
			if !errors.As(err, &ee) || ee.Entry != tc.bad {
				t.Fatalf("error %v, want one naming entry %q", err, tc.bad)
			}
			if !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("message %q does not name %q", err, tc.bad)
			}
			if tc.name != "symlink loop" && !errors.Is(err, ErrUnsafePath) && !strings.Contains(err.Error(), "not in this layer") {
				t.Errorf("error %v is not ErrUnsafePath", err)
			}
			// Nothing may appear beside or above the layer directory.
			for _, outside := range []string{"../evil", "../../evil", "../outside", "../../outside"} {
				if _, err := os.Lstat(filepath.Join(layer, outside)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists outside the layer", outside)
				}
			}
		})
	}
}

func TestApplyHardLinkToOutsideFileIsRefused(t *testing.T) {
	requireRoot(t)
	parent := t.TempDir()
	secret := filepath.Join(parent, "secret")
	if err := os.WriteFile(secret, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	layer := filepath.Join(parent, "fs")
	if err := os.Mkdir(layer, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Apply(context.Background(), layer, bytes.NewReader(tarOf(t, hardlink("hl", "../secret"))))
	if !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("err %v, want ErrUnsafePath", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(secret, &st); err != nil || st.Nlink != 1 {
		t.Errorf("outside file gained a link: nlink %d, %v", st.Nlink, err)
	}
}

func TestApplyFollowsSymlinksThatStayInside(t *testing.T) {
	requireRoot(t)
	// An absolute symlink resolves against the layer root, as it will in
	// the container; a relative one against its directory.
	layer, err := unpack(t,
		dir("usr/lib"), symlink("lib", "/usr/lib"), file("lib/libc.so", "c"),
		symlink("usr/share", "../usr/lib"), file("usr/share/doc", "d"),
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"usr/lib/libc.so", "usr/lib/doc"} {
		if _, err := os.Lstat(filepath.Join(layer, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestApplyReplacesRatherThanWritesThrough(t *testing.T) {
	requireRoot(t)
	parent := t.TempDir()
	victim := filepath.Join(parent, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	layer := filepath.Join(parent, "fs")
	if err := os.Mkdir(layer, 0o755); err != nil {
		t.Fatal(err)
	}
	// A symlink, then a regular file of the same name: the file replaces the
	// link instead of writing to where it points.
	tarball := tarOf(t, symlink("f", "../victim"), file("f", "new"), dir("d"), file("d/x", "x"), file("d", "now a file"))
	if _, err := Apply(context.Background(), layer, bytes.NewReader(tarball)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("file outside the layer was written through a symlink: %q", b)
	}
	if b, err := os.ReadFile(filepath.Join(layer, "f")); err != nil || string(b) != "new" {
		t.Errorf("f = %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(layer, "d")); err != nil || string(b) != "now a file" {
		t.Errorf("d = %q, %v", b, err)
	}
}

func TestApplyStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	layer := t.TempDir()
	if _, err := Apply(ctx, layer, bytes.NewReader(tarOf(t, file("a", "a")))); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

func TestApplyRejectsGarbage(t *testing.T) {
	if _, err := Apply(context.Background(), t.TempDir(), strings.NewReader(strings.Repeat("not a tar ", 100))); err == nil {
		t.Fatal("garbage unpacked without error")
	}
}

func lstat(t *testing.T, layer, name string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(layer, name), &st); err != nil {
		t.Fatalf("lstat %s: %v", name, err)
	}
	return st
}
