package container

import (
	"context"
	"io"
	"net/http"
	"time"
)

// Runtime runs containers on this node. See the package doc for the error
// and concurrency contract.
type Runtime interface {
	// ImportImage reads an OCI image archive or a docker-save tarball,
	// stores and unpacks every image in it and returns them. Images are named
	// from the archive's annotations (io.containerd.image.name, else a fully
	// qualified org.opencontainers.image.ref.name); an image with no usable
	// name is named by its manifest digest ("sha256:...").
	ImportImage(ctx context.Context, r io.Reader) ([]Image, error)
	// ListImages returns every image the runtime holds.
	ListImages(ctx context.Context) ([]Image, error)
	// GetImage returns the image called ref (normalized with NormalizeRef,
	// so "busybox" finds docker.io/library/busybox:latest); ErrNotFound when
	// absent.
	GetImage(ctx context.Context, ref string) (Image, error)
	// PullImage makes the image called ref (normalized like GetImage)
	// present and unpacked, and returns it like GetImage. An image already
	// present is returned at once, without network. Otherwise each mirror
	// of opts is asked in order, then (with opts.Registry) the registry
	// named in ref; the first that has the image serves it, and its blobs
	// come from it or, should it fail, from the other sources that were
	// reachable. Concurrent pulls of one ref share one download.
	//
	// The error wraps ErrNotFound when no source has the image and at
	// least one answered that it does not (sources that could not be
	// reached are named in the message), or when there is nowhere to look;
	// it does not when no source could be reached at all (a transport
	// failure: retry later). ErrInvalid for a malformed ref or mirror.
	PullImage(ctx context.Context, ref string, opts PullOptions) (Image, error)

	// CreateContainer creates a container that is not started.
	// ErrAlreadyExists if the ID is taken, ErrNotFound if the image is
	// absent, ErrInvalid if the spec fails Validate.
	CreateContainer(ctx context.Context, spec ContainerSpec) error
	// StartContainer starts a created or exited container (an exited one
	// runs again on the same root filesystem, appending to the same log).
	// Starting a running container is success.
	StartContainer(ctx context.Context, id string) error
	// StopContainer sends the image's stop signal (SIGTERM by default),
	// waits up to grace for the main process to exit, then SIGKILLs it and
	// waits for the exit. Stopping a container that is not running is
	// success.
	StopContainer(ctx context.Context, id string, grace time.Duration) error
	// RemoveContainer kills the container if it still runs (no grace: Stop
	// first for that) and deletes it with its root filesystem and cgroups.
	// Removing a container that does not exist is success.
	RemoveContainer(ctx context.Context, id string) error
	// Status reports one container; ErrNotFound when absent.
	Status(ctx context.Context, id string) (ContainerStatus, error)
	// List reports every container of this runtime, running or not, so an
	// agent restarted with the runtime still up can adopt them.
	List(ctx context.Context) ([]ContainerStatus, error)
	// Exec runs a process in a running container, wired to the streams of
	// spec, and returns its exit code once it has exited and its output is
	// copied. ErrNotRunning if the container is not running. Cancelling ctx
	// kills the process.
	Exec(ctx context.Context, id string, spec ExecSpec) (exitCode int, err error)
	// AttachStdin opens the stdin of running container id, created with
	// ContainerSpec.Stdin, for writing: what is written reaches the main
	// process in order. Several writers may be open at once. Closing one
	// does not close the process's stdin, except for a StdinOnce container,
	// whose stdin the first close ends for good. Writes fail once the
	// process is gone (the first of them may still be taken). ErrNotRunning if the container is not running,
	// ErrInvalid if it has no stdin or its stdin is closed (StdinOnce
	// spent), ErrNotFound if it does not exist. Like Exec, it takes no
	// per-container lock; the writer may be used until it is closed.
	AttachStdin(ctx context.Context, id string) (io.WriteCloser, error)
	// ResizeTTY sets the terminal size of running container id, created
	// with ContainerSpec.TTY. ErrNotRunning if the container is not
	// running, ErrInvalid if it has no terminal, ErrNotFound if it does not
	// exist.
	ResizeTTY(ctx context.Context, id string, size Size) error
	// Exits delivers an Exit each time a container's main process exits.
	Exits() <-chan Exit
}

// Image is an image the runtime holds.
type Image struct {
	Ref          string // normalized name, e.g. docker.io/library/busybox:latest
	Digest       string // digest of the manifest (or index) the name points at
	ConfigDigest string // digest of the image config: Kubernetes' imageID
	Size         int64  // bytes of content (compressed layers, config, manifest)
	Config       ImageConfig
}

// PullOptions says where PullImage looks for an image.
type PullOptions struct {
	// Mirrors are peers serving the OCI distribution API (read-only is
	// enough), asked in order before the image's own registry.
	Mirrors []Mirror
	// Registry also asks the registry named in the ref (over https, with
	// anonymous token auth) when no mirror has the image.
	Registry bool
	// Refresh (imagePullPolicy: Always) asks the ref's registry, with
	// Registry set, what the ref names now even when an image by that name
	// is present, and pulls from the registry when that differs from the
	// local copy. Peers are not asked: each serves whatever it was given
	// under a tag, and only the registry says which is current. When the
	// registry cannot answer, the local copy stands.
	Refresh bool
	// Credentials, when set, answers the registry's challenge for host
	// (user name and password or token) with what the pod's
	// imagePullSecrets hold for it; empty strings mean none. Peers never
	// need them.
	Credentials func(host string) (user, secret string, err error)
	// Progress, when set, is called once per blob (manifest, config,
	// layer) downloaded, never concurrently. It must not block.
	Progress func(PullProgress)
}

// Mirror is a peer serving images over https, typically another node's
// RegistryHandler.
type Mirror struct {
	// Host is the peer's host:port; requests go to https://Host/v2/...
	Host string
	// Client makes the requests: it carries the mTLS configuration
	// (client certificate, cluster CA). nil means http.DefaultClient.
	Client *http.Client
}

// PullProgress reports one blob downloaded by PullImage.
type PullProgress struct {
	Ref     string // the normalized ref being pulled
	Source  string // where the ref was found: a mirror's Host or the registry's host
	Digest  string // the blob
	Size    int64  // its size in bytes
	Fetched int64  // bytes received so far by this pull, this blob included
}

// ImageConfig is the part of an image's config that decides how its
// containers run.
type ImageConfig struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
	StopSignal string
	Labels     map[string]string
}

// State is a container's lifecycle state.
type State int

// Container states.
const (
	StateUnknown State = iota
	StateCreated
	StateRunning
	StateExited
)

func (s State) String() string {
	switch s {
	case StateCreated:
		return "Created"
	case StateRunning:
		return "Running"
	case StateExited:
		return "Exited"
	}
	return "Unknown"
}

// ContainerStatus is a point-in-time report on one container.
type ContainerStatus struct {
	ID          string
	State       State
	Pid         int // main process in the host PID namespace; 0 unless Running
	ExitCode    int // valid when State is Exited; 128+signal for a killed process
	CreatedAt   time.Time
	StartedAt   time.Time // zero until first started
	FinishedAt  time.Time // zero unless Exited
	OOMKilled   bool      // the last run ended with the kernel OOM killer
	Image       string    // the normalized image ref the container was created from
	ImageDigest string    // the image's ConfigDigest at creation
	LogPath     string
	Labels      map[string]string
}

// Exit reports that a container's main process exited.
type Exit struct {
	ID        string
	ExitCode  int
	At        time.Time
	OOMKilled bool
}

// ExecSpec describes a process to run in a running container. It runs as
// the container's user, with its capabilities and environment.
type ExecSpec struct {
	Cmd        []string
	Env        []string // added to (and overriding) the container's environment
	WorkingDir string   // "" keeps the container's
	// Stdin, when set, is copied to the process; its EOF closes the
	// process's stdin. Exec does not wait for Stdin to end: a reader that
	// blocks holds one goroutine until it returns, so close it after Exec.
	Stdin io.Reader
	// Stdout and Stderr may be nil (output discarded) or the same writer
	// (writes are then serialized).
	Stdout io.Writer
	Stderr io.Writer // unused with TTY: the terminal merges it into Stdout
	TTY    bool
	Resize <-chan Size // terminal size changes; only with TTY
}

// Size is a terminal size in character cells.
type Size struct {
	Width, Height uint16
}
