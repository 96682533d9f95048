package streaming

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/berth-runtime/berth/sandbox"
)

// dialTimeout bounds connecting to the pod's port; a connection inside one
// host never needs long, and a client should hear about a dead port soon.
const dialTimeout = 10 * time.Second

// PortForward connects the stream to a TCP port of the pod: inside the
// pod's network namespace, on its loopback, so the port need not be
// published or bound beyond localhost; or on the host for a pod with host
// networking. Bytes pass unchanged both ways. Each client connection is a
// call of its own, so several run at once.
func (r *runtime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %d is outside 1-65535: %w", port, errdefs.ErrInvalidArgument)
	}
	pod, err := r.pods.Get(podID)
	if err != nil {
		return err
	}
	if pod.State != sandbox.StateReady {
		return fmt.Errorf("port-forward to pod %s: it is %s, not ready: %w", pod.ID, pod.State, errdefs.ErrFailedPrecondition)
	}
	conn, err := dialPod(ctx, pod, int(port))
	if err != nil {
		return fmt.Errorf("port-forward to pod %s: %w", pod.ID, err)
	}
	defer conn.Close()
	r.log.Debug("port-forward connected", "pod", pod.ID, "port", port)
	splice(stream, conn)
	return nil
}

// dialPod connects to the port on the pod's loopback, IPv4 first. The
// socket is made inside the pod's network namespace and stays there after
// the thread leaves it.
func dialPod(ctx context.Context, pod *sandbox.Pod, port int) (*net.TCPConn, error) {
	var conn net.Conn
	dial := func() error {
		var errs []error
		d := net.Dialer{Timeout: dialTimeout}
		for _, host := range []string{"127.0.0.1", "::1"} {
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err == nil {
				conn = c
				return nil
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	var err error
	where := "on the host (host network)"
	switch {
	case pod.HostNetwork:
		err = dial()
	case pod.NetNS == "":
		return nil, fmt.Errorf("pod has no network namespace: %w", errdefs.ErrFailedPrecondition)
	default:
		where = "in network namespace " + pod.NetNS
		err = ns.WithNetNSPath(pod.NetNS, func(ns.NetNS) error { return dial() })
	}
	if err != nil {
		return nil, fmt.Errorf("connect to port %d %s: %w", port, where, err)
	}
	return conn.(*net.TCPConn), nil
}

// splice copies both ways until the pod's side ends. The client's end of
// input becomes a half-close toward the pod, so a request-response protocol
// still gets its response. When the pod is done the call returns at once:
// the client waits for that (kubectl reads the error stream) before it
// closes its own side, so waiting for the client here would deadlock.
func splice(stream io.ReadWriteCloser, conn *net.TCPConn) {
	go func() {
		if _, err := io.Copy(conn, stream); err != nil {
			// The client is gone: nothing more will reach the pod.
			conn.Close()
			return
		}
		_ = conn.CloseWrite()
	}()
	_, _ = io.Copy(stream, conn)
}
