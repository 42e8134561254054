package logfile

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 10, 4, 5, 0, time.UTC)

// clock is a Config.Now that moves one millisecond per call, or not at
// all when step is zero.
type clock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func newClock() *clock { return &clock{t: t0, step: time.Millisecond} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func logPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "c", "0.log")
}

func openWriter(t testing.TB, cfg Config) *Writer {
	t.Helper()
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func write(t testing.TB, w *Writer, s Stream, data string) {
	t.Helper()
	if _, err := w.WriteStream(s, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

// readLog is Read into a string.
func readLog(t *testing.T, path string, opts ReadOptions) string {
	t.Helper()
	var out bytes.Buffer
	if err := Read(context.Background(), path, opts, &out); err != nil {
		t.Fatalf("Read(%+v): %v", opts, err)
	}
	return out.String()
}

func fileText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// records strips the timestamps of a log file's records.
func records(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.SplitAfter(fileText(t, path), "\n") {
		if l == "" {
			continue
		}
		_, rest, _ := strings.Cut(l, " ")
		out = append(out, rest)
	}
	return out
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

// syncBuffer is a writer a test reads while Read writes it; it counts
// flushes and keeps what was written up to the last one.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	flushed string
	flushes int
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushed = b.buf.String()
	b.flushes++
}

func (b *syncBuffer) Flushed() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushed
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
