package containerd

import (
	"fmt"

	"github.com/containerd/containerd/errdefs"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/node/container"
)

// opError is a containerd failure classified for callers: errors.Is finds
// both the container sentinel (kind) and the containerd error (cause).
type opError struct {
	op    string
	kind  error // a container sentinel, or nil
	cause error
}

func (e *opError) Error() string { return e.op + ": " + e.cause.Error() }

func (e *opError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.cause}
	}
	return []error{e.kind, e.cause}
}

// wrapErr classifies err (gRPC or containerd errdefs) under op, e.g.
// "starting container x". nil stays nil.
func wrapErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	err = fromGRPC(err)
	e := &opError{op: fmt.Sprintf(format, args...), cause: err}
	switch {
	case errdefs.IsNotFound(err):
		e.kind = container.ErrNotFound
	case errdefs.IsAlreadyExists(err):
		e.kind = container.ErrAlreadyExists
	case errdefs.IsInvalidArgument(err):
		e.kind = container.ErrInvalid
	}
	return e
}

// isNotFound reports a containerd (or gRPC) not-found error.
func isNotFound(err error) bool { return errdefs.IsNotFound(fromGRPC(err)) }

// isAlreadyExists reports a containerd (or gRPC) already-exists error.
func isAlreadyExists(err error) bool { return errdefs.IsAlreadyExists(fromGRPC(err)) }

// fromGRPC converts a raw gRPC status error (from the services called
// directly) to containerd's errdefs; errors the client already converted
// pass through (converting them again would make them "unknown").
func fromGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return errdefs.FromGRPC(err)
	}
	return err
}
