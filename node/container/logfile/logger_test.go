package logfile

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary be the logging process of
// TestLoggerMainProcess: the config comes in loggerEnv.
func TestMain(m *testing.M) {
	if arg := os.Getenv(loggerEnv); arg != "" {
		// The handler stays until exit: the shim's SIGTERM may arrive after
		// the logger finished on its own (the pipes closed first), and must
		// not kill it then.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		err := LoggerMain(ctx, []string{arg})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(fifoLoggerEnv) != "" {
		// TestFIFOLoggerProcess: the arguments are the logger's.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		if err := LoggerMain(ctx, os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	loggerEnv     = "LOGFILE_TEST_LOGGER_CONFIG"
	fifoLoggerEnv = "LOGFILE_TEST_FIFO_LOGGER"
)

func loggerArg(t *testing.T, cfg Config) string {
	t.Helper()
	arg, err := LoggerArg(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return arg
}

func TestLoggerArgs(t *testing.T) {
	cfg := Config{Path: "/var/log/pods/p/c/0.log", MaxSize: 1 << 20, MaxFiles: 3, PartialFlush: time.Second}
	arg := loggerArg(t, cfg)
	got, err := ParseLoggerArgs([]string{arg})
	if err != nil || got.Path != cfg.Path || got.MaxSize != cfg.MaxSize || got.MaxFiles != cfg.MaxFiles || got.PartialFlush != cfg.PartialFlush || got.MaxLine != 0 {
		t.Errorf("ParseLoggerArgs(%s) = %+v, %v", arg, got, err)
	}
	for _, args := range [][]string{nil, {arg, arg}, {"{"}, {`{"path":"relative.log"}`}, {`{"path":"/x","maxSize":-1}`}} {
		if _, err := ParseLoggerArgs(args); err == nil {
			t.Errorf("ParseLoggerArgs(%q) = nil error", args)
		}
	}
	if _, err := LoggerArg(Config{Path: "relative"}); err == nil {
		t.Error("LoggerArg of a relative path succeeded")
	}
}

// pipes is a pair of container output pipes as a logger sees them.
type pipes struct {
	outR, errR *io.PipeReader
	outW, errW *io.PipeWriter
}

func newPipes() *pipes {
	p := &pipes{}
	p.outR, p.outW = io.Pipe()
	p.errR, p.errW = io.Pipe()
	return p
}

func (p *pipes) close() {
	p.outW.Close()
	p.errW.Close()
}

func TestRunLogger(t *testing.T) {
	path := logPath(t)
	p := newPipes()
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- RunLogger(context.Background(), []string{loggerArg(t, Config{Path: path})}, p.outR, p.errR, func() error {
			if _, err := os.Stat(path); err != nil {
				t.Errorf("ready before the log exists: %v", err)
			}
			close(ready)
			return nil
		})
	}()
	<-ready
	fmt.Fprint(p.outW, "hello\nwor")
	fmt.Fprint(p.errW, "oops\n")
	fmt.Fprint(p.outW, "ld\n")
	fmt.Fprint(p.errW, "last words, no newline")
	p.close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	got := records(t, path)
	for _, want := range []string{"stdout F hello\n", "stdout F world\n", "stderr F oops\n", "stderr P last words, no newline\n"} {
		if !slices.Contains(got, want) {
			t.Errorf("records %q lack %q", got, want)
		}
	}
	if active, _ := Active(path); active {
		t.Error("log still held after RunLogger returned")
	}
}

func TestRunLoggerStop(t *testing.T) {
	defer func(d time.Duration) { drainTimeout = d }(drainTimeout)
	drainTimeout = 200 * time.Millisecond

	// Cancelled, then the pipes close: everything is written.
	path := logPath(t)
	p := newPipes()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- RunLogger(ctx, []string{loggerArg(t, Config{Path: path})}, p.outR, p.errR, nil) }()
	fmt.Fprint(p.outW, "before\n")
	cancel()
	fmt.Fprint(p.outW, "after the signal\n")
	p.close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := readLog(t, path, ReadOptions{}); got != "before\nafter the signal\n" {
		t.Errorf("log = %q", got)
	}

	// Cancelled, and the pipes stay open: it gives up.
	path = logPath(t)
	p = newPipes()
	defer p.close()
	ctx, cancel = context.WithCancel(context.Background())
	go func() { errc <- RunLogger(ctx, []string{loggerArg(t, Config{Path: path})}, p.outR, p.errR, nil) }()
	fmt.Fprint(p.errW, "unfinished")
	cancel()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "still open") {
			t.Errorf("RunLogger = %v, want a give-up error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunLogger did not give up")
	}
	if got := readLog(t, path, ReadOptions{}); got != "unfinished" {
		t.Errorf("log = %q", got)
	}
}

func TestRunLoggerCannotWrite(t *testing.T) {
	// The log's directory cannot exist (a file is in the way): the output
	// is still read to the end, so the container is not blocked.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	for _, args := range [][]string{{loggerArg(t, Config{Path: filepath.Join(file, "0.log")})}, {"not json"}} {
		p := newPipes()
		readyCalled := false
		errc := make(chan error, 1)
		go func() {
			errc <- RunLogger(context.Background(), args, p.outR, p.errR, func() error { readyCalled = true; return nil })
		}()
		for range 100 {
			fmt.Fprint(p.outW, strings.Repeat("x", 1000)+"\n")
		}
		p.close()
		if err := <-errc; err == nil {
			t.Errorf("RunLogger(%q) = nil error", args)
		}
		if !readyCalled {
			t.Errorf("RunLogger(%q) never called ready", args)
		}
	}
}

// TestLoggerMainProcess runs the test binary as a logging process the way
// the shim does: pipes on fds 3 and 4, the ready pipe on 5, and SIGTERM
// right after the pipes close.
func TestLoggerMainProcess(t *testing.T) {
	for _, sigterm := range []bool{false, true} {
		t.Run(fmt.Sprintf("sigterm=%v", sigterm), func(t *testing.T) {
			path := logPath(t)
			outR, outW, _ := os.Pipe()
			errR, errW, _ := os.Pipe()
			waitR, waitW, _ := os.Pipe()
			cmd := exec.Command(os.Args[0])
			cmd.Env = []string{loggerEnv + "=" + loggerArg(t, Config{Path: path, PartialFlush: 20 * time.Millisecond}), "CONTAINER_ID=c1", "CONTAINER_NAMESPACE=test"}
			cmd.ExtraFiles = []*os.File{outR, errR, waitW}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			outR.Close()
			errR.Close()
			waitW.Close()
			if _, err := waitR.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("ready pipe: %v, want EOF", err)
			}
			if active, _ := Active(path); !active {
				t.Error("log not held once the logger is ready")
			}
			fmt.Fprint(outW, "out 1\n")
			fmt.Fprint(errW, "err 1\nerr unfinished")
			// The shim keeps the pipes open while the container has exited:
			// what was written reaches the log anyway.
			// (The streams are read apart: they are compared apart.)
			eventually(t, 5*time.Second, "the log", func() bool {
				return readLog(t, path, ReadOptions{Stream: Stdout}) == "out 1\n" && readLog(t, path, ReadOptions{Stream: Stderr}) == "err 1\nerr unfinished"
			})
			fmt.Fprint(outW, "out 2, no newline")
			outW.Close()
			errW.Close()
			if sigterm {
				cmd.Process.Signal(syscall.SIGTERM)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("logger: %v: %s", err, stderr.String())
			}
			if got, want := readLog(t, path, ReadOptions{Stream: Stdout}), "out 1\nout 2, no newline"; got != want {
				t.Errorf("stdout = %q, want %q", got, want)
			}
			if got, want := readLog(t, path, ReadOptions{Stream: Stderr}), "err 1\nerr unfinished"; got != want {
				t.Errorf("stderr = %q, want %q", got, want)
			}
			if active, _ := Active(path); active {
				t.Error("log still held after the logger exited")
			}
		})
	}

	t.Run("no pipes", func(t *testing.T) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = []string{loggerEnv + "=" + loggerArg(t, Config{Path: logPath(t)})}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "is not a pipe") {
			t.Errorf("logger without its pipes: %v: %s", err, out)
		}
	})
}
