package containerd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	ctd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"

	"github.com/shoal-dev/shoal/node/container"
)

// ioDrainTimeout bounds how long Exec waits, after the process exited, for
// output still held open by processes it left behind.
const ioDrainTimeout = 2 * time.Second

// Exec implements container.Runtime.
func (r *Runtime) Exec(ctx context.Context, id string, es container.ExecSpec) (int, error) {
	if err := container.CheckID(id); err != nil {
		return -1, err
	}
	if len(es.Cmd) == 0 {
		return -1, fmt.Errorf("exec in %s: no command: %w", id, container.ErrInvalid)
	}
	ctx = r.ns(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return -1, wrapErr(err, "exec in %s", id)
	}
	proc, err := r.process(ctx, id)
	if err != nil {
		return -1, wrapErr(err, "exec in %s", id)
	}
	if proc == nil || !alive(proc) {
		return -1, fmt.Errorf("exec in %s: %w", id, container.ErrNotRunning)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return -1, wrapErr(err, "exec in %s", id)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return -1, wrapErr(err, "exec in %s", id)
	}
	pspec := *spec.Process
	pspec.Args = slices.Clone(es.Cmd)
	pspec.Env = mergeEnv(pspec.Env, es.Env)
	pspec.Terminal = es.TTY
	if es.WorkingDir != "" {
		pspec.Cwd = es.WorkingDir
	}

	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	stdin := &stdinCloser{ctx: cctx, ready: make(chan ctd.Process, 1)}
	defer close(stdin.ready)
	var in io.Reader
	if es.Stdin != nil {
		stdin.r = es.Stdin
		in = stdin
	}
	// The shim wants every stream it is given a FIFO for: discard what the
	// caller does not want rather than leave a path empty.
	out, errw := es.Stdout, es.Stderr
	if out == nil {
		out = io.Discard
	}
	if errw == nil {
		errw = io.Discard
	}
	if out == errw {
		// One writer for both: serialize the two copiers, and hide
		// io.ReaderFrom (a bytes.Buffer read into concurrently loses data).
		w := &lockedWriter{w: out}
		out, errw = w, w
	}
	opts := []cio.Opt{cio.WithStreams(in, out, errw)}
	if r.cfg.FIFODir != "" {
		opts = append(opts, cio.WithFIFODir(r.cfg.FIFODir))
	}
	if es.TTY {
		opts = append(opts, cio.WithTerminal)
	}
	p, err := task.Exec(ctx, newExecID(), &pspec, cio.NewCreator(opts...))
	if err != nil {
		return -1, wrapErr(err, "exec in %s", id)
	}
	defer func() {
		if _, err := p.Delete(cctx, ctd.WithProcessKill); err != nil && !isNotFound(err) {
			r.cfg.logf("containerd: deleting exec %s in %s: %v", p.ID(), id, err)
		}
	}()
	statusC, err := p.Wait(cctx)
	if err != nil {
		return -1, wrapErr(err, "exec in %s", id)
	}
	if err := p.Start(ctx); err != nil {
		return -1, wrapErr(err, "exec in %s", id)
	}
	stdin.ready <- p
	if es.TTY && es.Resize != nil {
		stop := make(chan struct{})
		defer close(stop)
		go resizeLoop(cctx, p, es.Resize, stop)
	}
	select {
	case st := <-statusC:
		code, _, err := st.Result()
		if err != nil {
			return -1, wrapErr(err, "exec in %s", id)
		}
		drainIO(p.IO())
		return int(code), nil
	case <-ctx.Done():
		_ = p.Kill(cctx, syscall.SIGKILL)
		<-statusC
		return -1, ctx.Err()
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// stdinCloser closes the process's stdin once the caller's reader is
// exhausted, so `cat` and friends see EOF.
type stdinCloser struct {
	r     io.Reader
	ready chan ctd.Process // receives the process once started; closed by Exec
	ctx   context.Context
	once  sync.Once
}

func (s *stdinCloser) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if errors.Is(err, io.EOF) {
		s.once.Do(func() {
			go func() {
				proc, ok := <-s.ready
				if ok {
					_ = proc.CloseIO(s.ctx, ctd.WithStdinCloser)
				}
			}()
		})
	}
	return n, err
}

func resizeLoop(ctx context.Context, p ctd.Process, sizes <-chan container.Size, stop <-chan struct{}) {
	for {
		select {
		case sz, ok := <-sizes:
			if !ok {
				return
			}
			_ = p.Resize(ctx, uint32(sz.Width), uint32(sz.Height))
		case <-stop:
			return
		}
	}
}

// drainIO waits for the output copiers to reach EOF, but not forever: a
// background process may hold the pipes open.
func drainIO(io cio.IO) {
	if io == nil {
		return
	}
	done := make(chan struct{})
	go func() { io.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(ioDrainTimeout):
	}
}

// mergeEnv returns base with each NAME=value of extra replacing NAME.
func mergeEnv(base, extra []string) []string {
	out := slices.Clone(base)
	for _, e := range extra {
		name, _, _ := strings.Cut(e, "=")
		i := slices.IndexFunc(out, func(x string) bool { n, _, _ := strings.Cut(x, "="); return n == name })
		if i >= 0 {
			out[i] = e
		} else {
			out = append(out, e)
		}
	}
	return out
}

func newExecID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "exec-" + hex.EncodeToString(b[:])
}
