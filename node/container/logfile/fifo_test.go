//go:build unix

package logfile

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFIFOArgs(t *testing.T) {
	cfg := Config{Path: "/var/log/pods/p/c/0.log", MaxFiles: 3}
	for _, l := range []FIFOLogger{
		{Stdout: "/f/stdout", Stderr: "/f/stderr", Log: &cfg},
		{Stdout: "/f/stdout"}, // a terminal, output dropped
	} {
		args, err := l.Args()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseFIFOArgs(args)
		if err != nil {
			t.Fatalf("ParseFIFOArgs(%q): %v", args, err)
		}
		if got.Stdout != l.Stdout || got.Stderr != l.Stderr || (got.Log == nil) != (l.Log == nil) ||
			(got.Log != nil && (got.Log.Path != cfg.Path || got.Log.MaxFiles != 3)) {
			t.Errorf("ParseFIFOArgs(%q) = %+v, want %+v", args, got, l)
		}
	}
	for _, l := range []FIFOLogger{{}, {Stdout: "relative"}, {Stdout: "/o", Stderr: "e"}, {Stdout: "/o", Log: &Config{Path: "x.log"}}} {
		if _, err := l.Args(); err == nil {
			t.Errorf("Args of %+v succeeded", l)
		}
	}
	for _, args := range [][]string{nil, {"--stdout", "/o"}, {FIFOCommand}, {FIFOCommand, "--stdout", "/o", "{}", "{}"}, {FIFOCommand, "--bogus", "/o"}, {FIFOCommand, "--stdout", "/o", "{"}} {
		if _, err := ParseFIFOArgs(args); err == nil {
			t.Errorf("ParseFIFOArgs(%q) succeeded", args)
		}
	}
}

// mkfifos makes FIFOs called names in a fresh directory, as the runtime
// does, and returns their paths.
func mkfifos(t *testing.T, names ...string) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// shimOutput opens an output FIFO for writing as the shim does, which
// waits for the logger to open it for reading.
func shimOutput(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestRunFIFOLogger(t *testing.T) {
	fifos := mkfifos(t, "stdout", "stderr")
	path := logPath(t)
	errc := make(chan error, 1)
	go func() {
		errc <- RunFIFOLogger(context.Background(), FIFOLogger{Stdout: fifos[0], Stderr: fifos[1], Log: &Config{Path: path}})
	}()
	// The shim opens stderr first here: the logger takes either order.
	errw, out := shimOutput(t, fifos[1]), shimOutput(t, fifos[0])
	fmt.Fprint(out, "hello\nwor")
	fmt.Fprint(errw, "oops\n")
	fmt.Fprint(out, "ld\n")
	fmt.Fprint(errw, "last words, no newline")
	out.Close()
	errw.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the logger did not return once its output FIFOs closed")
	}
	got := records(t, path)
	for _, want := range []string{"stdout F hello\n", "stdout F world\n", "stderr F oops\n", "stderr P last words, no newline\n"} {
		if !slices.Contains(got, want) {
			t.Errorf("records %q lack %q", got, want)
		}
	}
	if active, _ := Active(path); active {
		t.Error("log still held after RunFIFOLogger returned")
	}
}

// TestRunFIFOLoggerTerminal: a terminal has no stderr; a nil Log drops the
// output, until its end all the same.
func TestRunFIFOLoggerTerminal(t *testing.T) {
	fifos := mkfifos(t, "stdout")
	errc := make(chan error, 1)
	go func() { errc <- RunFIFOLogger(context.Background(), FIFOLogger{Stdout: fifos[0]}) }()
	out := shimOutput(t, fifos[0])
	for range 100 {
		fmt.Fprint(out, strings.Repeat("dropped ", 1000)+"\r\n") // more than a FIFO holds
	}
	out.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestFIFOLoggerProcess runs the FIFO mode through LoggerMain in a process
// of its own, as the runtime does.
func TestFIFOLoggerProcess(t *testing.T) {
	fifos := mkfifos(t, "stdout", "stderr")
	path := logPath(t)
	args, err := FIFOLogger{Stdout: fifos[0], Stderr: fifos[1], Log: &Config{Path: path, PartialFlush: 20 * time.Millisecond}}.Args()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = []string{fifoLoggerEnv + "=1", "CONTAINER_ID=c1", "CONTAINER_NAMESPACE=test"}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out, errw := shimOutput(t, fifos[0]), shimOutput(t, fifos[1])
	fmt.Fprint(out, "out 1\nout 2, no newline")
	fmt.Fprint(errw, "err 1\n")
	// The output reaches the log while the FIFOs stay open.
	eventually(t, 5*time.Second, "the log", func() bool {
		return readLog(t, path, ReadOptions{Stream: Stdout}) == "out 1\nout 2, no newline" && readLog(t, path, ReadOptions{Stream: Stderr}) == "err 1\n"
	})
	out.Close()
	errw.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("logger: %v: %s", err, stderr.String())
	}
	if got, want := readLog(t, path, ReadOptions{Stream: Stdout}), "out 1\nout 2, no newline"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if active, _ := Active(path); active {
		t.Error("log still held after the logger exited")
	}

	// Bad arguments: it says so and exits, rather than wait for FIFOs.
	cmd = exec.Command(os.Args[0], FIFOCommand, "--stdout", "relative")
	cmd.Env = []string{fifoLoggerEnv + "=1"}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not absolute") {
		t.Errorf("logger with bad arguments: %v: %s", err, out)
	}
}
