package logfile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// DefaultSettle is ReadOptions.Settle when it is zero.
const DefaultSettle = 500 * time.Millisecond

// TimestampFormat is the layout of the timestamps Read writes with
// ReadOptions.Timestamps: kubelet's, RFC 3339 with fixed-width nanoseconds.
const TimestampFormat = "2006-01-02T15:04:05.000000000Z07:00"

const (
	maxRecord = 1 << 20 // longer lines are not records: skipped
	maxJoin   = 1 << 20 // a line joined from P chunks is written out past this
)

// A follower polls the log, doubling its wait from pollMin while the log is
// quiet, up to pollMax; with an inotify watch on the log's directory (see
// watchDir) events wake it at once and the poll is a safety net that backs
// off to pollMaxWatched. Variables for the tests.
var (
	pollMin        = 10 * time.Millisecond
	pollMax        = 200 * time.Millisecond
	pollMaxWatched = 2 * time.Second
)

// ReadOptions select and shape what Read writes; the zero value writes the
// whole log once.
type ReadOptions struct {
	// Follow keeps reading as the log grows and rotates, until ctx ends or
	// Done closes.
	Follow bool
	// TailLines, when set, starts at the last TailLines lines of the log
	// (of the selected Stream); 0 starts at the end.
	TailLines *int64
	// Since skips lines stamped before it (a line's time is its first
	// chunk's).
	Since time.Time
	// Timestamps starts each line with its time, in TimestampFormat, and a
	// space.
	Timestamps bool
	// LimitBytes, when set, ends Read once it has written that many bytes.
	LimitBytes *int64
	// Stream, when set, reads only stdout or only stderr.
	Stream Stream
	// Done, when closed (the container has exited), ends a Follow: Read
	// writes what the logger still writes, then returns nil. The logger
	// is known to be finished when it no longer holds the log (see Active:
	// it lets go when the shim deletes the task, or when it dies); while it
	// still does, Read returns once nothing new has come for Settle since
	// Done closed, time enough for a logger to write what the container
	// left in its pipes.
	Done <-chan struct{}
	// Settle is that quiet time; 0 is DefaultSettle.
	Settle time.Duration
	// Chunks writes each record as soon as it is read, without waiting for
	// the rest of its line: a line's P chunks go out one by one, its F
	// record with the newline, as an attached terminal shows a prompt
	// before its line is done. Since then applies to each record, and
	// Timestamps to a line's first record.
	Chunks bool
}

// Read writes the log at path (rotated files oldest first, then the
// current one) to w as Kubernetes shows container logs: each line's
// content, with its newline (a last line that has none is written without
// one), behind its time with Timestamps. Chunks of one line, written as P
// records, are joined first, per stream. Lines that are not records are
// skipped.
//
// With Follow, Read goes on reading as the log grows, across rotations,
// until ctx ends (it returns ctx's error) or the container is done (see
// ReadOptions.Done). w is flushed (a Flush() or Flush() error method, such
// as http.Flusher's) each time Read has caught up with the log and before
// it returns, so a follower never waits on lines held in a buffer.
//
// A log with no file at all is an error that wraps fs.ErrNotExist.
func Read(ctx context.Context, path string, opts ReadOptions, w io.Writer) error {
	if opts.Stream != "" && opts.Stream.index() < 0 {
		return fmt.Errorf("logfile: unknown stream %q", opts.Stream)
	}
	files, err := openSnapshot(path)
	if err != nil {
		return fmt.Errorf("reading log %s: %w", path, err)
	}
	defer func() {
		for _, lf := range files {
			if lf != nil {
				lf.f.Close()
			}
		}
	}()
	r := &reader{ctx: ctx, path: path, opts: opts, out: output{w: w, timestamps: opts.Timestamps, left: -1}}
	if opts.LimitBytes != nil {
		r.out.left = max(*opts.LimitBytes, 0)
		if r.out.left == 0 {
			return nil
		}
	}
	if opts.TailLines != nil {
		if r.plan, err = planTail(files, *opts.TailLines, opts.Stream); err != nil {
			return fmt.Errorf("reading log %s: %w", path, err)
		}
	}
	err = r.run(ctx, files)
	if errors.Is(err, errLimit) {
		err = r.out.flush()
	} else if err != nil && ctx.Err() == nil {
		err = fmt.Errorf("reading log %s: %w", path, err)
	}
	return err
}

// logFile is an open file of a log.
type logFile struct {
	f  *os.File
	fi os.FileInfo
}

// openSnapshot opens the files of the log at path, oldest first. The
// current file is opened first: a rotation meanwhile is found later by
// nextFile.
func openSnapshot(path string) ([]*logFile, error) {
	var cur *logFile
	if f, err := os.Open(path); err == nil {
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		cur = &logFile{f, fi}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	names, err := listRotatedStable(path)
	if err != nil {
		if cur != nil {
			cur.f.Close()
		}
		return nil, err
	}
	var files []*logFile
	for _, name := range names {
		lf, err := openLogFile(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // pruned meanwhile
		} else if err != nil {
			for _, lf := range append(files, cur) {
				if lf != nil {
					lf.f.Close()
				}
			}
			return nil, err
		}
		if cur != nil && os.SameFile(lf.fi, cur.fi) {
			lf.f.Close() // the current file, rotated meanwhile: the rest came after it
			break
		}
		files = append(files, lf)
	}
	if cur != nil {
		files = append(files, cur)
	}
	if len(files) == 0 {
		return nil, fs.ErrNotExist
	}
	return files, nil
}

func openLogFile(name string) (*logFile, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &logFile{f, fi}, nil
}

// nextFile opens the file written after cur, or returns nil while cur is
// still the current file.
func nextFile(path string, cur os.FileInfo) (*logFile, error) {
	if fi, err := os.Stat(path); err == nil && os.SameFile(fi, cur) {
		return nil, nil
	}
	lf, err := openRotatedAfter(path, cur)
	if lf != nil || err != nil {
		return lf, err
	}
	// cur is the newest rotated file: next is the current one, unless a
	// rotation came between the listing and the open.
	lf, err = openLogFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	if os.SameFile(lf.fi, cur) {
		lf.f.Close() // linked under its rotated name, not yet replaced
		return nil, nil
	}
	rot, err := openRotatedAfter(path, cur)
	if rot == nil || err != nil {
		return lf, err
	}
	lf.f.Close()
	return rot, nil
}

// openRotatedAfter opens the first rotated file of path written after cur
// (if cur is not among them, rotated and pruned, the oldest), or returns
// nil.
func openRotatedAfter(path string, cur os.FileInfo) (*logFile, error) {
	names, err := listRotatedStable(path)
	if err != nil {
		return nil, err
	}
	after := names
	for i := len(names) - 1; i >= 0; i-- {
		if fi, err := os.Stat(names[i]); err == nil && os.SameFile(fi, cur) {
			after = names[i+1:]
			break
		}
	}
	for _, name := range after {
		lf, err := openLogFile(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // pruned meanwhile
		}
		return lf, err
	}
	return nil, nil
}

// reader is the state of one Read.
type reader struct {
	ctx   context.Context
	path  string
	opts  ReadOptions
	plan  tailPlan // where to start
	out   output
	lines [2]joining // per stream: the line being joined from P chunks
}

// joining is a line whose chunks are being joined.
type joining struct {
	open      bool
	ts        time.Time
	skip      bool // before Since: dropped chunk by chunk
	streaming bool // too long to hold: its start is written, the rest follows as it comes
	buf       []byte
}

// run reads the files from the plan's start, then follows the last.
func (r *reader) run(ctx context.Context, files []*logFile) error {
	for i := r.plan.start.file; i < len(files); i++ {
		lf := files[i]
		var off int64
		if i == r.plan.start.file && r.plan.start.off > 0 {
			off = r.plan.start.off
			if _, err := lf.f.Seek(off, io.SeekStart); err != nil {
				return err
			}
		}
		lr := newLineReader(lf.f, off)
		if i < len(files)-1 {
			if _, err := r.drain(lr, i); err != nil {
				return err
			}
			lf.f.Close()
			files[i] = nil
			continue
		}
		files[i] = nil // follow owns it now
		return r.follow(ctx, lf, lr, i)
	}
	return nil
}

// follow reads the live file cur, file number seq, and those after it.
func (r *reader) follow(ctx context.Context, cur *logFile, lr *lineReader, seq int) error {
	defer func() { cur.f.Close() }()
	settle := r.opts.Settle
	if settle <= 0 {
		settle = DefaultSettle
	}
	done := r.opts.Done
	doneSeen := false
	var quietSince time.Time
	changed, stopWatch := watchDir(filepath.Dir(r.path))
	defer stopWatch()
	maxPoll := pollMax
	if changed != nil {
		maxPoll = pollMaxWatched
	}
	poll := pollMin
	timer := time.NewTimer(poll)
	defer timer.Stop()
	for {
		// Whether the writer is gone is known before the last reads, so
		// they see everything it wrote.
		finished := false
		if doneSeen {
			active, err := Active(r.path)
			finished = err == nil && !active
		}
		read := 0
		for {
			n, err := r.drain(lr, seq)
			read += n
			if err != nil {
				return err
			}
			next, err := nextFile(r.path, cur.fi)
			if err != nil {
				return err
			} else if next == nil {
				break
			}
			n, err = r.drain(lr, seq) // written before the rotation
			read += n
			if err != nil {
				next.f.Close()
				return err
			}
			cur.f.Close()
			cur, lr, seq = next, newLineReader(next.f, 0), seq+1
		}
		if !r.opts.Follow || finished {
			break
		}
		now := time.Now()
		if read > 0 {
			poll = pollMin
			quietSince = now
		}
		if doneSeen && now.Sub(quietSince) >= settle {
			break
		}
		if err := r.out.flush(); err != nil {
			return err
		}
		timer.Reset(poll)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			doneSeen, done, quietSince, poll = true, nil, time.Now(), pollMin
		case <-changed:
			poll = pollMin
		case <-timer.C:
			limit := maxPoll
			if doneSeen {
				limit = pollMax // the end is found by polling (Active, Settle)
			}
			poll = min(2*poll, limit)
		}
	}
	return r.finish()
}

// drain handles the complete lines lr (on file number seq) has now and
// reports how many.
func (r *reader) drain(lr *lineReader, seq int) (int, error) {
	n := 0
	for {
		line, at, err := lr.next()
		if err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, err
		}
		if n++; n%4096 == 0 && r.ctx.Err() != nil {
			return n, r.ctx.Err() // a long history for a reader that left
		}
		rec, ok := parseRecord(line)
		if ok && !(pos{seq, at}).before(r.plan.skip[rec.stream.index()]) {
			if err := r.handle(rec); err != nil {
				return n, err
			}
		}
	}
}

// handle writes a record's line once it is whole.
func (r *reader) handle(rec record) error {
	if r.opts.Stream != "" && rec.stream != r.opts.Stream {
		return nil
	}
	j := &r.lines[rec.stream.index()]
	if r.opts.Chunks {
		return r.handleChunk(j, rec)
	}
	if !j.open {
		if !rec.partial { // a line in one record, the common case
			if rec.ts.Before(r.opts.Since) {
				return nil
			}
			return r.out.line(rec.ts, rec.content, true)
		}
		*j = joining{open: true, ts: rec.ts, skip: rec.ts.Before(r.opts.Since), buf: j.buf[:0]}
	}
	switch {
	case j.skip:
	case j.streaming:
		if err := r.out.write(rec.content); err != nil {
			return err
		}
		if !rec.partial {
			if err := r.out.write([]byte{'\n'}); err != nil {
				return err
			}
		}
	case !rec.partial:
		j.buf = append(j.buf, rec.content...)
		if err := r.out.line(j.ts, j.buf, true); err != nil {
			return err
		}
	default:
		j.buf = append(j.buf, rec.content...)
		if len(j.buf) >= maxJoin {
			j.streaming = true
			err := r.out.line(j.ts, j.buf, false)
			j.buf = j.buf[:0]
			return err
		}
	}
	if !rec.partial {
		j.open = false
	}
	return nil
}

// handleChunk writes a record at once (ReadOptions.Chunks). j tracks
// whether its stream is in the middle of a line, already written: finish
// leaves such a line alone.
func (r *reader) handleChunk(j *joining, rec record) error {
	if rec.ts.Before(r.opts.Since) {
		return nil
	}
	if !j.open && r.opts.Timestamps {
		b := rec.ts.AppendFormat(r.out.scratch[:0], TimestampFormat)
		r.out.scratch = append(b, ' ')
		if err := r.out.write(r.out.scratch); err != nil {
			return err
		}
	}
	if err := r.out.write(rec.content); err != nil {
		return err
	}
	if !rec.partial {
		if err := r.out.write([]byte{'\n'}); err != nil {
			return err
		}
	}
	j.open, j.streaming = rec.partial, true
	return nil
}

// finish writes the lines that never got their end, oldest first, and
// flushes.
func (r *reader) finish() error {
	var open []*joining
	for i := range r.lines {
		if j := &r.lines[i]; j.open && !j.skip {
			open = append(open, j)
		}
	}
	slices.SortStableFunc(open, func(a, b *joining) int { return a.ts.Compare(b.ts) })
	for _, j := range open {
		if !j.streaming {
			if err := r.out.line(j.ts, j.buf, false); err != nil {
				return err
			}
		}
		j.open = false
	}
	return r.out.flush()
}

var errLimit = errors.New("logfile: byte limit reached")

// output writes lines to Read's writer, within LimitBytes.
type output struct {
	w          io.Writer
	timestamps bool
	left       int64 // bytes left to write; negative for no limit
	dirty      bool  // written since the last flush
	scratch    []byte
}

func (o *output) line(ts time.Time, content []byte, newline bool) error {
	b := o.scratch[:0]
	if o.timestamps {
		b = ts.AppendFormat(b, TimestampFormat)
		b = append(b, ' ')
	}
	b = append(b, content...)
	if newline {
		b = append(b, '\n')
	}
	o.scratch = b
	return o.write(b)
}

func (o *output) write(b []byte) error {
	limited := false
	if o.left >= 0 && int64(len(b)) >= o.left {
		b, limited = b[:o.left], true
	}
	n, err := o.w.Write(b)
	o.dirty = true
	if o.left >= 0 {
		o.left -= int64(n)
	}
	if err != nil {
		return err
	}
	if limited {
		return errLimit
	}
	return nil
}

func (o *output) flush() error {
	if !o.dirty {
		return nil
	}
	o.dirty = false
	switch f := o.w.(type) {
	case interface{ Flush() }:
		f.Flush()
	case interface{ Flush() error }:
		return f.Flush()
	}
	return nil
}
