package logfile

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// setPolls makes followers' polls last d (restored after the test).
func setPolls(t testing.TB, d time.Duration) {
	oldMin, oldMax, oldWatched := pollMin, pollMax, pollMaxWatched
	pollMin, pollMax, pollMaxWatched = d, d, d
	t.Cleanup(func() { pollMin, pollMax, pollMaxWatched = oldMin, oldMax, oldWatched })
}

// TestFollowWakesOnWrites: with polls far longer than the test's patience,
// a follower still gets each line the writer writes and each rotation: the
// inotify watch on the log's directory wakes it.
func TestFollowWakesOnWrites(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("inotify is Linux only; other systems poll")
	}
	setPolls(t, time.Hour)
	path := logPath(t)
	w := openWriter(t, Config{Path: path, MaxSize: 200, MaxFiles: 3})
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	errc := make(chan error, 1)
	go func() { errc <- Read(ctx, path, ReadOptions{Follow: true}, out) }()
	for i := range 12 { // 200-byte files: several rotations
		write(t, w, Stdout, fmt.Sprintf("line %02d of a log that rotates\n", i))
		eventually(t, 5*time.Second, fmt.Sprintf("line %d followed", i), func() bool {
			return strings.Count(out.Flushed(), "\n") == i+1
		})
	}
	cancel()
	<-errc
}

// TestWatchDirShared: followers of one directory share one watch, which
// goes when the last one stops.
func TestWatchDirShared(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("inotify is Linux only")
	}
	dir := t.TempDir()
	a, stopA := watchDir(dir)
	b, stopB := watchDir(dir)
	if a == nil || b == nil {
		t.Fatal("no inotify watch")
	}
	watcher.mu.Lock()
	n := len(watcher.dirs[dir].subs)
	watcher.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d subscribers on the directory's watch, want 2", n)
	}
	stopA()
	stopB()
	watcher.mu.Lock()
	_, left := watcher.dirs[dir]
	watcher.mu.Unlock()
	if left {
		t.Error("the watch outlived its last follower")
	}
}

// BenchmarkFollowLatency: a line written → the follower has written it
// out, on a log that was quiet long enough for the poll to back off fully
// (what an attached terminal's keystroke echo or `kubectl logs -f` of a
// quiet container waits).
func BenchmarkFollowLatency(b *testing.B) {
	for _, watched := range []bool{true, false} {
		b.Run(fmt.Sprintf("inotify=%v", watched), func(b *testing.B) {
			if !watched {
				old := watcher.err
				watcher.mu.Lock()
				if watcher.err == nil {
					watcher.err = fmt.Errorf("disabled by the benchmark")
				}
				watcher.mu.Unlock()
				b.Cleanup(func() { watcher.mu.Lock(); watcher.err = old; watcher.mu.Unlock() })
			}
			path := logPath(b)
			w := openWriter(b, Config{Path: path})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := &syncBuffer{}
			go func() { _ = Read(ctx, path, ReadOptions{Follow: true}, out) }()
			var total time.Duration
			for i := 0; b.Loop(); i++ {
				time.Sleep(time.Second) // quiet: the poll has backed off to its longest
				t0 := time.Now()
				write(b, w, Stdout, "x\n")
				for strings.Count(out.Flushed(), "\n") < i+1 {
					time.Sleep(100 * time.Microsecond)
				}
				total += time.Since(t0)
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/line")
		})
	}
}
