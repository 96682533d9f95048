package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/berth-runtime/berth/state"
)

// testRegistry is a real OCI distribution registry (go-containerregistry's
// pkg/registry) on 127.0.0.1, wrapped with what the tests need: a request
// log, optional basic or Bearer token auth with a token endpoint, and a
// hook to misbehave on chosen requests.
type testRegistry struct {
	srv  *httptest.Server
	host string // 127.0.0.1:port

	mu       sync.Mutex
	requests []string // "GET /v2/…"
	hook     func(w http.ResponseWriter, r *http.Request) bool

	auth    atomic.Pointer[registryAuth] // nil: open
	enforce atomic.Bool
}

// registryAuth is what a protected test registry accepts.
type registryAuth struct {
	bearer        bool // Bearer tokens from /token; else basic auth
	user, pass    string
	identityToken string // accepted as an OAuth2 refresh token at /token
	registryToken string // accepted by the registry as a Bearer token as is
}

const issuedToken = "token-issued-by-test-registry"

func newTestRegistry(t testing.TB) *testRegistry {
	t.Helper()
	r := startTestRegistry()
	t.Cleanup(r.srv.Close)
	return r
}

// startTestRegistry starts a registry that lives until it is closed.
func startTestRegistry() *testRegistry {
	r := &testRegistry{}
	inner := registry.New(registry.Logger(nilLogger()))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests = append(r.requests, req.Method+" "+req.URL.Path)
		hook := r.hook
		r.mu.Unlock()
		if req.URL.Path == "/token" {
			r.serveToken(w, req)
			return
		}
		if r.enforce.Load() && !r.authorized(w, req) {
			return
		}
		if hook != nil && hook(w, req) {
			return
		}
		inner.ServeHTTP(w, req)
	}))
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

// protect makes the registry demand a, from now on.
func (r *testRegistry) protect(a registryAuth) {
	r.auth.Store(&a)
	r.enforce.Store(true)
}

func (r *testRegistry) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	r.mu.Lock()
	r.hook = h
	r.mu.Unlock()
}

func (r *testRegistry) log() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.requests...)
}

func (r *testRegistry) resetLog() {
	r.mu.Lock()
	r.requests = nil
	r.mu.Unlock()
}

// count returns how many logged requests are exactly "METHOD path".
func (r *testRegistry) count(method, pathSuffix string) int {
	n := 0
	for _, l := range r.log() {
		if strings.HasPrefix(l, method+" ") && strings.HasSuffix(l, pathSuffix) {
			n++
		}
	}
	return n
}

func unauthorized(w http.ResponseWriter, challenge, msg string) {
	w.Header().Set("WWW-Authenticate", challenge)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprintf(w, `{"errors":[{"code":"UNAUTHORIZED","message":%q}]}`, msg)
}

func (r *testRegistry) authorized(w http.ResponseWriter, req *http.Request) bool {
	a := r.auth.Load()
	if a == nil {
		return true
	}
	got := req.Header.Get("Authorization")
	if a.bearer {
		if got == "Bearer "+issuedToken || (a.registryToken != "" && got == "Bearer "+a.registryToken) {
			return true
		}
		unauthorized(w, fmt.Sprintf(`Bearer realm="http://%s/token",service="berth-test",scope="repository:test:pull"`, r.host), "authentication required by berth test registry")
		return false
	}
	if got == "Basic "+base64.StdEncoding.EncodeToString([]byte(a.user+":"+a.pass)) {
		return true
	}
	unauthorized(w, `Basic realm="berth-test"`, "wrong username or password for berth test registry")
	return false
}

// serveToken is a Docker token endpoint: GET with basic auth, or the
// OAuth2 refresh-token POST go-containerregistry uses for identity tokens.
func (r *testRegistry) serveToken(w http.ResponseWriter, req *http.Request) {
	a := r.auth.Load()
	w.Header().Set("Content-Type", "application/json")
	if req.Method == http.MethodPost {
		_ = req.ParseForm()
		if a != nil && a.identityToken != "" && req.Form.Get("refresh_token") == a.identityToken {
			fmt.Fprintf(w, `{"access_token":%q}`, issuedToken)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"identity token rejected by berth test token server"}]}`)
		return
	}
	user, pass, ok := req.BasicAuth()
	if a != nil && ok && user == a.user && pass == a.pass {
		fmt.Fprintf(w, `{"token":%q}`, issuedToken)
		return
	}
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"wrong username or password for berth test token server"}]}`)
}

// push uploads img as host/repoTag and returns its manifest digest.
func (r *testRegistry) push(t testing.TB, repoTag string, img v1.Image) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(r.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (r *testRegistry) pushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(r.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatalf("push index %s: %v", repoTag, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// tarEntry is one member of a test layer.
type tarEntry struct {
	name, link string
	typ        byte
	body       []byte
	mode       int64
}

func fileEntry(name, body string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeReg, body: []byte(body), mode: 0o644}
}
func dirEntry(name string) tarEntry { return tarEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
func linkEntry(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlinkEntry(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeLink, link: target}
}

func tarBytes(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, ModTime: time.Unix(1700000000, 0)}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testLayer is a layer with given compressed bytes and media type.
type testLayer struct {
	compressed   []byte
	uncompressed []byte
	mt           types.MediaType
}

func (l *testLayer) Digest() (v1.Hash, error) { return sha(l.compressed), nil }
func (l *testLayer) DiffID() (v1.Hash, error) { return sha(l.uncompressed), nil }
func (l *testLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}
func (l *testLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.uncompressed)), nil
}
func (l *testLayer) Size() (int64, error)                { return int64(len(l.compressed)), nil }
func (l *testLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// layerOf builds a layer from a tar stream compressed with comp ("gzip",
// "zstd" or "none"), with the media type the format (oci or docker) uses.
func layerOf(t testing.TB, comp string, oci bool, raw []byte) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	var mt types.MediaType
	switch comp {
	case "gzip":
		zw := gzip.NewWriter(&buf)
		zw.Write(raw)
		zw.Close()
		mt = types.DockerLayer
		if oci {
			mt = types.OCILayer
		}
	case "zstd":
		zw, _ := zstd.NewWriter(&buf)
		zw.Write(raw)
		zw.Close()
		mt = types.OCILayerZStd
	case "none":
		buf.Write(raw)
		mt = types.DockerUncompressedLayer
		if oci {
			mt = types.OCIUncompressedLayer
		}
	default:
		t.Fatalf("compression %q", comp)
	}
	return &testLayer{compressed: buf.Bytes(), uncompressed: raw, mt: mt}
}

// imageSpec describes a test image.
type imageSpec struct {
	oci    bool
	arch   string
	user   string
	env    []string
	layers []v1.Layer
}

func buildImage(t testing.TB, s imageSpec) v1.Image {
	t.Helper()
	arch := s.arch
	if arch == "" {
		arch = "amd64"
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: arch, OS: "linux",
		Config: v1.Config{User: s.user, Env: s.env, Cmd: []string{"sh"}, WorkingDir: "/"},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.oci {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	for _, l := range s.layers {
		mt, _ := l.MediaType()
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: mt}); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// simpleImage is a one-layer image whose file "id" holds id.
func simpleImage(t testing.TB, id string) v1.Image {
	return buildImage(t, imageSpec{oci: true, layers: []v1.Layer{
		layerOf(t, "gzip", true, tarBytes(t, dirEntry("etc"), fileEntry("etc/id", id))),
	}})
}

func imageID(t testing.TB, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// testEnv is a manager over a fresh root, reopenable to test recovery.
type testEnv struct {
	t     testing.TB
	root  string
	opts  Options
	store *state.Store
	m     *Manager
}

func newTestEnv(t testing.TB, configure ...func(*Options)) *testEnv {
	t.Helper()
	e := &testEnv{t: t, root: t.TempDir()}
	e.opts = Options{Root: e.root, Logger: testLogger(t), PullProgressTimeout: 10 * time.Second}
	for _, c := range configure {
		c(&e.opts)
	}
	e.open()
	t.Cleanup(func() { e.close() })
	return e
}

func (e *testEnv) open() {
	e.t.Helper()
	store, err := state.Open(filepath.Join(e.root, "meta.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.store = store
	opts := e.opts
	opts.Store = store
	m, err := New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := m.Recover(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.m = m
}

func (e *testEnv) close() {
	if e.store != nil {
		e.store.Close()
		e.store = nil
	}
}

// reopen simulates a daemon restart.
func (e *testEnv) reopen() {
	e.t.Helper()
	e.close()
	e.open()
}

func (e *testEnv) pull(ref string) string {
	e.t.Helper()
	id, err := e.m.Pull(context.Background(), ref, nil)
	if err != nil {
		e.t.Fatalf("pull %s: %v", ref, err)
	}
	return id
}

// files lists the entries of a store directory ("blobs/sha256", "ingest",
// "layers").
func (e *testEnv) files(dir string) []string {
	e.t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.root, "images", dir))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		out = append(out, en.Name())
	}
	return out
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func nilLogger() *log.Logger { return log.New(io.Discard, "", 0) }
