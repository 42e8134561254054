package containerd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/images"
	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/node/container"
)

// RegistryHandler serves the runtime's images read-only over the OCI
// distribution API, so that peers can use this node as a mirror (see
// PullImage):
//
//	GET/HEAD /v2/                              200, API version header
//	GET/HEAD /v2/<name>/manifests/<tag>        the manifest or index image <name>:<tag> points at
//	GET/HEAD /v2/<name>/manifests/<digest>     a manifest or index of the content store
//	GET/HEAD /v2/<name>/blobs/<digest>         any blob of the content store (Range supported)
//
// containerd asks a mirror for the repository path without its registry
// host and adds that host as the query parameter ns: the image
// shoal.dev/echo:v1 is asked for as /v2/echo/manifests/v1?ns=shoal.dev, and
// docker.io/library/busybox:latest as
// /v2/library/busybox/manifests/latest?ns=docker.io. Without ns the
// request's Host and then Docker's defaults complete the name
// (<Host>/<name>, else library/busybox → docker.io/library/busybox).
// Blobs and manifests by digest are served whatever the name, from the
// runtime's namespace: the node is a read-only cache of what it holds.
//
// Malformed names, tags or digests get 400, absent content 404, other
// methods 405, with distribution-style JSON errors. The handler does no
// authentication: mount it at /v2/ behind the node's mTLS.
//
// Blobs are read straight from the daemon's content directory when this
// process can open it (same machine and mount namespace, found through
// the introspection service), else streamed over the content API.
func (r *Runtime) RegistryHandler() http.Handler { return &registryHandler{r: r} }

type registryHandler struct {
	r *Runtime

	mu          sync.Mutex
	rootChecked bool   // guarded by mu
	root        string // guarded by mu; the content store's directory, "" if unusable
}

// maxManifestSize bounds what is read to sniff a manifest's media type
// (containerd refuses manifests over 4 MiB too).
const maxManifestSize = 4 << 20

var (
	// pathComponent is a repository path component of the distribution
	// spec; a name is such components joined by "/".
	pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	tagPattern    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	// nsPattern is a registry host as containerd sends it in ns.
	nsPattern = regexp.MustCompile(`^[A-Za-z0-9.-]+(?::[0-9]+)?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]+)?$`)
)

func (h *registryHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		regError(w, req, http.StatusMethodNotAllowed, "UNSUPPORTED", "this registry is read-only")
		return
	}
	p := req.URL.Path
	if p == "/v2" || p == "/v2/" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if req.Method == http.MethodGet {
			io.WriteString(w, "{}")
		}
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	segs := strings.Split(rest, "/")
	if !ok || len(segs) < 3 {
		regError(w, req, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
		return
	}
	kind, object := segs[len(segs)-2], segs[len(segs)-1]
	repo := segs[:len(segs)-2]
	if kind != "manifests" && kind != "blobs" {
		regError(w, req, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
		return
	}
	for _, c := range repo {
		if !pathComponent.MatchString(c) {
			regError(w, req, http.StatusBadRequest, "NAME_INVALID", fmt.Sprintf("invalid repository name %q", strings.Join(repo, "/")))
			return
		}
	}
	ctx := h.r.ns(req.Context())
	if kind == "blobs" {
		dgst, ok := parseDigest(w, req, object)
		if ok {
			h.serveBlob(ctx, w, req, dgst)
		}
		return
	}
	if strings.Contains(object, ":") {
		dgst, ok := parseDigest(w, req, object)
		if ok {
			h.serveManifestByDigest(ctx, w, req, dgst)
		}
		return
	}
	if !tagPattern.MatchString(object) {
		regError(w, req, http.StatusBadRequest, "TAG_INVALID", fmt.Sprintf("invalid tag %q", object))
		return
	}
	names, err := imageNames(req, strings.Join(repo, "/"), object)
	if err != nil {
		regError(w, req, http.StatusBadRequest, "NAME_INVALID", err.Error())
		return
	}
	h.serveManifestByTag(ctx, w, req, names)
}

// imageNames maps a repository and tag as asked to the stored image names
// to look for, best first.
func imageNames(req *http.Request, repo, tag string) ([]string, error) {
	var candidates []string
	ns := req.URL.Query().Get("ns")
	switch {
	case ns != "":
		if !nsPattern.MatchString(ns) {
			return nil, fmt.Errorf("invalid ns %q", ns)
		}
		candidates = []string{ns + "/" + repo}
	case req.Host != "":
		candidates = []string{req.Host + "/" + repo, repo}
	default:
		candidates = []string{repo}
	}
	var names []string
	for _, c := range candidates {
		named, err := reference.ParseDockerRef(c + ":" + tag)
		if err != nil {
			continue
		}
		if ns != "" && reference.Domain(named) != canonicalDomain(ns) {
			return nil, fmt.Errorf("repository %q is not in registry %q", repo, ns)
		}
		names = append(names, named.String())
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("invalid repository name %q", repo)
	}
	return names, nil
}

// canonicalDomain is how reference normalization spells a registry host.
func canonicalDomain(host string) string {
	if host == "index.docker.io" {
		return "docker.io"
	}
	return host
}

func parseDigest(w http.ResponseWriter, req *http.Request, s string) (digest.Digest, bool) {
	d, err := digest.Parse(s)
	if err != nil {
		regError(w, req, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("invalid digest %q", s))
		return "", false
	}
	return d, true
}

func (h *registryHandler) serveManifestByTag(ctx context.Context, w http.ResponseWriter, req *http.Request, names []string) {
	for _, name := range names {
		img, err := h.r.client.ImageService().Get(ctx, name)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			h.fail(w, req, wrapErr(err, "image %s", name))
			return
		}
		switch img.Target.MediaType {
		case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
			images.MediaTypeDockerSchema2Manifest, images.MediaTypeDockerSchema2ManifestList:
		default:
			regError(w, req, http.StatusNotFound, "MANIFEST_UNKNOWN", fmt.Sprintf("image %s points at a %s", name, img.Target.MediaType))
			return
		}
		h.serveContent(ctx, w, req, img.Target, "MANIFEST_UNKNOWN")
		return
	}
	regError(w, req, http.StatusNotFound, "MANIFEST_UNKNOWN", fmt.Sprintf("no image %s", names[0]))
}

func (h *registryHandler) serveManifestByDigest(ctx context.Context, w http.ResponseWriter, req *http.Request, dgst digest.Digest) {
	cs := h.r.client.ContentStore()
	info, err := cs.Info(ctx, dgst)
	if isNotFound(err) {
		regError(w, req, http.StatusNotFound, "MANIFEST_UNKNOWN", fmt.Sprintf("no manifest %s", dgst))
		return
	}
	if err != nil {
		h.fail(w, req, wrapErr(err, "content %s", dgst))
		return
	}
	desc := ocispec.Descriptor{Digest: dgst, Size: info.Size}
	if info.Size > maxManifestSize {
		regError(w, req, http.StatusNotFound, "MANIFEST_UNKNOWN", fmt.Sprintf("%s is not a manifest", dgst))
		return
	}
	p, err := content.ReadBlob(ctx, cs, desc)
	if err != nil {
		h.fail(w, req, wrapErr(err, "reading %s", dgst))
		return
	}
	if desc.MediaType = sniffManifest(p); desc.MediaType == "" {
		regError(w, req, http.StatusNotFound, "MANIFEST_UNKNOWN", fmt.Sprintf("%s is not a manifest", dgst))
		return
	}
	serveBytes(w, req, desc, p)
}

// sniffManifest returns the media type of a manifest or index, "" for
// anything else.
func sniffManifest(p []byte) string {
	var m struct {
		MediaType string            `json:"mediaType"`
		Config    json.RawMessage   `json:"config"`
		Layers    json.RawMessage   `json:"layers"`
		Manifests json.RawMessage   `json:"manifests"`
		FSLayers  []json.RawMessage `json:"fsLayers"` // schema 1, not served
	}
	if json.Unmarshal(p, &m) != nil {
		return ""
	}
	switch m.MediaType {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		images.MediaTypeDockerSchema2Manifest, images.MediaTypeDockerSchema2ManifestList:
		return m.MediaType
	case "":
		switch {
		case m.Manifests != nil:
			return ocispec.MediaTypeImageIndex
		case m.Config != nil && m.Layers != nil:
			return ocispec.MediaTypeImageManifest
		}
	}
	return ""
}

func (h *registryHandler) serveBlob(ctx context.Context, w http.ResponseWriter, req *http.Request, dgst digest.Digest) {
	info, err := h.r.client.ContentStore().Info(ctx, dgst)
	if isNotFound(err) {
		regError(w, req, http.StatusNotFound, "BLOB_UNKNOWN", fmt.Sprintf("no blob %s", dgst))
		return
	}
	if err != nil {
		h.fail(w, req, wrapErr(err, "content %s", dgst))
		return
	}
	h.serveContent(ctx, w, req, ocispec.Descriptor{MediaType: "application/octet-stream", Digest: dgst, Size: info.Size}, "BLOB_UNKNOWN")
}

// serveContent streams desc from the content store, honouring HEAD, Range
// and If-None-Match. The caller has checked (with Info, or by the image
// pointing at it) that desc is in the runtime's namespace.
func (h *registryHandler) serveContent(ctx context.Context, w http.ResponseWriter, req *http.Request, desc ocispec.Descriptor, unknown string) {
	if f := h.openBlob(ctx, desc); f != nil {
		defer f.Close()
		setContentHeaders(w, desc)
		http.ServeContent(w, req, "", time.Time{}, f)
		return
	}
	ra, err := h.r.client.ContentStore().ReaderAt(ctx, desc)
	if isNotFound(err) {
		regError(w, req, http.StatusNotFound, unknown, fmt.Sprintf("no content %s", desc.Digest))
		return
	}
	if err != nil {
		h.fail(w, req, wrapErr(err, "opening %s", desc.Digest))
		return
	}
	defer ra.Close()
	size := ra.Size()
	if desc.Size != 0 && size != desc.Size {
		h.fail(w, req, fmt.Errorf("content %s has %d bytes, want %d", desc.Digest, size, desc.Size))
		return
	}
	setContentHeaders(w, desc)
	rs := newChunkedReader(ra, size)
	defer rs.release()
	http.ServeContent(w, req, "", time.Time{}, rs)
}

// openBlob opens desc's file in the daemon's content directory, or returns
// nil (the caller then uses the content API).
func (h *registryHandler) openBlob(ctx context.Context, desc ocispec.Descriptor) *os.File {
	root := h.contentRoot(ctx)
	if root == "" || desc.Digest.Validate() != nil {
		return nil
	}
	f, err := os.Open(filepath.Join(root, "blobs", desc.Digest.Algorithm().String(), desc.Digest.Encoded()))
	if err != nil {
		return nil
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() || (desc.Size != 0 && st.Size() != desc.Size) {
		f.Close()
		return nil
	}
	return f
}

// contentRoot finds (once it succeeds) the directory of the daemon's
// content store, if this process can read it.
func (h *registryHandler) contentRoot(ctx context.Context) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rootChecked {
		return h.root
	}
	resp, err := h.r.client.IntrospectionService().Plugins(ctx, []string{"type==io.containerd.content.v1,id==content"})
	if err != nil {
		return "" // the daemon is away: ask again next time
	}
	h.rootChecked = true
	for _, p := range resp.Plugins {
		root := p.Exports["root"]
		if st, err := os.Stat(filepath.Join(root, "blobs")); root != "" && filepath.IsAbs(root) && err == nil && st.IsDir() {
			h.root = root
		}
	}
	return h.root
}

func serveBytes(w http.ResponseWriter, req *http.Request, desc ocispec.Descriptor, p []byte) {
	setContentHeaders(w, desc)
	http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(p))
}

func setContentHeaders(w http.ResponseWriter, desc ocispec.Descriptor) {
	hd := w.Header()
	hd.Set("Content-Type", desc.MediaType)
	hd.Set("Docker-Content-Digest", desc.Digest.String())
	hd.Set("Etag", `"`+desc.Digest.String()+`"`)
}

// fail answers an unexpected error: 404 for what vanished meanwhile, 500
// otherwise (the client tries its next mirror either way).
func (h *registryHandler) fail(w http.ResponseWriter, req *http.Request, err error) {
	if errors.Is(err, container.ErrNotFound) {
		regError(w, req, http.StatusNotFound, "BLOB_UNKNOWN", err.Error())
		return
	}
	if req.Context().Err() == nil {
		h.r.cfg.logf("registry: %s %s: %v", req.Method, req.URL.Path, err)
	}
	regError(w, req, http.StatusInternalServerError, "UNKNOWN", err.Error())
}

// regError writes a distribution API error.
func regError(w http.ResponseWriter, req *http.Request, status int, code, msg string) {
	type apiError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	body, _ := json.Marshal(struct {
		Errors []apiError `json:"errors"`
	}{[]apiError{{code, msg}}})
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", fmt.Sprint(len(body)))
	hd.Del("Docker-Content-Digest")
	hd.Del("Etag")
	w.WriteHeader(status)
	if req.Method != http.MethodHead {
		w.Write(body)
	}
}

// chunkSize is how much one content-store read asks for: every ReadAt is
// a gRPC stream, so reading in the 32 KiB pieces net/http copies with
// would cost one round trip per 32 KiB.
const chunkSize = 1 << 20

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// chunkedReader is an io.ReadSeeker over a content.ReaderAt that reads
// ahead chunkSize bytes at a time.
type chunkedReader struct {
	ra        io.ReaderAt
	size, off int64
	buf       *[]byte
	bufOff    int64 // offset of buf[0] in the blob
	bufLen    int
}

func newChunkedReader(ra io.ReaderAt, size int64) *chunkedReader {
	return &chunkedReader{ra: ra, size: size}
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.off >= c.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if c.buf == nil || c.off < c.bufOff || c.off >= c.bufOff+int64(c.bufLen) {
		if c.buf == nil {
			c.buf = chunkPool.Get().(*[]byte)
		}
		want := min(int64(chunkSize), c.size-c.off)
		n, err := c.ra.ReadAt((*c.buf)[:want], c.off)
		if n < int(want) {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			c.bufLen = 0
			return 0, err
		}
		c.bufOff, c.bufLen = c.off, n
	}
	n := copy(p, (*c.buf)[c.off-c.bufOff:c.bufLen])
	c.off += int64(n)
	return n, nil
}

func (c *chunkedReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += c.off
	case io.SeekEnd:
		offset += c.size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	c.off = offset
	return offset, nil
}

func (c *chunkedReader) release() {
	if c.buf != nil {
		chunkPool.Put(c.buf)
		c.buf = nil
	}
}
