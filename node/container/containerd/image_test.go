package containerd

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	ctd "github.com/containerd/containerd"
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
