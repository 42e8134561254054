package containerd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/logfile"
)

// The test binary is its own logging binary: the shim starts it as
// "<test binary> container-logger <config>", the runtime as
// "<test binary> container-logger fifo ..." (see loggingConfig), before
// any test runs.
func init() {
	if len(os.Args) >= 3 && os.Args[1] == logfile.LoggerCommand {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		err := logfile.LoggerMain(ctx, os.Args[2:])
		stop()
		code := 0
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
		// Not os.Exit: under -race it waits a second for late reports,
		// which the shim, deleting the task, would wait for too.
		syscall.Exit(code)
	}
}

// loggingConfig is newRuntime's config with the test binary as the
// logging binary.
func loggingConfig(t *testing.T, d *Daemon) Config {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := d.RuntimeConfig()
	ns := strings.Trim(nonID.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	cfg.Namespace = strings.Trim(ns[:min(len(ns), 40)], "-")
	cfg.Logf = t.Logf
	cfg.LogBinary, cfg.LogBinaryArgs = exe, []string{logfile.LoggerCommand}
	return cfg
}

// loggingRuntime opens a Runtime on cfg and removes its containers after
// the test.
func loggingRuntime(t *testing.T, cfg Config) *Runtime {
	t.Helper()
	rt := openRuntime(t, cfg)
	t.Cleanup(func() {
		removeAll(t, rt)
		RemoveCgroup("/" + cfg.Namespace)
	})
	return rt
}

// readLog reads a finished container's log the way `kubectl logs -f` on it
// does: following until its logger has written what the container left.
func readContainerLog(t *testing.T, path string, opts logfile.ReadOptions) string {
	t.Helper()
	done := make(chan struct{})
	close(done)
	opts.Follow, opts.Done = true, done
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := logfile.Read(ctx, path, opts, &out); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return out.String()
}

// logRecords lists the stream, tag and content length of a log file's records.
func logRecords(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) != 4 {
			t.Fatalf("record %q", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
			t.Errorf("record %q: %v", line, err)
		}
		if len(f[3]) > 20 {
			f[3] = fmt.Sprintf("<%d bytes>", len(f[3]))
		}
		out = append(out, strings.Join(f[1:], " "))
	}
	return out
}

func waitLoggerExit(t *testing.T, path string) {
	t.Helper()
	eventually(t, 20*time.Second, "the logger's exit", func() error {
		if active, err := logfile.Active(path); err != nil || active {
			return fmt.Errorf("active %v, %v", active, err)
		}
		return nil
	})
}

func TestContainerLogCRIFormat(t *testing.T) {
	rt := loggingRuntime(t, loggingConfig(t, sharedDaemon(t)))
	importBusybox(t, rt)
	path := filepath.Join(shortDir(t), "logs", "c.log")
	id := run(t, rt, container.ContainerSpec{
		Command: []string{"sh", "-c", `echo out1; echo err1 >&2; head -c 20000 /dev/zero | tr '\0' x; echo; printf 'no newline at exit' >&2`},
		LogPath: path,
	})
	if e := waitExit(t, rt, id, 20*time.Second); e.ExitCode != 0 {
		t.Fatalf("exit %+v", e)
	}
	long := strings.Repeat("x", 20000)
	if got, want := readContainerLog(t, path, logfile.ReadOptions{Stream: logfile.Stdout}), "out1\n"+long+"\n"; got != want {
		t.Errorf("stdout = %.100q..., want %.100q...", got, want)
	}
	// The logger has caught up: plain reads from here.
	if got, want := readLogNow(t, path, logfile.ReadOptions{Stream: logfile.Stderr}), "err1\nno newline at exit"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
	ts := readLogNow(t, path, logfile.ReadOptions{Timestamps: true, Stream: logfile.Stderr, TailLines: new(int64(1))})
	if stamp, content, _ := strings.Cut(ts, " "); content != "no newline at exit" || len(stamp) != len(logfile.TimestampFormat)-5 {
		t.Errorf("tail 1 of stderr with timestamps = %q", ts)
	}

	// The shim keeps the pipes open until the task is deleted: only then
	// does the logger see their end, and exit.
	if active, _ := logfile.Active(path); !active {
		t.Error("the logger exited with the container; it must wait for the pipes to close")
	}
	if err := rt.RemoveContainer(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	waitLoggerExit(t, path)
	got := logRecords(t, path)
	var out, errs []string
	for _, r := range got {
		if strings.HasPrefix(r, "stdout ") {
			out = append(out, r)
		} else {
			errs = append(errs, r)
		}
	}
	// The long line may come in more chunks (pipe reads), joined as one.
	if len(out) < 3 || out[0] != "stdout F out1" || out[len(out)-1][:9] != "stdout F " || !strings.HasPrefix(out[1], "stdout P ") {
		t.Errorf("stdout records = %q", out)
	}
	if strings.Join(errs, "|") != "stderr F err1|stderr P no newline at exit" {
		t.Errorf("stderr records = %q", errs)
	}
}

// TestContainerLogLastLine: the last stderr line a container writes just
// before it exits is in its log, every time; 20 containers at once.
func TestContainerLogLastLine(t *testing.T) {
	rt := loggingRuntime(t, loggingConfig(t, sharedDaemon(t)))
	importBusybox(t, rt)
	dir := shortDir(t)
	const n = 20
	ids := make(map[string]int)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	ctx := context.Background()
	for i := range n {
		wg.Add(1)
		go func() { // started together, to load the machine
			defer wg.Done()
			spec := container.ContainerSpec{
				ID:      uniqueID("c"),
				Image:   busyboxRef,
				Command: []string{"sh", "-c", fmt.Sprintf("echo out-%d; echo last-%d >&2", i, i)},
				LogPath: filepath.Join(dir, fmt.Sprint(i), "0.log"),
			}
			if err := rt.CreateContainer(ctx, spec); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			ids[spec.ID] = i
			mu.Unlock()
			if err := rt.StartContainer(ctx, spec.ID); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	exited := map[string]bool{}
	deadline := time.After(60 * time.Second)
	for len(exited) < n {
		select {
		case e := <-rt.Exits():
			if _, ok := ids[e.ID]; ok {
				exited[e.ID] = true
			}
		case <-deadline:
			t.Fatalf("only %d of %d containers exited", len(exited), n)
		}
	}
	for id, i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer rt.RemoveContainer(ctx, id)
			path := filepath.Join(dir, fmt.Sprint(i), "0.log")
			// The streams are two pipes, read apart: no order between them.
			got := readContainerLog(t, path, logfile.ReadOptions{})
			if want1, want2 := fmt.Sprintf("out-%d\nlast-%d\n", i, i), fmt.Sprintf("last-%d\nout-%d\n", i, i); got != want1 && got != want2 {
				t.Errorf("container %d: log %q, want %q", i, got, want1)
			}
		}()
	}
	wg.Wait()
}

func TestContainerLogRotation(t *testing.T) {
	cfg := loggingConfig(t, sharedDaemon(t))
	cfg.LogMaxSize, cfg.LogMaxFiles = 4096, 3
	rt := loggingRuntime(t, cfg)
	importBusybox(t, rt)
	path := filepath.Join(shortDir(t), "c.log")
	id := run(t, rt, container.ContainerSpec{
		Command: []string{"sh", "-c", `i=0; while [ $i -lt 1000 ]; do echo "line $i abcdefghijklmnopqrstuvwxyz"; i=$((i+1)); done`},
		LogPath: path,
	})
	waitExit(t, rt, id, 20*time.Second)
	// Read once the logger has caught up: a reader slower than the
	// rotations loses the files pruned before it gets to them.
	const last = "line 999 abcdefghijklmnopqrstuvwxyz\n"
	eventually(t, 20*time.Second, "the last line", func() error {
		if got := readLogNow(t, path, logfile.ReadOptions{TailLines: new(int64(1))}); got != last {
			return fmt.Errorf("last line %q", got)
		}
		return nil
	})
	lines := strings.Split(strings.TrimSuffix(readLogNow(t, path, logfile.ReadOptions{}), "\n"), "\n")
	first := 1000 - len(lines)
	if first <= 0 {
		t.Fatalf("%d lines kept of 1000 with 3 files of 4 KiB", len(lines))
	}
	for i, l := range lines {
		if want := fmt.Sprintf("line %d abcdefghijklmnopqrstuvwxyz", first+i); l != want {
			t.Fatalf("line %d = %q, want %q", i, l, want)
		}
	}
	files, err := logfile.Files(path)
	if err != nil || len(files) != 3 {
		t.Fatalf("files = %q, %v; want 2 rotated and the current", files, err)
	}
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.Size() > 4096 {
			t.Errorf("%s: %v %v", f, st.Size(), err)
		}
	}
	if got := readLogNow(t, path, logfile.ReadOptions{TailLines: new(int64(2))}); got != "line 998 abcdefghijklmnopqrstuvwxyz\nline 999 abcdefghijklmnopqrstuvwxyz\n" {
		t.Errorf("tail 2 = %q", got)
	}
}

// TestContainerLoggerOutlivesAgent: the logger is the shim's child; it
// goes on writing while the agent (its Runtime) is gone and the daemon
// dies and restarts, and a follower sees every line, to the last one
// written on SIGTERM.
func TestContainerLoggerOutlivesAgent(t *testing.T) {
	d := startDaemon(t)
	cfg := loggingConfig(t, d)
	rt1, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rt1.Close()
	importBusybox(t, rt1)
	path := filepath.Join(shortDir(t), "c.log")
	id := run(t, rt1, container.ContainerSpec{
		Command: []string{"sh", "-c", `trap 'echo bye >&2; exit 0' TERM; i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.02; done`},
		LogPath: path,
	})
	ticks := func() int { return strings.Count(readLogNow(t, path, logfile.ReadOptions{}), "tick") }
	eventually(t, 10*time.Second, "first ticks", func() error {
		if ticks() < 3 {
			return errStill
		}
		return nil
	})

	exited := make(chan struct{})
	out := &logBuffer{}
	followErr := make(chan error, 1)
	go func() {
		followErr <- logfile.Read(context.Background(), path, logfile.ReadOptions{Follow: true, Done: exited}, out)
	}()

	growing := func(what string) {
		t.Helper()
		n := ticks()
		eventually(t, 10*time.Second, what, func() error {
			if ticks() < n+5 {
				return errStill
			}
			return nil
		})
	}
	rt1.Close() // the agent is gone
	growing("ticks with the agent gone")
	old := d.Pid()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	growing("ticks with the daemon dead")
	eventually(t, 20*time.Second, "daemon restart", func() error {
		if d.Restarts() < 1 || d.Pid() == old {
			return errStill
		}
		return nil
	})

	var rt2 *Runtime // the agent is back
	eventually(t, 20*time.Second, "a runtime on the restarted daemon", func() error {
		var err error
		rt2, err = New(context.Background(), cfg)
		return err
	})
	t.Cleanup(func() {
		removeAll(t, rt2)
		rt2.Close()
		RemoveCgroup("/" + cfg.Namespace)
	})
	growing("ticks after the restarts")
	if err := rt2.StopContainer(context.Background(), id, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, rt2, id, 10*time.Second); e.ExitCode != 0 {
		t.Errorf("exit %+v, want 0 from the trap", e)
	}
	close(exited)
	select {
	case err := <-followErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end after the exit")
	}
	// stdout and stderr are read apart: "bye" is after the ticks that came
	// well before it, and no tick is lost or repeated.
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	bye := slices.Index(lines, "bye")
	if len(lines) < 20 || bye < len(lines)-3 {
		t.Fatalf("follower saw %d lines, ending %q", len(lines), lines[max(0, len(lines)-3):])
	}
	for i, l := range slices.Delete(lines, bye, bye+1) {
		if l != fmt.Sprintf("tick %d", i) {
			t.Fatalf("line %d = %q: a tick was lost or repeated", i, l)
		}
	}
	if err := rt2.RemoveContainer(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	waitLoggerExit(t, path)
}

func TestConfigLogBinary(t *testing.T) {
	for _, tc := range []struct {
		bin  string
		args []string
		ok   bool
	}{
		{"", nil, true},
		{"/usr/bin/shoal", []string{"container-logger"}, true},
		{"shoal", []string{"container-logger"}, false},
		{"/usr/bin/shoal", nil, false},
		{"/usr/bin/shoal", []string{"a", "b"}, false},
		{"/usr/bin/shoal", []string{""}, false},
	} {
		cfg := DefaultConfig()
		cfg.LogBinary, cfg.LogBinaryArgs = tc.bin, tc.args
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate with log binary %q %q = %v", tc.bin, tc.args, err)
		}
	}
	cfg := DefaultConfig()
	cfg.LogMaxFiles = -1
	if cfg.Validate() == nil {
		t.Error("negative LogMaxFiles accepted")
	}
}

// readLogNow reads what a log has now.
func readLogNow(t *testing.T, path string, opts logfile.ReadOptions) string {
	t.Helper()
	var out bytes.Buffer
	if err := logfile.Read(context.Background(), path, opts, &out); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
