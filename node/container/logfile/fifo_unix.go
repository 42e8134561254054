//go:build unix

package logfile

import (
	"context"
	"io"
	"os"
	"sync"
)

// RunFIFOLogger is the body of the logging process in FIFO mode (see
// FIFOLogger). It returns once the output FIFOs have reached end of file
// (or drainTimeout after ctx ends, as RunLogger), with the log closed.
// Like RunLogger it never stops reading early: a log it cannot open or
// write is reported in the returned error while the output is dropped.
func RunFIFOLogger(ctx context.Context, l FIFOLogger) error {
	if err := l.Validate(); err != nil {
		return err
	}
	var errs []error
	var w *Writer
	if l.Log != nil {
		var err error
		if w, err = Open(*l.Log); err != nil {
			errs = append(errs, err)
			w = nil
		}
	}
	stdout := &fifoReader{path: l.Stdout}
	defer stdout.Close()
	var stderr io.Reader
	if l.Stderr != "" {
		r := &fifoReader{path: l.Stderr}
		defer r.Close()
		stderr = r
	}
	return copyToLog(ctx, w, errs, stdout, stderr)
}

// fifoReader opens a FIFO for reading on its first Read, which waits for a
// writer (the shim): end of file then means that the writer closed it.
// The two streams' FIFOs are opened by their own copiers, so the logger
// takes them in whatever order the shim opens them. Read is called by one
// goroutine at a time.
type fifoReader struct {
	path string

	mu     sync.Mutex
	f      *os.File // guarded by mu; nil until opened
	err    error    // guarded by mu: the open's failure
	closed bool     // guarded by mu
}

func (r *fifoReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	f, err := r.f, r.err
	r.mu.Unlock()
	if f == nil && err == nil {
		// Not under mu: the open waits for a writer, and Close must not.
		f, err = os.OpenFile(r.path, os.O_RDONLY, 0)
		r.mu.Lock()
		if err == nil && r.closed {
			f.Close()
			err = os.ErrClosed
		}
		r.f, r.err = f, err
		r.mu.Unlock()
	}
	if err != nil {
		return 0, err
	}
	return f.Read(p)
}

func (r *fifoReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.f == nil || r.err != nil {
		return nil
	}
	return r.f.Close()
}
