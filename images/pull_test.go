package images

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// mirrorDockerHub serves docker.io from reg, so short names like
// "busybox" resolve against the local registry.
func mirrorDockerHub(reg *testRegistry) func(*Options) {
	return func(o *Options) {
		o.Registries = map[string]RegistryConfig{"docker.io": {Mirrors: []string{"http://" + reg.host}}}
	}
}

func TestPullEveryReferenceForm(t *testing.T) {
	reg := newTestRegistry(t)
	img := simpleImage(t, "busybox")
	digest := reg.push(t, "library/busybox:1.36", img)
	reg.push(t, "library/busybox:latest", img)
	e := newTestEnv(t, mirrorDockerHub(reg))
	want := imageID(t, img)

	for _, ref := range []string{
		"busybox",
		"busybox:1.36",
		"docker.io/library/busybox",
		"library/busybox:1.36",
		"busybox@" + digest.String(),
		"busybox:1.36@" + digest.String(),
		reg.host + "/library/busybox:1.36",
	} {
		if got := e.pull(ref); got != want {
			t.Errorf("pull %s = %s, want the config digest %s", ref, got, want)
		}
	}
	got, err := e.m.Get(want)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got.RepoTags)
	wantTags := []string{"docker.io/library/busybox:1.36", "docker.io/library/busybox:latest", reg.host + "/library/busybox:1.36"}
	slices.Sort(wantTags)
	if !slices.Equal(got.RepoTags, wantTags) {
		t.Errorf("RepoTags %v, want %v (a tag given with a digest is not recorded)", got.RepoTags, wantTags)
	}
	wantDigests := []string{"docker.io/library/busybox@" + digest.String(), reg.host + "/library/busybox@" + digest.String()}
	slices.Sort(got.RepoDigests)
	slices.Sort(wantDigests)
	if !slices.Equal(got.RepoDigests, wantDigests) {
		t.Errorf("RepoDigests %v, want %v", got.RepoDigests, wantDigests)
	}
	if got.Size <= 0 || got.ManifestDigest != digest.String() {
		t.Errorf("size %d manifest %s", got.Size, got.ManifestDigest)
	}
	// Every form finds it again.
	for _, ref := range []string{"busybox", "busybox:1.36", "docker.io/library/busybox:latest", "busybox@" + digest.String(),
		"busybox:whatever@" + digest.String(), want, strings.TrimPrefix(want, "sha256:"), want[:15], strings.TrimPrefix(want, "sha256:")[:12]} {
		img, err := e.m.Get(ref)
		if err != nil || img.ID != want {
			t.Errorf("Get(%q) = %v, %v", ref, img, err)
		}
	}
}

func TestInvalidReferenceIsInvalidArgument(t *testing.T) {
	e := newTestEnv(t)
	for _, ref := range []string{"", "UPPER/case", "a b", "busybox@sha256:short", "busybox:tag:tag"} {
		_, err := e.m.Pull(context.Background(), ref, nil)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("pull %q: %v, want InvalidArgument", ref, err)
			continue
		}
		if ref != "" && !strings.Contains(err.Error(), ref) {
			t.Errorf("pull %q: %q does not name the reference", ref, err)
		}
	}
	if _, err := e.m.Get("Not A Ref"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Get of an invalid reference: %v", err)
	}
	if err := e.m.Remove("Not A Ref"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Remove of an invalid reference: %v", err)
	}
}

func TestPullMultiArchIndexPicksPlatform(t *testing.T) {
	reg := newTestRegistry(t)
	amd := buildImage(t, imageSpec{oci: true, arch: "amd64", layers: []v1.Layer{layerOf(t, "gzip", true, tarBytes(t, fileEntry("arch", "amd64")))}})
	arm := buildImage(t, imageSpec{oci: true, arch: "arm64", layers: []v1.Layer{layerOf(t, "gzip", true, tarBytes(t, fileEntry("arch", "arm64")))}})
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	idxDigest := reg.pushIndex(t, "multi:1", idx)
	armOnly := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	reg.pushIndex(t, "armonly:1", armOnly)

	e := newTestEnv(t, func(o *Options) { o.Platform = v1.Platform{OS: "linux", Architecture: "amd64"} })
	id := e.pull(reg.host + "/multi:1")
	if id != imageID(t, amd) {
		t.Fatalf("pulled %s, want the amd64 image %s", id, imageID(t, amd))
	}
	img, _ := e.m.Get(id)
	if want := reg.host + "/multi@" + idxDigest.String(); !slices.Contains(img.RepoDigests, want) {
		t.Errorf("RepoDigests %v lack the index digest %s", img.RepoDigests, want)
	}
	amdDigest, _ := amd.Digest()
	if img.ManifestDigest != amdDigest.String() {
		t.Errorf("manifest digest %s, want the amd64 manifest %s", img.ManifestDigest, amdDigest)
	}
	if b := readLayerFile(t, e, id, "arch"); b != "amd64" {
		t.Errorf("unpacked arch file %q", b)
	}

	_, err := e.m.Pull(context.Background(), reg.host+"/armonly:1", nil)
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "linux/amd64") {
		t.Errorf("pull of an index without linux/amd64: %v", err)
	}
}

func TestPullMediaTypesAndCompressions(t *testing.T) {
	reg := newTestRegistry(t)
	e := newTestEnv(t)
	for _, tc := range []struct {
		name string
		oci  bool
		comp string
	}{
		{"oci-gzip", true, "gzip"},
		{"oci-zstd", true, "zstd"},
		{"oci-uncompressed", true, "none"},
		{"docker-gzip", false, "gzip"},
		{"docker-uncompressed", false, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := buildImage(t, imageSpec{oci: tc.oci, layers: []v1.Layer{
				layerOf(t, tc.comp, tc.oci, tarBytes(t, dirEntry("etc"), fileEntry("etc/kind", tc.name))),
			}})
			mt, _ := img.MediaType()
			if tc.oci != (mt == types.OCIManifestSchema1) {
				t.Fatalf("test image media type %s", mt)
			}
			reg.push(t, "kinds:"+tc.name, img)
			id, err := e.m.Pull(context.Background(), reg.host+"/kinds:"+tc.name, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := readLayerFile(t, e, id, "etc/kind"); got != tc.name {
				t.Errorf("etc/kind = %q", got)
			}
		})
	}
}

// readLayerFile reads a file from the image's layers, top layer first.
func readLayerFile(t testing.TB, e *testEnv, imageRef, p string) string {
	t.Helper()
	rootfs, err := e.m.Rootfs(context.Background(), imageRef, "reader-"+strings.ReplaceAll(p, "/", "-"))
	if err != nil {
		t.Fatal(err)
	}
	defer e.m.ReleaseRootfs("reader-" + strings.ReplaceAll(p, "/", "-"))
	for _, d := range rootfs.LowerDirs {
		if b, err := os.ReadFile(filepath.Join(d, p)); err == nil {
			return string(b)
		}
	}
	t.Fatalf("%s is in no layer of %s", p, imageRef)
	return ""
}

func TestPullUnknownImageCarriesRegistryMessage(t *testing.T) {
	reg := newTestRegistry(t)
	e := newTestEnv(t)
	_, err := e.m.Pull(context.Background(), reg.host+"/nothing:here", nil)
	if !errdefs.IsNotFound(err) {
		t.Fatalf("pull of a missing image: %v, want NotFound", err)
	}
	if !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") && !strings.Contains(err.Error(), "NAME_UNKNOWN") {
		t.Errorf("error %q does not carry the registry's own message", err)
	}
	if imgs, _ := e.m.List(""); len(imgs) != 0 {
		t.Errorf("a failed pull left images: %v", imgs)
	}
}

func TestPullUnreachableRegistryIsRegistryUnavailable(t *testing.T) {
	reg := newTestRegistry(t)
	host := reg.host
	reg.srv.Close() // nothing listens there any more
	e := newTestEnv(t)
	_, err := e.m.Pull(context.Background(), host+"/gone:1", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "RegistryUnavailable") {
		t.Fatalf("error %v must start with RegistryUnavailable", err)
	}
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %v: want Unavailable with the network's own message", err)
	}
}

func TestPulledImageAnswersTheContainerAPI(t *testing.T) {
	reg := newTestRegistry(t)
	img := buildImage(t, imageSpec{oci: true, user: "1002:1003", env: []string{"PATH=/bin"}, layers: []v1.Layer{
		layerOf(t, "gzip", true, tarBytes(t, fileEntry("a", "bottom"))),
		layerOf(t, "gzip", true, tarBytes(t, fileEntry("b", "top"))),
	}})
	reg.push(t, "app:1", img)
	e := newTestEnv(t)
	id := e.pull(reg.host + "/app:1")

	cfg, err := e.m.Config(reg.host + "/app:1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.User != "1002:1003" || !slices.Equal(cfg.Env, []string{"PATH=/bin"}) || !slices.Equal(cfg.Cmd, []string{"sh"}) {
		t.Errorf("config %+v", cfg)
	}
	rootfs, err := e.m.Rootfs(context.Background(), id[:12+7], "ctr1")
	if err != nil {
		t.Fatal(err)
	}
	if rootfs.ImageID != id || len(rootfs.LowerDirs) != 2 {
		t.Fatalf("rootfs %+v", rootfs)
	}
	if b, _ := os.ReadFile(filepath.Join(rootfs.LowerDirs[0], "b")); string(b) != "top" {
		t.Errorf("LowerDirs[0] is not the top layer")
	}
	for _, d := range rootfs.LowerDirs {
		if !strings.HasPrefix(d, filepath.Join(e.root, "images", "layers")+"/") || len(d)-len(e.root) > 30 {
			t.Errorf("lower dir %s: want a short path under images/layers", d)
		}
	}
	if _, err := e.m.Rootfs(context.Background(), "sha256:0000", "ctr2"); !errdefs.IsNotFound(err) {
		t.Errorf("rootfs of an unknown image: %v", err)
	}
	if _, err := e.m.Config("nothere:1"); !errdefs.IsNotFound(err) {
		t.Errorf("config of an unknown image: %v", err)
	}
	if err := e.m.ReleaseRootfs("ctr1"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.ReleaseRootfs("ctr1"); err != nil {
		t.Errorf("second release: %v", err)
	}
}

func TestImageWithoutLayersHasAnEmptyLowerDir(t *testing.T) {
	reg := newTestRegistry(t)
	img := buildImage(t, imageSpec{oci: true})
	reg.push(t, "scratch:1", img)
	e := newTestEnv(t)
	e.pull(reg.host + "/scratch:1")
	rootfs, err := e.m.Rootfs(context.Background(), reg.host+"/scratch:1", "c")
	if err != nil {
		t.Fatal(err)
	}
	if len(rootfs.LowerDirs) != 1 {
		t.Fatalf("lower dirs %v", rootfs.LowerDirs)
	}
	if entries, err := os.ReadDir(rootfs.LowerDirs[0]); err != nil || len(entries) != 0 {
		t.Errorf("empty lower dir: %v %v", entries, err)
	}
}

func TestSchema1IsRefused(t *testing.T) {
	_, err := pickPlatform(&v1.IndexManifest{}, v1.Platform{OS: "linux", Architecture: "amd64"})
	if !errdefs.IsNotFound(err) {
		t.Errorf("empty index: %v", err)
	}
	if !errors.Is(withKind(errors.New("x"), errdefs.ErrNotImplemented), errdefs.ErrNotImplemented) {
		t.Error("withKind loses its kind")
	}
}
