package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/defaults"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/logfile"
)

// A container with stdin or a terminal runs with FIFO IO: binary IO has
// no stdin, and a terminal's output needs a reader the shim does not
// start. Each run gets a fresh set of FIFOs in the container's stdio
// directory, a fixed path so that a restarted agent finds it:
//
//	<FIFODir>/stdio/<namespace>/<id>/
//		stdout, stderr   the task's output (no stderr with a terminal)
//		stdin            the task's stdin (with stdin only)
//		stdin-closed     made when a StdinOnce stdin is spent
//		logger.log       the logger's own error output
//
// Before it creates the task, StartContainer starts the logging binary in
// FIFO mode (logfile.FIFOLogger: "LogBinary LogBinaryArgs[0] fifo ..."),
// detached: in a session of its own, so that it outlives the agent, and
// reaped by a goroutine while the agent lives. The shim waits for the
// logger to open the output FIFOs while it creates the task. The logger
// writes the log as binary IO's logger does and exits when the shim closes
// the output FIFOs (the container's output has ended).
//
// The shim itself holds the stdin FIFO open for writing from the task's
// creation until CloseIO, so the container sees no end of file when an
// attached writer goes, nor when the agent or the daemon dies. AttachStdin
// opens the FIFO for writing; closing the first writer of a StdinOnce
// container writes the stdin-closed marker and calls CloseIO: once the
// other writers are gone, the shim sees the end and closes the container's
// stdin.
const (
	stdioSubdir     = "stdio"
	fifoStdin       = "stdin"
	fifoStdout      = "stdout"
	fifoStderr      = "stderr"
	stdinClosedFile = "stdin-closed"
	loggerLogFile   = "logger.log"
)

// stdio is how a container's standard streams are set up, from its labels.
type stdio struct {
	stdin, stdinOnce, tty bool
}

func stdioOf(labels map[string]string) stdio {
	return stdio{
		stdin:     labels[labelStdin] == "true",
		stdinOnce: labels[labelStdin] == "true" && labels[labelStdinOnce] == "true",
		tty:       labels[labelTTY] == "true",
	}
}

// fifos reports whether the container runs with FIFO IO.
func (s stdio) fifos() bool { return s.stdin || s.tty }

// stdioLabels records a spec's streams in the container's labels.
func stdioLabels(spec container.ContainerSpec, labels map[string]string) {
	if spec.Stdin {
		labels[labelStdin] = "true"
		if spec.StdinOnce {
			labels[labelStdinOnce] = "true"
		}
	}
	if spec.TTY {
		labels[labelTTY] = "true"
	}
}

// stdioDir is the directory of container id's FIFOs.
func (r *Runtime) stdioDir(id string) string {
	root := r.cfg.FIFODir
	if root == "" {
		root = defaults.DefaultFIFODir
	}
	return filepath.Join(root, stdioSubdir, r.cfg.Namespace, id)
}

// fifoSet is one run's FIFOs; a path is "" when the run has no such
// stream.
type fifoSet struct {
	dir                   string
	stdin, stdout, stderr string
	tty                   bool
}

// creator hands the FIFOs to the task. The FIFOs are the runtime's, not
// the task's: nothing is closed or removed with it.
func (s fifoSet) creator() cio.Creator {
	return func(string) (cio.IO, error) {
		return cio.Load(cio.NewFIFOSet(cio.Config{Stdin: s.stdin, Stdout: s.stdout, Stderr: s.stderr, Terminal: s.tty}, nil))
	}
}

// prepareFIFOs makes a fresh set of FIFOs for a run of container id.
// Callers hold the container's lock, and the previous run's task is gone.
func (r *Runtime) prepareFIFOs(id string, st stdio) (fifoSet, error) {
	dir := r.stdioDir(id)
	if err := r.removeFIFOs(id); err != nil {
		return fifoSet{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fifoSet{}, fmt.Errorf("making the stdio FIFOs: %w", err)
	}
	set := fifoSet{dir: dir, stdout: filepath.Join(dir, fifoStdout), tty: st.tty}
	if !st.tty {
		set.stderr = filepath.Join(dir, fifoStderr)
	}
	if st.stdin {
		set.stdin = filepath.Join(dir, fifoStdin)
	}
	for _, p := range []string{set.stdout, set.stderr, set.stdin} {
		if p == "" {
			continue
		}
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			return fifoSet{}, fmt.Errorf("making the stdio FIFOs: mkfifo %s: %w", p, err)
		}
	}
	return set, nil
}

// removeFIFOs deletes container id's FIFO directory. A logger of an
// earlier run that is still waiting for its output FIFOs to open (its task
// was never created) is woken first: it finds them closed and exits.
// Callers hold the container's lock, and its task is gone.
func (r *Runtime) removeFIFOs(id string) error {
	dir := r.stdioDir(id)
	for _, name := range []string{fifoStdout, fifoStderr} {
		// Succeeds only if a reader is there; no task writes any more.
		if f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing the stdio FIFOs: %w", err)
	}
	return nil
}

// loggerProc is a FIFO-mode logger the runtime started.
type loggerProc struct {
	proc   *os.Process
	exited chan struct{} // closed once it has exited and been reaped
}

// startLogger starts the logging binary in FIFO mode for set, writing
// logPath ("" drops the output), detached from this process.
func (r *Runtime) startLogger(id string, set fifoSet, logPath string) (*loggerProc, error) {
	if r.cfg.LogBinary == "" {
		return nil, fmt.Errorf("stdin and tty need a logging binary (Config.LogBinary): %w", container.ErrInvalid)
	}
	l := logfile.FIFOLogger{Stdout: set.stdout, Stderr: set.stderr}
	if logPath != "" {
		l.Log = &logfile.Config{Path: logPath, MaxSize: r.cfg.LogMaxSize, MaxFiles: r.cfg.LogMaxFiles}
	}
	args, err := l.Args()
	if err != nil {
		return nil, err
	}
	errLog, err := os.OpenFile(filepath.Join(set.dir, loggerLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("starting the logger: %w", err)
	}
	defer errLog.Close()
	cmd := exec.Command(r.cfg.LogBinary, append([]string{r.cfg.LogBinaryArgs[0]}, args...)...)
	cmd.Dir = "/"
	cmd.Env = []string{"CONTAINER_ID=" + id, "CONTAINER_NAMESPACE=" + r.cfg.Namespace}
	cmd.Stderr = errLog
	// A session of its own: no signal meant for the agent's process group
	// or terminal reaches it, and it is not the agent's to stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the logger: %w", err)
	}
	lp := &loggerProc{proc: cmd.Process, exited: make(chan struct{})}
	// Reaped here while this process lives; by init once it is gone.
	go func() {
		_ = cmd.Wait()
		close(lp.exited)
	}()
	return lp, nil
}

// kill stops a logger whose task could not be created, and waits for it.
func (l *loggerProc) kill() {
	_ = l.proc.Kill()
	<-l.exited
}

// untilExit is ctx, cancelled too if the logger exits first: creating the
// task waits for the logger to open the FIFOs, which a logger that failed
// never will.
func (l *loggerProc) untilExit(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-l.exited:
			cancel(errLoggerExited)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
}

var errLoggerExited = errors.New("the container's logger exited before the task was created")

// AttachStdin implements container.Runtime.
func (r *Runtime) AttachStdin(ctx context.Context, id string) (io.WriteCloser, error) {
	if err := container.CheckID(id); err != nil {
		return nil, err
	}
	ctx = r.ns(ctx)
	rec, err := r.client.ContainerService().Get(ctx, id)
	if err != nil {
		return nil, wrapErr(err, "attaching to the stdin of %s", id)
	}
	st := stdioOf(rec.Labels)
	if !st.stdin {
		return nil, fmt.Errorf("attaching to the stdin of %s: it was created without stdin: %w", id, container.ErrInvalid)
	}
	proc, err := r.process(ctx, id)
	if err != nil {
		return nil, wrapErr(err, "attaching to the stdin of %s", id)
	}
	if proc == nil || !alive(proc) {
		return nil, fmt.Errorf("attaching to the stdin of %s: %w", id, container.ErrNotRunning)
	}
	dir := r.stdioDir(id)
	closed := fmt.Errorf("attaching to the stdin of %s: its stdin is closed: %w", id, container.ErrInvalid)
	if _, err := os.Stat(filepath.Join(dir, stdinClosedFile)); err == nil {
		return nil, closed
	}
	// Without waiting: ENXIO says that nobody reads the FIFO any more, the
	// shim having seen its end.
	f, err := os.OpenFile(filepath.Join(dir, fifoStdin), os.O_WRONLY|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, syscall.ENXIO):
		return nil, closed
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("attaching to the stdin of %s: its run has no stdin FIFO: %w", id, container.ErrInvalid)
	case err != nil:
		return nil, fmt.Errorf("attaching to the stdin of %s: %w", id, err)
	}
	return &stdinWriter{f: f, r: r, id: id, once: st.stdinOnce}, nil
}

// stdinWriter is a writer AttachStdin returned.
type stdinWriter struct {
	f         *os.File
	r         *Runtime
	id        string
	once      bool // the container is StdinOnce: Close ends its stdin
	closeOnce sync.Once
	err       error
}

func (w *stdinWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

// Close closes the writer; for a StdinOnce container it also closes the
// shim's hold on the stdin FIFO, and reports a failure to.
func (w *stdinWriter) Close() error {
	w.closeOnce.Do(func() {
		w.err = w.f.Close()
		if !w.once {
			return
		}
		// The marker first: no later AttachStdin gets a writer, even
		// before the shim has seen the end.
		dir := w.r.stdioDir(w.id)
		if err := os.WriteFile(filepath.Join(dir, stdinClosedFile), nil, 0o600); err != nil {
			w.r.cfg.logf("containerd: marking the stdin of %s closed: %v", w.id, err)
		}
		ctx, cancel := context.WithTimeout(w.r.ns(context.Background()), 10*time.Second)
		defer cancel()
		_, err := w.r.client.TaskService().CloseIO(ctx, &tasks.CloseIORequest{ContainerID: w.id, Stdin: true})
		if err != nil && !isNotFound(err) { // a task gone has no stdin left
			w.err = errors.Join(w.err, wrapErr(err, "closing the stdin of %s", w.id))
		}
	})
	return w.err
}

// ResizeTTY implements container.Runtime.
func (r *Runtime) ResizeTTY(ctx context.Context, id string, size container.Size) error {
	if err := container.CheckID(id); err != nil {
		return err
	}
	ctx = r.ns(ctx)
	rec, err := r.client.ContainerService().Get(ctx, id)
	if err != nil {
		return wrapErr(err, "resizing the terminal of %s", id)
	}
	if !stdioOf(rec.Labels).tty {
		return fmt.Errorf("resizing the terminal of %s: it has none: %w", id, container.ErrInvalid)
	}
	proc, err := r.process(ctx, id)
	if err != nil {
		return wrapErr(err, "resizing the terminal of %s", id)
	}
	if proc == nil || !alive(proc) {
		return fmt.Errorf("resizing the terminal of %s: %w", id, container.ErrNotRunning)
	}
	_, err = r.client.TaskService().ResizePty(ctx, &tasks.ResizePtyRequest{ContainerID: id, Width: uint32(size.Width), Height: uint32(size.Height)})
	if isNotFound(err) {
		return fmt.Errorf("resizing the terminal of %s: %w", id, container.ErrNotRunning)
	}
	return wrapErr(err, "resizing the terminal of %s", id)
}
