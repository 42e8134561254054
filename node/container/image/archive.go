package image

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/node/container"
)

// AnnotationImageName is containerd's annotation for an image's full name,
// which its import prefers over org.opencontainers.image.ref.name.
const AnnotationImageName = "io.containerd.image.name"

// Config is the runtime part of the image config: the same fields the
// runtime reads back from an imported image.
type Config = container.ImageConfig

// Format is the archive layout.
type Format int

const (
	// FormatOCI is an OCI image layout (oci-layout, index.json, blobs/).
	FormatOCI Format = iota
	// FormatDocker is a `docker save` tarball (manifest.json, plain layer).
	FormatDocker
)

// Option changes how BuildArchive writes.
type Option func(*options)

type options struct {
	compress bool
	format   Format
	created  time.Time
	arch     string
}

// Uncompressed stores the layer as a plain tar (docker archives always do).
func Uncompressed() Option { return func(o *options) { o.compress = false } }

// WithFormat picks the archive layout; FormatOCI by default.
func WithFormat(f Format) Option { return func(o *options) { o.format = f } }

// WithCreated sets the creation time in the config and on every entry
// (default: the Unix epoch, which keeps digests reproducible).
func WithCreated(t time.Time) Option { return func(o *options) { o.created = t } }

// WithArchitecture sets the platform architecture (default runtime.GOARCH).
func WithArchitecture(arch string) Option { return func(o *options) { o.arch = arch } }

// Result names what BuildArchive wrote, as "sha256:<hex>" digests.
type Result struct {
	Ref            string // normalized, e.g. docker.io/library/busybox:latest
	ManifestDigest string
	ConfigDigest   string // the image ID
	LayerDigest    string // the layer blob as stored (gzip or plain)
	DiffID         string // sha256 of the uncompressed layer tar
}

// BuildArchive writes to w an image called ref with one layer made of files
// and the given config. The OCI layout carries both the
// io.containerd.image.name annotation (the full normalized ref) and
// org.opencontainers.image.ref.name (its tag); the layer is gzipped unless
// Uncompressed. The layer is staged in a temporary file so large sources
// are streamed, never held in memory.
func BuildArchive(w io.Writer, ref string, files []File, cfg Config, opts ...Option) (Result, error) {
	o := options{compress: true, created: time.Unix(0, 0).UTC(), arch: runtime.GOARCH}
	for _, opt := range opts {
		opt(&o)
	}
	if o.format == FormatDocker {
		o.compress = false
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return Result{}, fmt.Errorf("image ref %q: %w", ref, err)
	}
	res := Result{Ref: named.String()}

	tmp, err := os.CreateTemp("", "shoal-layer-*")
	if err != nil {
		return Result{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	layer, err := writeLayer(tmp, files, o.compress, o.created)
	if err != nil {
		return Result{}, err
	}
	res.LayerDigest, res.DiffID = layer.digest, layer.diffID

	configJSON, err := json.Marshal(imageConfig(cfg, o, layer.diffID))
	if err != nil {
		return Result{}, err
	}
	res.ConfigDigest = digestOf(configJSON)

	layerMedia := ocispec.MediaTypeImageLayer
	if o.compress {
		layerMedia = ocispec.MediaTypeImageLayerGzip
	}
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.Digest(res.ConfigDigest), Size: int64(len(configJSON))},
		Layers:    []ocispec.Descriptor{{MediaType: layerMedia, Digest: digest.Digest(layer.digest), Size: layer.size}},
	}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return Result{}, err
	}
	res.ManifestDigest = digestOf(manifestJSON)

	out := tar.NewWriter(w)
	if o.format == FormatDocker {
		err = writeDocker(out, tmp, layer, configJSON, res, named)
	} else {
		err = writeOCI(out, tmp, layer, configJSON, manifestJSON, res, named, o.arch)
	}
	if err != nil {
		return Result{}, err
	}
	return res, out.Close()
}

func imageConfig(cfg Config, o options, diffID string) ocispec.Image {
	created := o.created
	img := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: o.arch, OS: "linux"},
		Config: ocispec.ImageConfig{
			Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd, Env: cfg.Env, WorkingDir: cfg.WorkingDir,
			User: cfg.User, StopSignal: cfg.StopSignal, Labels: cfg.Labels,
		},
		RootFS:  ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.Digest(diffID)}},
		History: []ocispec.History{{Created: &created, CreatedBy: "shoal image.BuildArchive"}},
	}
	return img
}

func writeOCI(out *tar.Writer, layer *os.File, li layerInfo, configJSON, manifestJSON []byte, res Result, named reference.Named, arch string) error {
	annotations := map[string]string{AnnotationImageName: res.Ref}
	if tagged, ok := named.(reference.Tagged); ok {
		annotations[ocispec.AnnotationRefName] = tagged.Tag()
	}
	index := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{
			MediaType:   ocispec.MediaTypeImageManifest,
			Digest:      digest.Digest(res.ManifestDigest),
			Size:        int64(len(manifestJSON)),
			Platform:    &ocispec.Platform{Architecture: arch, OS: "linux"},
			Annotations: annotations,
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}
	layoutJSON, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := writeBytes(out, ocispec.ImageLayoutFile, layoutJSON); err != nil {
		return err
	}
	if err := writeDir(out, "blobs/"); err != nil {
		return err
	}
	if err := writeDir(out, "blobs/sha256/"); err != nil {
		return err
	}
	if err := writeFile(out, blobPath(li.digest), layer, li.size); err != nil {
		return err
	}
	if err := writeBytes(out, blobPath(res.ConfigDigest), configJSON); err != nil {
		return err
	}
	if err := writeBytes(out, blobPath(res.ManifestDigest), manifestJSON); err != nil {
		return err
	}
	return writeBytes(out, ocispec.ImageIndexFile, indexJSON)
}

// dockerManifest is one entry of a docker-save manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func writeDocker(out *tar.Writer, layer *os.File, li layerInfo, configJSON []byte, res Result, named reference.Named) error {
	layerDir := hexOf(li.diffID)
	configName := hexOf(res.ConfigDigest) + ".json"
	m := []dockerManifest{{Config: configName, RepoTags: []string{reference.FamiliarString(named)}, Layers: []string{layerDir + "/layer.tar"}}}
	manifestJSON, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := writeDir(out, layerDir+"/"); err != nil {
		return err
	}
	if err := writeFile(out, layerDir+"/layer.tar", layer, li.size); err != nil {
		return err
	}
	if err := writeBytes(out, configName, configJSON); err != nil {
		return err
	}
	return writeBytes(out, "manifest.json", manifestJSON)
}

func writeDir(out *tar.Writer, name string) error {
	return out.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: time.Unix(0, 0)})
}

func writeBytes(out *tar.Writer, name string, data []byte) error {
	if err := out.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	_, err := out.Write(data)
	return err
}

func writeFile(out *tar.Writer, name string, f *os.File, size int64) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := out.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	_, err := io.CopyN(out, f, size)
	return err
}

func blobPath(d string) string { return "blobs/sha256/" + hexOf(d) }

func hexOf(d string) string { return strings.TrimPrefix(d, "sha256:") }

func digestOf(p []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(p)) }
