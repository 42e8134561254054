package containertest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/image"
)

func newFake(t *testing.T) *Fake {
	t.Helper()
	f := New()
	t.Cleanup(f.Close)
	if _, err := f.AddImage("busybox", container.ImageConfig{Cmd: []string{"sh"}}); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFakeConformance(t *testing.T) {
	f := newFake(t)
	TestRuntime(t, Harness{
		Runtime: f,
		Image:   "busybox",
		Spec: func(id string) container.ContainerSpec {
			return container.ContainerSpec{ID: id, Image: "busybox", Command: []string{"sleep", "60"}}
		},
		MakeExit: func(_ context.Context, id string, code int) error { return f.Exit(id, code, false) },
		Stdin:    true,
		Mirror: func(t *testing.T) (container.Mirror, string) {
			if _, err := f.AddRemoteImage("peer.test:7443", "example.com/remote:1", container.ImageConfig{Cmd: []string{"sh"}}); err != nil {
				t.Fatal(err)
			}
			return container.Mirror{Host: "peer.test:7443"}, "example.com/remote:1"
		},
	})
}

func TestFakeScripting(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	spec := func(id string) container.ContainerSpec {
		return container.ContainerSpec{ID: id, Image: "busybox"}
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, f *Fake)
	}{
		{"fault fails the matching call Times times", func(t *testing.T, f *Fake) {
			f.Inject(Fault{Op: OpCreate, ID: "a", Err: boom, Times: 2})
			for i := 0; i < 2; i++ {
				if err := f.CreateContainer(ctx, spec("a")); !errors.Is(err, boom) {
					t.Fatalf("call %d: %v, want boom", i, err)
				}
			}
			if err := f.CreateContainer(ctx, spec("b")); err != nil {
				t.Fatalf("other id: %v", err)
			}
			if err := f.CreateContainer(ctx, spec("a")); err != nil {
				t.Fatalf("after the fault cleared: %v", err)
			}
		}},
		{"persistent fault until cleared", func(t *testing.T, f *Fake) {
			clear := f.Inject(Fault{Op: OpList, Err: container.ErrNotFound})
			for i := 0; i < 3; i++ {
				if _, err := f.List(ctx); !errors.Is(err, container.ErrNotFound) || !errors.Is(err, container.ErrNotFound) {
					t.Fatalf("List: %v", err)
				}
			}
			clear()
			if _, err := f.List(ctx); err != nil {
				t.Fatal(err)
			}
		}},
		{"exec handler sees the streams", func(t *testing.T, f *Fake) {
			f.SetExecHandler(func(_ context.Context, id string, s container.ExecSpec) (int, error) {
				in, _ := io.ReadAll(s.Stdin)
				io.WriteString(s.Stdout, strings.ToUpper(string(in)))
				return 7, nil
			})
			mustRun(t, f, "x")
			var out bytes.Buffer
			code, err := f.Exec(ctx, "x", container.ExecSpec{Cmd: []string{"cat"}, Stdin: strings.NewReader("hi"), Stdout: &out})
			if code != 7 || err != nil || out.String() != "HI" {
				t.Fatalf("exec = %d %v %q", code, err, out.String())
			}
		}},
		{"stop honours SIGTERM by default", func(t *testing.T, f *Fake) {
			mustRun(t, f, "x")
			f.StopContainer(ctx, "x", time.Minute)
			if e := <-f.Exits(); e.ExitCode != 143 {
				t.Fatalf("exit %+v", e)
			}
		}},
		{"stop of a TERM-ignoring container kills", func(t *testing.T, f *Fake) {
			mustRun(t, f, "x")
			f.SetStopBehaviour("x", StopBehaviour{IgnoreTerm: true})
			start := time.Now()
			f.StopContainer(ctx, "x", time.Minute)
			if e := <-f.Exits(); e.ExitCode != 137 || time.Since(start) > time.Second {
				t.Fatalf("exit %+v after %v", e, time.Since(start))
			}
			if c := f.Calls(); c[len(c)-1] != (Call{Op: OpStop, ID: "x", Grace: time.Minute}) {
				t.Fatalf("last call %+v", c[len(c)-1])
			}
		}},
		{"trap exit code", func(t *testing.T, f *Fake) {
			mustRun(t, f, "x")
			f.SetStopBehaviour("x", StopBehaviour{ExitCode: 7})
			f.StopContainer(ctx, "x", time.Second)
			if e := <-f.Exits(); e.ExitCode != 7 {
				t.Fatalf("exit %+v", e)
			}
		}},
		{"oom exit", func(t *testing.T, f *Fake) {
			mustRun(t, f, "x")
			if err := f.Exit("x", 137, true); err != nil {
				t.Fatal(err)
			}
			if e := <-f.Exits(); !e.OOMKilled {
				t.Fatalf("exit %+v", e)
			}
			if st, _ := f.Status(ctx, "x"); !st.OOMKilled || st.ExitCode != 137 {
				t.Fatalf("status %+v", st)
			}
			if err := f.Exit("x", 1, false); !errors.Is(err, container.ErrNotRunning) {
				t.Fatalf("exit of exited: %v", err)
			}
		}},
		{"exits never block the runtime", func(t *testing.T, f *Fake) {
			for i := 0; i < 2000; i++ {
				mustRun(t, f, "x")
				f.Exit("x", i%256, false)
			}
			for i := 0; i < 2000; i++ {
				if e := <-f.Exits(); e.ExitCode != i%256 {
					t.Fatalf("exit %d = %+v, out of order", i, e)
				}
			}
		}},
		{"clock stamps times", func(t *testing.T, f *Fake) {
			at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			f.SetClock(func() time.Time { return at })
			mustRun(t, f, "x")
			if st, _ := f.Status(ctx, "x"); !st.StartedAt.Equal(at) || !st.CreatedAt.Equal(at) {
				t.Fatalf("status %+v", st)
			}
		}},
		{"returned values are copies", func(t *testing.T, f *Fake) {
			s := spec("x")
			s.Labels = map[string]string{"k": "v"}
			f.CreateContainer(ctx, s)
			s.Labels["k"] = "changed"
			st, _ := f.Status(ctx, "x")
			st.Labels["k"] = "mine"
			if st2, _ := f.Status(ctx, "x"); st2.Labels["k"] != "v" {
				t.Fatalf("labels shared: %v", st2.Labels)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newFake(t)) })
	}
}

func mustRun(t *testing.T, f *Fake, id string) {
	t.Helper()
	ctx := context.Background()
	if _, err := f.Status(ctx, id); errors.Is(err, container.ErrNotFound) {
		if err := f.CreateContainer(ctx, container.ContainerSpec{ID: id, Image: "busybox"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func TestFakeImportsArchives(t *testing.T) {
	files := []image.File{{Path: "/app", Mode: 0o755, Data: []byte("#!/bin/sh\n")}}
	cfg := image.Config{Entrypoint: []string{"/app"}, Cmd: []string{"serve"}, Env: []string{"A=1"}, WorkingDir: "/w", StopSignal: "SIGQUIT"}
	for _, tc := range []struct {
		name string
		opts []image.Option
	}{{"oci", nil}, {"oci plain layer", []image.Option{image.Uncompressed()}}, {"docker", []image.Option{image.WithFormat(image.FormatDocker)}}} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			res, err := image.BuildArchive(&buf, "example.com/app:v1", files, cfg, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			f := New()
			defer f.Close()
			imgs, err := f.ImportImage(context.Background(), &buf)
			if err != nil {
				t.Fatal(err)
			}
			if len(imgs) != 1 || imgs[0].Ref != "example.com/app:v1" || imgs[0].ConfigDigest != res.ConfigDigest {
				t.Fatalf("imported %+v, want example.com/app:v1 with config %s", imgs, res.ConfigDigest)
			}
			got, err := f.GetImage(context.Background(), "example.com/app:v1")
			if err != nil || got.Config.StopSignal != "SIGQUIT" || got.Config.WorkingDir != "/w" || got.Config.Cmd[0] != "serve" {
				t.Fatalf("GetImage = %+v, %v", got, err)
			}
		})
	}
	if _, err := New().ImportImage(context.Background(), strings.NewReader("not a tar")); err == nil {
		t.Error("garbage imported")
	}
}

func TestFakePull(t *testing.T) {
	ctx := context.Background()
	cfg := container.ImageConfig{Cmd: []string{"serve"}}
	a, b := container.Mirror{Host: "a.test:1"}, container.Mirror{Host: "b.test:1"}
	t.Run("mirrors in order, down ones skipped, then present", func(t *testing.T) {
		f := New()
		defer f.Close()
		f.AddRemoteImage("b.test:1", "example.com/app:1", cfg)
		f.SetSourceDown("a.test:1", true)
		var got []container.PullProgress
		img, err := f.PullImage(ctx, "example.com/app:1", container.PullOptions{Mirrors: []container.Mirror{a, b},
			Progress: func(p container.PullProgress) { got = append(got, p) }})
		if err != nil || img.Ref != "example.com/app:1" || img.Config.Cmd[0] != "serve" {
			t.Fatalf("pull = %+v, %v", img, err)
		}
		if len(got) != 1 || got[0].Source != "b.test:1" || got[0].Digest != img.Digest {
			t.Errorf("progress %+v", got)
		}
		f.RemoveRemoteImage("b.test:1", "example.com/app:1")
		if again, err := f.PullImage(ctx, "example.com/app:1", container.PullOptions{}); err != nil || again.Digest != img.Digest {
			t.Errorf("pull of present = %+v, %v", again, err)
		}
		if _, err := f.GetImage(ctx, "example.com/app:1"); err != nil {
			t.Error(err)
		}
	})
	t.Run("not found lists where it looked", func(t *testing.T) {
		f := New()
		defer f.Close()
		f.SetSourceDown("a.test:1", true)
		_, err := f.PullImage(ctx, "example.com/app:1", container.PullOptions{Mirrors: []container.Mirror{a, b}})
		if !errors.Is(err, container.ErrNotFound) || !strings.Contains(err.Error(), "a.test:1: unreachable") ||
			!strings.Contains(err.Error(), "b.test:1: not found") || !strings.Contains(err.Error(), "registry example.com: not asked") {
			t.Errorf("pull = %v", err)
		}
	})
	t.Run("nothing reachable is not ErrNotFound", func(t *testing.T) {
		f := New()
		defer f.Close()
		f.SetSourceDown("a.test:1", true)
		_, err := f.PullImage(ctx, "example.com/app:1", container.PullOptions{Mirrors: []container.Mirror{a}})
		if err == nil || errors.Is(err, container.ErrNotFound) {
			t.Errorf("pull = %v", err)
		}
	})
	t.Run("registry last, only when asked", func(t *testing.T) {
		f := New()
		defer f.Close()
		f.AddRemoteImage("docker.io", "busybox", cfg)
		if _, err := f.PullImage(ctx, "busybox", container.PullOptions{Mirrors: []container.Mirror{a}}); !errors.Is(err, container.ErrNotFound) {
			t.Fatalf("pull without registry = %v", err)
		}
		img, err := f.PullImage(ctx, "busybox", container.PullOptions{Mirrors: []container.Mirror{a}, Registry: true})
		if err != nil || img.Ref != "docker.io/library/busybox:latest" {
			t.Fatalf("pull = %+v, %v", img, err)
		}
	})
	t.Run("faults and the call log", func(t *testing.T) {
		f := New()
		defer f.Close()
		boom := errors.New("boom")
		f.Inject(Fault{Op: OpPullImage, Err: boom, Times: 1})
		if _, err := f.PullImage(ctx, "x:1", container.PullOptions{}); !errors.Is(err, boom) {
			t.Fatalf("pull = %v", err)
		}
		if calls := f.Calls(); len(calls) != 1 || calls[0].Op != OpPullImage || calls[0].ID != "x:1" {
			t.Errorf("calls %+v", calls)
		}
	})
}

func TestFakeStdin(t *testing.T) {
	f := newFake(t)
	ctx := context.Background()
	spec := container.ContainerSpec{ID: "c1", Image: "busybox", Stdin: true, StdinOnce: true, TTY: true}
	if err := f.CreateContainer(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := f.StartContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	w1, err := f.AttachStdin(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	w2, err := f.AttachStdin(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w1, "one ")
	io.WriteString(w2, "two")
	w1.Close()
	if _, err := io.WriteString(w1, "x"); err == nil {
		t.Error("write after close succeeded")
	}
	// The first close spent the StdinOnce stdin for new writers; one
	// still open goes on, as with a real FIFO.
	if _, err := io.WriteString(w2, " three"); err != nil {
		t.Errorf("write by the other writer: %v", err)
	}
	if data, closed := f.Stdin("c1"); string(data) != "one two three" || !closed {
		t.Errorf("Stdin = %q, %v; want the writes, closed", data, closed)
	}
	if _, err := f.AttachStdin(ctx, "c1"); !errors.Is(err, container.ErrInvalid) {
		t.Errorf("AttachStdin after the StdinOnce close: %v", err)
	}
	if err := f.ResizeTTY(ctx, "c1", container.Size{Width: 80, Height: 24}); err != nil {
		t.Fatal(err)
	}
	if got := f.Resizes("c1"); len(got) != 1 || got[0] != (container.Size{Width: 80, Height: 24}) {
		t.Errorf("Resizes = %v", got)
	}

	// The run ends: its writers fail. The next run has a fresh stdin.
	if err := f.Exit("c1", 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w2, "late"); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write after the exit: %v, want io.ErrClosedPipe", err)
	}
	if err := f.StartContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if data, closed := f.Stdin("c1"); len(data) != 0 || closed || len(f.Resizes("c1")) != 0 {
		t.Errorf("a new run has stdin %q, closed %v, resizes %v", data, closed, f.Resizes("c1"))
	}
	w3, err := f.AttachStdin(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w3, "again")
	if _, err := io.WriteString(w2, "old run"); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write by a writer of the old run: %v", err)
	}
	if data, _ := f.Stdin("c1"); string(data) != "again" {
		t.Errorf("Stdin of the new run = %q", data)
	}
	ops := map[Op]bool{}
	for _, c := range f.Calls() {
		ops[c.Op] = true
	}
	if !ops[OpAttachStdin] || !ops[OpResizeTTY] {
		t.Errorf("calls %v lack AttachStdin or ResizeTTY", f.Calls())
	}
}
