// Package streaming serves kubelet's streaming protocols for the CRI Exec,
// Attach and PortForward calls: each call hands out a single-use URL, and
// the client (kubelet, crictl, critest) connects to it over SPDY or
// WebSocket.
//
// The protocols are k8s.io/cri-streaming's, the implementation containerd
// and CRI-O use; berth adds what that library lacks: tokens whose lifetime
// is configured, the WebSocket remote-command protocol v5 (the version
// client-go's WebSocket executor speaks: it can close stdin), port-forward
// as SPDY tunnelled through a WebSocket (client-go's WebSocket port-forward
// dialer), and a Stop that ends the sessions it served.
package streaming

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	kubestreaming "k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/klog/v2"
)

// stopTimeout bounds how long Stop waits for the sessions it ended: an exec
// whose process ignores being killed must not hold the daemon's shutdown.
const stopTimeout = 10 * time.Second

// Options configure a Server.
type Options struct {
	// Address is the IP to listen on; Port 0 picks a free port.
	Address string
	Port    int
	// TokenTTL is how long a URL handed out stays valid (once).
	TokenTTL time.Duration
	// TLSCert and TLSKey are PEM files; both empty serves plain HTTP.
	TLSCert, TLSKey string
	Containers      Containers
	Pods            Pods
	Logger          *slog.Logger
}

// Server is berth's streaming server. Its zero value is not usable: call
// New, then Start.
type Server struct {
	log    *slog.Logger
	addr   string
	tls    *tls.Config
	tokens *tokens
	// lib is cri-streaming's server, used as an http.Handler only: berth
	// owns the listener, so the address is known when Start returns.
	lib    kubestreaming.Server
	libCfg kubestreaming.Config
	rt     *runtime
	active sessions

	mu      sync.Mutex
	base    *url.URL // scheme and host of the URLs; nil until Start
	httpSrv *http.Server
	lis     *trackingListener
	cancel  context.CancelFunc
	served  chan struct{}
	stopped bool
}

// New checks the options and loads the TLS key pair.
func New(opts Options) (*Server, error) {
	if opts.Containers == nil || opts.Pods == nil {
		return nil, errors.New("streaming server: containers and pods are required")
	}
	if net.ParseIP(opts.Address) == nil {
		return nil, fmt.Errorf("streaming server: address %q is not an IP address", opts.Address)
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("streaming server: port %d is outside 0-65535", opts.Port)
	}
	if opts.TokenTTL <= 0 {
		return nil, fmt.Errorf("streaming server: token lifetime must be positive, got %s", opts.TokenTTL)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{
		log:    opts.Logger,
		addr:   net.JoinHostPort(opts.Address, strconv.Itoa(opts.Port)),
		tokens: newTokens(opts.TokenTTL),
		rt:     &runtime{containers: opts.Containers, pods: opts.Pods, log: opts.Logger},
	}
	if opts.TLSCert != "" || opts.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(opts.TLSCert, opts.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("streaming server: load TLS key pair: %w", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	s.libCfg = kubestreaming.DefaultConfig
	s.libCfg.Addr = s.addr
	lib, err := kubestreaming.NewServer(s.libCfg, s.rt)
	if err != nil {
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	s.lib = lib
	return s, nil
}

// Start listens and serves in the background. It returns once the address
// is bound, so URLs handed out after it are good.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpSrv != nil || s.stopped {
		return errors.New("streaming server: already started (a server starts once)")
	}
	raw, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("streaming server: listen on %s: %w", s.addr, err)
	}
	// Track below TLS, so closing a connection ends its TLS session too.
	s.lis = newTrackingListener(raw)
	var lis net.Listener = s.lis
	scheme := "http"
	if s.tls != nil {
		lis = tls.NewListener(lis, s.tls)
		scheme = "https"
	}
	s.base = &url.URL{Scheme: scheme, Host: raw.Addr().String()}
	// Sessions run on the server's context: Stop cancels it, which kills
	// exec'd processes and ends attach sessions.
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	srv := &http.Server{
		Handler:           s,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	served := make(chan struct{})
	s.httpSrv, s.served = srv, served
	go func() {
		defer close(served)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("streaming server stopped serving", "error", err)
		}
	}()
	s.log.Info("streaming server listening", "url", s.base.String())
	return nil
}

// URL is the base URL streaming URLs start with; empty before Start.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.base == nil {
		return ""
	}
	return s.base.String()
}

// Stop closes the listener and every session: each exec'd process is
// killed, attach and port-forward connections are closed. It returns when
// the sessions have finished. Calling it twice, or before Start, does
// nothing; a stopped server does not start again.
func (s *Server) Stop() error {
	s.mu.Lock()
	srv, lis, cancel, served := s.httpSrv, s.lis, s.cancel, s.served
	s.httpSrv, s.stopped = nil, true
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	cancel()
	err := srv.Close()
	lis.closeAll()
	<-served
	if left := s.active.stop(stopTimeout); left > 0 {
		s.log.Warn("streaming sessions still running after stop", "sessions", left, "waited", stopTimeout)
	}
	return err
}

// LogLibraryTo sends what cri-streaming and k8s.io/streaming log through
// klog (failed sessions, port-forward errors) to berth's log instead of
// stderr. klog is process-wide, so the daemon calls this once.
func LogLibraryTo(log *slog.Logger) {
	klog.SetSlogLogger(log)
}
