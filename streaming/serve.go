package streaming

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

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
