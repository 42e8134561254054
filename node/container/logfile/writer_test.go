package logfile

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWriterRecords(t *testing.T) {
	path := logPath(t)
	clk := &clock{t: t0}
	w := openWriter(t, Config{Path: path, PartialFlush: -1, Now: clk.Now})
	write(t, w, Stdout, "a\nb")
	write(t, w, Stderr, "err\n\n")
	clk.Set(t0.Add(time.Second))
	write(t, w, Stdout, "c\r\nd")
	write(t, w, Stderr, "no newline")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"2026-11-25T10:04:05Z stdout F a\n" +
		"2026-11-25T10:04:05Z stderr F err\n" +
		"2026-11-25T10:04:05Z stderr F \n" +
		"2026-11-25T10:04:06Z stdout F bc\r\n" +
		"2026-11-25T10:04:06Z stdout P d\n" +
		"2026-11-25T10:04:06Z stderr P no newline\n"
	if got := fileText(t, path); got != want {
		t.Errorf("log file:\n%s\nwant:\n%s", got, want)
	}
	if _, err := w.WriteStream(Stdout, []byte("late\n")); err == nil {
		t.Error("write after Close succeeded")
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// The unfinished lines come last, oldest first (stdout first on a tie).
	if got, want := readLog(t, path, ReadOptions{}), "a\nerr\n\nbc\r\ndno newline"; got != want {
		t.Errorf("Read = %q, want %q", got, want)
	}
}

func TestWriterLongLines(t *testing.T) {
	path := logPath(t)
	w := openWriter(t, Config{Path: path, MaxLine: 8, PartialFlush: -1, Now: (&clock{t: t0}).Now})
	write(t, w, Stdout, "0123456789abcdefghij\n") // 20: 8 + 8 + 4
	write(t, w, Stdout, "exactly8\n")
	write(t, w, Stdout, "sixteen-bytes-16\n")
	write(t, w, Stdout, "0123")
	write(t, w, Stdout, "4567890\n")  // joined with the buffered start
	write(t, w, Stderr, "0123456789") // unfinished, but a chunk goes now
	w.Close()
	want := []string{
		"stdout P 01234567\n", "stdout P 89abcdef\n", "stdout F ghij\n",
		"stdout F exactly8\n",
		"stdout P sixteen-\n", "stdout F bytes-16\n",
		"stdout P 01234567\n", "stdout F 890\n",
		"stderr P 01234567\n", "stderr P 89\n",
	}
	if got := records(t, path); !slices.Equal(got, want) {
		t.Errorf("records:\n%q\nwant:\n%q", got, want)
	}
	if got, want := readLog(t, path, ReadOptions{Stream: Stdout}), "0123456789abcdefghij\nexactly8\nsixteen-bytes-16\n01234567890\n"; got != want {
		t.Errorf("Read stdout = %q, want %q", got, want)
	}
	if got := readLog(t, path, ReadOptions{Stream: Stderr}); got != "0123456789" {
		t.Errorf("Read stderr = %q", got)
	}
}

func TestWriterPartialFlush(t *testing.T) {
	path := logPath(t)
	w := openWriter(t, Config{Path: path, PartialFlush: 20 * time.Millisecond})
	write(t, w, Stdout, "prompt> ")
	if got := records(t, path); len(got) != 0 {
		t.Fatalf("unfinished line written at once: %q", got)
	}
	eventually(t, 5*time.Second, "the unfinished line", func() bool { return len(records(t, path)) == 1 })
	write(t, w, Stdout, "yes\nand")
	write(t, w, Stdout, " more\n") // before the timer: no P record
	if got, want := records(t, path), []string{"stdout P prompt> \n", "stdout F yes\n", "stdout F and more\n"}; !slices.Equal(got, want) {
		t.Errorf("records = %q, want %q", got, want)
	}
	if got := readLog(t, path, ReadOptions{}); got != "prompt> yes\nand more\n" {
		t.Errorf("Read = %q", got)
	}
}

func TestWriterRotation(t *testing.T) {
	for _, tc := range []struct {
		name string
		step time.Duration
	}{
		{"clock moves", time.Millisecond},
		{"clock stands still", 0}, // names must still be unique and ordered
		{"clock steps back", -time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := logPath(t)
			w := openWriter(t, Config{Path: path, MaxSize: 200, MaxFiles: 3, Now: (&clock{t: t0, step: tc.step}).Now})
			for i := range 50 {
				write(t, w, Stdout, fmt.Sprintf("line-%03d\n", i))
			}
			files, err := Files(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(files) != 3 || files[2] != path {
				t.Fatalf("files = %q, want 2 rotated and the current", files)
			}
			for _, f := range files {
				st, err := os.Stat(f)
				if err != nil || st.Size() > 200 || st.Size() == 0 {
					t.Errorf("%s: %v, %v", f, st, err)
				}
			}
			if _, err := os.Stat(path + tmpSuffix); !os.IsNotExist(err) {
				t.Errorf("temporary file left: %v", err)
			}
			got := strings.Split(strings.TrimSuffix(readLog(t, path, ReadOptions{}), "\n"), "\n")
			first := 50 - len(got)
			if first <= 0 || got[len(got)-1] != "line-049" {
				t.Fatalf("Read = %q", got)
			}
			for i, l := range got {
				if l != fmt.Sprintf("line-%03d", first+i) {
					t.Fatalf("Read = %q: not consecutive", got)
				}
			}
			// A new Writer (a logger restarted on the same path) goes on
			// after the newest rotated name.
			w.Close()
			w2 := openWriter(t, Config{Path: path, MaxSize: 200, MaxFiles: 3, Now: (&clock{t: t0.Add(-48 * time.Hour)}).Now})
			for i := 50; i < 80; i++ {
				write(t, w2, Stdout, fmt.Sprintf("line-%03d\n", i))
			}
			got = strings.Split(strings.TrimSuffix(readLog(t, path, ReadOptions{}), "\n"), "\n")
			if got[len(got)-1] != "line-079" || !slices.IsSorted(got) {
				t.Errorf("after a second writer, Read = %q", got)
			}
		})
	}
}

func TestWriterOversizedRecord(t *testing.T) {
	path := logPath(t)
	w := openWriter(t, Config{Path: path, MaxSize: 100, MaxFiles: 10})
	big := strings.Repeat("x", 300)
	write(t, w, Stdout, "small\n"+big+"\nsmall again\n")
	w.Close()
	files, _ := Files(path)
	if len(files) != 3 {
		t.Fatalf("files = %q, want 3 (the big record alone in one)", files)
	}
	if got := readLog(t, path, ReadOptions{}); got != "small\n"+big+"\nsmall again\n" {
		t.Errorf("Read = %q", got)
	}
}

func TestWriterContinuesTornFile(t *testing.T) {
	path := logPath(t)
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte("2026-11-25T10:04:05Z stdout F before\n2026-11-25T10:04:05Z std"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := openWriter(t, Config{Path: path})
	write(t, w, Stdout, "after\n")
	w.Close()
	if got := readLog(t, path, ReadOptions{}); got != "before\nafter\n" {
		t.Errorf("Read = %q, want the torn record skipped", got)
	}
}

func TestWriterLock(t *testing.T) {
	path := logPath(t)
	if active, err := Active(path); active || err != nil {
		t.Fatalf("Active before any writer = %v, %v", active, err)
	}
	w := openWriter(t, Config{Path: path, MaxSize: 100})
	if active, err := Active(path); !active || err != nil {
		t.Fatalf("Active with a writer = %v, %v", active, err)
	}
	for i := range 20 {
		write(t, w, Stdout, fmt.Sprintf("line %d\n", i))
		if active, _ := Active(path); !active {
			t.Fatalf("not active after rotation %d", i)
		}
	}
	w.Close()
	if active, err := Active(path); active || err != nil {
		t.Errorf("Active after Close = %v, %v", active, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []Config{{}, {Path: "rel.log"}, {Path: "/x", MaxSize: -1}, {Path: "/x", MaxFiles: -1}, {Path: "/x", MaxLine: -1}} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", cfg)
		}
		if _, err := Open(cfg); err == nil {
			t.Errorf("Open(%+v) = nil error", cfg)
		}
	}
	d := DefaultConfig("/x")
	if d.MaxSize != 10<<20 || d.MaxFiles != 5 || d.MaxLine != 16<<10 || d.PartialFlush != DefaultPartialFlush || d.Validate() != nil {
		t.Errorf("DefaultConfig = %+v", d)
	}
}

func TestWriterEndsAnEarlierRunsLine(t *testing.T) {
	// Two runs appending to one file: the first one's unfinished line is
	// not joined with the second one's output.
	path := logPath(t)
	for _, run := range []string{"one", "two"} {
		w := openWriter(t, Config{Path: path})
		write(t, w, Stdout, run+" out\n")
		write(t, w, Stderr, run+" no newline")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := readLog(t, path, ReadOptions{Stream: Stderr}), "one no newline\ntwo no newline"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
	if got, want := readLog(t, path, ReadOptions{Stream: Stdout}), "one out\ntwo out\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
}
