package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestLayerOrderAndDeterminism(t *testing.T) {
	build := func() []byte {
		l := newLayer()
		l.file("/bin/busybox", 0o755, []byte("elf"))
		l.hardlink("/bin/[", "/bin/busybox") // sorts before its target
		l.hardlink("/usr/bin/id", "/bin/busybox")
		l.dir("/tmp", 0o1777)
		data, err := l.tar()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	data := build()
	if !bytes.Equal(data, build()) {
		t.Fatal("two builds of the same layer differ")
	}
	var names []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v", h.Name, h.ModTime)
		}
	}
	want := []string{"bin/", "bin/busybox", "tmp/", "usr/", "usr/bin/", "bin/[", "usr/bin/id"}
	if !slices.Equal(names, want) {
		t.Errorf("tar order %q, want %q", names, want)
	}

	l := newLayer()
	l.hardlink("/bin/sh", "/bin/busybox")
	if _, err := l.tar(); err == nil {
		t.Error("a hard link to a missing target was accepted")
	}
}

func TestSpecs(t *testing.T) {
	refs := map[string]bool{}
	for _, s := range specs {
		for _, r := range s.refs() {
			if refs[r] {
				t.Errorf("%s listed twice", r)
			}
			refs[r] = true
		}
		for _, h := range s.helpers {
			if _, err := os.Stat("cmd/" + h + "/main.go"); err != nil {
				t.Errorf("%s: helper %s: %v", s.repo, h, err)
			}
		}
	}
	if got, err := selectSpecs("busybox,k8s-staging-cri-tools/test-image-tag:all,test-image-tag"); err != nil || len(got) != 3 {
		t.Errorf("selectSpecs: %d specs, %v; want busybox and both test-image-tag images", len(got), err)
	}
	if _, err := selectSpecs("nosuchimage"); err == nil {
		t.Error("an unknown -only item was accepted")
	}
}

// TestPushAll builds every image and pushes it to an in-memory registry,
// then checks what the critest specs depend on.
func TestPushAll(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the helper programs")
	}
	if _, err := exec.Command("dpkg-query", "-W", "busybox").Output(); err != nil {
		t.Skip("Debian's busybox package is not installed")
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	if err := run(context.Background(), host, specs, ""); err != nil {
		t.Fatal(err)
	}

	get := func(ref string) v1.Image {
		t.Helper()
		r, err := name.ParseReference(host+"/"+ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(r)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	id := func(ref string) string {
		t.Helper()
		d, err := get(ref).ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	// files maps each path of an image's merged layers to its tar header.
	files := func(ref string) map[string]*tar.Header {
		t.Helper()
		layers, err := get(ref).Layers()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*tar.Header{}
		for _, l := range layers {
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				out["/"+strings.TrimSuffix(h.Name, "/")] = h
			}
			rc.Close()
		}
		return out
	}

	ids := map[string]string{}
	for _, r := range []string{
		"k8s-staging-cri-tools/test-image-1:latest", "k8s-staging-cri-tools/test-image-2:latest",
		"k8s-staging-cri-tools/test-image-3:latest", "k8s-staging-cri-tools/test-image-latest:latest",
		"k8s-staging-cri-tools/test-image-tag:test", "k8s-staging-cri-tools/test-image-tag:all",
		"k8s-staging-cri-tools/test-image-tags:1",
		"k8s-staging-cri-tools/test-image-user-uid:latest", "k8s-staging-cri-tools/test-image-user-username:latest",
		"k8s-staging-cri-tools/test-image-user-uid-group:latest", "k8s-staging-cri-tools/test-image-user-username-group:latest",
	} {
		i := id(r)
		if other, dup := ids[i]; dup {
			t.Errorf("%s and %s share image ID %s", r, other, i)
		}
		ids[i] = r
	}
	if id("k8s-staging-cri-tools/test-image-tags:1") != id("k8s-staging-cri-tools/test-image-tags:3") {
		t.Error("test-image-tags:1 and :3 differ")
	}

	bb := files("e2e-test-images/busybox:1.29-2")
	for _, p := range []string{"/bin/sh", "/bin/ls", "/bin/pidof", "/bin/id", "/sbin/ifconfig"} {
		if h := bb[p]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "bin/busybox" {
			t.Errorf("%s is not a hard link to bin/busybox: %+v", p, h)
		}
	}
	for _, p := range []string{"/usr/bin/pgrep", "/usr/bin/ipcs", "/etc/passwd", "/etc/group", "/lib64/ld-linux-x86-64.so.2"} {
		if h := bb[p]; h == nil || h.Typeflag != tar.TypeReg {
			t.Errorf("%s missing or not a regular file", p)
		}
	}
	if h := files("e2e-test-images/nonewprivs:1.3")["/usr/local/bin/nnp"]; h == nil || h.Mode&0o4000 == 0 || h.Uid != 0 {
		t.Errorf("nnp is not setuid root: %+v", h)
	}
	cf, err := get("k8s-staging-cri-tools/test-image-predefined-group:latest").ConfigFile()
	if err != nil || cf.Config.User != "1000" {
		t.Errorf("predefined-group USER = %q (%v), want 1000", cf.Config.User, err)
	}
}
