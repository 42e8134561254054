package container

import "errors"

// Sentinel errors. Implementations wrap them ("container %s: %w"); test with
// errors.Is.
var (
	// ErrNotFound: the image or container does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a container with that ID exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalid: the request can never succeed as written (bad ID, bad
	// spec, unknown capability). Retrying it is pointless.
	ErrInvalid = errors.New("invalid")
	// ErrNotRunning: the container exists but is not running.
	ErrNotRunning = errors.New("not running")
)
