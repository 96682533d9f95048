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
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	kubestreaming "k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/klog/v2"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// Request kinds: the first element of a streaming URL's path.
const (
	kindExec        = "exec"
	kindAttach      = "attach"
	kindPortForward = "portforward"
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

// GetExec validates an exec request and returns the URL to run it at.
func (s *Server) GetExec(req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if err := validateStreams(req.GetContainerId(), req.GetTty(), req.GetStdin(), req.GetStdout(), req.GetStderr()); err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	u, err := s.issue(kindExec, req)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecResponse{Url: u}, nil
}

// GetAttach validates an attach request and returns the URL to attach at.
func (s *Server) GetAttach(req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if err := validateStreams(req.GetContainerId(), req.GetTty(), req.GetStdin(), req.GetStdout(), req.GetStderr()); err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	u, err := s.issue(kindAttach, req)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.AttachResponse{Url: u}, nil
}

// GetPortForward validates a port-forward request and returns the URL to
// forward through.
func (s *Server) GetPortForward(req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, fmt.Errorf("port-forward: pod_sandbox_id is required: %w", errdefs.ErrInvalidArgument)
	}
	for _, p := range req.GetPort() {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("port-forward: port %d is outside 1-65535: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	u, err := s.issue(kindPortForward, req)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PortForwardResponse{Url: u}, nil
}

// validateStreams applies the protocol's rules to an exec or attach: a
// terminal merges stderr into stdout, and a session needs a stream.
func validateStreams(id string, tty, stdin, stdout, stderr bool) error {
	switch {
	case id == "":
		return fmt.Errorf("container_id is required: %w", errdefs.ErrInvalidArgument)
	case tty && stderr:
		return fmt.Errorf("tty and stderr cannot both be set (a terminal has one output): %w", errdefs.ErrInvalidArgument)
	case !stdin && !stdout && !stderr:
		return fmt.Errorf("one of stdin, stdout and stderr must be set: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

func (s *Server) issue(kind string, req any) (string, error) {
	s.mu.Lock()
	base := s.base
	s.mu.Unlock()
	if base == nil {
		return "", fmt.Errorf("streaming server is not running: %w", errdefs.ErrUnavailable)
	}
	token, err := s.tokens.issue(kind, req)
	if err != nil {
		return "", err
	}
	return base.JoinPath(kind, token).String(), nil
}

// ServeHTTP redeems the URL's token and serves the request it stands for.
// Nothing about a container or pod is looked at before the token is found
// good: a bad, used or expired token is a plain 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind, token, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodPost) {
		http.NotFound(w, r)
		return
	}
	if !s.active.begin() {
		http.Error(w, "streaming server is stopping", http.StatusServiceUnavailable)
		return
	}
	defer s.active.end()
	req, ok := s.tokens.redeem(kind, token)
	if !ok {
		s.log.Debug("streaming request refused: unknown, used or expired token", "kind", kind, "remote", r.RemoteAddr)
		http.NotFound(w, r)
		return
	}
	start := time.Now()
	switch req := req.(type) {
	case *runtimeapi.ExecRequest:
		s.log.Debug("exec session", "container", req.GetContainerId(), "cmd", req.GetCmd(), "tty", req.GetTty(), "protocol", protocolOf(r))
		if wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
			s.serveExecV5(w, r, req)
		} else {
			s.handOver(w, r, func() (string, error) {
				resp, err := s.lib.GetExec(req)
				return resp.GetUrl(), err
			})
		}
	case *runtimeapi.AttachRequest:
		s.log.Debug("attach session", "container", req.GetContainerId(), "tty", req.GetTty(), "protocol", protocolOf(r))
		if wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
			s.serveAttachV5(w, r, req)
		} else {
			s.handOver(w, r, func() (string, error) {
				resp, err := s.lib.GetAttach(req)
				return resp.GetUrl(), err
			})
		}
	case *runtimeapi.PortForwardRequest:
		s.log.Debug("port-forward session", "pod", req.GetPodSandboxId(), "protocol", protocolOf(r))
		libURL := func() (string, error) {
			resp, err := s.lib.GetPortForward(req)
			return resp.GetUrl(), err
		}
		if wsstream.IsWebSocketRequestWithTunnelingProtocol(r) {
			s.serveTunnelledPortForward(w, r, libURL)
		} else {
			s.handOver(w, r, libURL)
		}
	}
	s.log.Debug("streaming session ended", "kind", kind, "duration", time.Since(start))
}

// handOver gives the request to cri-streaming: it takes a library token
// for the request, which it redeems at once, and serves the connection.
func (s *Server) handOver(w http.ResponseWriter, r *http.Request, libURL func() (string, error)) {
	path, err := libPath(libURL)
	if err != nil {
		s.log.Error("streaming: cri-streaming refused a request berth accepted", "error", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	r.URL.Path, r.URL.RawPath = path, ""
	hw := &hijackWatch{ResponseWriter: w}
	s.lib.ServeHTTP(hw, r)
	// The session is over when the library returns, but on some failures
	// (a client that never opens all its streams) it leaves the hijacked
	// connection open; close it here so that it does not linger.
	if hw.conn != nil {
		hw.conn.Close()
	}
}

// hijackWatch remembers the connection the library hijacks. Unwrap lets
// the library's WebSocket path reach the original writer, as it expects.
type hijackWatch struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackWatch) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	conn, rw, err := hj.Hijack()
	h.conn = conn
	return conn, rw, err
}

func (h *hijackWatch) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func libPath(libURL func() (string, error)) (string, error) {
	raw, err := libURL()
	if err != nil {
		return "", err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("parse cri-streaming URL: %w", err)
	}
	return u.Path, nil
}

// protocolOf names what the client asked for, for the logs.
func protocolOf(r *http.Request) string {
	if p := r.Header.Get(wsstream.WebSocketProtocolHeader); p != "" {
		return "websocket " + p
	}
	return "spdy " + r.Header.Get("X-Stream-Protocol-Version")
}

// LogLibraryTo sends what cri-streaming and k8s.io/streaming log through
// klog (failed sessions, port-forward errors) to berth's log instead of
// stderr. klog is process-wide, so the daemon calls this once.
func LogLibraryTo(log *slog.Logger) {
	klog.SetSlogLogger(log)
}
