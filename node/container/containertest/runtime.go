package containertest

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/node/container"
)

// ImportImage reads the archive like the real runtime (see import.go).
func (f *Fake) ImportImage(ctx context.Context, r io.Reader) ([]container.Image, error) {
	f.mu.Lock()
	err := f.beginLocked(OpImportImage, "", 0)
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	imgs, err := readArchive(r)
	if err != nil {
		return nil, fmt.Errorf("importing image: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, img := range imgs {
		f.images[img.Ref] = cloneImage(img)
	}
	return imgs, nil
}

// ListImages implements container.Runtime.
func (f *Fake) ListImages(ctx context.Context) ([]container.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.beginLocked(OpListImages, "", 0); err != nil {
		return nil, err
	}
	return sortedImages(f.images), nil
}

// GetImage implements container.Runtime.
func (f *Fake) GetImage(ctx context.Context, ref string) (container.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.beginLocked(OpGetImage, ref, 0); err != nil {
		return container.Image{}, err
	}
	name, err := container.NormalizeRef(ref)
	if err != nil {
		return container.Image{}, err
	}
	img, ok := f.images[name]
	if !ok {
		return container.Image{}, fmt.Errorf("image %s: %w", name, container.ErrNotFound)
	}
	return cloneImage(img), nil
}

// CreateContainer implements container.Runtime.
func (f *Fake) CreateContainer(ctx context.Context, spec container.ContainerSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.beginLocked(OpCreate, spec.ID, 0); err != nil {
		return err
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	if _, ok := f.ctrs[spec.ID]; ok {
		return fmt.Errorf("creating container %s: %w", spec.ID, container.ErrAlreadyExists)
	}
	name, _ := container.NormalizeRef(spec.Image)
	img, ok := f.images[name]
	if !ok {
		return fmt.Errorf("creating container %s: image %s: %w", spec.ID, name, container.ErrNotFound)
	}
	spec = cloneSpec(spec)
	f.ctrs[spec.ID] = &fakeContainer{
		spec: spec,
		status: container.ContainerStatus{
			ID: spec.ID, State: container.StateCreated, CreatedAt: f.now(), Image: name,
			ImageDigest: img.ConfigDigest, LogPath: spec.LogPath, Labels: maps.Clone(spec.Labels),
		},
	}
	return nil
}

// StartContainer implements container.Runtime.
func (f *Fake) StartContainer(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.containerLocked(OpStart, id, 0)
	if err != nil {
		return err
	}
	if c.status.State == container.StateRunning {
		return nil
	}
	f.nextPid++
	c.status.State, c.status.Pid, c.status.StartedAt = container.StateRunning, f.nextPid, f.now()
	c.stdin, c.stdinClosed, c.resizes = nil, false, nil // a fresh stdin and terminal per run
	c.status.ExitCode, c.status.FinishedAt, c.status.OOMKilled = 0, time.Time{}, false
	return nil
}

// StopContainer implements container.Runtime: by the container's
// StopBehaviour, without waiting.
func (f *Fake) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.containerLocked(OpStop, id, grace)
	if err != nil {
		return err
	}
	if c.status.State != container.StateRunning {
		return nil
	}
	code := 137
	if !c.stop.IgnoreTerm && grace > 0 {
		code = c.stop.ExitCode
		if code == 0 {
			code = 143
		}
	}
	f.exitLocked(c, code, false)
	return nil
}

// RemoveContainer implements container.Runtime.
func (f *Fake) RemoveContainer(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.beginLocked(OpRemove, id, 0); err != nil {
		return err
	}
	if err := container.CheckID(id); err != nil {
		return err
	}
	c, ok := f.ctrs[id]
	if !ok {
		return nil
	}
	if c.status.State == container.StateRunning {
		f.exitLocked(c, 137, false)
	}
	delete(f.ctrs, id)
	return nil
}

// Status implements container.Runtime.
func (f *Fake) Status(ctx context.Context, id string) (container.ContainerStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.containerLocked(OpStatus, id, 0)
	if err != nil {
		return container.ContainerStatus{}, err
	}
	return cloneStatus(c.status), nil
}

// List implements container.Runtime.
func (f *Fake) List(ctx context.Context) ([]container.ContainerStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.beginLocked(OpList, "", 0); err != nil {
		return nil, err
	}
	out := make([]container.ContainerStatus, 0, len(f.ctrs))
	for _, c := range f.ctrs {
		out = append(out, cloneStatus(c.status))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Exec implements container.Runtime through the ExecHandler.
func (f *Fake) Exec(ctx context.Context, id string, spec container.ExecSpec) (int, error) {
	f.mu.Lock()
	c, err := f.containerLocked(OpExec, id, 0)
	if err == nil && len(spec.Cmd) == 0 {
		err = fmt.Errorf("exec in %s: no command: %w", id, container.ErrInvalid)
	}
	if err == nil && c.status.State != container.StateRunning {
		err = fmt.Errorf("exec in %s: %w", id, container.ErrNotRunning)
	}
	h := f.exec
	f.mu.Unlock()
	if err != nil {
		return -1, err
	}
	if h == nil {
		return 0, nil
	}
	return h(ctx, id, spec)
}

// AttachStdin implements container.Runtime: the writer appends to what
// Stdin returns, and fails (io.ErrClosedPipe) once the run it attached to
// is over.
func (f *Fake) AttachStdin(ctx context.Context, id string) (io.WriteCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.containerLocked(OpAttachStdin, id, 0)
	switch {
	case err != nil:
		return nil, err
	case !c.spec.Stdin:
		return nil, fmt.Errorf("attaching to the stdin of %s: it was created without stdin: %w", id, container.ErrInvalid)
	case c.status.State != container.StateRunning:
		return nil, fmt.Errorf("attaching to the stdin of %s: %w", id, container.ErrNotRunning)
	case c.stdinClosed:
		return nil, fmt.Errorf("attaching to the stdin of %s: its stdin is closed: %w", id, container.ErrInvalid)
	}
	return &fakeStdin{f: f, c: c, pid: c.status.Pid}, nil
}

// fakeStdin is a writer AttachStdin returned, attached to one run (pid).
type fakeStdin struct {
	f      *Fake
	c      *fakeContainer
	pid    int
	closed bool // guarded by f.mu
}

func (w *fakeStdin) Write(p []byte) (int, error) {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	if w.closed {
		return 0, os.ErrClosed
	}
	if w.f.ctrs[w.c.spec.ID] != w.c || w.c.status.State != container.StateRunning || w.c.status.Pid != w.pid {
		return 0, io.ErrClosedPipe
	}
	w.c.stdin = append(w.c.stdin, p...)
	return len(p), nil
}

// Close ends the container's stdin if it is StdinOnce.
func (w *fakeStdin) Close() error {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.c.spec.StdinOnce && w.c.status.Pid == w.pid {
		w.c.stdinClosed = true
	}
	return nil
}

// ResizeTTY implements container.Runtime: Resizes returns the sizes.
func (f *Fake) ResizeTTY(ctx context.Context, id string, size container.Size) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.containerLocked(OpResizeTTY, id, 0)
	switch {
	case err != nil:
		return err
	case !c.spec.TTY:
		return fmt.Errorf("resizing the terminal of %s: it has none: %w", id, container.ErrInvalid)
	case c.status.State != container.StateRunning:
		return fmt.Errorf("resizing the terminal of %s: %w", id, container.ErrNotRunning)
	}
	c.resizes = append(c.resizes, size)
	return nil
}

// Exits implements container.Runtime.
func (f *Fake) Exits() <-chan container.Exit { return f.exits.C() }

// containerLocked records the call, applies faults, checks the ID and
// finds the container.
func (f *Fake) containerLocked(op Op, id string, grace time.Duration) (*fakeContainer, error) {
	if err := f.beginLocked(op, id, grace); err != nil {
		return nil, err
	}
	if err := container.CheckID(id); err != nil {
		return nil, err
	}
	c, ok := f.ctrs[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, container.ErrNotFound)
	}
	return c, nil
}

// PullImage implements container.Runtime over the sources scripted with
// AddRemoteImage and SetSourceDown: mirrors in order, then the ref's
// registry host when opts.Registry. It fails like the real runtime.
func (f *Fake) PullImage(ctx context.Context, ref string, opts container.PullOptions) (container.Image, error) {
	f.mu.Lock()
	img, progress, err := f.pullLocked(ctx, ref, opts)
	f.mu.Unlock()
	if err != nil {
		return container.Image{}, err
	}
	if progress != nil {
		progress()
	}
	return img, nil
}

// pullLocked does PullImage's work; the returned func reports progress
// once the lock is released.
func (f *Fake) pullLocked(ctx context.Context, ref string, opts container.PullOptions) (container.Image, func(), error) {
	err := f.beginLocked(OpPullImage, ref, 0)
	f.calls[len(f.calls)-1].Refresh = opts.Refresh
	if opts.Credentials != nil {
		host, _, _ := strings.Cut(ref, "/")
		if u, sec, err := opts.Credentials(host); err == nil && (u != "" || sec != "") {
			f.calls[len(f.calls)-1].Auth = u + ":" + sec
		}
	}
	if err != nil {
		return container.Image{}, nil, err
	}
	name, err := container.NormalizeRef(ref)
	if err != nil {
		return container.Image{}, nil, err
	}
	if img, ok := f.images[name]; ok {
		return cloneImage(img), nil, nil
	}
	type source struct{ kind, host string }
	var sources []source
	for _, m := range opts.Mirrors {
		if _, port, err := net.SplitHostPort(m.Host); err != nil || port == "" || strings.ContainsAny(m.Host, "/?#@ ") {
			return container.Image{}, nil, fmt.Errorf("pulling image %s: mirror host %q: want host:port: %w", name, m.Host, container.ErrInvalid)
		}
		sources = append(sources, source{"mirror", m.Host})
	}
	if _, err := digest.Parse(name); err == nil {
		return container.Image{}, nil, fmt.Errorf("image %s is not present, and a bare digest names no repository to pull from: %w", name, container.ErrNotFound)
	}
	registry := ""
	if named, err := reference.ParseNormalizedNamed(name); err == nil {
		registry = reference.Domain(named)
	}
	if opts.Registry && registry != "" {
		sources = append(sources, source{"registry", registry})
	}
	if len(sources) == 0 {
		return container.Image{}, nil, fmt.Errorf("image %s is not present, and there is nowhere to pull it from (no mirror, registry not asked): %w", name, container.ErrNotFound)
	}
	var tried []string
	answered := false
	for _, s := range sources {
		if err := ctx.Err(); err != nil {
			return container.Image{}, nil, fmt.Errorf("pulling image %s: %w", name, err)
		}
		if f.down[s.host] {
			tried = append(tried, s.kind+" "+s.host+": unreachable (down)")
			continue
		}
		answered = true
		img, ok := f.remote[s.host][name]
		if !ok {
			tried = append(tried, s.kind+" "+s.host+": not found")
			continue
		}
		f.images[name] = cloneImage(img)
		var progress func()
		if opts.Progress != nil {
			p := container.PullProgress{Ref: name, Source: s.host, Digest: img.Digest, Size: img.Size, Fetched: img.Size}
			progress = func() { opts.Progress(p) }
		}
		return cloneImage(img), progress, nil
	}
	if !opts.Registry && registry != "" {
		tried = append(tried, "registry "+registry+": not asked")
	}
	where := strings.Join(tried, "; ")
	if !answered {
		return container.Image{}, nil, fmt.Errorf("pulling image %s: no mirror or registry could be reached (%s)", name, where)
	}
	return container.Image{}, nil, &notFoundError{fmt.Sprintf("image %s: no mirror or registry has it (%s)", name, where)}
}

// notFoundError wraps ErrNotFound with a message of its own, like the real
// runtime's pull errors.
type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }
func (e *notFoundError) Unwrap() error { return container.ErrNotFound }
