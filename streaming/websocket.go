package streaming

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	utilexec "k8s.io/utils/exec"
)

// cri-streaming serves WebSocket remote commands up to v4 only, while
// client-go's WebSocket executor (crictl --transport websocket, critest
// -websocket-exec/-attach) asks for v5 and nothing else. v5 is v4 plus a
// CLOSE signal that half-closes one channel, which is how the client says
// its stdin ended. k8s.io/streaming's wsstream implements the framing and
// the signal; what remains here is the channel layout and the status the
// library keeps unexported (remotecommand/websocket.go, status.go).

// Channel numbers of remote command streams.
const (
	chanStdin  = remotecommand.StreamStdIn
	chanStdout = remotecommand.StreamStdOut
	chanStderr = remotecommand.StreamStdErr
	chanError  = remotecommand.StreamErr
	chanResize = remotecommand.StreamResize
)

// streamRun runs an exec or attach with the client's streams.
type streamRun func(ctx context.Context, in io.Reader, out, errOut io.WriteCloser, resize <-chan remotecommand.TerminalSize) error

func (s *Server) serveExecV5(w http.ResponseWriter, r *http.Request, req *runtimeapi.ExecRequest) {
	s.serveV5(w, r, req.GetStdin(), req.GetStdout(), req.GetStderr(), req.GetTty(),
		func(ctx context.Context, in io.Reader, out, errOut io.WriteCloser, resize <-chan remotecommand.TerminalSize) error {
			return s.rt.Exec(ctx, req.GetContainerId(), req.GetCmd(), in, out, errOut, req.GetTty(), resize)
		})
}

func (s *Server) serveAttachV5(w http.ResponseWriter, r *http.Request, req *runtimeapi.AttachRequest) {
	s.serveV5(w, r, req.GetStdin(), req.GetStdout(), req.GetStderr(), req.GetTty(),
		func(ctx context.Context, in io.Reader, out, errOut io.WriteCloser, resize <-chan remotecommand.TerminalSize) error {
			return s.rt.Attach(ctx, req.GetContainerId(), in, out, errOut, req.GetTty(), resize)
		})
}

// serveV5 upgrades to a v5.channel.k8s.io WebSocket, runs the session and
// reports how it ended on the error channel.
func (s *Server) serveV5(w http.ResponseWriter, r *http.Request, stdin, stdout, stderr, tty bool, run streamRun) {
	channels := []wsstream.ChannelType{
		chanStdin:  pick(stdin, wsstream.ReadChannel),
		chanStdout: pick(stdout, wsstream.WriteChannel),
		chanStderr: pick(stderr, wsstream.WriteChannel),
		chanError:  wsstream.WriteChannel,
		chanResize: wsstream.ReadChannel,
	}
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		remotecommand.StreamProtocolV5Name: {Binary: true, Channels: channels},
	})
	conn.SetIdleTimeout(s.libCfg.StreamIdleTimeout)
	_, streams, err := conn.Open(w, r)
	if err != nil {
		s.log.Debug("websocket upgrade failed", "error", err)
		return
	}
	defer conn.Close()

	// An empty message on the first writable channel tells the client the
	// session is up, as cri-streaming does for v1-v4.
	first := chanError
	if stdout {
		first = chanStdout
	} else if stderr {
		first = chanStderr
	}
	_, _ = streams[first].Write(nil)

	// Streams the client did not ask for stay nil interfaces.
	var in io.Reader
	var out, errOut io.WriteCloser
	if stdin {
		in = streams[chanStdin]
	}
	if stdout {
		out = streams[chanStdout]
	}
	if stderr {
		errOut = streams[chanStderr]
	}
	var resize chan remotecommand.TerminalSize
	if tty {
		resize = make(chan remotecommand.TerminalSize)
		go decodeResizes(r.Context(), streams[chanResize], resize)
	}
	runErr := run(r.Context(), in, out, errOut, resize)
	if err := writeStatus(streams[chanError], runErr); err != nil {
		s.log.Debug("write websocket session status", "error", err)
	}
}

func pick(want bool, t wsstream.ChannelType) wsstream.ChannelType {
	if want {
		return t
	}
	return wsstream.IgnoreChannel
}

// decodeResizes reads the JSON terminal sizes the client sends until the
// channel or the request ends.
func decodeResizes(ctx context.Context, r io.Reader, out chan<- remotecommand.TerminalSize) {
	defer close(out)
	dec := json.NewDecoder(r)
	for {
		var sz remotecommand.TerminalSize
		if err := dec.Decode(&sz); err != nil {
			return
		}
		select {
		case out <- sz:
		case <-ctx.Done():
			return
		}
	}
}

// sessionStatus is the JSON status (a metav1.Status subset) v4 and v5
// clients read from the error channel: success, or failure with the exit
// code as a cause.
type sessionStatus struct {
	Status  string         `json:"status"`
	Message string         `json:"message,omitempty"`
	Reason  string         `json:"reason,omitempty"`
	Details *statusDetails `json:"details,omitempty"`
	Code    int32          `json:"code,omitempty"`
}

type statusDetails struct {
	Causes []statusCause `json:"causes,omitempty"`
}

type statusCause struct {
	Type    string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

func writeStatus(w io.Writer, err error) error {
	st := sessionStatus{Status: "Success"}
	var exitErr utilexec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && exitErr.Exited():
		st = sessionStatus{
			Status:  "Failure",
			Reason:  remotecommand.NonZeroExitCodeReason,
			Message: fmt.Sprintf("command terminated with non-zero exit code: %v", err),
			Details: &statusDetails{Causes: []statusCause{{Type: remotecommand.ExitCodeCauseType, Message: strconv.Itoa(exitErr.ExitStatus())}}},
		}
	default:
		st = sessionStatus{
			Status:  "Failure",
			Reason:  "InternalError",
			Message: fmt.Sprintf("Internal error occurred: %v", err),
			Code:    http.StatusInternalServerError,
		}
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}
