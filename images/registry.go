package images

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryConfig is the configuration of one registry host.
type RegistryConfig struct {
	// Mirrors are tried in order before the registry itself, each as
	// "http://host[:port]" (plain HTTP) or "https://host[:port]".
	Mirrors []string
	// Insecure reaches the registry itself over plain HTTP.
	Insecure bool
}

// Auth is the CRI AuthConfig: the credentials kubelet passes for one pull.
type Auth struct {
	Username      string
	Password      string
	Auth          string // base64 of "username:password"
	ServerAddress string // the registry the credentials are for; "" for the image's own
	IdentityToken string // an OAuth2 refresh token, exchanged for a bearer token
	RegistryToken string // a bearer token sent to the registry as is
}

// endpoint is one place an image can be pulled from: a mirror or the
// registry itself.
type endpoint struct {
	host      string // host[:port] spoken to
	plainHTTP bool
	mirror    bool
	display   string // for messages: the mirror URL or the registry host
}

// endpoints lists where to pull images of registry domain from, in order.
func (m *Manager) endpoints(domain string) []endpoint {
	var out []endpoint
	cfg := m.registries[domain]
	for _, mirror := range cfg.Mirrors {
		u, _ := url.Parse(mirror) // validated in New
		out = append(out, endpoint{host: u.Host, plainHTTP: u.Scheme == "http", mirror: true, display: mirror})
	}
	return append(out, endpoint{host: domain, plainHTTP: cfg.Insecure || isLoopback(domain), display: domain})
}

// isLoopback reports whether a registry host is this machine, which berth
// reaches over plain HTTP without being told (as containerd and Docker do).
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// repository is the repository of r on endpoint e.
func (e endpoint) repository(r imageRef) (name.Repository, error) {
	opts := []name.Option{name.StrictValidation}
	if e.plainHTTP {
		opts = append(opts, name.Insecure)
	}
	repo, err := name.NewRepository(e.host+"/"+r.path, opts...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("image %s on %s: %v: %w", r, e.display, err, errdefs.ErrInvalidArgument)
	}
	return repo, nil
}

// reference is r on endpoint e.
func (e endpoint) reference(r imageRef) (name.Reference, error) {
	repo, err := e.repository(r)
	if err != nil {
		return nil, err
	}
	if r.digest != "" {
		return repo.Digest(r.digest), nil
	}
	return repo.Tag(r.tag), nil
}

// puller makes a puller for endpoint e. Credentials go to the registry the
// CRI says they are for, never to a mirror on another host.
func (m *Manager) puller(e endpoint, registry string, auth *Auth) (*remote.Puller, error) {
	authenticator, err := authenticatorFor(e, registry, auth)
	if err != nil {
		return nil, err
	}
	return remote.NewPuller(
		remote.WithTransport(countingTransport{base: schemeGuard{base: m.transport, allowHTTP: e.plainHTTP}}),
		remote.WithAuth(authenticator),
		remote.WithPlatform(m.platform),
		remote.WithUserAgent("berth"),
		// A few quick retries: a mirror that keeps failing should hand over
		// to the next endpoint soon, not after the default 1s+3s+9s.
		remote.WithRetryBackoff(remote.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 3}),
	)
}

func authenticatorFor(e endpoint, registry string, auth *Auth) (authn.Authenticator, error) {
	if auth == nil || *auth == (Auth{}) {
		return authn.Anonymous, nil
	}
	if auth.ServerAddress != "" {
		if normalHost(auth.ServerAddress) != normalHost(e.host) {
			return authn.Anonymous, nil
		}
	} else if e.mirror {
		return authn.Anonymous, nil
	}
	cfg := authn.AuthConfig{
		Username:      auth.Username,
		Password:      auth.Password,
		IdentityToken: auth.IdentityToken,
		RegistryToken: auth.RegistryToken,
	}
	if auth.Auth != "" && cfg.Username == "" {
		raw, err := base64.StdEncoding.DecodeString(auth.Auth)
		if err != nil {
			return nil, fmt.Errorf("auth for %s: the auth field is not base64: %w", registry, errdefs.ErrInvalidArgument)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return nil, fmt.Errorf("auth for %s: the auth field is not username:password: %w", registry, errdefs.ErrInvalidArgument)
		}
		cfg.Username, cfg.Password = user, pass
	}
	return authn.FromConfig(cfg), nil
}

// normalHost reduces "https://index.docker.io/v1/" and "docker.io" alike
// to the host an image reference uses.
func normalHost(s string) string {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		s = u.Host
	}
	s = strings.TrimSuffix(s, "/")
	switch s {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return s
}

// schemeGuard refuses plain HTTP to an endpoint that is not configured for
// it. go-containerregistry falls back to HTTP for RFC 1918 addresses on its
// own; berth only speaks HTTP where the configuration (or loopback) says so.
type schemeGuard struct {
	base      http.RoundTripper
	allowHTTP bool
}

func (g schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.allowHTTP {
		return nil, fmt.Errorf("refusing plain HTTP to %s: the registry is not configured as insecure", req.URL.Host)
	}
	return g.base.RoundTrip(req)
}
