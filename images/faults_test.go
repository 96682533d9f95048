package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// bigLayer is a gzip layer with size bytes of content that does not
// compress, so a test can cut its download in the middle.
func bigLayer(t testing.TB, size int, seed byte) v1.Layer {
	data := make([]byte, size)
	x := uint32(seed) + 1
	for i := range data {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		data[i] = byte(x)
	}
	return layerOf(t, "gzip", true, tarBytes(t, tarEntry{name: "blob", typ: '0', body: data, mode: 0o644}))
}

func layerDigest(t testing.TB, l v1.Layer) v1.Hash {
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// assertNoTrace checks that a failed pull left nothing behind: no image,
// no blob of the layer, no download in progress, no unpacked layer.
func assertNoTrace(t *testing.T, e *testEnv, layer v1.Hash) {
	t.Helper()
	if imgs, _ := e.m.List(""); len(imgs) != 0 {
		t.Errorf("failed pull listed images: %v", imgs)
	}
	if slices.Contains(e.files("blobs/sha256"), layer.Hex) {
		t.Errorf("blob %s is stored although it was never received whole and verified", layer)
	}
	waitFor(t, "the download to be cleaned up", func() bool {
		return len(e.files("ingest")) == 0 && len(e.files("layers")) == 0
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBlobWithWrongDigestIsRejected(t *testing.T) {
	reg := newTestRegistry(t)
	good := layerOf(t, "gzip", true, tarBytes(t, fileEntry("f", "the real content")))
	reg.push(t, "victim:1", buildImage(t, imageSpec{oci: true, layers: []v1.Layer{good}}))
	evil := layerOf(t, "gzip", true, tarBytes(t, fileEntry("f", "something else entirely, and longer")))
	digest := layerDigest(t, good)

	for _, tc := range []struct {
		name string
		body func() []byte
	}{
		{"other valid layer", func() []byte { b, _ := evil.(*testLayer); return b.compressed }},
		{"flipped byte", func() []byte {
			b := slices.Clone(good.(*testLayer).compressed)
			b[len(b)/2] ^= 0xff
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+digest.String()) {
					w.Write(tc.body())
					return true
				}
				return false
			})
			defer reg.setHook(nil)
			e := newTestEnv(t)
			_, err := e.m.Pull(context.Background(), reg.host+"/victim:1", nil)
			if !errdefs.IsDataLoss(err) {
				t.Fatalf("error %v, want DataLoss", err)
			}
			if !strings.Contains(err.Error(), digest.String()) {
				t.Errorf("error %q does not name the layer", err)
			}
			assertNoTrace(t, e, digest)
		})
	}
}

// stallAfter serves half of the blob with digest d, then hangs until the
// client goes away; started is closed once the half is sent.
func stallAfter(d v1.Hash, full []byte, started chan struct{}) func(w http.ResponseWriter, r *http.Request) bool {
	var once sync.Once
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			return false
		}
		w.Write(full[:len(full)/2])
		w.(http.Flusher).Flush()
		once.Do(func() { close(started) })
		<-r.Context().Done()
		return true
	}
}

func TestStalledRegistryTimesOut(t *testing.T) {
	reg := newTestRegistry(t)
	layer := bigLayer(t, 1<<20, 1)
	reg.push(t, "slow:1", buildImage(t, imageSpec{oci: true, layers: []v1.Layer{layer}}))
	reg.setHook(stallAfter(layerDigest(t, layer), layer.(*testLayer).compressed, make(chan struct{})))
	e := newTestEnv(t, func(o *Options) { o.PullProgressTimeout = 300 * time.Millisecond })

	start := time.Now()
	_, err := e.m.Pull(context.Background(), reg.host+"/slow:1", nil)
	var stall *stallError
	if !errors.As(err, &stall) {
		t.Fatalf("error %v, want a stall", err)
	}
	if !strings.HasPrefix(err.Error(), "RegistryUnavailable") || !strings.Contains(err.Error(), "no progress for 300ms") ||
		!strings.Contains(err.Error(), "pull_progress_timeout") {
		t.Errorf("error %q does not explain the stall", err)
	}
	if stall.received == 0 || stall.received >= stall.total {
		t.Errorf("stall reports %d of %d bytes", stall.received, stall.total)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the stall was noticed after %s", d)
	}
	assertNoTrace(t, e, layerDigest(t, layer))
}

func TestStalledManifestTimesOut(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "slow:1", simpleImage(t, "x"))
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/") {
			<-r.Context().Done()
			return true
		}
		return false
	})
	e := newTestEnv(t, func(o *Options) { o.PullProgressTimeout = 200 * time.Millisecond })
	_, err := e.m.Pull(context.Background(), reg.host+"/slow:1", nil)
	if !strings.HasPrefix(fmtErr(err), "RegistryUnavailable") || !strings.Contains(fmtErr(err), "no progress") {
		t.Fatalf("error %v, want a stall", err)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestInterruptedPullLeavesNoPartialBlobAndPullsAgain(t *testing.T) {
	reg := newTestRegistry(t)
	layer := bigLayer(t, 1<<20, 2)
	img := buildImage(t, imageSpec{oci: true, layers: []v1.Layer{layer}})
	reg.push(t, "cut:1", img)
	started := make(chan struct{})
	reg.setHook(stallAfter(layerDigest(t, layer), layer.(*testLayer).compressed, started))
	e := newTestEnv(t)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := e.m.Pull(ctx, reg.host+"/cut:1", nil)
		errc <- err
	}()
	<-started
	waitFor(t, "part of the blob to arrive", func() bool { return len(e.files("ingest")) == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull: %v", err)
	}
	assertNoTrace(t, e, layerDigest(t, layer))

	reg.setHook(nil)
	id := e.pull(reg.host + "/cut:1")
	if id != imageID(t, img) {
		t.Fatalf("pulled %s", id)
	}
	d := layerDigest(t, layer)
	b, err := os.ReadFile(filepath.Join(e.root, "images", "blobs", "sha256", d.Hex))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != d.Hex {
		t.Errorf("stored blob does not match its digest")
	}
}

func TestRecoverRemovesLeftoversOfAKilledDaemon(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "keep:1", simpleImage(t, "keep"))
	e := newTestEnv(t)
	id := e.pull(reg.host + "/keep:1")

	// What a daemon killed mid-pull and mid-removal leaves: a partial
	// download, an unpack no record names, a blob no record names, and a
	// layer moved to the trash.
	imagesDir := filepath.Join(e.root, "images")
	mustWrite(t, filepath.Join(imagesDir, "ingest", strings.Repeat("a", 64)+"-123"), "partial")
	mustWrite(t, filepath.Join(imagesDir, "layers", "99", "fs", "half-unpacked"), "x")
	mustWrite(t, filepath.Join(imagesDir, "blobs", "sha256", strings.Repeat("b", 64)), "orphan")
	mustWrite(t, filepath.Join(imagesDir, "trash", "7", "fs", "old"), "x")
	e.reopen()

	if got := e.files("ingest"); len(got) != 0 {
		t.Errorf("ingest after recovery: %v", got)
	}
	if got := e.files("trash"); len(got) != 0 {
		t.Errorf("trash after recovery: %v", got)
	}
	if slices.Contains(e.files("layers"), "99") {
		t.Error("an unrecorded layer directory survived recovery")
	}
	if slices.Contains(e.files("blobs/sha256"), strings.Repeat("b", 64)) {
		t.Error("an unreferenced blob survived recovery")
	}
	img, err := e.m.Get(reg.host + "/keep:1")
	if err != nil || img.ID != id {
		t.Fatalf("image after restart: %v, %v", img, err)
	}
	if got := readLayerFile(t, e, id, "etc/id"); got != "keep" {
		t.Errorf("layer content after restart: %q", got)
	}
	// A new layer never reuses the number of a leftover directory.
	reg.push(t, "next:1", simpleImage(t, "next"))
	e.pull(reg.host + "/next:1")
	rootfs, _ := e.m.Rootfs(context.Background(), reg.host+"/next:1", "c")
	if n := filepath.Base(filepath.Dir(rootfs.LowerDirs[0])); n <= "99" && len(n) <= 2 {
		t.Errorf("new layer directory %s may collide with a leftover", n)
	}
}

func TestRecoverDropsImagesWhoseContentIsGone(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "fragile:1", simpleImage(t, "fragile"))
	e := newTestEnv(t)
	id := e.pull(reg.host + "/fragile:1")
	rootfs, _ := e.m.Rootfs(context.Background(), id, "probe")
	e.m.ReleaseRootfs("probe")
	// Someone deleted a layer directory behind berth's back.
	if err := os.RemoveAll(filepath.Dir(rootfs.LowerDirs[0])); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	if _, err := e.m.Get(id); !errdefs.IsNotFound(err) {
		t.Errorf("an image with a missing layer is still listed: %v", err)
	}
	e.pull(reg.host + "/fragile:1") // and pulling it again repairs it
}

func mustWrite(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentPullsDownloadOnce(t *testing.T) {
	reg := newTestRegistry(t)
	shared := bigLayer(t, 256<<10, 3)
	img := buildImage(t, imageSpec{oci: true, layers: []v1.Layer{shared, bigLayer(t, 256<<10, 4)}})
	other := buildImage(t, imageSpec{oci: true, layers: []v1.Layer{shared, bigLayer(t, 256<<10, 5)}})
	reg.push(t, "popular:1", img)
	reg.push(t, "cousin:1", other)
	// Slow blobs down so every pull is under way before any finishes.
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/blobs/") {
			time.Sleep(300 * time.Millisecond)
		}
		return false
	})
	reg.resetLog()
	e := newTestEnv(t)

	refs := []string{"popular:1", "popular:1", "popular:1", "cousin:1"}
	var wg sync.WaitGroup
	var failures atomic.Int32
	for _, ref := range refs {
		wg.Go(func() {
			if _, err := e.m.Pull(context.Background(), reg.host+"/"+ref, nil); err != nil {
				t.Errorf("pull %s: %v", ref, err)
				failures.Add(1)
			}
		})
	}
	wg.Wait()
	if failures.Load() > 0 {
		return
	}
	blobs := map[string]int{}
	for _, l := range reg.log() {
		if strings.HasPrefix(l, "GET ") && strings.Contains(l, "/blobs/") {
			blobs[l[strings.LastIndex(l, "/")+1:]]++
		}
	}
	for d, n := range blobs {
		if n != 1 {
			t.Errorf("blob %s fetched %d times", d, n)
		}
	}
	cfg, _ := img.ConfigName()
	if blobs[cfg.String()] != 1 || blobs[layerDigest(t, shared).String()] != 1 {
		t.Errorf("blob requests %v", blobs)
	}
}

func TestMirrorsAreTriedInOrder(t *testing.T) {
	down := newTestRegistry(t)
	downHost := down.host
	down.srv.Close()
	empty := newTestRegistry(t)
	good := newTestRegistry(t)
	later := newTestRegistry(t)
	img := simpleImage(t, "busybox")
	good.push(t, "e2e-test-images/busybox:1.29-2", img)
	later.push(t, "e2e-test-images/busybox:1.29-2", img)

	var seq atomic.Int64
	var emptyAt, goodAt atomic.Int64
	stamp := func(at *atomic.Int64) func(http.ResponseWriter, *http.Request) bool {
		return func(http.ResponseWriter, *http.Request) bool {
			at.CompareAndSwap(0, seq.Add(1))
			return false
		}
	}
	empty.setHook(stamp(&emptyAt))
	good.setHook(stamp(&goodAt))
	for _, r := range []*testRegistry{empty, good, later} {
		r.resetLog()
	}

	e := newTestEnv(t, func(o *Options) {
		o.Registries = map[string]RegistryConfig{"registry.k8s.io": {Mirrors: []string{
			"http://" + downHost, "http://" + empty.host, "http://" + good.host, "http://" + later.host,
		}}}
	})
	id := e.pull("registry.k8s.io/e2e-test-images/busybox:1.29-2")
	if id != imageID(t, img) {
		t.Fatalf("pulled %s", id)
	}
	if emptyAt.Load() == 0 || goodAt.Load() == 0 || emptyAt.Load() > goodAt.Load() {
		t.Errorf("mirror order: empty at %d, good at %d", emptyAt.Load(), goodAt.Load())
	}
	if got := good.count("GET", "/v2/e2e-test-images/busybox/manifests/1.29-2"); got == 0 {
		t.Errorf("the good mirror was not asked for the upstream path: %v", good.log())
	}
	if len(later.log()) != 0 {
		t.Errorf("a mirror after the one that answered was contacted: %v", later.log())
	}
	got, _ := e.m.Get(id)
	if !slices.Equal(got.RepoTags, []string{"registry.k8s.io/e2e-test-images/busybox:1.29-2"}) {
		t.Errorf("RepoTags %v: the image keeps its upstream name", got.RepoTags)
	}
	// The upstream name, not the mirror's, finds it.
	if _, err := e.m.Get("registry.k8s.io/e2e-test-images/busybox:1.29-2"); err != nil {
		t.Error(err)
	}
}

func TestAllEndpointsFailingReportsEach(t *testing.T) {
	empty := newTestRegistry(t)
	upstream := newTestRegistry(t)
	upstreamHost := upstream.host
	upstream.srv.Close()
	e := newTestEnv(t, func(o *Options) {
		o.Registries = map[string]RegistryConfig{upstreamHost: {Mirrors: []string{"http://" + empty.host}}}
	})
	_, err := e.m.Pull(context.Background(), upstreamHost+"/x/y:1", nil)
	msg := fmtErr(err)
	if !strings.HasPrefix(msg, "RegistryUnavailable") {
		t.Errorf("error %q: the registry itself is unreachable, so it must start with RegistryUnavailable", msg)
	}
	if !strings.Contains(msg, "mirrors tried first") || !strings.Contains(msg, "NAME_UNKNOWN") {
		t.Errorf("error %q does not report what the mirror said", msg)
	}
}

// TestFailedPullResumesWithTheLayersItFinished shows that a pull cut short
// keeps the layers it completed (verified, whole) and the next pull fetches
// only the rest; a restart in between starts clean instead.
func TestFailedPullResumesWithTheLayersItFinished(t *testing.T) {
	reg := newTestRegistry(t)
	first, second := bigLayer(t, 64<<10, 20), bigLayer(t, 1<<20, 21)
	reg.push(t, "two:1", buildImage(t, imageSpec{oci: true, layers: []v1.Layer{first, second}}))
	started := make(chan struct{})
	reg.setHook(stallAfter(layerDigest(t, second), second.(*testLayer).compressed, started))
	reg.resetLog()
	e := newTestEnv(t, func(o *Options) { o.PullProgressTimeout = 300 * time.Millisecond })

	if _, err := e.m.Pull(context.Background(), reg.host+"/two:1", nil); err == nil {
		t.Fatal("the pull survived a stalled layer")
	}
	firstBlob := "/blobs/" + layerDigest(t, first).String()
	if n := reg.count("GET", firstBlob); n != 1 {
		t.Fatalf("first layer fetched %d times", n)
	}
	reg.setHook(nil)
	e.pull(reg.host + "/two:1")
	if n := reg.count("GET", firstBlob); n != 1 {
		t.Errorf("the retry fetched the finished layer again (%d requests)", n)
	}

	// A restart after a failed pull starts clean: what it finished is not
	// named by any image and goes.
	if err := e.m.Remove(reg.host + "/two:1"); err != nil {
		t.Fatal(err)
	}
	reg.setHook(stallAfter(layerDigest(t, second), second.(*testLayer).compressed, make(chan struct{})))
	if _, err := e.m.Pull(context.Background(), reg.host+"/two:1", nil); err == nil {
		t.Fatal("the pull survived a stalled layer")
	}
	// The abandoned download unwinds in the background.
	waitFor(t, "only the finished layer to be left", func() bool { return len(e.files("layers")) == 1 })
	e.reopen()
	if n, b := len(e.files("layers")), len(e.files("blobs/sha256")); n != 0 || b != 0 {
		t.Errorf("after restart: %d layers and %d blobs of a pull that never finished", n, b)
	}
}
