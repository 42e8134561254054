package logfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// rec is a record stamped i seconds after t0.
func rec(i int, s Stream, tag, content string) string {
	return fmt.Sprintf("%s %s %s %s\n", t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano), s, tag, content)
}

func writeRaw(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadOptions(t *testing.T) {
	path := logPath(t)
	writeRaw(t, path,
		rec(0, Stdout, "F", "one"),
		rec(1, Stderr, "F", "e-one"),
		rec(2, Stdout, "P", "tw"),
		rec(3, Stderr, "F", "e-two"),
		rec(4, Stdout, "F", "o"),
		rec(5, Stdout, "F", "three"),
		rec(6, Stderr, "P", "e-unfin"),
		rec(7, Stderr, "P", "ished"),
	)
	ts := func(i int) string { return t0.Add(time.Duration(i)*time.Second).Format(TimestampFormat) + " " }
	for _, tc := range []struct {
		name string
		opts ReadOptions
		want string
	}{
		{"all", ReadOptions{}, "one\ne-one\ne-two\ntwo\nthree\ne-unfinished"},
		{"stdout", ReadOptions{Stream: Stdout}, "one\ntwo\nthree\n"},
		{"stderr", ReadOptions{Stream: Stderr}, "e-one\ne-two\ne-unfinished"},
		{"timestamps", ReadOptions{Stream: Stdout, Timestamps: true}, ts(0) + "one\n" + ts(2) + "two\n" + ts(5) + "three\n"},
		{"since a line's first chunk", ReadOptions{Since: t0.Add(2 * time.Second)}, "e-two\ntwo\nthree\ne-unfinished"},
		{"since after it", ReadOptions{Since: t0.Add(3 * time.Second)}, "e-two\nthree\ne-unfinished"},
		{"since the end", ReadOptions{Since: t0.Add(time.Hour)}, ""},
		{"tail 0", ReadOptions{TailLines: ptr[int64](0)}, ""},
		{"tail 1", ReadOptions{TailLines: ptr[int64](1)}, "e-unfinished"},
		{"tail 2", ReadOptions{TailLines: ptr[int64](2)}, "three\ne-unfinished"},
		{"tail 3 joins a line begun before", ReadOptions{TailLines: ptr[int64](3)}, "two\nthree\ne-unfinished"},
		{"tail 4", ReadOptions{TailLines: ptr[int64](4)}, "e-two\ntwo\nthree\ne-unfinished"},
		{"tail 5", ReadOptions{TailLines: ptr[int64](5)}, "e-one\ne-two\ntwo\nthree\ne-unfinished"},
		{"tail 6", ReadOptions{TailLines: ptr[int64](6)}, "one\ne-one\ne-two\ntwo\nthree\ne-unfinished"},
		{"tail 100", ReadOptions{TailLines: ptr[int64](100)}, "one\ne-one\ne-two\ntwo\nthree\ne-unfinished"},
		{"tail stdout 2", ReadOptions{Stream: Stdout, TailLines: ptr[int64](2)}, "two\nthree\n"},
		{"tail stderr 1", ReadOptions{Stream: Stderr, TailLines: ptr[int64](1)}, "e-unfinished"},
		{"tail stderr 0", ReadOptions{Stream: Stderr, TailLines: ptr[int64](0)}, ""},
		{"tail and since", ReadOptions{TailLines: ptr[int64](4), Since: t0.Add(3 * time.Second)}, "e-two\nthree\ne-unfinished"},
		{"limit", ReadOptions{LimitBytes: ptr[int64](10)}, "one\ne-one\n"},
		{"limit mid-line", ReadOptions{LimitBytes: ptr[int64](6)}, "one\ne-"},
		{"limit 0", ReadOptions{LimitBytes: ptr[int64](0)}, ""},
		{"limit past the end", ReadOptions{LimitBytes: ptr[int64](1000)}, "one\ne-one\ne-two\ntwo\nthree\ne-unfinished"},
		{"limit with timestamps", ReadOptions{Timestamps: true, LimitBytes: ptr[int64](int64(len(ts(0))) + 2)}, ts(0) + "on"},
		{"chunks", ReadOptions{Chunks: true}, "one\ne-one\ntwe-two\no\nthree\ne-unfinished"},
		{"chunks of stdout", ReadOptions{Chunks: true, Stream: Stdout}, "one\ntwo\nthree\n"},
		{"chunks since", ReadOptions{Chunks: true, Since: t0.Add(3 * time.Second)}, "e-two\no\nthree\ne-unfinished"},
		{"chunks with timestamps", ReadOptions{Chunks: true, Stream: Stdout, Timestamps: true}, ts(0) + "one\n" + ts(2) + "two\n" + ts(5) + "three\n"},
		{"chunks tail 1", ReadOptions{Chunks: true, TailLines: ptr[int64](1)}, "e-unfinished"},
		{"chunks limit", ReadOptions{Chunks: true, LimitBytes: ptr[int64](11)}, "one\ne-one\nt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := readLog(t, path, tc.opts); got != tc.want {
				t.Errorf("Read = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	err := Read(context.Background(), filepath.Join(dir, "none.log"), ReadOptions{}, io.Discard)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of a missing log = %v, want ErrNotExist", err)
	}
	if err := Read(context.Background(), filepath.Join(dir, "none.log"), ReadOptions{Stream: "stdin"}, io.Discard); err == nil {
		t.Error("Read of stream stdin succeeded")
	}
}

// rotatedLog writes n numbered lines through a Writer that rotates every
// few lines and keeps every file.
func rotatedLog(t *testing.T, n int, stream func(i int) Stream) string {
	t.Helper()
	path := logPath(t)
	w := openWriter(t, Config{Path: path, MaxSize: 300, MaxFiles: 1000, Now: newClock().Now})
	for i := range n {
		write(t, w, stream(i), fmt.Sprintf("line-%04d\n", i))
	}
	w.Close()
	return path
}

func TestTailAcrossRotatedFiles(t *testing.T) {
	path := rotatedLog(t, 500, func(i int) Stream { return streams[i%3/2] }) // stderr every third line
	files, _ := Files(path)
	if len(files) < 20 {
		t.Fatalf("only %d files", len(files))
	}
	all := strings.SplitAfter(readLog(t, path, ReadOptions{}), "\n")
	all = all[:len(all)-1]
	if len(all) != 500 {
		t.Fatalf("Read has %d lines", len(all))
	}
	var stdout []string
	for i, l := range all {
		if i%3 != 2 {
			stdout = append(stdout, l)
		}
	}
	for _, n := range []int{0, 1, 7, 8, 9, 40, 333, 499, 500, 501} {
		if got, want := readLog(t, path, ReadOptions{TailLines: ptr(int64(n))}), strings.Join(all[max(0, len(all)-n):], ""); got != want {
			t.Errorf("tail %d = %q, want %q", n, got, want)
		}
		if got, want := readLog(t, path, ReadOptions{TailLines: ptr(int64(n)), Stream: Stdout}), strings.Join(stdout[max(0, len(stdout)-n):], ""); got != want {
			t.Errorf("tail %d of stdout = %q, want %q", n, got, want)
		}
	}
}

// countingReaderAt counts the bytes read from a big synthetic log.
type countingReaderAt struct {
	r    io.ReaderAt
	read int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.read += int64(len(p))
	return c.r.ReadAt(p, off)
}

func TestTailReadsFromTheEnd(t *testing.T) {
	var log []byte
	lines := 0
	for ; len(log) < 8<<20; lines++ {
		log = fmt.Appendf(log, "%s stdout F line %d\n", t0.Format(time.RFC3339Nano), lines)
	}
	r := &countingReaderAt{r: bytes.NewReader(log)}
	var got []string
	err := scanBackward(r, int64(len(log)), func(line []byte, at int64) bool {
		if !bytes.HasPrefix(log[at:], line) || log[at+int64(len(line))] != '\n' {
			t.Fatalf("line %q at %d", line, at)
		}
		got = append(got, string(line))
		return len(got) < 10
	})
	if err != nil || len(got) != 10 || !strings.HasSuffix(got[9], fmt.Sprintf(" line %d", lines-10)) {
		t.Fatalf("scanBackward = %q, %v", got, err)
	}
	if r.read > 64<<10 {
		t.Errorf("read %d bytes for 10 lines", r.read)
	}

	// Through Read, on a real file.
	path := logPath(t)
	writeRaw(t, path, string(log))
	start := time.Now()
	if got, want := readLog(t, path, ReadOptions{TailLines: ptr[int64](2)}), fmt.Sprintf("line %d\nline %d\n", lines-2, lines-1); got != want {
		t.Errorf("tail 2 = %q, want %q", got, want)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("tail of an 8 MiB log took %v", d)
	}
}

func TestReadSkipsGarbage(t *testing.T) {
	path := logPath(t)
	rng := rand.New(rand.NewSource(1))
	huge := 3
	junk := func() string {
		switch rng.Intn(12) {
		case 0:
			return "\n"
		case 1:
			return "garbage without a timestamp\n"
		case 2:
			if huge--; huge < 0 {
				return "\n"
			}
			return strings.Repeat("x", maxRecord+10) + "\n" // longer than any record
		case 3:
			b := make([]byte, rng.Intn(300))
			rng.Read(b)
			return "\x00" + strings.ReplaceAll(string(b), "\n", "") + "\n"
		case 4:
			return t0.Format(time.RFC3339Nano) + " stdin F wrong stream\n"
		case 5:
			return t0.Format(time.RFC3339Nano) + " stdout Q wrong tag\n"
		case 6:
			return t0.Format(time.RFC3339Nano) + "\n"
		case 7:
			return "2026-99-99T99:99:99Z stdout F bad time\n"
		case 8:
			return t0.Format(time.RFC3339Nano) + " stdout\n"
		case 9:
			return "   \t \r\n"
		case 10:
			return "\xff\xfe\xfd stderr F\n"
		default:
			return t0.Format(time.RFC3339Nano)[:rng.Intn(20)] + "\n"
		}
	}
	var text strings.Builder
	var want []string
	for i := range 200 {
		text.WriteString(junk())
		line := fmt.Sprintf("good %d", i)
		text.WriteString(rec(i, Stdout, "F", line))
		want = append(want, line+"\n")
	}
	text.WriteString("2026-11-25T10:04:05Z stdout F unterminated, being written")
	writeRaw(t, path, text.String())
	if got := readLog(t, path, ReadOptions{}); got != strings.Join(want, "") {
		t.Errorf("Read = %.300q...", got)
	}
	for _, n := range []int64{0, 1, 5, 150, 1000} {
		if got := readLog(t, path, ReadOptions{TailLines: ptr(n)}); got != strings.Join(want[max(0, int64(len(want))-n):], "") {
			t.Errorf("tail %d = %.300q", n, got)
		}
	}

	// Random damage to a valid log: whatever comes out, Read must not fail
	// or panic, with any option.
	var valid strings.Builder
	for i := range 300 {
		tag := "F"
		if i%4 == 1 {
			tag = "P"
		}
		valid.WriteString(rec(i, streams[i%2], tag, fmt.Sprintf("content %d", i)))
	}
	for round := range 50 {
		b := []byte(valid.String())
		for range 1 + rng.Intn(40) {
			switch i := rng.Intn(len(b)); rng.Intn(3) {
			case 0:
				b[i] = byte(rng.Intn(256))
			case 1:
				b = append(b[:i], b[min(len(b), i+rng.Intn(50)):]...)
			default:
				b = append(b[:i], append([]byte{'\n'}, b[i:]...)...)
			}
		}
		writeRaw(t, path, string(b))
		for _, opts := range []ReadOptions{
			{}, {Timestamps: true}, {Stream: Stderr}, {TailLines: ptr(int64(rng.Intn(400)))},
			{TailLines: ptr(int64(rng.Intn(10))), Stream: Stdout, Since: t0.Add(time.Duration(rng.Intn(300)) * time.Second)},
			{LimitBytes: ptr(int64(rng.Intn(2000)))},
		} {
			if err := Read(context.Background(), path, opts, io.Discard); err != nil {
				t.Fatalf("round %d: Read(%+v): %v", round, opts, err)
			}
		}
	}
}

func TestFollowAcrossRotations(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxFiles int
		tail     *int64
	}{
		{"keep all", 1000, nil},
		{"keep 2", 2, nil},
		{"tail 0", 1000, ptr[int64](0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := logPath(t)
			w := openWriter(t, Config{Path: path, MaxSize: 1000, MaxFiles: tc.maxFiles})
			write(t, w, Stdout, "before the reader\n")
			done := make(chan struct{})
			out := &syncBuffer{}
			errc := make(chan error, 1)
			go func() {
				errc <- Read(context.Background(), path, ReadOptions{Follow: true, Done: done, TailLines: tc.tail, Settle: 10 * time.Second}, out)
			}()
			const n = 2000
			for i := range n {
				write(t, w, streams[i%2], fmt.Sprintf("line-%05d\n", i))
				if i%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			write(t, w, Stderr, "the end, without newline")
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			close(done)
			select {
			case err := <-errc:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("follow did not end after Done with the writer closed")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("follow took %v to end with the writer gone (Settle is 10 s)", d)
			}
			got := out.String()
			if !strings.HasSuffix(got, "line-01999\nthe end, without newline") {
				t.Fatalf("follow ended with %q", got[max(0, len(got)-100):])
			}
			lines := strings.Split(got, "\n")
			switch {
			case tc.maxFiles == 2:
				// The follower may fall behind and lose pruned files, but
				// never repeats or reorders a line.
				for i := 1; i < len(lines); i++ {
					if lines[i] <= lines[i-1] && lines[i-1] != "before the reader" {
						t.Fatalf("line %q after %q", lines[i], lines[i-1])
					}
				}
			default:
				var want []string
				if tc.tail == nil {
					want = append(want, "before the reader")
				}
				for i := range n {
					want = append(want, fmt.Sprintf("line-%05d", i))
				}
				want = append(want, "the end, without newline")
				if tc.tail != nil && len(lines) <= len(want) {
					want = want[len(want)-len(lines):] // what came before the reader started is not shown
				}
				if strings.Join(lines, "\n") != strings.Join(want, "\n") {
					t.Errorf("follow got %d lines, want %d; first %q", len(lines), len(want), lines[:min(3, len(lines))])
				}
			}
		})
	}
}

func TestFollowFlushesEachLine(t *testing.T) {
	path := logPath(t)
	w := openWriter(t, Config{Path: path})
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	errc := make(chan error, 1)
	go func() { errc <- Read(ctx, path, ReadOptions{Follow: true, Timestamps: true}, out) }()
	want := ""
	for i := range 5 {
		write(t, w, Stdout, fmt.Sprintf("line %d\n", i))
		want += fmt.Sprintf("line %d\n", i)
		eventually(t, 5*time.Second, fmt.Sprintf("line %d flushed", i), func() bool {
			return strings.Count(out.Flushed(), "\n") == i+1
		})
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Read after cancel = %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for i, l := range lines {
		ts, content, _ := strings.Cut(l, " ")
		if _, err := time.Parse(TimestampFormat, ts); err != nil || len(ts) != len("2026-11-25T10:04:05.000000000Z") || content != fmt.Sprintf("line %d", i) {
			t.Errorf("line %q", l)
		}
	}
}

// TestFollowChunks: with Chunks a follower shows a prompt, an unfinished
// line, before its newline comes, as attach does.
func TestFollowChunks(t *testing.T) {
	path := logPath(t)
	w := openWriter(t, Config{Path: path, PartialFlush: 10 * time.Millisecond})
	write(t, w, Stdout, "before\n")
	time.Sleep(time.Millisecond)
	since := time.Now() // where the follower starts, however late it gets there
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	errc := make(chan error, 1)
	go func() { errc <- Read(ctx, path, ReadOptions{Follow: true, Since: since, Chunks: true}, out) }()
	write(t, w, Stdout, "/ # ")
	eventually(t, 5*time.Second, "the prompt", func() bool { return out.Flushed() == "/ # " })
	write(t, w, Stdout, "ls\nbin\n")
	eventually(t, 5*time.Second, "the rest", func() bool { return out.Flushed() == "/ # ls\nbin\n" })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Read after cancel = %v", err)
	}
}

// TestFollowDoneWhileWriterActive: the container is gone but its logger
// still holds the log (its task not deleted): Read waits for Settle of
// quiet, taking what the logger writes meanwhile.
func TestFollowDoneWhileWriterActive(t *testing.T) {
	path := logPath(t)
	w := openWriter(t, Config{Path: path, PartialFlush: 30 * time.Millisecond})
	write(t, w, Stdout, "first\n")
	done := make(chan struct{})
	close(done) // the container exited before the read began
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(50 * time.Millisecond)
		write(t, w, Stderr, "late\nlast, no newline") // the logger catching up
	}()
	start := time.Now()
	got := readLog(t, path, ReadOptions{Follow: true, Done: done, Settle: 300 * time.Millisecond})
	wg.Wait()
	if got != "first\nlate\nlast, no newline" {
		t.Errorf("Read = %q", got)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("Read took %v, want about the 300ms settle after the last data", d)
	}
}

func TestFollowWaitsForTheFirstRotation(t *testing.T) {
	// A follower that starts on the only file keeps its place when the
	// writer links it away and replaces it.
	path := logPath(t)
	w := openWriter(t, Config{Path: path, MaxSize: 100, MaxFiles: 100})
	write(t, w, Stdout, "a\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	out := &syncBuffer{}
	errc := make(chan error, 1)
	go func() { errc <- Read(ctx, path, ReadOptions{Follow: true, Done: done}, out) }()
	eventually(t, 5*time.Second, "first line", func() bool { return out.Flushed() == "a\n" })
	for i := range 20 {
		write(t, w, Stdout, fmt.Sprintf("rotated %d %s\n", i, strings.Repeat("x", 40)))
		time.Sleep(2 * time.Millisecond)
	}
	w.Close()
	close(done)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "rotated"); n != 20 {
		t.Errorf("follower saw %d of 20 lines: %q", n, out.String())
	}
}
