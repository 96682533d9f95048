package container

import "github.com/containerd/errdefs"

var (
	errNotFound           = errdefs.ErrNotFound
	errInvalidArgument    = errdefs.ErrInvalidArgument
	errFailedPrecondition = errdefs.ErrFailedPrecondition
)
