// Package containertest holds a scriptable in-memory container.Runtime for
// tests of code above the runtime port, and TestRuntime, the contract every
// Runtime (the fake and node/container/containerd) must pass.
//
// Fake keeps images and containers in memory and runs nothing: a "running"
// container is a record with a made-up pid. Tests drive it: Exit ends a
// running container, Inject makes calls fail, SetExecHandler decides what
// an Exec does, SetStopBehaviour whether a container honours SIGTERM,
// AddRemoteImage and SetSourceDown what PullImage finds on which mirror or
// registry; Stdin and Resizes show what AttachStdin's writers wrote and
// ResizeTTY set in a container's current run. It validates and fails like
// the real runtime (ErrNotFound, ErrAlreadyExists, ErrInvalid,
// ErrNotRunning; removing what is gone succeeds). It never sleeps: a Stop
// grace is recorded, not waited.
//
// Fake is safe for concurrent use; handlers it calls run without its lock.
package containertest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/internal/exitq"
)

// Op names a Runtime method, for faults and the call log.
type Op string

// Runtime methods.
const (
	OpImportImage Op = "ImportImage"
	OpListImages  Op = "ListImages"
	OpGetImage    Op = "GetImage"
	OpPullImage   Op = "PullImage"
	OpCreate      Op = "CreateContainer"
	OpStart       Op = "StartContainer"
	OpStop        Op = "StopContainer"
	OpRemove      Op = "RemoveContainer"
	OpStatus      Op = "Status"
	OpList        Op = "List"
	OpExec        Op = "Exec"
	OpAttachStdin Op = "AttachStdin"
	OpResizeTTY   Op = "ResizeTTY"
)

// Fault makes matching calls fail with Err before doing anything.
type Fault struct {
	Op    Op
	ID    string // container ID (or image ref for image ops) to match; "" matches all
	Err   error
	Times int // how many calls fail; 0 means every call until cleared
}

// Call is one recorded call.
type Call struct {
	Op      Op
	ID      string
	Grace   time.Duration // StopContainer only
	Refresh bool          // PullImage only: PullOptions.Refresh
	// Auth is "user:secret" from PullOptions.Credentials for the ref's
	// registry host (PullImage only; empty without credentials).
	Auth string
}

// StopBehaviour is how a fake container reacts to StopContainer.
type StopBehaviour struct {
	// IgnoreTerm makes the container survive SIGTERM: it is SIGKILLed after
	// the grace (exit 137). Otherwise it exits on SIGTERM with ExitCode.
	IgnoreTerm bool
	ExitCode   int // 143 (128+SIGTERM) when 0
}

// ExecHandler runs an Exec; the default returns 0 and writes nothing.
type ExecHandler func(ctx context.Context, id string, spec container.ExecSpec) (int, error)

// Fake is an in-memory container.Runtime.
type Fake struct {
	exits *exitq.Queue

	mu      sync.Mutex
	now     func() time.Time                      // guarded by mu
	images  map[string]container.Image            // guarded by mu; by normalized ref
	ctrs    map[string]*fakeContainer             // guarded by mu
	faults  []*Fault                              // guarded by mu
	calls   []Call                                // guarded by mu
	nextPid int                                   // guarded by mu
	exec    ExecHandler                           // guarded by mu
	remote  map[string]map[string]container.Image // guarded by mu; source → normalized ref → image
	down    map[string]bool                       // guarded by mu; sources that are unreachable
	closed  bool                                  // guarded by mu
}

type fakeContainer struct {
	spec   container.ContainerSpec
	status container.ContainerStatus
	stop   StopBehaviour
	// The current run's stdin and terminal (see Stdin and Resizes).
	stdin       []byte
	stdinClosed bool
	resizes     []container.Size
}

var _ container.Runtime = (*Fake)(nil)

// New returns an empty Fake using the wall clock.
func New() *Fake {
	return &Fake{
		exits:   exitq.New(),
		now:     time.Now,
		images:  make(map[string]container.Image),
		ctrs:    make(map[string]*fakeContainer),
		remote:  make(map[string]map[string]container.Image),
		down:    make(map[string]bool),
		nextPid: 1000,
	}
}

// Close closes Exits. Later calls still work but report no exits.
func (f *Fake) Close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.exits.Close()
}

// SetClock replaces the clock used for timestamps.
func (f *Fake) SetClock(now func() time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = now
}

// AddImage makes an image present, as if imported, and returns it.
func (f *Fake) AddImage(ref string, cfg container.ImageConfig) (container.Image, error) {
	name, err := container.NormalizeRef(ref)
	if err != nil {
		return container.Image{}, err
	}
	img := container.Image{Ref: name, Digest: fakeDigest("manifest", name), ConfigDigest: fakeDigest("config", name), Size: 1 << 20, Config: cfg}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[name] = cloneImage(img)
	return img, nil
}

// RemoveImage forgets an image.
func (f *Fake) RemoveImage(ref string) {
	name, _ := container.NormalizeRef(ref)
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.images, name)
}

// AddRemoteImage makes an image available to PullImage from source: a
// mirror's Host ("10.0.0.2:7443"), or a registry host as named in refs
// ("docker.io", "example.com") for pulls with PullOptions.Registry. The
// image gets the digests AddImage would give it.
func (f *Fake) AddRemoteImage(source, ref string, cfg container.ImageConfig) (container.Image, error) {
	name, err := container.NormalizeRef(ref)
	if err != nil {
		return container.Image{}, err
	}
	img := container.Image{Ref: name, Digest: fakeDigest("manifest", name), ConfigDigest: fakeDigest("config", name), Size: 1 << 20, Config: cfg}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.remote[source] == nil {
		f.remote[source] = make(map[string]container.Image)
	}
	f.remote[source][name] = cloneImage(img)
	return img, nil
}

// RemoveRemoteImage makes source forget an image.
func (f *Fake) RemoveRemoteImage(source, ref string) {
	name, _ := container.NormalizeRef(ref)
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.remote[source], name)
}

// SetSourceDown makes source (see AddRemoteImage) unreachable: PullImage
// gets a transport error from it, as from a peer that is down. A source
// not down and without the image answers "not found".
func (f *Fake) SetSourceDown(source string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if down {
		f.down[source] = true
	} else {
		delete(f.down, source)
	}
}

// Inject adds a fault; the returned func removes it.
func (f *Fake) Inject(ft Fault) (clear func()) {
	p := &ft
	f.mu.Lock()
	f.faults = append(f.faults, p)
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.faults = slices.DeleteFunc(f.faults, func(x *Fault) bool { return x == p })
	}
}

// SetExecHandler decides what Exec does in running containers.
func (f *Fake) SetExecHandler(h ExecHandler) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exec = h
}

// SetStopBehaviour scripts how container id reacts to StopContainer.
func (f *Fake) SetStopBehaviour(id string, b StopBehaviour) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.ctrs[id]
	if !ok {
		return fmt.Errorf("container %s: %w", id, container.ErrNotFound)
	}
	c.stop = b
	return nil
}

// Calls returns the calls made so far, in order.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Spec returns the spec container id was created with.
func (f *Fake) Spec(id string) (container.ContainerSpec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.ctrs[id]
	if !ok {
		return container.ContainerSpec{}, false
	}
	return cloneSpec(c.spec), true
}

// Stdin returns what writers from AttachStdin have written to container
// id's current run, and whether its stdin is closed (StdinOnce spent).
func (f *Fake) Stdin(id string) (data []byte, closed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.ctrs[id]
	if !ok {
		return nil, false
	}
	return slices.Clone(c.stdin), c.stdinClosed
}

// Resizes returns the terminal sizes ResizeTTY set in container id's
// current run, in order.
func (f *Fake) Resizes(id string) []container.Size {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.ctrs[id]
	if !ok {
		return nil
	}
	return slices.Clone(c.resizes)
}

// Exit ends running container id's main process with code, as if it had
// exited (or been OOM-killed) by itself, and reports it on Exits.
func (f *Fake) Exit(id string, code int, oomKilled bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.ctrs[id]
	if !ok {
		return fmt.Errorf("container %s: %w", id, container.ErrNotFound)
	}
	if c.status.State != container.StateRunning {
		return fmt.Errorf("container %s: %w", id, container.ErrNotRunning)
	}
	f.exitLocked(c, code, oomKilled)
	return nil
}

// exitLocked moves a running container to Exited and reports it.
func (f *Fake) exitLocked(c *fakeContainer, code int, oom bool) {
	now := f.now()
	c.status.State, c.status.Pid, c.status.ExitCode = container.StateExited, 0, code
	c.status.FinishedAt, c.status.OOMKilled = now, oom
	if !f.closed {
		f.exits.Push(container.Exit{ID: c.spec.ID, ExitCode: code, At: now, OOMKilled: oom})
	}
}

// beginLocked records a call and returns the error of a matching fault.
func (f *Fake) beginLocked(op Op, id string, grace time.Duration) error {
	f.calls = append(f.calls, Call{Op: op, ID: id, Grace: grace})
	for i, ft := range f.faults {
		if ft.Op != op || (ft.ID != "" && ft.ID != id) {
			continue
		}
		if ft.Times > 0 {
			ft.Times--
			if ft.Times == 0 {
				f.faults = slices.Delete(f.faults, i, i+1)
			}
		}
		return fmt.Errorf("%s %s: %w", op, id, ft.Err)
	}
	return nil
}

func fakeDigest(kind, name string) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(kind+"\x00"+name)))
}

func cloneImage(img container.Image) container.Image {
	c := img.Config
	img.Config = container.ImageConfig{
		Entrypoint: slices.Clone(c.Entrypoint), Cmd: slices.Clone(c.Cmd), Env: slices.Clone(c.Env),
		WorkingDir: c.WorkingDir, User: c.User, StopSignal: c.StopSignal, Labels: maps.Clone(c.Labels),
	}
	return img
}

func cloneSpec(s container.ContainerSpec) container.ContainerSpec {
	s.Command, s.Args, s.Env = slices.Clone(s.Command), slices.Clone(s.Args), slices.Clone(s.Env)
	s.Mounts = slices.Clone(s.Mounts)
	s.Labels = maps.Clone(s.Labels)
	s.Security.CapAdd, s.Security.CapDrop = slices.Clone(s.Security.CapAdd), slices.Clone(s.Security.CapDrop)
	return s
}

func cloneStatus(s container.ContainerStatus) container.ContainerStatus {
	s.Labels = maps.Clone(s.Labels)
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	return s
}

func sortedImages(m map[string]container.Image) []container.Image {
	out := make([]container.Image, 0, len(m))
	for _, img := range m {
		out = append(out, cloneImage(img))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out
}
