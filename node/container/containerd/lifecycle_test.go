package containerd

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/container"
)

func TestLifecycle(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	ctx := context.Background()
	importBusybox(t, rt)
	logPath := filepath.Join(shortDir(t), "logs", "c.log")
	id := run(t, rt, container.ContainerSpec{
		Command: []string{"sh", "-c", "echo hello; echo oops >&2; sleep 30"},
		LogPath: logPath,
		Labels:  map[string]string{"pod": "p1"},
	})

	st, err := rt.Status(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != container.StateRunning || st.Pid <= 0 || st.StartedAt.IsZero() || st.Labels["pod"] != "p1" || len(st.Labels) != 1 {
		t.Fatalf("status = %+v, want Running with a pid, a start time and only the pod label", st)
	}
	if st.Image != "docker.io/shoal.test/busybox:1" && st.Image != "shoal.test/busybox:1" {
		t.Errorf("image = %q", st.Image)
	}
	if st.ImageDigest != busyboxRes.ConfigDigest {
		t.Errorf("image digest = %q, want %q", st.ImageDigest, busyboxRes.ConfigDigest)
	}
	eventually(t, 5*time.Second, "log", func() error { return fileContains(logPath, "hello\n") })
	eventually(t, 5*time.Second, "log", func() error { return fileContains(logPath, "oops\n") })

	if code, _ := execOut(t, rt, id, "sh", "-c", "exit 3"); code != 3 {
		t.Errorf("exec exit code = %d, want 3", code)
	}
	var out bytes.Buffer
	code, err := rt.Exec(ctx, id, container.ExecSpec{Cmd: []string{"sh", "-c", "cat; echo \"[$GREETING]\""}, Env: []string{"GREETING=hi"},
		Stdin: strings.NewReader("from stdin\n"), Stdout: &out})
	if err != nil || code != 0 || out.String() != "from stdin\n[hi]\n" {
		t.Errorf("exec with stdin = %d, %v, %q", code, err, out.String())
	}
	if _, err := rt.Exec(ctx, id, container.ExecSpec{Cmd: []string{"/no/such/binary"}}); err == nil {
		t.Error("exec of a missing binary succeeded")
	}

	// sh as PID 1 without a trap ignores SIGTERM: killed after the grace.
	start := time.Now()
	if err := rt.StopContainer(ctx, id, 700*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 700*time.Millisecond || d > 5*time.Second {
		t.Errorf("stop took %v, want the 700ms grace then a kill", d)
	}
	e := waitExit(t, rt, id, 5*time.Second)
	if e.ExitCode != 137 || e.OOMKilled || e.At.IsZero() {
		t.Errorf("exit = %+v, want 137 not OOM", e)
	}
	st, err = rt.Status(ctx, id)
	if err != nil || st.State != container.StateExited || st.ExitCode != 137 || st.FinishedAt.IsZero() || st.Pid != 0 {
		t.Errorf("status after stop = %+v, %v", st, err)
	}
	if err := rt.StopContainer(ctx, id, time.Second); err != nil {
		t.Errorf("stopping a stopped container: %v", err)
	}
	if _, err := rt.Exec(ctx, id, container.ExecSpec{Cmd: []string{"true"}}); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("exec in a stopped container: %v, want ErrNotRunning", err)
	}

	// Start again: a new run, appending to the same log.
	if err := rt.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if st, _ := rt.Status(ctx, id); st.State != container.StateRunning || st.ExitCode != 0 || !st.FinishedAt.IsZero() {
		t.Errorf("status after restart = %+v", st)
	}
	eventually(t, 5*time.Second, "second hello", func() error {
		data, _ := os.ReadFile(logPath)
		if strings.Count(string(data), "hello") != 2 {
			return errors.New("want two hellos")
		}
		return nil
	})
	if err := rt.StartContainer(ctx, id); err != nil {
		t.Errorf("starting a running container: %v", err)
	}
	if err := rt.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, rt, id, 5*time.Second); e.ExitCode != 137 {
		t.Errorf("exit of removed container = %+v", e)
	}
	if _, err := rt.Status(ctx, id); !errors.Is(err, container.ErrNotFound) {
		t.Errorf("status after remove: %v, want ErrNotFound", err)
	}
	if err := rt.RemoveContainer(ctx, id); err != nil {
		t.Errorf("removing a removed container: %v", err)
	}
}
