package containerd

import (
	"context"
	"fmt"
	"sync"

	ctd "github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// rootfsInfo is what creating a container needs from its image: the config
// and the snapshot its root filesystem starts from. Reading them takes half
// a dozen requests to containerd (image, manifest, config, the unpacked
// check), about 4 ms of a 17–20 ms CreateContainer here (the rest is
// containerd committing the snapshot and the container record), and an
// image's content never changes under its digest, so it is read once per
// image name and target digest and kept.
type rootfsInfo struct {
	cfgDesc ocispec.Descriptor
	config  ocispec.Image
	parent  string // chain ID of the unpacked layers: the snapshot to prepare from
}

// maxCachedImages bounds each cache; past it the cache starts over (a node
// with that many images in use pays the reads again, nothing else).
const maxCachedImages = 256

// imageCache holds what was read from images by image name and target
// digest: the content under a digest never changes, and a name moved to
// another digest is another key.
type imageCache[T any] struct {
	mu sync.Mutex
	m  map[string]T
}

func imageKey(img ctd.Image) string { return img.Name() + "@" + img.Target().Digest.String() }

func (c *imageCache[T]) get(img ctd.Image) (T, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[imageKey(img)]
	return v, ok
}

func (c *imageCache[T]) put(img ctd.Image, v T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedImages {
		c.m = make(map[string]T)
	}
	c.m[imageKey(img)] = v
}

// forget drops img's entry: its snapshot went missing (the image was
// removed and its snapshots collected), so the next create reads and
// unpacks again.
func (c *imageCache[T]) forget(img ctd.Image) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, imageKey(img))
}

// rootfs returns img's rootfsInfo, unpacking it first if needed; fresh
// reads the image again instead of trusting the cache.
func (r *Runtime) rootfs(ctx context.Context, img ctd.Image, fresh bool) (*rootfsInfo, error) {
	if !fresh {
		if info, ok := r.rootfsInfos.get(img); ok {
			return info, nil
		}
	}
	unpacked, err := img.IsUnpacked(ctx, r.cfg.Snapshotter)
	if err != nil {
		return nil, wrapErr(err, "checking image %s", img.Name())
	}
	if !unpacked {
		if err := img.Unpack(ctx, r.cfg.Snapshotter); err != nil {
			return nil, wrapErr(err, "unpacking %s", img.Name())
		}
	}
	cfgDesc, cfg, err := readImageConfig(ctx, img)
	if err != nil {
		return nil, err
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return nil, wrapErr(err, "reading the layers of image %s", img.Name())
	}
	info := &rootfsInfo{cfgDesc: cfgDesc, config: cfg, parent: identity.ChainID(diffIDs).String()}
	r.rootfsInfos.put(img, info)
	return info, nil
}

// withRootfsSnapshot prepares the container's writable snapshot key on top
// of parent, as ctd.WithNewSnapshot does once it has read the image's
// layers (which the caller already knows). The container's Snapshotter must
// be set before it.
func withRootfsSnapshot(key, parent, image string) ctd.NewContainerOpts {
	return func(ctx context.Context, client *ctd.Client, c *containers.Container) error {
		if c.Snapshotter == "" {
			return fmt.Errorf("container %s: snapshotter not set before its rootfs snapshot", c.ID)
		}
		if _, err := client.SnapshotService(c.Snapshotter).Prepare(ctx, key, parent); err != nil {
			return err
		}
		c.SnapshotKey = key
		c.Image = image
		return nil
	}
}
