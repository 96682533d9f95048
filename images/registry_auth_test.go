package images

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestPullWithCredentials(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "private:1", simpleImage(t, "private"))
	basic := registryAuth{user: "alice", pass: "s3cret"}
	bearer := registryAuth{bearer: true, user: "alice", pass: "s3cret", identityToken: "refresh-me", registryToken: "direct-token"}

	for _, tc := range []struct {
		name    string
		server  registryAuth
		auth    *Auth
		wantErr string // "" for success
	}{
		{"basic right", basic, &Auth{Username: "alice", Password: "s3cret"}, ""},
		{"basic auth field", basic, &Auth{Auth: base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))}, ""},
		{"basic wrong", basic, &Auth{Username: "alice", Password: "nope"}, "wrong username or password for berth test registry"},
		{"basic none", basic, nil, "wrong username or password for berth test registry"},
		{"bearer password", bearer, &Auth{Username: "alice", Password: "s3cret"}, ""},
		{"bearer auth field", bearer, &Auth{Auth: base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))}, ""},
		{"bearer identity token", bearer, &Auth{IdentityToken: "refresh-me"}, ""},
		{"bearer registry token", bearer, &Auth{RegistryToken: "direct-token"}, ""},
		{"bearer wrong password", bearer, &Auth{Username: "alice", Password: "nope"}, "wrong username or password for berth test token server"},
		{"bearer wrong identity token", bearer, &Auth{IdentityToken: "stolen"}, "identity token rejected"},
		{"bearer anonymous", bearer, nil, "UNAUTHORIZED"},
		{"credentials for another registry", basic, &Auth{Username: "alice", Password: "s3cret", ServerAddress: "https://elsewhere.example"}, "wrong username or password"},
		{"credentials naming this registry", basic, &Auth{Username: "alice", Password: "s3cret", ServerAddress: "http://" + reg.host}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg.protect(tc.server)
			e := newTestEnv(t)
			id, err := e.m.Pull(context.Background(), reg.host+"/private:1", tc.auth)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("pull: %v", err)
				}
				if _, err := e.m.Get(id); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("pull succeeded without the right credentials")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not carry the registry's message %q", err, tc.wantErr)
			}
			if !errdefs.IsPermissionDenied(err) {
				t.Errorf("error %v is not PermissionDenied", err)
			}
		})
	}
}

func TestMalformedAuthFieldIsInvalidArgument(t *testing.T) {
	reg := newTestRegistry(t)
	e := newTestEnv(t)
	_, err := e.m.Pull(context.Background(), reg.host+"/x:1", &Auth{Auth: "!!not base64!!"})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("error %v, want InvalidArgument", err)
	}
}

// TestPullOverHTTPS pulls through an https:// mirror that only speaks TLS,
// with the transport trusting the test server's certificate.
func TestPullOverHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(registry.New(registry.Logger(nilLogger())))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	ref, _ := name.ParseReference(host + "/tls/image:1")
	img := simpleImage(t, "tls")
	if err := remote.Write(ref, img, remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, func(o *Options) {
		o.Transport = srv.Client().Transport
		o.Registries = map[string]RegistryConfig{"secure.example": {Mirrors: []string{"https://" + host}}}
	})
	if id := e.pull("secure.example/tls/image:1"); id != imageID(t, img) {
		t.Errorf("pulled %s", id)
	}

	// Without trusting the certificate the pull fails as the network does.
	e2 := newTestEnv(t, func(o *Options) {
		o.Transport = &http.Transport{TLSClientConfig: &tls.Config{}}
		o.Registries = map[string]RegistryConfig{"secure.example": {Mirrors: []string{"https://" + host}}}
	})
	_, err := e2.m.Pull(context.Background(), "secure.example/tls/image:1", nil)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("pull with an untrusted certificate: %v", err)
	}
}

func TestPlainHTTPOnlyWhereConfigured(t *testing.T) {
	g := schemeGuard{base: http.DefaultTransport}
	req, _ := http.NewRequest(http.MethodGet, "http://10.0.0.1/v2/", nil)
	if _, err := g.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "not configured as insecure") {
		t.Errorf("plain HTTP to a secure registry: %v", err)
	}
	e := newTestEnv(t, func(o *Options) {
		o.Registries = map[string]RegistryConfig{"insecure.example": {Insecure: true}, "mirrored.example": {Mirrors: []string{"http://10.1.1.1:5000", "https://10.2.2.2"}}}
	})
	for _, tc := range []struct {
		domain string
		want   []bool // plainHTTP per endpoint
	}{
		{"insecure.example", []bool{true}},
		{"secure.example", []bool{false}},
		{"localhost:5000", []bool{true}},
		{"127.0.0.1:5000", []bool{true}},
		{"[::1]:5000", []bool{true}},
		{"mirrored.example", []bool{true, false, false}},
	} {
		eps := e.m.endpoints(tc.domain)
		var got []bool
		for _, ep := range eps {
			got = append(got, ep.plainHTTP)
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: endpoints %+v", tc.domain, eps)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: endpoint %s plain HTTP = %v, want %v", tc.domain, eps[i].display, got[i], tc.want[i])
			}
		}
	}
}

func TestMirrorWithPathIsRejected(t *testing.T) {
	_, err := New(Options{Root: t.TempDir(), Store: newTestEnv(t).store, Registries: map[string]RegistryConfig{
		"docker.io": {Mirrors: []string{"http://127.0.0.1:5000/v2/prefix"}},
	}})
	if err == nil || !strings.Contains(err.Error(), `registries."docker.io".mirrors[0]`) {
		t.Errorf("mirror with a path: %v", err)
	}
}
