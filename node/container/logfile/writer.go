package logfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Defaults for zero Config fields. They are kubelet's (containerLogMaxSize,
// containerLogMaxFiles) and containerd CRI's (max_container_log_line_size).
const (
	DefaultMaxSize      = 10 << 20
	DefaultMaxFiles     = 5
	DefaultMaxLine      = 16 << 10
	DefaultPartialFlush = 100 * time.Millisecond
)

// flushAt bounds the records a Writer builds before writing them.
const flushAt = 256 << 10

// Config configures a Writer. Zero fields take the defaults above. It is
// also the logging process's argument (see LoggerArg), hence the JSON tags.
type Config struct {
	// Path is the current log file, absolute. Rotated files sit beside it.
	Path string `json:"path"`
	// MaxSize is the size at which the current file is rotated: a file
	// never outgrows it, except one holding a single larger record.
	MaxSize int64 `json:"maxSize,omitempty"`
	// MaxFiles is the number of files kept, the current one included.
	MaxFiles int `json:"maxFiles,omitempty"`
	// MaxLine is the most content one record holds; longer lines are
	// split into P records of MaxLine bytes.
	MaxLine int `json:"maxLine,omitempty"`
	// PartialFlush is how long the start of a line waits in memory for its
	// newline before it is written as a P record; negative waits for
	// MaxLine bytes or Close.
	PartialFlush time.Duration `json:"partialFlush,omitempty"`
	// Now stamps records; nil is time.Now.
	Now func() time.Time `json:"-"`
}

// DefaultConfig is a Config for path with every default spelled out.
func DefaultConfig(path string) Config {
	return Config{Path: path}.withDefaults()
}

func (c Config) withDefaults() Config {
	if c.MaxSize == 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.MaxFiles == 0 {
		c.MaxFiles = DefaultMaxFiles
	}
	if c.MaxLine == 0 {
		c.MaxLine = DefaultMaxLine
	}
	if c.PartialFlush == 0 {
		c.PartialFlush = DefaultPartialFlush
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports a config Open cannot use (zero fields count as their
// defaults).
func (c Config) Validate() error {
	if c.Path == "" || !filepath.IsAbs(c.Path) {
		return fmt.Errorf("logfile: path %q is not absolute", c.Path)
	}
	if c.MaxSize < 0 || c.MaxFiles < 0 || c.MaxLine < 0 {
		return fmt.Errorf("logfile: negative limit (max size %d, max files %d, max line %d)", c.MaxSize, c.MaxFiles, c.MaxLine)
	}
	if c.MaxLine > maxRecord/2 {
		return fmt.Errorf("logfile: max line %d is over %d", c.MaxLine, maxRecord/2) // readers skip longer records
	}
	return nil
}

// Writer appends the output of one container run to a log file in the CRI
// format, rotating it by size. It is safe for concurrent use; each stream's
// bytes are written in the order its Write calls return.
type Writer struct {
	cfg Config

	mu          sync.Mutex
	f           *os.File       // the current file; nil once closed
	size        int64          // bytes in f
	torn        bool           // a write to f stopped mid-record: the next one starts with a newline
	lastRotated time.Time      // time in the name of the newest rotated file
	pending     [2][]byte      // per stream: the start of a line not written yet, shorter than MaxLine
	timers      [2]*time.Timer // per stream: writes pending after PartialFlush; nil when not armed
	timerGen    [2]uint64      // per stream: the armed timer's generation
	buf         []byte         // records built but not written yet
	err         error          // first failure since the last report
}

// Open opens (creating it and its directory) the current file of cfg.Path
// for appending. A file that ends in the middle of a record, left by a
// writer that died, is continued on a new line.
func Open(cfg Config) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o755); err != nil {
		return nil, fmt.Errorf("logfile: %w", err)
	}
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("logfile: %w", err)
	}
	_ = lockFile(f) // held by another writer (not supported) or no flock: write anyway
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("logfile: %w", err)
	}
	w := &Writer{cfg: cfg, f: f, size: st.Size()}
	if w.size > 0 {
		var last [1]byte
		if _, err := f.ReadAt(last[:], w.size-1); err == nil && last[0] != '\n' {
			w.torn = true
		}
		w.endLinesLocked()
	}
	if names, err := listRotated(cfg.Path); err == nil && len(names) > 0 {
		w.lastRotated, _ = rotatedTime(cfg.Path, names[len(names)-1])
	}
	return w, nil
}

// endLinesLocked ends, with an empty F record, the lines an earlier run
// left unfinished (its last record of a stream is P) in the file it
// appends to: this run's output must not join them. It looks back 1 MiB.
func (w *Writer) endLinesLocked() {
	var (
		seen, open [2]bool
		budget     = 1 << 20
	)
	_ = scanBackward(w.f, w.size, func(line []byte, _ int64) bool {
		if budget -= len(line) + 1; budget < 0 {
			return false
		}
		if rec, ok := parseRecord(line); ok {
			if k := rec.stream.index(); !seen[k] {
				seen[k], open[k] = true, rec.partial
			}
		}
		return !seen[0] || !seen[1]
	})
	for k, s := range streams {
		if open[k] {
			w.emitLocked(w.cfg.Now(), s, false, nil, nil)
		}
	}
	w.writeLocked()
}

// Stdout is an io.Writer for the stdout stream.
func (w *Writer) Stdout() io.Writer { return streamWriter{w, Stdout} }

// Stderr is an io.Writer for the stderr stream.
func (w *Writer) Stderr() io.Writer { return streamWriter{w, Stderr} }

type streamWriter struct {
	w *Writer
	s Stream
}

func (sw streamWriter) Write(p []byte) (int, error) { return sw.w.WriteStream(sw.s, p) }

// WriteStream logs p, the next bytes of stream s: complete lines at once, an
// unfinished line after PartialFlush. It takes all of p even when it
// reports an error (a failed write or rotation, here or in an earlier
// deferred write): the bytes that could not be written are dropped, and the
// Writer goes on with the next ones.
func (w *Writer) WriteStream(s Stream, p []byte) (int, error) {
	i := s.index()
	if i < 0 {
		return 0, fmt.Errorf("logfile: unknown stream %q", s)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, fs.ErrClosed
	}
	n := len(p)
	ts := w.cfg.Now()
	for len(p) > 0 {
		nl := bytes.IndexByte(p, '\n')
		if nl < 0 {
			w.pending[i] = append(w.pending[i], p...)
			break
		}
		w.lineLocked(ts, s, w.pending[i], p[:nl])
		w.pending[i] = w.pending[i][:0]
		p = p[nl+1:]
	}
	limit := w.cfg.MaxLine
	for len(w.pending[i]) >= limit {
		w.emitLocked(ts, s, true, w.pending[i][:limit], nil)
		w.pending[i] = w.pending[i][:copy(w.pending[i], w.pending[i][limit:])]
	}
	switch {
	case len(w.pending[i]) == 0 && w.timers[i] != nil:
		w.timers[i].Stop()
		w.timers[i] = nil
	case len(w.pending[i]) > 0 && w.timers[i] == nil && w.cfg.PartialFlush > 0:
		w.timerGen[i]++
		gen := w.timerGen[i]
		w.timers[i] = time.AfterFunc(w.cfg.PartialFlush, func() { w.flushPartial(i, gen) })
	}
	w.writeLocked()
	return n, w.takeErrLocked()
}

// flushPartial writes the unfinished line of stream i as a P record.
func (w *Writer) flushPartial(i int, gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil || gen != w.timerGen[i] {
		return // closed, or a newer timer is armed
	}
	w.timers[i] = nil
	if len(w.pending[i]) == 0 {
		return
	}
	w.emitLocked(w.cfg.Now(), streams[i], true, w.pending[i], nil)
	w.pending[i] = w.pending[i][:0]
	w.writeLocked() // a failure is reported by the next Write or Close
}

// Close writes the unfinished lines as P records and closes the file. It
// is idempotent.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	ts := w.cfg.Now()
	for i, s := range streams {
		if w.timers[i] != nil {
			w.timers[i].Stop()
			w.timers[i] = nil
		}
		w.timerGen[i]++
		if len(w.pending[i]) > 0 {
			w.emitLocked(ts, s, true, w.pending[i], nil)
			w.pending[i] = nil
		}
	}
	w.writeLocked()
	err := w.takeErrLocked()
	if cerr := w.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("logfile: %w", cerr)
	}
	w.f = nil
	return err
}

// lineLocked emits the line head+tail (head shorter than MaxLine), split
// into P chunks of MaxLine bytes when it is longer.
func (w *Writer) lineLocked(ts time.Time, s Stream, head, tail []byte) {
	limit := w.cfg.MaxLine
	if len(head)+len(tail) > limit {
		k := limit - len(head)
		w.emitLocked(ts, s, true, head, tail[:k])
		head, tail = nil, tail[k:]
		for len(tail) > limit {
			w.emitLocked(ts, s, true, tail[:limit], nil)
			tail = tail[limit:]
		}
	}
	w.emitLocked(ts, s, false, head, tail)
}

// emitLocked adds a record to the batch, rotating first if the record
// would take the current file past MaxSize.
func (w *Writer) emitLocked(ts time.Time, s Stream, partial bool, head, tail []byte) {
	start := len(w.buf)
	w.buf = appendRecord(w.buf, ts, s, partial, head, tail)
	if w.size+int64(len(w.buf)) > w.cfg.MaxSize && w.size+int64(start) > 0 {
		rec := w.buf[start:]
		w.buf = w.buf[:start]
		w.writeLocked()
		w.rotateLocked()
		w.buf = append(w.buf[:0], rec...) // rec sits past len(w.buf): not overwritten before the copy
		return
	}
	if len(w.buf) >= flushAt {
		w.writeLocked()
	}
}

// writeLocked writes the batch to the current file.
func (w *Writer) writeLocked() {
	b := w.buf
	w.buf = w.buf[:0]
	if len(b) == 0 {
		return
	}
	if w.torn {
		if _, err := w.f.Write([]byte{'\n'}); err != nil {
			w.noteErrLocked(err)
			return
		}
		w.size++
		w.torn = false
	}
	n, err := w.f.Write(b)
	w.size += int64(n)
	if err != nil {
		w.torn = n > 0 && b[n-1] != '\n'
		w.noteErrLocked(err)
	}
}

// rotateLocked makes a new current file and keeps the old one under a
// rotated name, so that the path always names a complete, locked file.
// On failure the current file stays, to be rotated after another MaxSize.
func (w *Writer) rotateLocked() {
	path := w.cfg.Path
	tmp := path + tmpSuffix
	nf, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		w.size = 0
		w.noteErrLocked(fmt.Errorf("rotating: %w", err))
		return
	}
	_ = lockFile(nf)
	t := w.cfg.Now().UTC()
	if !t.After(w.lastRotated) {
		t = w.lastRotated.Add(time.Nanosecond) // names must sort in rotation order
	}
	for tries := 0; ; tries++ {
		err = os.Link(path, rotatedName(path, t))
		if !errors.Is(err, fs.ErrExist) || tries == 100 {
			break
		}
		t = t.Add(time.Nanosecond)
	}
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
		// Linked, or the current file was deleted under us: nothing to keep.
	case errors.Is(err, fs.ErrExist):
	default:
		// No hard links on this file system: rename, leaving no current
		// file for a moment.
		err = os.Rename(path, rotatedName(path, t))
	}
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		nf.Close()
		os.Remove(tmp)
		w.size = 0
		w.noteErrLocked(fmt.Errorf("rotating: %w", err))
		return
	}
	w.lastRotated = t
	old := w.f
	w.f, w.size, w.torn = nf, 0, false
	old.Close()
	names, err := listRotated(path)
	if err != nil {
		w.noteErrLocked(err)
	}
	for len(names) > w.cfg.MaxFiles-1 {
		if err := os.Remove(names[0]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.noteErrLocked(err)
		}
		names = names[1:]
	}
}

func (w *Writer) noteErrLocked(err error) {
	if w.err == nil {
		w.err = fmt.Errorf("logfile %s: %w", w.cfg.Path, err)
	}
}

func (w *Writer) takeErrLocked() error {
	err := w.err
	w.err = nil
	return err
}
