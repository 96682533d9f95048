package streaming

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/net/websocket"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
)

// tunnelPrefix marks a WebSocket subprotocol that carries SPDY: client-go's
// WebSocket port-forward dialer (crictl --transport websocket, critest
// -websocket-portforward) asks for "SPDY/3.1+portforward.k8s.io" and then
// speaks plain SPDY port-forward through the WebSocket's binary messages.
// cri-streaming only knows SPDY over a hijacked HTTP connection, so the
// WebSocket is handed to it as that connection (what the API server's
// tunnelling handler does, k8s.io/apiserver util/proxy/streamtunnel.go).
const tunnelPrefix = portforward.WebsocketsSPDYTunnelingPrefix

func (s *Server) serveTunnelledPortForward(w http.ResponseWriter, r *http.Request, libURL func() (string, error)) {
	path, err := libPath(libURL)
	if err != nil {
		s.log.Error("streaming: cri-streaming refused a request berth accepted", "error", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ws := websocket.Server{
		Handshake: func(cfg *websocket.Config, _ *http.Request) error {
			for _, p := range cfg.Protocol {
				inner, ok := strings.CutPrefix(p, tunnelPrefix)
				if ok && slices.Contains(s.libCfg.SupportedPortForwardProtocols, inner) {
					cfg.Protocol = []string{p}
					return nil
				}
			}
			return fmt.Errorf("no tunnelled port-forward protocol berth speaks in %q", cfg.Protocol)
		},
		Handler: func(conn *websocket.Conn) {
			conn.PayloadType = websocket.BinaryFrame
			inner := strings.TrimPrefix(conn.Config().Protocol[0], tunnelPrefix)
			// The same request as the library would get from a SPDY
			// client: upgrade headers instead of the WebSocket's.
			req := r.Clone(r.Context())
			for _, h := range []string{"Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions"} {
				req.Header.Del(h)
			}
			req.Header.Set(httpstream.HeaderConnection, httpstream.HeaderUpgrade)
			req.Header.Set(httpstream.HeaderUpgrade, spdy.HeaderSpdy31)
			req.Header.Set(httpstream.HeaderProtocolVersion, inner)
			req.URL.Path, req.URL.RawPath = path, ""
			s.lib.ServeHTTP(&tunnelWriter{conn: conn, header: http.Header{}}, req)
		},
	}
	ws.ServeHTTP(w, r)
}

// tunnelWriter is the http.ResponseWriter cri-streaming upgrades: the
// upgrade response itself goes nowhere (the client expects SPDY frames
// straight away), and hijacking yields the WebSocket as the connection.
type tunnelWriter struct {
	conn   *websocket.Conn
	header http.Header
	status int
}

func (t *tunnelWriter) Header() http.Header { return t.header }

func (t *tunnelWriter) WriteHeader(status int) { t.status = status }

// Write receives only error bodies, written when the library refuses the
// upgrade; they cannot reach a client that expects SPDY frames, and the
// WebSocket is closed when the handler returns.
func (t *tunnelWriter) Write(p []byte) (int, error) { return len(p), nil }

func (t *tunnelWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if t.status != http.StatusSwitchingProtocols {
		return nil, nil, fmt.Errorf("hijack after status %d, not 101", t.status)
	}
	return t.conn, bufio.NewReadWriter(bufio.NewReader(t.conn), bufio.NewWriter(t.conn)), nil
}
