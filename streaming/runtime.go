package streaming

import (
	"context"
	"log/slog"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/sandbox"
)

// Containers is what streaming needs of the container manager
// (container.Manager).
type Containers interface {
	// Get resolves an ID or unique ID prefix; unknown is ErrNotFound.
	Get(id string) (*container.Container, error)
	// Exec runs a process in a running container and returns its exit
	// code; ExecSync goes through the same call.
	Exec(ctx context.Context, id string, o container.ExecOptions) (int, error)
}

// Pods looks up pod sandboxes (sandbox.Manager).
type Pods interface {
	// Get resolves an ID or unique ID prefix; unknown is ErrNotFound.
	Get(id string) (*sandbox.Pod, error)
}

// runtime implements cri-streaming's Runtime over berth's containers and
// pods: the library speaks the protocols and calls these with the client's
// streams.
type runtime struct {
	containers Containers
	pods       Pods
	log        *slog.Logger
}
