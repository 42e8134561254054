package containerd

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	ctd "github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	digest "github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/image"
)

// Archives built by package image import with the right names, configs and
// diff_ids, in every layout, and run.
func TestImageRoundTrip(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	ctx := context.Background()
	files, err := image.BusyboxFiles()
	if err != nil {
		t.Fatal(err)
	}
	cfg := image.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo $GREETING from $(pwd)"},
		Env: []string{image.DefaultPath, "GREETING=hello"}, WorkingDir: "/tmp", StopSignal: "SIGQUIT", Labels: map[string]string{"l": "v"}}
	for _, tc := range []struct {
		name, ref, want string
		opts            []image.Option
	}{
		{"oci gzip", "roundtrip/gz:1", "docker.io/roundtrip/gz:1", nil},
		{"oci plain", "example.com/plain:2", "example.com/plain:2", []image.Option{image.Uncompressed()}},
		{"docker save", "dockersave", "docker.io/library/dockersave:latest", []image.Option{image.WithFormat(image.FormatDocker)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			res, err := image.BuildArchive(&buf, tc.ref, files, cfg, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			imgs, err := rt.ImportImage(ctx, &buf)
			if err != nil {
				t.Fatal(err)
			}
			if len(imgs) != 1 || imgs[0].Ref != tc.want {
				t.Fatalf("imported %+v, want one image %s", imgs, tc.want)
			}
			img, err := rt.GetImage(ctx, tc.ref)
			if err != nil {
				t.Fatal(err)
			}
			if img.ConfigDigest != res.ConfigDigest || img.Size <= 0 {
				t.Errorf("image %+v, want config %s", img, res.ConfigDigest)
			}
			if tc.opts == nil && img.Digest != res.ManifestDigest {
				t.Errorf("manifest digest %s, want %s", img.Digest, res.ManifestDigest)
			}
			c := img.Config
			if !slices.Equal(c.Entrypoint, cfg.Entrypoint) || !slices.Equal(c.Cmd, cfg.Cmd) || !slices.Equal(c.Env, cfg.Env) ||
				c.WorkingDir != "/tmp" || c.StopSignal != "SIGQUIT" || c.Labels["l"] != "v" {
				t.Errorf("config %+v", c)
			}
			// diff_ids as containerd reads them: sha256 of the plain tar.
			stored, err := rt.client.ImageService().Get(rt.ns(ctx), img.Ref)
			if err != nil {
				t.Fatal(err)
			}
			diffIDs, err := ctd.NewImage(rt.client, stored).RootFS(rt.ns(ctx))
			if err != nil || !slices.Equal(diffIDs, []digest.Digest{digest.Digest(res.DiffID)}) {
				t.Errorf("diff ids %v %v, want [%s]", diffIDs, err, res.DiffID)
			}
			// It runs with the image's entrypoint, cmd, env and workdir.
			id := run(t, rt, container.ContainerSpec{Image: tc.ref, LogPath: shortDir(t) + "/log"})
			if e := waitExit(t, rt, id, 10*time.Second); e.ExitCode != 0 {
				t.Errorf("exit %+v", e)
			}
			st, _ := rt.Status(ctx, id)
			if err := fileContains(st.LogPath, "hello from /tmp\n"); err != nil {
				t.Error(err)
			}
		})
	}
	list, err := rt.ListImages(ctx)
	if err != nil || len(list) != 3 {
		t.Errorf("ListImages = %d images, %v", len(list), err)
	}
}

// CreateContainer reads an image once and keeps what it read; an image that
// was removed (its snapshots collected) and imported again under the same
// digest is unpacked afresh instead of failing on the missing snapshot.
func TestCreateAfterImageReimported(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	ctx := context.Background()
	var buf bytes.Buffer
	const ref = "shoal.test/reimport:1"
	if _, err := image.BusyboxImage(&buf, ref); err != nil {
		t.Fatal(err)
	}
	archive := buf.Bytes()
	if _, err := rt.ImportImage(ctx, bytes.NewReader(archive)); err != nil {
		t.Fatal(err)
	}
	runOnce := func() {
		t.Helper()
		id := run(t, rt, container.ContainerSpec{Image: ref, Command: []string{"true"}})
		if ex := waitExit(t, rt, id, 20*time.Second); ex.ExitCode != 0 {
			t.Fatalf("container exited %d", ex.ExitCode)
		}
		if err := rt.RemoveContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	runOnce() // reads and unpacks the image, and caches what it read

	name, err := container.NormalizeRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	nctx := rt.ns(ctx)
	img, err := rt.client.GetImage(nctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.client.ImageService().Delete(nctx, name, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	if ok, err := img.IsUnpacked(nctx, rt.cfg.Snapshotter); err == nil && ok {
		t.Fatal("the image's snapshots survived its deletion; the test would not exercise a stale cache")
	}
	// Imported again without unpacking (as a pull that stopped half way
	// leaves it): the cached snapshot parent no longer exists.
	if _, err := rt.client.Import(nctx, bytes.NewReader(archive),
		ctd.WithImageRefTranslator(container.RefFromAnnotation),
		ctd.WithSkipDigestRef(func(name string) bool { return name != "" })); err != nil {
		t.Fatal(err)
	}
	if ok, err := img.IsUnpacked(nctx, rt.cfg.Snapshotter); err == nil && ok {
		t.Fatal("the image is unpacked again; the test would not exercise a stale cache")
	}
	runOnce()
}

// TestGetImageFollowsTag: image descriptions are kept per name and digest,
// so a tag moved to another image is described afresh, and what a caller
// does to a description does not reach the next one.
func TestGetImageFollowsTag(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	ctx := context.Background()
	const ref = "shoal.test/moving:1"
	importAt := func(created time.Time) image.Result {
		t.Helper()
		var buf bytes.Buffer
		res, err := image.BusyboxImage(&buf, ref, image.WithCreated(created))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rt.ImportImage(ctx, &buf); err != nil {
			t.Fatal(err)
		}
		return res
	}
	describe := func() container.Image {
		t.Helper()
		img, err := rt.GetImage(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}

	first := importAt(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	d := describe()
	if d.ConfigDigest != first.ConfigDigest {
		t.Fatalf("config digest %s, imported %s", d.ConfigDigest, first.ConfigDigest)
	}
	want := slices.Clone(d.Config.Env)
	d.Config.Env[0] = "CHANGED=1"
	d.Config.Env = append(d.Config.Env, "MORE=1")
	if again := describe(); !slices.Equal(again.Config.Env, want) || again.ConfigDigest != first.ConfigDigest {
		t.Fatalf("second description: env %q config %s, want env %q config %s", again.Config.Env, again.ConfigDigest, want, first.ConfigDigest)
	}

	second := importAt(time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC))
	if second.ConfigDigest == first.ConfigDigest {
		t.Fatal("both imports built the same image; the test would not move the tag")
	}
	if d := describe(); d.ConfigDigest != second.ConfigDigest {
		t.Fatalf("after the tag moved: config digest %s, want %s", d.ConfigDigest, second.ConfigDigest)
	}
}
