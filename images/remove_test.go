package images

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// layerDirs counts unpacked layers on disk.
func (e *testEnv) layerDirs() int { return len(e.files("layers")) }

func TestRemoveFreesSharedLayersOnlyWhenUnused(t *testing.T) {
	reg := newTestRegistry(t)
	base := layerOf(t, "gzip", true, tarBytes(t, fileEntry("base", "shared")))
	a := buildImage(t, imageSpec{oci: true, layers: []v1.Layer{base, layerOf(t, "gzip", true, tarBytes(t, fileEntry("a", "a")))}})
	b := buildImage(t, imageSpec{oci: true, layers: []v1.Layer{base, layerOf(t, "zstd", true, tarBytes(t, fileEntry("b", "b")))}})
	reg.push(t, "a:1", a)
	reg.push(t, "b:1", b)
	e := newTestEnv(t)
	idA := e.pull(reg.host + "/a:1")
	idB := e.pull(reg.host + "/b:1")

	// The shared bottom layer is stored and unpacked once.
	if n := e.layerDirs(); n != 3 {
		t.Fatalf("%d layer directories for two images sharing one of their two layers, want 3", n)
	}
	baseDigest := layerDigest(t, base)
	if err := e.m.Remove(idA); err != nil {
		t.Fatal(err)
	}
	if n := e.layerDirs(); n != 2 {
		t.Errorf("after removing a: %d layer directories, want b's 2", n)
	}
	if !slices.Contains(e.files("blobs/sha256"), baseDigest.Hex) {
		t.Error("the shared layer's blob went with the first image")
	}
	if got := readLayerFile(t, e, idB, "base"); got != "shared" {
		t.Errorf("b's shared layer: %q", got)
	}

	// A container keeps b's layers after b is removed, until it goes.
	rootfs, err := e.m.Rootfs(context.Background(), idB, "ctr")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Remove(reg.host + "/b:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Get(idB); !errdefs.IsNotFound(err) {
		t.Errorf("removed image still found: %v", err)
	}
	if n := e.layerDirs(); n != len(rootfs.LowerDirs) {
		t.Errorf("layers of a container's image: %d directories left, want %d", n, len(rootfs.LowerDirs))
	}
	e.reopen() // the container's claim survives a restart
	if n := e.layerDirs(); n != len(rootfs.LowerDirs) {
		t.Errorf("after restart: %d layer directories, want %d", n, len(rootfs.LowerDirs))
	}
	if err := e.m.ReleaseRootfs("ctr"); err != nil {
		t.Fatal(err)
	}
	if n := e.layerDirs(); n != 0 {
		t.Errorf("%d layer directories left with no image or container", n)
	}
	if blobs := e.files("blobs/sha256"); len(blobs) != 0 {
		t.Errorf("blobs left: %v", blobs)
	}
}

func TestRemoveByNameIDAndDigest(t *testing.T) {
	reg := newTestRegistry(t)
	img := simpleImage(t, "tags")
	digest := reg.push(t, "multi:1", img)
	reg.push(t, "multi:2", img)
	e := newTestEnv(t)
	id := e.pull(reg.host + "/multi:1")
	e.pull(reg.host + "/multi:2")

	// Removing one tag keeps the image under the other.
	if err := e.m.Remove(reg.host + "/multi:1"); err != nil {
		t.Fatal(err)
	}
	got, err := e.m.Get(id)
	if err != nil || !slices.Equal(got.RepoTags, []string{reg.host + "/multi:2"}) {
		t.Fatalf("after removing one tag: %+v, %v", got, err)
	}
	if _, err := e.m.Get(reg.host + "/multi:1"); !errdefs.IsNotFound(err) {
		t.Errorf("removed tag still resolves: %v", err)
	}
	// Removing the last tag removes the image, digest names and all.
	if err := e.m.Remove(reg.host + "/multi:2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Get(id); !errdefs.IsNotFound(err) {
		t.Errorf("image with no tag left: %v", err)
	}

	// An image pulled by digest goes with its digest name.
	e.pull(reg.host + "/multi@" + digest.String())
	if err := e.m.Remove(reg.host + "/multi@" + digest.String()); err != nil {
		t.Fatal(err)
	}
	if imgs, _ := e.m.List(""); len(imgs) != 0 {
		t.Errorf("images left: %v", imgs)
	}

	// By ID (or a prefix of it), every name goes at once.
	e.pull(reg.host + "/multi:1")
	e.pull(reg.host + "/multi:2")
	if err := e.m.Remove(id[:20]); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{id, reg.host + "/multi:1", reg.host + "/multi:2"} {
		if _, err := e.m.Get(ref); !errdefs.IsNotFound(err) {
			t.Errorf("%s after removal by ID: %v", ref, err)
		}
	}

	// Removing what is not there succeeds.
	for _, ref := range []string{id, "never:pulled", "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"} {
		if err := e.m.Remove(ref); err != nil {
			t.Errorf("remove %s: %v", ref, err)
		}
	}
}

func TestConcurrentRemovalsAllSucceed(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "gone:1", simpleImage(t, "gone"))
	e := newTestEnv(t)
	id := e.pull(reg.host + "/gone:1")
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if err := e.m.Remove(id); err != nil {
				t.Errorf("remove: %v", err)
			}
			if _, err := e.m.Get(id); !errdefs.IsNotFound(err) {
				t.Errorf("image visible after its removal returned: %v", err)
			}
		})
	}
	wg.Wait()
}

func TestTagMovesToTheNewImage(t *testing.T) {
	reg := newTestRegistry(t)
	oldImg, newImg := simpleImage(t, "old"), simpleImage(t, "new")
	oldDigest := reg.push(t, "app:latest", oldImg)
	e := newTestEnv(t)
	oldID := e.pull(reg.host + "/app:latest")
	reg.push(t, "app:latest", newImg)
	newID := e.pull(reg.host + "/app:latest")
	if oldID == newID {
		t.Fatal("test images are the same")
	}
	got, _ := e.m.Get(reg.host + "/app:latest")
	if got.ID != newID {
		t.Errorf("the tag resolves to %s, want the newly pulled %s", got.ID, newID)
	}
	old, err := e.m.Get(oldID)
	if err != nil {
		t.Fatal(err)
	}
	if len(old.RepoTags) != 0 || !slices.Equal(old.RepoDigests, []string{reg.host + "/app@" + oldDigest.String()}) {
		t.Errorf("the old image keeps only its digest name: %+v", old)
	}
	e.reopen()
	if got, _ := e.m.Get(reg.host + "/app:latest"); got == nil || got.ID != newID {
		t.Errorf("after restart the tag resolves to %v", got)
	}
}

func TestListWithFilter(t *testing.T) {
	reg := newTestRegistry(t)
	for _, n := range []string{"one", "two", "three"} {
		reg.push(t, n+":1", simpleImage(t, n))
	}
	e := newTestEnv(t)
	for _, n := range []string{"one", "two", "three"} {
		e.pull(reg.host + "/" + n + ":1")
	}
	all, err := e.m.List("")
	if err != nil || len(all) != 3 {
		t.Fatalf("list: %d images, %v", len(all), err)
	}
	one, err := e.m.List(reg.host + "/two:1")
	if err != nil || len(one) != 1 || one[0].RepoTags[0] != reg.host+"/two:1" {
		t.Errorf("filtered list: %+v, %v", one, err)
	}
	none, err := e.m.List(reg.host + "/four:1")
	if err != nil || len(none) != 0 {
		t.Errorf("filter naming nothing: %+v, %v", none, err)
	}
}
