package containertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/container"
)

// Harness describes a Runtime to TestRuntime. The Runtime must be used by
// nothing else while the test runs (TestRuntime consumes its Exits).
type Harness struct {
	Runtime container.Runtime
	// Image is the ref of an image present in Runtime.
	Image string
	// Spec returns a spec for a container of Image that runs until
	// MakeExit ends it.
	Spec func(id string) container.ContainerSpec
	// MakeExit makes running container id's main process exit with code.
	MakeExit func(ctx context.Context, id string, code int) error
	// Timeout bounds each wait for an exit (default 10 s).
	Timeout time.Duration
	// Mirror, when set, returns a mirror (reachable by Runtime's
	// PullImage) holding an image Runtime lacks, and that image's ref,
	// for the pull cases.
	Mirror func(t *testing.T) (container.Mirror, string)
	// Stdin says that Runtime runs containers with ContainerSpec.Stdin and
	// TTY (the containerd runtime needs a logging binary for them), for
	// the AttachStdin and ResizeTTY cases that need such a container.
	Stdin bool
}

// ExitFileSpec is a Spec for runtimes that run real processes: a busybox
// shell that waits for /tmp/exit to appear and exits with the code written
// in it, deleting it first so that the next run (the root filesystem
// persists across runs) waits again; ExitFileMakeExit writes that file
// through Exec.
func ExitFileSpec(image string) func(id string) container.ContainerSpec {
	return func(id string) container.ContainerSpec {
		return container.ContainerSpec{ID: id, Image: image, Command: []string{"sh", "-c",
			"while [ ! -f /tmp/exit ]; do sleep 0.02; done; c=$(cat /tmp/exit); rm /tmp/exit; exit $c"}}
	}
}

// ExitFileMakeExit pairs with ExitFileSpec.
func ExitFileMakeExit(rt container.Runtime) func(ctx context.Context, id string, code int) error {
	return func(ctx context.Context, id string, code int) error {
		rc, err := rt.Exec(ctx, id, container.ExecSpec{Cmd: []string{"sh", "-c", "echo " + strconv.Itoa(code) + " > /tmp/exit.new && mv /tmp/exit.new /tmp/exit"}})
		if err == nil && rc != 0 {
			err = fmt.Errorf("writing the exit file: exit %d", rc)
		}
		return err
	}
}

// TestRuntime checks the container.Runtime contract: errors, states,
// exits, idempotent stop/start/remove.
func TestRuntime(t *testing.T, h Harness) {
	t.Helper()
	if h.Timeout == 0 {
		h.Timeout = 10 * time.Second
	}
	ctx := context.Background()
	rt := h.Runtime
	id := fmt.Sprintf("conformance-%d", time.Now().UnixNano()%1e9)
	t.Cleanup(func() { rt.RemoveContainer(context.Background(), id) })

	expectErr := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: got %v, want %v", what, err, want)
		}
	}
	expectOK := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	expectState := func(what string, want container.State) container.ContainerStatus {
		t.Helper()
		st, err := rt.Status(ctx, id)
		if err != nil || st.State != want {
			t.Fatalf("%s: status %+v, %v; want %v", what, st, err, want)
		}
		return st
	}
	waitExit := func(what string) container.Exit {
		t.Helper()
		timer := time.NewTimer(h.Timeout)
		defer timer.Stop()
		for {
			select {
			case e := <-rt.Exits():
				if e.ID == id {
					return e
				}
			case <-timer.C:
				t.Fatalf("%s: no exit within %v", what, h.Timeout)
			}
		}
	}

	// Images.
	img, err := rt.GetImage(ctx, h.Image)
	expectOK("GetImage", err)
	if want, _ := container.NormalizeRef(h.Image); img.Ref != want || img.ConfigDigest == "" || img.Digest == "" {
		t.Errorf("GetImage = %+v, want ref %s and digests", img, want)
	}
	_, err = rt.GetImage(ctx, "example.invalid/absent:1")
	expectErr("GetImage absent", err, container.ErrNotFound)
	_, err = rt.GetImage(ctx, "Not A Ref")
	expectErr("GetImage malformed", err, container.ErrInvalid)
	imgs, err := rt.ListImages(ctx)
	expectOK("ListImages", err)
	found := false
	for _, i := range imgs {
		found = found || i.Ref == img.Ref
	}
	if !found {
		t.Errorf("ListImages = %+v, lacks %s", imgs, img.Ref)
	}

	// Pulls. Present images need no source; absent ones need one.
	pulled, err := rt.PullImage(ctx, h.Image, container.PullOptions{})
	expectOK("PullImage present", err)
	if pulled.Ref != img.Ref || pulled.Digest != img.Digest || pulled.ConfigDigest != img.ConfigDigest {
		t.Errorf("PullImage present = %+v, want %+v", pulled, img)
	}
	_, err = rt.PullImage(ctx, "example.invalid/absent:1", container.PullOptions{})
	expectErr("PullImage absent, nowhere to look", err, container.ErrNotFound)
	_, err = rt.PullImage(ctx, "Not A Ref", container.PullOptions{})
	expectErr("PullImage malformed", err, container.ErrInvalid)
	_, err = rt.PullImage(ctx, "example.invalid/absent:1", container.PullOptions{Mirrors: []container.Mirror{{Host: "no-port"}}})
	expectErr("PullImage bad mirror", err, container.ErrInvalid)
	if h.Mirror != nil {
		m, ref := h.Mirror(t)
		want, _ := container.NormalizeRef(ref)
		if _, err := rt.GetImage(ctx, ref); !errors.Is(err, container.ErrNotFound) {
			t.Fatalf("the mirror's image %s is already present: %v", ref, err)
		}
		_, err = rt.PullImage(ctx, "example.invalid/absent:1", container.PullOptions{Mirrors: []container.Mirror{m}})
		expectErr("PullImage absent from the mirror", err, container.ErrNotFound)
		if err != nil && !strings.Contains(err.Error(), m.Host) {
			t.Errorf("PullImage absent: %q does not say where it looked (%s)", err, m.Host)
		}
		pulled, err := rt.PullImage(ctx, ref, container.PullOptions{Mirrors: []container.Mirror{m}})
		expectOK("PullImage from the mirror", err)
		got, err := rt.GetImage(ctx, ref)
		expectOK("GetImage pulled", err)
		if pulled.Ref != want || got.Ref != want || got.Digest != pulled.Digest || got.ConfigDigest != pulled.ConfigDigest || pulled.Digest == "" {
			t.Errorf("pulled %+v, then GetImage = %+v; want ref %s", pulled, got, want)
		}
		again, err := rt.PullImage(ctx, ref, container.PullOptions{})
		expectOK("PullImage pulled again, no source", err)
		if again.Digest != pulled.Digest {
			t.Errorf("pulled again = %+v, want %+v", again, pulled)
		}
		spec := h.Spec(id)
		spec.Image = ref
		expectOK("Create from the pulled image", rt.CreateContainer(ctx, spec))
		expectOK("Remove created from the pulled image", rt.RemoveContainer(ctx, id))
	}

	// Absent containers.
	absent := id + "-absent"
	expectErr("Start absent", rt.StartContainer(ctx, absent), container.ErrNotFound)
	expectErr("Stop absent", rt.StopContainer(ctx, absent, time.Second), container.ErrNotFound)
	_, err = rt.Status(ctx, absent)
	expectErr("Status absent", err, container.ErrNotFound)
	_, err = rt.Exec(ctx, absent, container.ExecSpec{Cmd: []string{"true"}})
	expectErr("Exec absent", err, container.ErrNotFound)
	_, err = rt.AttachStdin(ctx, absent)
	expectErr("AttachStdin absent", err, container.ErrNotFound)
	expectErr("ResizeTTY absent", rt.ResizeTTY(ctx, absent, container.Size{Width: 80, Height: 24}), container.ErrNotFound)
	expectOK("Remove absent", rt.RemoveContainer(ctx, absent))

	// Bad specs.
	bad := h.Spec("Bad ID!")
	expectErr("Create bad ID", rt.CreateContainer(ctx, bad), container.ErrInvalid)
	bad = h.Spec(id)
	bad.Mounts = []container.Mount{{Source: "relative", Destination: "/x"}}
	expectErr("Create relative mount", rt.CreateContainer(ctx, bad), container.ErrInvalid)
	bad = h.Spec(id)
	bad.Security.CapAdd = []string{"CAP_FLY"}
	expectErr("Create unknown capability", rt.CreateContainer(ctx, bad), container.ErrInvalid)
	bad = h.Spec(id)
	bad.Image = "example.invalid/absent:1"
	expectErr("Create from absent image", rt.CreateContainer(ctx, bad), container.ErrNotFound)
	_, err = rt.Status(ctx, id)
	expectErr("Status after failed creates", err, container.ErrNotFound)

	// Create.
	spec := h.Spec(id)
	spec.Labels = map[string]string{"conformance": "yes"}
	expectOK("Create", rt.CreateContainer(ctx, spec))
	expectErr("Create twice", rt.CreateContainer(ctx, spec), container.ErrAlreadyExists)
	st := expectState("after create", container.StateCreated)
	if st.ID != id || st.Pid != 0 || !st.StartedAt.IsZero() || st.Labels["conformance"] != "yes" || len(st.Labels) != 1 || st.Image != img.Ref || st.ImageDigest != img.ConfigDigest {
		t.Errorf("created status = %+v", st)
	}
	_, err = rt.Exec(ctx, id, container.ExecSpec{Cmd: []string{"true"}})
	expectErr("Exec in created", err, container.ErrNotRunning)
	expectOK("Stop created", rt.StopContainer(ctx, id, time.Second))

	// Start, exit by itself.
	expectOK("Start", rt.StartContainer(ctx, id))
	st = expectState("after start", container.StateRunning)
	if st.Pid <= 0 || st.StartedAt.IsZero() {
		t.Errorf("running status = %+v", st)
	}
	expectOK("Start running", rt.StartContainer(ctx, id))
	if st2 := expectState("after second start", container.StateRunning); st2.Pid != st.Pid {
		t.Errorf("second start changed pid %d → %d", st.Pid, st2.Pid)
	}
	_, err = rt.Exec(ctx, id, container.ExecSpec{})
	expectErr("Exec without command", err, container.ErrInvalid)
	_, err = rt.AttachStdin(ctx, id)
	expectErr("AttachStdin without stdin", err, container.ErrInvalid)
	expectErr("ResizeTTY without a terminal", rt.ResizeTTY(ctx, id, container.Size{Width: 80, Height: 24}), container.ErrInvalid)
	expectOK("MakeExit", h.MakeExit(ctx, id, 3))
	if e := waitExit("exit 3"); e.ExitCode != 3 || e.OOMKilled || e.At.IsZero() {
		t.Errorf("exit = %+v, want code 3", e)
	}
	st = expectState("after exit", container.StateExited)
	if st.ExitCode != 3 || st.FinishedAt.IsZero() || st.Pid != 0 {
		t.Errorf("exited status = %+v", st)
	}
	expectOK("Stop exited", rt.StopContainer(ctx, id, time.Second))

	// Restart, then stop without grace.
	expectOK("Start exited", rt.StartContainer(ctx, id))
	st = expectState("after restart", container.StateRunning)
	if st.ExitCode != 0 || !st.FinishedAt.IsZero() {
		t.Errorf("restarted status keeps the old exit: %+v", st)
	}
	expectOK("Stop", rt.StopContainer(ctx, id, 0))
	if e := waitExit("stop"); e.ExitCode != 137 {
		t.Errorf("exit after stop without grace = %+v, want 137", e)
	}
	expectState("after stop", container.StateExited)

	list, err := rt.List(ctx)
	expectOK("List", err)
	found = false
	for _, c := range list {
		found = found || (c.ID == id && c.State == container.StateExited && c.Labels["conformance"] == "yes")
	}
	if !found {
		t.Errorf("List = %+v, lacks exited %s", list, id)
	}

	// Remove a running container: killed, exit reported, gone.
	expectOK("Start again", rt.StartContainer(ctx, id))
	expectOK("Remove running", rt.RemoveContainer(ctx, id))
	if e := waitExit("remove"); e.ExitCode != 137 {
		t.Errorf("exit after remove = %+v, want 137", e)
	}
	_, err = rt.Status(ctx, id)
	expectErr("Status removed", err, container.ErrNotFound)
	expectOK("Remove removed", rt.RemoveContainer(ctx, id))
	list, _ = rt.List(ctx)
	for _, c := range list {
		if c.ID == id {
			t.Errorf("List still has removed %s", id)
		}
	}
	// The ID is free again.
	expectOK("Create after remove", rt.CreateContainer(ctx, h.Spec(id)))
	expectOK("Remove created", rt.RemoveContainer(ctx, id))

	if h.Stdin {
		testStdin(t, h, id)
	}
}

// testStdin: a container with a StdinOnce stdin and a terminal.
func testStdin(t *testing.T, h Harness, id string) {
	t.Helper()
	ctx := context.Background()
	rt := h.Runtime
	spec := h.Spec(id)
	spec.Stdin, spec.StdinOnce, spec.TTY = true, true, true
	if err := rt.CreateContainer(ctx, spec); err != nil {
		t.Fatalf("Create with stdin and a terminal: %v", err)
	}
	defer rt.RemoveContainer(ctx, id)
	size := container.Size{Width: 100, Height: 40}
	if _, err := rt.AttachStdin(ctx, id); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("AttachStdin created: %v, want ErrNotRunning", err)
	}
	if err := rt.ResizeTTY(ctx, id, size); !errors.Is(err, container.ErrNotRunning) {
		t.Errorf("ResizeTTY created: %v, want ErrNotRunning", err)
	}
	if err := rt.StartContainer(ctx, id); err != nil {
		t.Fatalf("Start with stdin and a terminal: %v", err)
	}
	if err := rt.ResizeTTY(ctx, id, size); err != nil {
		t.Errorf("ResizeTTY: %v", err)
	}
	w1, err := rt.AttachStdin(ctx, id)
	if err != nil {
		t.Fatalf("AttachStdin: %v", err)
	}
	w2, err := rt.AttachStdin(ctx, id)
	if err != nil {
		t.Fatalf("AttachStdin, a second writer: %v", err)
	}
	if _, err := io.WriteString(w1, "hello\n"); err != nil {
		t.Errorf("writing stdin: %v", err)
	}
	if err := w1.Close(); err != nil {
		t.Errorf("closing stdin: %v", err)
	}
	// StdinOnce: spent by the first close, for new writers.
	if _, err := rt.AttachStdin(ctx, id); !errors.Is(err, container.ErrInvalid) {
		t.Errorf("AttachStdin after a StdinOnce close: %v, want ErrInvalid", err)
	}
	w2.Close()
	if err := rt.RemoveContainer(ctx, id); err != nil {
		t.Fatalf("Remove with stdin: %v", err)
	}
}
