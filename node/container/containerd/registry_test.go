package containerd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/images"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/image"
)

// testPKI is a throw-away CA with a server certificate for 127.0.0.1 and
// a client certificate, to serve mirrors over mTLS as nodes do.
type testPKI struct {
	pool           *x509.CertPool
	server, client tls.Certificate
}

var (
	pkiOnce sync.Once
	pki     *testPKI
	pkiErr  error
)

func testCerts(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() { pki, pkiErr = newTestPKI() })
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pki
}

func newTestPKI() (*testPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shoal test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
	}
	p := &testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	if p.server, err = leaf(2, "node-a", x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if p.client, err = leaf(3, "node-b", x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	return p, nil
}

// clientTLS is what a node dials its peers with.
func (p *testPKI) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}, MinVersion: tls.VersionTLS13}
}

// serveTLS serves h on loopback over TLS requiring a client certificate of
// the test CA, and returns a Mirror for it.
func serveTLS(t testing.TB, h http.Handler) (container.Mirror, *httptest.Server) {
	t.Helper()
	p := testCerts(t)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientCAs:    p.pool, ClientAuth: tls.RequireAndVerifyClientCert,
		MinVersion: tls.VersionTLS13,
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes refused on purpose
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientTLS(), ForceAttemptHTTP2: true}}
	t.Cleanup(client.CloseIdleConnections)
	return container.Mirror{Host: srv.Listener.Addr().String(), Client: client}, srv
}

// serveMirror serves rt's registry the way a node mounts it: at /v2/ of
// its mTLS API mux. hits, when set, counts requests by path.
func serveMirror(t testing.TB, rt *Runtime, hits *requestLog) container.Mirror {
	t.Helper()
	mux := http.NewServeMux()
	var h http.Handler = rt.RegistryHandler()
	if hits != nil {
		h = hits.wrap(h)
	}
	mux.Handle("/v2/", h)
	m, _ := serveTLS(t, mux)
	return m
}

// requestLog records the requests a handler served.
type requestLog struct {
	mu   sync.Mutex
	reqs []string // "METHOD path?query status"
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		h.ServeHTTP(rec, r)
		l.mu.Lock()
		l.reqs = append(l.reqs, fmt.Sprintf("%s %s %d", r.Method, r.URL.RequestURI(), rec.status))
		l.mu.Unlock()
	})
}

func (l *requestLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.reqs...)
}

func (l *requestLog) count(substr string) int {
	n := 0
	for _, r := range l.get() {
		if strings.Contains(r, substr) {
			n++
		}
	}
	return n
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// downHost is a loopback address where nothing listens.
func downHost(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// buildBusybox builds a busybox image archive called ref.
func buildBusybox(t testing.TB, ref string, opts ...image.Option) ([]byte, image.Result) {
	t.Helper()
	var buf bytes.Buffer
	res, err := image.BusyboxImage(&buf, ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), res
}

func importArchive(t testing.TB, rt *Runtime, archive []byte) container.Image {
	t.Helper()
	imgs, err := rt.ImportImage(context.Background(), bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 {
		t.Fatalf("imported %+v", imgs)
	}
	return imgs[0]
}

// The handler speaks the read-only distribution API over the content
// store, with containerd's mirror naming (?ns=), and rejects what is
// malformed.
// Both ways of reading blobs: the daemon's content directory, and the
// content API when that directory cannot be opened.
func TestRegistryHandler(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	archive, res := buildBusybox(t, "shoal.dev/echo:v1")
	importArchive(t, rt, archive)
	for _, direct := range []bool{true, false} {
		t.Run(map[bool]string{true: "content dir", false: "content API"}[direct], func(t *testing.T) {
			h := rt.RegistryHandler().(*registryHandler)
			if !direct {
				h.rootChecked = true // as if the directory were out of reach
			}
			mux := http.NewServeMux()
			mux.Handle("/v2/", h)
			mirror, _ := serveTLS(t, mux)
			testRegistryHandler(t, mirror, res)
			h.mu.Lock()
			root := h.root
			h.mu.Unlock()
			if direct && root == "" {
				t.Error("the content directory was not found: blobs went through the content API")
			}
		})
	}
}

func testRegistryHandler(t *testing.T, mirror container.Mirror, res image.Result) {
	base := "https://" + mirror.Host
	do := func(method, path string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := mirror.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	expect := func(what string, resp *http.Response, status int) {
		t.Helper()
		if resp.StatusCode != status {
			t.Errorf("%s: status %s, want %d", what, resp.Status, status)
		}
		if resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Errorf("%s: no API version header", what)
		}
	}

	resp, _ := do("GET", "/v2/")
	expect("GET /v2/", resp, 200)
	resp, _ = do("HEAD", "/v2/")
	expect("HEAD /v2/", resp, 200)

	// The manifest by tag, as containerd asks a mirror for it.
	for _, m := range []string{"GET", "HEAD"} {
		resp, body := do(m, "/v2/echo/manifests/v1?ns=shoal.dev")
		expect(m+" manifest by tag", resp, 200)
		if resp.Header.Get("Content-Type") != ocispec.MediaTypeImageManifest || resp.Header.Get("Docker-Content-Digest") != res.ManifestDigest || resp.ContentLength <= 0 {
			t.Errorf("%s manifest headers %v, length %d", m, resp.Header, resp.ContentLength)
		}
		if m == "GET" && digest.FromBytes(body).String() != res.ManifestDigest {
			t.Errorf("manifest body digest %s, want %s", digest.FromBytes(body), res.ManifestDigest)
		}
	}
	resp, _ = do("GET", "/v2/echo/manifests/v1?ns=example.com")
	expect("manifest from another registry", resp, 404)
	resp, _ = do("GET", "/v2/echo/manifests/v2?ns=shoal.dev")
	expect("manifest of an absent tag", resp, 404)
	// Without ns the Host completes the name; then Docker's defaults.
	resp, _ = do("GET", "/v2/echo/manifests/v1")
	expect("manifest without ns", resp, 404)

	// By digest: manifests and blobs, whatever the name.
	resp, body := do("GET", "/v2/whatever/manifests/"+res.ManifestDigest+"?ns=shoal.dev")
	expect("manifest by digest", resp, 200)
	if resp.Header.Get("Content-Type") != ocispec.MediaTypeImageManifest || digest.FromBytes(body).String() != res.ManifestDigest {
		t.Errorf("manifest by digest: %v", resp.Header)
	}
	resp, _ = do("GET", "/v2/echo/manifests/"+res.LayerDigest+"?ns=shoal.dev")
	expect("a layer asked as a manifest", resp, 404)
	resp, body = do("GET", "/v2/echo/blobs/"+res.LayerDigest+"?ns=shoal.dev")
	expect("layer", resp, 200)
	if digest.FromBytes(body).String() != res.LayerDigest || resp.Header.Get("Docker-Content-Digest") != res.LayerDigest {
		t.Errorf("layer body %s, headers %v", digest.FromBytes(body), resp.Header)
	}
	layer := body
	resp, body = do("HEAD", "/v2/echo/blobs/"+res.ConfigDigest)
	expect("HEAD config", resp, 200)
	if len(body) != 0 || resp.ContentLength <= 0 {
		t.Errorf("HEAD config: %d bytes of body, length %d", len(body), resp.ContentLength)
	}
	// Range, as containerd resumes a download.
	resp, body = do("GET", "/v2/echo/blobs/"+res.LayerDigest, "Range", "bytes=1000-")
	expect("layer range", resp, 206)
	if !bytes.Equal(body, layer[1000:]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-%d/%d", len(layer)-1, len(layer)) {
		t.Errorf("range: %d bytes, Content-Range %q", len(body), resp.Header.Get("Content-Range"))
	}
	resp, body = do("GET", "/v2/echo/blobs/"+res.LayerDigest, "Range", fmt.Sprintf("bytes=%d-%d", chunkSize-10, chunkSize+10))
	if len(layer) > chunkSize+10 {
		expect("range across a chunk", resp, 206)
		if !bytes.Equal(body, layer[chunkSize-10:chunkSize+11]) {
			t.Errorf("range across a chunk: got %d bytes", len(body))
		}
	}
	resp, _ = do("GET", "/v2/echo/blobs/"+res.LayerDigest, "If-None-Match", `"`+res.LayerDigest+`"`)
	expect("conditional", resp, 304)

	absent := digest.FromString("absent").String()
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/echo/blobs/" + absent, 404, "BLOB_UNKNOWN"},
		{"GET", "/v2/echo/manifests/" + absent, 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/echo/blobs/sha256:xyz", 400, "DIGEST_INVALID"},
		{"GET", "/v2/echo/blobs/sha256:" + strings.Repeat("a", 63), 400, "DIGEST_INVALID"},
		{"GET", "/v2/echo/blobs/md5:" + strings.Repeat("a", 32), 400, "DIGEST_INVALID"},
		{"GET", "/v2/echo/manifests/bad:tag:x", 400, "DIGEST_INVALID"},
		{"GET", "/v2/echo/manifests/-tag", 400, "TAG_INVALID"},
		{"GET", "/v2/Echo/manifests/v1?ns=shoal.dev", 400, "NAME_INVALID"},
		{"GET", "/v2/a/%2e%2e/b/blobs/" + res.LayerDigest, 400, "NAME_INVALID"},
		{"GET", "/v2/a%2F..%2F..%2Fetc/blobs/" + res.LayerDigest, 400, "NAME_INVALID"},
		{"GET", "/v2/echo/manifests/v1?ns=shoal.dev/../x", 400, "NAME_INVALID"},
		{"GET", "/v2/echo/tags/list", 404, "NOT_FOUND"},
		{"PUT", "/v2/echo/manifests/v1", 405, "UNSUPPORTED"},
		{"POST", "/v2/echo/blobs/uploads/", 405, "UNSUPPORTED"},
		{"DELETE", "/v2/echo/blobs/" + res.LayerDigest, 405, "UNSUPPORTED"},
	} {
		resp, body := do(tc.method, tc.path)
		expect(tc.method+" "+tc.path, resp, tc.status)
		var e struct{ Errors []struct{ Code string } }
		if json.Unmarshal(body, &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code != tc.code {
			t.Errorf("%s %s: body %s, want code %s", tc.method, tc.path, body, tc.code)
		}
	}

	// mTLS: no client certificate, no answer.
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: testCerts(t).pool}}}
	if resp, err := noCert.Get(base + "/v2/"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without a certificate got %s", resp.Status)
	}
}

// Raw handler checks that need no TLS: the names containerd sends for
// docker.io images, and the Host fallback without ns.
func TestRegistryHandlerNames(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	for _, ref := range []string{"busybox:1", "127.0.0.1:5000/team/app:v2"} {
		archive, _ := buildBusybox(t, ref)
		importArchive(t, rt, archive)
	}
	h := rt.RegistryHandler()
	for _, tc := range []struct {
		target, host string
		status       int
	}{
		{"/v2/library/busybox/manifests/1?ns=docker.io", "", 200},
		{"/v2/library/busybox/manifests/1?ns=index.docker.io", "", 200},
		{"/v2/busybox/manifests/1?ns=docker.io", "", 200}, // a ref containerd did not normalize
		{"/v2/library/busybox/manifests/1", "", 200},      // no ns, no host: Docker's defaults
		{"/v2/library/busybox/manifests/1", "peer:7443", 200},
		{"/v2/team/app/manifests/v2", "127.0.0.1:5000", 200}, // asked as the registry itself
		{"/v2/team/app/manifests/v2?ns=127.0.0.1:5000", "peer:7443", 200},
		{"/v2/team/app/manifests/v2?ns=docker.io", "", 404},
	} {
		req := httptest.NewRequest("HEAD", tc.target, nil)
		req.Host = tc.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Errorf("HEAD %s (Host %q): %d, want %d", tc.target, tc.host, rec.Code, tc.status)
		}
	}
}

// writeIndex stores an OCI index pointing at img's manifest (for this
// platform) and at an absent manifest for another platform, and names it
// ref: what a node that pulled only its platform of a multi-platform image
// holds.
func writeIndex(t testing.TB, rt *Runtime, ref string, img container.Image) ocispec.Descriptor {
	t.Helper()
	// A lease keeps the index blob from containerd's garbage collector
	// (run after another test's deletions) until the image refers to it.
	ctx, done, err := rt.client.WithLease(rt.ns(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	defer done(ctx)
	cs := rt.client.ContentStore()
	info, err := cs.Info(ctx, digest.Digest(img.Digest))
	if err != nil {
		t.Fatal(err)
	}
	here := ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH} // as package image builds
	other := digest.FromString("a manifest for another platform")
	idx := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{
			{MediaType: ocispec.MediaTypeImageManifest, Digest: other, Size: 1234, Platform: &ocispec.Platform{OS: "linux", Architecture: "s390x"}},
			{MediaType: ocispec.MediaTypeImageManifest, Digest: info.Digest, Size: info.Size, Platform: &here},
		},
	}
	p, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(p), Size: int64(len(p))}
	labels := map[string]string{"containerd.io/gc.ref.content.m.0": info.Digest.String()}
	if err := content.WriteBlob(ctx, cs, "index-"+desc.Digest.Encoded(), bytes.NewReader(p), desc, content.WithLabels(labels)); err != nil {
		t.Fatal(err)
	}
	rt.client.ImageService().Delete(ctx, ref) // left by an earlier run on the shared daemon
	if _, err := rt.client.ImageService().Create(ctx, images.Image{Name: ref, Target: desc}); err != nil {
		t.Fatal(err)
	}
	return desc
}

// chunkedReader reads and seeks like a bytes.Reader over the same bytes,
// asking its ReaderAt for whole chunks.
func TestChunkedReader(t *testing.T) {
	data := make([]byte, 3*chunkSize+12345)
	rand.Read(data)
	ra := &countingReaderAt{r: bytes.NewReader(data)}
	c := newChunkedReader(ra, int64(len(data)))
	defer c.release()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll: %d bytes, %v", len(got), err)
	}
	if ra.calls != 4 {
		t.Errorf("%d ReadAt calls for %d bytes, want 4", ra.calls, len(data))
	}
	for _, off := range []int64{0, 1, chunkSize - 1, chunkSize, 2*chunkSize + 7, int64(len(data)) - 1} {
		if _, err := c.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := io.ReadFull(c, buf)
		want := data[off:min(off+100, int64(len(data)))]
		if !bytes.Equal(buf[:n], want) || (n < 100) != (err != nil) {
			t.Errorf("at %d: %d bytes, %v", off, n, err)
		}
	}
	if pos, _ := c.Seek(-10, io.SeekEnd); pos != int64(len(data))-10 {
		t.Errorf("SeekEnd = %d", pos)
	}
	if _, err := c.Seek(-1, io.SeekStart); err == nil {
		t.Error("negative seek accepted")
	}
	short := newChunkedReader(bytes.NewReader(data[:10]), 20) // the blob is shorter than said
	if _, err := io.ReadAll(short); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short blob: %v", err)
	}
}

type countingReaderAt struct {
	r     io.ReaderAt
	calls int
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.calls++
	return c.r.ReadAt(p, off)
}
