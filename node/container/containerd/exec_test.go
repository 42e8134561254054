package containerd

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/container"
)

func TestExecTTYAndCancel(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	importBusybox(t, rt)
	ctx := context.Background()
	id := run(t, rt, sleeper(container.ContainerSpec{}))

	// A terminal: tty answers, stderr arrives on stdout, resizes apply.
	resize := make(chan container.Size, 1)
	resize <- container.Size{Width: 123, Height: 45}
	var out bytes.Buffer
	code, err := rt.Exec(ctx, id, container.ExecSpec{Cmd: []string{"sh", "-c", "sleep 0.3; tty; stty size; echo err >&2"}, TTY: true, Stdout: &out, Resize: resize})
	got := strings.ReplaceAll(out.String(), "\r\n", "\n")
	if err != nil || code != 0 || !strings.Contains(got, "/dev/pts/") || !strings.Contains(got, "45 123\n") || !strings.Contains(got, "err\n") {
		t.Errorf("tty exec = %d %v %q", code, err, got)
	}

	// Cancelling the context kills the exec'd process.
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = rt.Exec(cctx, id, container.ExecSpec{Cmd: []string{"sleep", "30"}})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("cancelled exec: %v after %v", err, time.Since(start))
	}
	if _, out := execOut(t, rt, id, "sh", "-c", "ps -o args | grep -cx 'sleep 30' || true"); strings.TrimSpace(out) != "0" {
		t.Errorf("sleep 30 still running after the cancelled exec: %q", out)
	}
}

func TestCreateErrors(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	ref := importBusybox(t, rt)
	ctx := context.Background()
	id := uniqueID("dup")
	if err := rt.CreateContainer(ctx, container.ContainerSpec{ID: id, Image: ref}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		spec container.ContainerSpec
		want error
	}{
		{"duplicate", container.ContainerSpec{ID: id, Image: ref}, container.ErrAlreadyExists},
		{"absent image", container.ContainerSpec{ID: uniqueID("c"), Image: "nowhere/none:1"}, container.ErrNotFound},
		{"bad id", container.ContainerSpec{ID: "a/b", Image: ref}, container.ErrInvalid},
		{"reserved label", container.ContainerSpec{ID: uniqueID("c"), Image: ref, Labels: map[string]string{container.ReservedLabelPrefix + "x": "y"}}, container.ErrInvalid},
	} {
		if err := rt.CreateContainer(ctx, tc.spec); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A start that fails (no such binary) leaves a startable container and
	// reports no exit.
	bad := uniqueID("bad")
	if err := rt.CreateContainer(ctx, container.ContainerSpec{ID: bad, Image: ref, Command: []string{"/nope"}}); err != nil {
		t.Fatal(err)
	}
	if err := rt.StartContainer(ctx, bad); err == nil {
		t.Fatal("started a container whose binary does not exist")
	}
	if st, err := rt.Status(ctx, bad); err != nil || st.State != container.StateCreated {
		t.Errorf("after a failed start: %+v %v", st, err)
	}
	select {
	case e := <-rt.Exits():
		t.Errorf("exit reported for a failed start: %+v", e)
	case <-time.After(200 * time.Millisecond):
	}
	if err := rt.RemoveContainer(ctx, bad); err != nil {
		t.Error(err)
	}
}
