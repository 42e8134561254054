package containerd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/logfile"
)

// attachWrite writes s to a new stdin writer of id and closes it.
func attachWrite(t *testing.T, rt *Runtime, id, s string) {
	t.Helper()
	w, err := rt.AttachStdin(context.Background(), id)
	if err != nil {
		t.Fatalf("AttachStdin: %v", err)
	}
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatalf("writing stdin: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("closing stdin: %v", err)
	}
}

func logHas(t *testing.T, path string, opts logfile.ReadOptions, want string) func() error {
	return func() error {
		if got := readLogNow(t, path, opts); !strings.Contains(got, want) {
			return fmt.Errorf("log %q lacks %q", got, want)
		}
		return nil
	}
}

// TestStdinEcho: a stdin container running cat echoes what writers send
// into its log; a writer that goes does not end its stdin.
func TestStdinEcho(t *testing.T) {
	rt := loggingRuntime(t, loggingConfig(t, sharedDaemon(t)))
	importBusybox(t, rt)
	path := filepath.Join(shortDir(t), "c.log")
	id := run(t, rt, container.ContainerSpec{Command: []string{"cat"}, LogPath: path, Stdin: true})
	attachWrite(t, rt, id, "hello from stdin\n")
	eventually(t, 10*time.Second, "the first echo", logHas(t, path, logfile.ReadOptions{Stream: logfile.Stdout}, "hello from stdin\n"))
	// Two writers at once, then again after both left.
	w1, err := rt.AttachStdin(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := rt.AttachStdin(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w1, "one\n")
	io.WriteString(w2, "two\n")
	w1.Close()
	w2.Close()
	attachWrite(t, rt, id, "three\n")
	eventually(t, 10*time.Second, "the later echoes", logHas(t, path, logfile.ReadOptions{}, "three\n"))
	if got := readLogNow(t, path, logfile.ReadOptions{}); !strings.Contains(got, "one\n") || !strings.Contains(got, "two\n") {
		t.Errorf("log %q lacks the concurrent writes", got)
	}
	if st, err := rt.Status(context.Background(), id); err != nil || st.State != container.StateRunning {
		t.Errorf("status after the writers left = %+v, %v; want cat still running", st, err)
	}
	dir := rt.stdioDir(id)
	if err := rt.RemoveContainer(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	waitLoggerExit(t, path)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stdio dir after remove: %v, want it gone", err)
	}
}

// TestStdinOnce: the first writer's close ends the container's stdin; a
// restart gets a fresh one.
func TestStdinOnce(t *testing.T) {
	rt := loggingRuntime(t, loggingConfig(t, sharedDaemon(t)))
	importBusybox(t, rt)
	ctx := context.Background()
	path := filepath.Join(shortDir(t), "c.log")
	id := run(t, rt, container.ContainerSpec{Command: []string{"sh", "-c", "cat; echo done"}, LogPath: path, Stdin: true, StdinOnce: true})
	for round := 1; round <= 2; round++ {
		w, err := rt.AttachStdin(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "round %d\n", round)
		w.Close()
		if e := waitExit(t, rt, id, 10*time.Second); e.ExitCode != 0 {
			t.Errorf("exit %+v, want 0 once stdin ended", e)
		}
		if got, want := readContainerLog(t, path, logfile.ReadOptions{}), fmt.Sprintf("round %d\ndone\n", round); !strings.HasSuffix(got, want) {
			t.Errorf("round %d: log %q, want it to end with %q", round, got, want)
		}
		if _, err := rt.AttachStdin(ctx, id); !errors.Is(err, container.ErrNotRunning) {
			t.Errorf("AttachStdin after the exit: %v, want ErrNotRunning", err)
		}
		if round == 1 {
			if err := rt.StartContainer(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestStdinLogComplete: with FIFO IO the log is as complete at the exit as
// with binary IO: both streams, a last line without its newline, then the
// logger goes.
func TestStdinLogComplete(t *testing.T) {
	rt := loggingRuntime(t, loggingConfig(t, sharedDaemon(t)))
	importBusybox(t, rt)
	path := filepath.Join(shortDir(t), "logs", "c.log")
	id := run(t, rt, container.ContainerSpec{
		Command: []string{"sh", "-c", `echo out1; echo err1 >&2; head -c 20000 /dev/zero | tr '\0' x; echo; printf 'no newline at exit' >&2`},
		LogPath: path, Stdin: true,
	})
	if e := waitExit(t, rt, id, 20*time.Second); e.ExitCode != 0 {
		t.Fatalf("exit %+v", e)
	}
	if got, want := readContainerLog(t, path, logfile.ReadOptions{Stream: logfile.Stdout}), "out1\n"+strings.Repeat("x", 20000)+"\n"; got != want {
		t.Errorf("stdout = %.100q..., want %.100q...", got, want)
	}
	if got, want := readContainerLog(t, path, logfile.ReadOptions{Stream: logfile.Stderr}), "err1\nno newline at exit"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
	// The output's end, not the task's deletion, ends the logger.
	waitLoggerExit(t, path)
	var errs []string
	for _, r := range logRecords(t, path) {
		if strings.HasPrefix(r, "stderr ") {
			errs = append(errs, r)
		}
	}
	if strings.Join(errs, "|") != "stderr F err1|stderr P no newline at exit" {
		t.Errorf("stderr records = %q", errs)
	}
}

// TestStdinOnceSpent: a StdinOnce container that lives on after its stdin
// ended refuses new writers.
func TestStdinOnceSpent(t *testing.T) {
	rt := loggingRuntime(t, loggingConfig(t, sharedDaemon(t)))
	importBusybox(t, rt)
	path := filepath.Join(shortDir(t), "c.log")
	id := run(t, rt, container.ContainerSpec{Command: []string{"sh", "-c", "cat; echo stdin ended; sleep 60"}, LogPath: path, Stdin: true, StdinOnce: true})
	attachWrite(t, rt, id, "only\n")
	eventually(t, 10*time.Second, "stdin's end", logHas(t, path, logfile.ReadOptions{}, "only\nstdin ended\n"))
	if _, err := rt.AttachStdin(context.Background(), id); !errors.Is(err, container.ErrInvalid) || !strings.Contains(err.Error(), "closed") {
		t.Errorf("AttachStdin after the first session: %v, want ErrInvalid saying closed", err)
	}
}

// TestTTY: a terminal's output (stdout and stderr together) is logged as
// stdout; ResizeTTY sets its size.
func TestTTY(t *testing.T) {
	rt := loggingRuntime(t, loggingConfig(t, sharedDaemon(t)))
	importBusybox(t, rt)
	ctx := context.Background()
	path := filepath.Join(shortDir(t), "c.log")
	id := run(t, rt, container.ContainerSpec{
		Command: []string{"sh", "-c", `echo "out on $(tty) TERM=$TERM"; echo err >&2; while read l; do echo "size $(stty size)"; done`},
		LogPath: path, Stdin: true, TTY: true,
	})
	eventually(t, 10*time.Second, "the terminal's output", logHas(t, path, logfile.ReadOptions{Stream: logfile.Stdout}, "err\r\n"))
	got := readLogNow(t, path, logfile.ReadOptions{})
	if !strings.Contains(got, "out on /dev/pts/0 TERM=xterm\r\n") {
		t.Errorf("log %q: want the output of a terminal, TERM set", got)
	}
	if errs := readLogNow(t, path, logfile.ReadOptions{Stream: logfile.Stderr}); errs != "" {
		t.Errorf("stderr records %q with a terminal", errs)
	}
	if err := rt.ResizeTTY(ctx, id, container.Size{Width: 123, Height: 45}); err != nil {
		t.Fatal(err)
	}
	attachWrite(t, rt, id, "\n")
	eventually(t, 10*time.Second, "the size", logHas(t, path, logfile.ReadOptions{}, "size 45 123\r\n"))
}

// TestStdinSurvivesRuntime: the logger is detached from the runtime that
// started it; closing that runtime (the agent going) leaves stdin open
// and the log written, and a new runtime attaches to stdin again.
func TestStdinSurvivesRuntime(t *testing.T) {
	cfg := loggingConfig(t, sharedDaemon(t))
	rt1 := openRuntime(t, cfg)
	importBusybox(t, rt1)
	path := filepath.Join(shortDir(t), "c.log")
	id := run(t, rt1, container.ContainerSpec{Command: []string{"cat"}, LogPath: path, Stdin: true})
	attachWrite(t, rt1, id, "before\n")
	eventually(t, 10*time.Second, "the first echo", logHas(t, path, logfile.ReadOptions{}, "before\n"))
	dir := rt1.stdioDir(id)
	pids := processesWith(t, dir)
	if len(pids) != 1 {
		t.Fatalf("processes naming %s: %v, want the logger alone", dir, pids)
	}
	if sid := sessionOf(t, pids[0]); sid != pids[0] || sid == sessionOf(t, os.Getpid()) {
		t.Errorf("logger %d is in session %d: want a session of its own", pids[0], sid)
	}
	rt1.Close()

	rt2 := loggingRuntime(t, cfg)
	attachWrite(t, rt2, id, "after\n")
	eventually(t, 10*time.Second, "the echo through the new runtime", logHas(t, path, logfile.ReadOptions{}, "before\nafter\n"))
	if got := processesWith(t, dir); len(got) != 1 || got[0] != pids[0] {
		t.Errorf("loggers %v, want %d still", got, pids[0])
	}
	if err := rt2.RemoveContainer(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the logger's exit", func() error {
		if got := processesWith(t, dir); len(got) > 0 {
			return fmt.Errorf("loggers %v", got)
		}
		return nil
	})
}

// TestStdinLoggerFails: a logger that dies before the shim has opened the
// FIFOs fails the start, rather than leave it waiting for a reader.
func TestStdinLoggerFails(t *testing.T) {
	cfg := loggingConfig(t, sharedDaemon(t))
	cfg.LogBinary = "/bin/false"
	rt := loggingRuntime(t, cfg)
	ref := importBusybox(t, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec := container.ContainerSpec{ID: uniqueID("c"), Image: ref, Command: []string{"cat"}, Stdin: true}
	if err := rt.CreateContainer(ctx, spec); err != nil {
		t.Fatal(err)
	}
	err := rt.StartContainer(ctx, spec.ID)
	if err == nil || !strings.Contains(err.Error(), "logger exited") || ctx.Err() != nil {
		t.Fatalf("start with a logger that dies: %v, want an error saying so, at once", err)
	}
	if st, err := rt.Status(ctx, spec.ID); err != nil || st.State == container.StateRunning {
		t.Errorf("status after the failed start: %+v, %v", st, err)
	}
	if err := rt.RemoveContainer(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
}

func TestStdinNeedsLogBinary(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t)) // no LogBinary
	ref := importBusybox(t, rt)
	for _, spec := range []container.ContainerSpec{{Stdin: true}, {TTY: true}} {
		spec.ID, spec.Image = uniqueID("c"), ref
		if err := rt.CreateContainer(context.Background(), spec); !errors.Is(err, container.ErrInvalid) {
			t.Errorf("Create %+v without a logging binary: %v, want ErrInvalid", spec, err)
		}
	}
}

// processesWith lists the processes with s in their command line.
func processesWith(t *testing.T, s string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) && !isZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(b, ')')
	return err != nil || i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

func sessionOf(t *testing.T, pid int) int {
	t.Helper()
	sid, err := unix.Getsid(pid)
	if err != nil {
		t.Fatalf("getsid %d: %v", pid, err)
	}
	return sid
}
