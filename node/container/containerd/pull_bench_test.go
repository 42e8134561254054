package containerd

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/content"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/image"
)

// benchImageBytes is the size of the random (incompressible) file making
// up the benchmark image's layer.
const benchImageBytes = 50 << 20

// BenchmarkImagePull moves a ~50 MB image of random data from daemon A to
// daemon B over mTLS on loopback, three ways, and reports MB/s of image
// content (manifest + config + gzipped layer for pull, the layer alone for
// the others):
//
//   - pull: B's PullImage through A's RegistryHandler (resolve, fetch into
//     B's content store, verify, unpack into an overlayfs snapshot); the
//     image, its content and snapshots are deleted from B between
//     iterations, off the clock.
//   - import: ImportImage of the same image's archive into B (no network):
//     what B's daemon takes to store and unpack it, the local floor of pull.
//   - handler-blob: GET of the layer blob from A's RegistryHandler (content
//     store over gRPC, TLS) into io.Discard: the serving side alone.
//   - plain-copy: the same layer bytes from memory through an identical
//     TLS server into io.Discard: the floor.
func BenchmarkImagePull(b *testing.B) {
	rtA, rtB := newRuntime(b, startDaemon(b)), newRuntime(b, startDaemon(b))
	ctx := context.Background()
	const ref = "shoal.test/bench-random:1"
	random := filepath.Join(b.TempDir(), "random")
	data := make([]byte, benchImageBytes)
	rand.Read(data)
	if err := os.WriteFile(random, data, 0o644); err != nil {
		b.Fatal(err)
	}
	var archive bytes.Buffer
	res, err := image.BuildArchive(&archive, ref, []image.File{{Path: "/data/random", SourcePath: random}}, image.Config{Cmd: []string{"true"}})
	if err != nil {
		b.Fatal(err)
	}
	imgA := importArchive(b, rtA, archive.Bytes())
	layerDesc := ocispec.Descriptor{Digest: digest.Digest(res.LayerDigest)}
	layer, err := content.ReadBlob(rtA.ns(ctx), rtA.client.ContentStore(), layerDesc)
	if err != nil {
		b.Fatal(err)
	}
	mirror := serveMirror(b, rtA, nil)
	mb := func(n int64) float64 { return float64(n) / 1e6 }

	b.Run("pull", func(b *testing.B) {
		opts := container.PullOptions{Mirrors: []container.Mirror{mirror}}
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			deleteImage(b, rtB, ref)
			if _, err := rtB.client.ContentStore().Info(rtB.ns(ctx), layerDesc.Digest); !isNotFound(err) {
				b.Fatalf("the layer is still on B after deleting the image (%v): the pull would not move it", err)
			}
			b.StartTimer()
			img, err := rtB.PullImage(ctx, ref, opts)
			if err != nil {
				b.Fatal(err)
			}
			if img.Digest != imgA.Digest {
				b.Fatalf("pulled %+v", img)
			}
		}
		b.ReportMetric(mb(imgA.Size)*float64(b.N)/b.Elapsed().Seconds(), "MB/s")
	})

	b.Run("import", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			deleteImage(b, rtB, ref)
			b.StartTimer()
			if img := importArchive(b, rtB, archive.Bytes()); img.Digest != imgA.Digest {
				b.Fatalf("imported %+v", img)
			}
		}
		b.ReportMetric(mb(imgA.Size)*float64(b.N)/b.Elapsed().Seconds(), "MB/s")
	})

	get := func(b *testing.B, client *http.Client, url string) {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(layer)) {
			b.Fatalf("GET %s: %s, %d bytes, %v", url, resp.Status, n, err)
		}
	}
	b.Run("handler-blob", func(b *testing.B) {
		url := "https://" + mirror.Host + "/v2/bench-random/blobs/" + res.LayerDigest + "?ns=shoal.test"
		for i := 0; i < b.N; i++ {
			get(b, mirror.Client, url)
		}
		b.ReportMetric(mb(int64(len(layer)))*float64(b.N)/b.Elapsed().Seconds(), "MB/s")
	})
	b.Run("plain-copy", func(b *testing.B) {
		plain, _ := serveTLS(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(layer))
		}))
		url := "https://" + plain.Host + "/blob"
		for i := 0; i < b.N; i++ {
			get(b, plain.Client, url)
		}
		b.ReportMetric(mb(int64(len(layer)))*float64(b.N)/b.Elapsed().Seconds(), "MB/s")
	})
}
