package streaming

import (
	"context"
	"fmt"
	"io"

	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/berth-runtime/berth/container"
)

// Exec runs cmd in the container with the client's streams, through the
// same container.Manager.Exec as ExecSync, so both see the same process
// environment, user, namespaces and cgroup.
//
// A non-zero exit is returned as a utilexec.ExitError, unwrapped: the
// library finds it with a type assertion (remotecommand/exec.go) and only
// then sends the code to the client; any other error reaches the client as
// an internal error without a code.
func (r *runtime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	done := make(chan struct{})
	defer close(done)
	o := container.ExecOptions{Cmd: cmd, TTY: tty, Resize: forwardResize(resize, done)}
	// Streams the client did not ask for are nil interfaces here, and must
	// stay nil in the options: the manager skips a nil stream.
	if in != nil {
		o.Stdin = in
	}
	if out != nil {
		o.Stdout = out
	}
	if errOut != nil {
		o.Stderr = errOut
	}
	code, err := r.containers.Exec(ctx, id, o)
	if err != nil {
		r.log.Debug("streaming exec failed", "container", id, "cmd", cmd, "error", err)
		return err
	}
	r.log.Debug("streaming exec finished", "container", id, "cmd", cmd, "exit_code", code, "tty", tty)
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command %q in container %s exited with %d", cmd, id, code), Code: code}
	}
	return nil
}

// forwardResize turns the library's terminal sizes into the container
// manager's until done is closed, then closes its channel so that whoever
// ranges over it stops. A nil input (no terminal) gives a nil channel.
func forwardResize(in <-chan remotecommand.TerminalSize, done <-chan struct{}) <-chan container.TermSize {
	if in == nil {
		return nil
	}
	out := make(chan container.TermSize)
	go func() {
		defer close(out)
		for {
			select {
			case <-done:
				return
			case sz, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- container.TermSize{Width: sz.Width, Height: sz.Height}:
				case <-done:
					return
				}
			}
		}
	}()
	return out
}
