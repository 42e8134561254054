package containerd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"

	ctd "github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/images"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/node/container"
)

// ImportImage implements container.Runtime.
func (r *Runtime) ImportImage(ctx context.Context, rd io.Reader) ([]container.Image, error) {
	ctx, done, err := r.client.WithLease(r.ns(ctx))
	if err != nil {
		return nil, wrapErr(err, "importing image")
	}
	defer done(context.WithoutCancel(ctx))
	imgs, err := r.client.Import(ctx, rd,
		ctd.WithImageRefTranslator(container.RefFromAnnotation),
		ctd.WithSkipDigestRef(func(name string) bool { return name != "" }),
		ctd.WithDigestRef(func(d digest.Digest) string { return d.String() }),
	)
	if err != nil {
		return nil, wrapErr(err, "importing image")
	}
	var out []container.Image
	seen := make(map[string]bool)
	for _, img := range imgs {
		if seen[img.Name] {
			continue
		}
		seen[img.Name] = true
		i := ctd.NewImage(r.client, img)
		if err := i.Unpack(ctx, r.cfg.Snapshotter); err != nil {
			return nil, wrapErr(err, "unpacking image %s", img.Name)
		}
		desc, err := r.describe(ctx, img)
		if err != nil {
			return nil, err
		}
		out = append(out, desc)
	}
	return out, nil
}

// ListImages implements container.Runtime.
func (r *Runtime) ListImages(ctx context.Context) ([]container.Image, error) {
	ctx = r.ns(ctx)
	imgs, err := r.client.ImageService().List(ctx)
	if err != nil {
		return nil, wrapErr(err, "listing images")
	}
	out := make([]container.Image, 0, len(imgs))
	for _, img := range imgs {
		d, err := r.describe(ctx, img)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// GetImage implements container.Runtime.
func (r *Runtime) GetImage(ctx context.Context, ref string) (container.Image, error) {
	ctx = r.ns(ctx)
	img, err := r.image(ctx, ref)
	if err != nil {
		return container.Image{}, err
	}
	return r.describe(ctx, img.Metadata())
}

func (r *Runtime) image(ctx context.Context, ref string) (ctd.Image, error) {
	name, err := container.NormalizeRef(ref)
	if err != nil {
		return nil, err
	}
	img, err := r.client.ImageService().Get(ctx, name)
	if err != nil {
		return nil, wrapErr(err, "image %s", name)
	}
	return ctd.NewImage(r.client, img), nil
}

// describe reads an image's config and size: half a dozen requests to
// containerd (manifest, config, the size of every blob), 3–5 ms of every
// container start here, so each image's description is read once per name
// and target digest and kept.
func (r *Runtime) describe(ctx context.Context, img images.Image) (container.Image, error) {
	i := ctd.NewImage(r.client, img)
	if d, ok := r.descriptions.get(i); ok {
		return cloneImage(d), nil
	}
	d, err := r.readDescription(ctx, i)
	if err == nil {
		r.descriptions.put(i, cloneImage(d))
	}
	return d, err
}

// cloneImage copies what callers could change in place.
func cloneImage(d container.Image) container.Image {
	c := &d.Config
	c.Entrypoint, c.Cmd, c.Env = slices.Clone(c.Entrypoint), slices.Clone(c.Cmd), slices.Clone(c.Env)
	c.Labels = maps.Clone(c.Labels)
	return d
}

func (r *Runtime) readDescription(ctx context.Context, i ctd.Image) (container.Image, error) {
	img := i.Metadata()
	cfgDesc, oci, err := readImageConfig(ctx, i)
	if err != nil {
		return container.Image{}, err
	}
	size, err := i.Size(ctx)
	if err != nil {
		return container.Image{}, wrapErr(err, "sizing image %s", img.Name)
	}
	c := oci.Config
	return container.Image{
		Ref:          img.Name,
		Digest:       img.Target.Digest.String(),
		ConfigDigest: cfgDesc.Digest.String(),
		Size:         size,
		Config: container.ImageConfig{
			Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir,
			User: c.User, StopSignal: c.StopSignal, Labels: c.Labels,
		},
	}, nil
}

// readImageConfig returns the config descriptor and config of the image
// for this platform.
func readImageConfig(ctx context.Context, i ctd.Image) (ocispec.Descriptor, ocispec.Image, error) {
	var oci ocispec.Image
	desc, err := i.Config(ctx)
	if err != nil {
		return desc, oci, wrapErr(err, "reading config of image %s", i.Name())
	}
	p, err := content.ReadBlob(ctx, i.ContentStore(), desc)
	if err != nil {
		return desc, oci, wrapErr(err, "reading config of image %s", i.Name())
	}
	if err := json.Unmarshal(p, &oci); err != nil {
		return desc, oci, fmt.Errorf("image %s: bad config: %w", i.Name(), err)
	}
	return desc, oci, nil
}
