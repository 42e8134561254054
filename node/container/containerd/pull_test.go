package containerd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	ctd "github.com/containerd/containerd"
	"github.com/containerd/containerd/images"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/image"
)

// Two daemons, as two nodes: an image imported into A is pulled by B
// through A's registry handler over mTLS, past a mirror that is down, and
// runs on B.
func TestPullFromMirror(t *testing.T) {
	rtA, rtB := newRuntime(t, startDaemon(t)), newRuntime(t, startDaemon(t))
	ctx := context.Background()
	const ref = "shoal.dev/echo:v1"
	archive, res := buildBusybox(t, ref)
	imgA := importArchive(t, rtA, archive)
	hits := &requestLog{}
	mirror := serveMirror(t, rtA, hits)
	down := container.Mirror{Host: downHost(t), Client: mirror.Client}

	var progress []container.PullProgress
	start := time.Now()
	img, err := rtB.PullImage(ctx, ref, container.PullOptions{
		Mirrors:  []container.Mirror{down, mirror},
		Progress: func(p container.PullProgress) { progress = append(progress, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pulled %s (%d bytes) in %v; requests: %q", ref, img.Size, time.Since(start).Round(time.Millisecond), hits.get())
	if img.Ref != ref || img.Digest != res.ManifestDigest || img.ConfigDigest != res.ConfigDigest || img.Size != imgA.Size || img.Config.Cmd[0] != "sh" {
		t.Errorf("pulled %+v, want %+v", img, imgA)
	}
	// containerd asked the mirror with the repository path and ?ns=.
	if n := hits.count("HEAD /v2/echo/manifests/v1?ns=shoal.dev 200"); n != 1 {
		t.Errorf("%d resolves of the tag, want 1: %q", n, hits.get())
	}
	if n := hits.count("GET /v2/echo/blobs/" + res.LayerDigest + "?ns=shoal.dev 200"); n != 1 {
		t.Errorf("%d layer downloads, want 1: %q", n, hits.get())
	}
	var total int64
	for _, p := range progress {
		total += p.Size
		if p.Source != mirror.Host || p.Ref != ref {
			t.Errorf("progress %+v", p)
		}
	}
	if len(progress) != 3 || total != img.Size || progress[2].Fetched != total {
		t.Errorf("progress %+v, want manifest, config and layer adding up to %d", progress, img.Size)
	}
	if got, err := rtB.GetImage(ctx, ref); err != nil || got.Digest != img.Digest {
		t.Errorf("GetImage on B = %+v, %v", got, err)
	}
	stored, err := rtB.client.ImageService().Get(rtB.ns(ctx), ref)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := ctd.NewImage(rtB.client, stored).IsUnpacked(rtB.ns(ctx), rtB.cfg.Snapshotter); !ok || err != nil {
		t.Errorf("not unpacked on B: %v", err)
	}

	id := run(t, rtB, container.ContainerSpec{Image: ref, Command: []string{"sh", "-c", "echo pulled from a peer"}, LogPath: shortDir(t) + "/log"})
	if e := waitExit(t, rtB, id, 10*time.Second); e.ExitCode != 0 {
		t.Errorf("exit %+v", e)
	}
	st, _ := rtB.Status(ctx, id)
	if err := fileContains(st.LogPath, "pulled from a peer\n"); err != nil {
		t.Error(err)
	}

	// Present now: no network, even with no source at all.
	before := len(hits.get())
	if again, err := rtB.PullImage(ctx, ref, container.PullOptions{Mirrors: []container.Mirror{mirror}}); err != nil || again.Digest != img.Digest {
		t.Errorf("pull of a present image = %+v, %v", again, err)
	}
	if after := len(hits.get()); after != before {
		t.Errorf("pull of a present image made %d requests", after-before)
	}

	// B serves what it pulled: a third runtime (another namespace on A's
	// daemon) uses B as its mirror.
	mirrorB := serveMirror(t, rtB, nil)
	cfgC := rtA.cfg
	cfgC.Namespace = rtA.cfg.Namespace + "-c"
	rtC := openRuntime(t, cfgC)
	if got, err := rtC.PullImage(ctx, ref, container.PullOptions{Mirrors: []container.Mirror{mirrorB}}); err != nil || got.Digest != img.Digest {
		t.Errorf("pull from B = %+v, %v", got, err)
	}
}

// Failures say where they looked; ErrNotFound only when some source
// answered.
func TestPullErrors(t *testing.T) {
	rtA, rtB := newRuntime(t, sharedDaemon(t)), newRuntime(t, startDaemon(t))
	ctx := context.Background()
	importBusybox(t, rtA)
	mirror := serveMirror(t, rtA, nil)
	down := container.Mirror{Host: downHost(t), Client: mirror.Client}
	noCert := container.Mirror{Host: mirror.Host, Client: &http.Client{Transport: &http.Transport{TLSClientConfig: testCerts(t).clientTLS().Clone()}}}
	noCert.Client.Transport.(*http.Transport).TLSClientConfig.Certificates = nil

	_, err := rtB.PullImage(ctx, "shoal.dev/absent:1", container.PullOptions{Mirrors: []container.Mirror{down, mirror}})
	if !errors.Is(err, container.ErrNotFound) {
		t.Fatalf("absent: %v, want ErrNotFound", err)
	}
	for _, want := range []string{"image shoal.dev/absent:1", "mirror " + down.Host + ": unreachable", "mirror " + mirror.Host + ": not found", "registry shoal.dev: not asked"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("absent: %q lacks %q", err, want)
		}
	}
	t.Logf("absent: %v", err)

	_, err = rtB.PullImage(ctx, busyboxRef, container.PullOptions{Mirrors: []container.Mirror{down, noCert}})
	if err == nil || errors.Is(err, container.ErrNotFound) || !strings.Contains(err.Error(), "could be reached") {
		t.Errorf("nothing reachable: %v, want a transport error", err)
	}
	t.Logf("nothing reachable: %v", err)

	_, err = rtB.PullImage(ctx, "shoal.dev/absent:1", container.PullOptions{})
	if !errors.Is(err, container.ErrNotFound) {
		t.Errorf("nowhere to look: %v", err)
	}
	_, err = rtB.PullImage(ctx, "sha256:"+strings.Repeat("a", 64), container.PullOptions{Mirrors: []container.Mirror{mirror}})
	if !errors.Is(err, container.ErrNotFound) {
		t.Errorf("bare digest: %v", err)
	}
	for _, host := range []string{"", "https://" + mirror.Host, mirror.Host + "/v2", "no-port"} {
		_, err = rtB.PullImage(ctx, busyboxRef, container.PullOptions{Mirrors: []container.Mirror{{Host: host}}})
		if !errors.Is(err, container.ErrInvalid) {
			t.Errorf("mirror %q: %v, want ErrInvalid", host, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err = rtB.PullImage(cctx, busyboxRef, container.PullOptions{Mirrors: []container.Mirror{mirror}}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := rtB.GetImage(ctx, busyboxRef); !errors.Is(err, container.ErrNotFound) {
		t.Errorf("failed pulls left an image: %v", err)
	}
}

// Concurrent pulls of one ref make one download.
func TestPullDeduplicates(t *testing.T) {
	rtA, rtB := newRuntime(t, sharedDaemon(t)), newRuntime(t, startDaemon(t))
	ctx := context.Background()
	importBusybox(t, rtA)
	hits := &requestLog{}
	mirror := serveMirror(t, rtA, hits)
	var wg sync.WaitGroup
	digests := make([]string, 6)
	errs := make([]error, len(digests))
	for i := range digests {
		wg.Go(func() {
			img, err := rtB.PullImage(ctx, busyboxRef, container.PullOptions{Mirrors: []container.Mirror{mirror}})
			digests[i], errs[i] = img.Digest, err
		})
	}
	wg.Wait()
	for i := range digests {
		if errs[i] != nil || digests[i] != digests[0] {
			t.Errorf("pull %d: %s, %v", i, digests[i], errs[i])
		}
	}
	if n := hits.count("/manifests/1?ns=shoal.test"); n != 1 {
		t.Errorf("%d resolves, want 1: %q", n, hits.get())
	}
}

// A manifest list (OCI index) with a platform the node does not run is
// served and pulled for this platform only.
func TestPullIndex(t *testing.T) {
	rtA, rtB := newRuntime(t, sharedDaemon(t)), newRuntime(t, startDaemon(t))
	ctx := context.Background()
	archive, res := buildBusybox(t, "shoal.dev/multi:single")
	single := importArchive(t, rtA, archive)
	const ref = "shoal.dev/multi:v1"
	idx := writeIndex(t, rtA, ref, single)
	hits := &requestLog{}
	mirror := serveMirror(t, rtA, hits)
	img, err := rtB.PullImage(ctx, ref, container.PullOptions{Mirrors: []container.Mirror{mirror}})
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != ref || img.Digest != idx.Digest.String() || img.ConfigDigest != res.ConfigDigest {
		t.Errorf("pulled %+v, want index %s with config %s", img, idx.Digest, res.ConfigDigest)
	}
	if n := hits.count("/manifests/" + res.ManifestDigest + "?ns=shoal.dev 200"); n != 1 {
		t.Errorf("this platform's manifest fetched %d times: %q", n, hits.get())
	}
	if n := hits.count(" 404"); n != 0 {
		t.Errorf("the other platform was asked for: %q", hits.get())
	}
	id := run(t, rtB, container.ContainerSpec{Image: ref, Command: []string{"true"}, LogPath: "/dev/null"})
	if e := waitExit(t, rtB, id, 10*time.Second); e.ExitCode != 0 {
		t.Errorf("exit %+v", e)
	}
}

// With Registry, the ref's own registry is asked after the mirrors (here
// a loopback server: nothing leaves the test).
func TestPullFromRegistry(t *testing.T) {
	rtA, rtB := newRuntime(t, sharedDaemon(t)), newRuntime(t, startDaemon(t))
	ctx := context.Background()
	hits := &requestLog{}
	registry, _ := serveRegistry(t, rtA, hits)

	ref := registry.Host + "/team/app:v1"
	archive, res := buildBusybox(t, ref)
	importArchive(t, rtA, archive)
	down := container.Mirror{Host: downHost(t), Client: registry.Client}
	_, err := rtB.PullImage(ctx, ref, container.PullOptions{Mirrors: []container.Mirror{down}})
	if errors.Is(err, container.ErrNotFound) || err == nil || !strings.Contains(err.Error(), "registry "+registry.Host+": not asked") {
		t.Errorf("without Registry: %v", err)
	}
	img, err := rtB.PullImage(ctx, ref, container.PullOptions{Mirrors: []container.Mirror{down}, Registry: true})
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != ref || img.Digest != res.ManifestDigest {
		t.Errorf("pulled %+v", img)
	}
	// Asked as the registry itself: no ns.
	if n := hits.count("HEAD /v2/team/app/manifests/v1 200"); n != 1 {
		t.Errorf("requests %q", hits.get())
	}
}

// With Refresh (imagePullPolicy: Always) a present image is checked
// against its registry: the same digest costs one HEAD and no download, a
// new one is pulled from the registry (not from the peers, which may hold
// the old one under the tag), and an unreachable registry leaves the local
// copy in place.
func TestPullRefresh(t *testing.T) {
	rtReg, rtPeer, rtB := newRuntime(t, sharedDaemon(t)), newRuntime(t, startDaemon(t)), newRuntime(t, startDaemon(t))
	ctx := context.Background()
	hits := &requestLog{}
	registry, srv := serveRegistry(t, rtReg, hits)

	ref := registry.Host + "/team/app:v1"
	oldArchive, oldRes := buildBusybox(t, ref, image.WithCreated(time.Unix(1, 0)))
	newArchive, newRes := buildBusybox(t, ref, image.WithCreated(time.Unix(2, 0)))
	if oldRes.ManifestDigest == newRes.ManifestDigest {
		t.Fatal("the two builds have one digest")
	}
	importArchive(t, rtB, oldArchive)
	importArchive(t, rtPeer, oldArchive) // a peer with the old image under the tag
	importArchive(t, rtReg, oldArchive)
	peerHits := &requestLog{}
	peer := serveMirror(t, rtPeer, peerHits)
	opts := container.PullOptions{Mirrors: []container.Mirror{peer}, Registry: true, Refresh: true}

	// Same digest at the registry: a HEAD, nothing fetched.
	img, err := rtB.PullImage(ctx, ref, opts)
	if err != nil || img.Digest != oldRes.ManifestDigest {
		t.Fatalf("refresh with the registry unchanged: %+v, %v", img, err)
	}
	if got := hits.get(); len(got) != 1 || !strings.HasPrefix(got[0], "HEAD /v2/team/app/manifests/v1 ") {
		t.Errorf("registry requests %q, want one HEAD", got)
	}

	// The registry's tag moves: the new image comes from the registry.
	importArchive(t, rtReg, newArchive)
	img, err = rtB.PullImage(ctx, ref, opts)
	if err != nil || img.Digest != newRes.ManifestDigest || img.Ref != ref {
		t.Fatalf("refresh after the tag moved: %+v, %v (want digest %s)", img, err, newRes.ManifestDigest)
	}
	if n := len(peerHits.get()); n != 0 {
		t.Errorf("the peer was asked %q", peerHits.get())
	}
	if got, err := rtB.GetImage(ctx, ref); err != nil || got.Digest != newRes.ManifestDigest {
		t.Errorf("stored image after refresh: %+v, %v", got, err)
	}
	id := run(t, rtB, container.ContainerSpec{Image: ref, Command: []string{"true"}, LogPath: "/dev/null"})
	if e := waitExit(t, rtB, id, 10*time.Second); e.ExitCode != 0 {
		t.Errorf("exit %+v", e)
	}

	// Without Registry, or with the registry down, the local copy stands.
	if img, err := rtB.PullImage(ctx, ref, container.PullOptions{Refresh: true}); err != nil || img.Digest != newRes.ManifestDigest {
		t.Errorf("refresh without Registry: %+v, %v", img, err)
	}
	srv.Close()
	if img, err := rtB.PullImage(ctx, ref, opts); err != nil || img.Digest != newRes.ManifestDigest {
		t.Errorf("refresh with the registry down: %+v, %v", img, err)
	}
}

// serveRegistry serves rt's content as an image registry would (no ?ns=,
// hits counting requests) on loopback, and points the registry transport at
// it for the test's duration: pulls "from the registry" of a ref naming the
// returned host come here.
func serveRegistry(t testing.TB, rt *Runtime, hits *requestLog) (container.Mirror, *httptest.Server) {
	t.Helper()
	return serveRegistryAuth(t, rt, hits, "", "")
}

// serveRegistryAuth is serveRegistry asking for HTTP basic auth with user
// and password (none when user is empty), as a private registry does.
func serveRegistryAuth(t testing.TB, rt *Runtime, hits *requestLog, user, password string) (container.Mirror, *httptest.Server) {
	t.Helper()
	var h http.Handler = rt.RegistryHandler()
	if user != "" {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
				w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			inner.ServeHTTP(w, r)
		})
	}
	mux := http.NewServeMux()
	mux.Handle("/v2/", hits.wrap(h))
	registry, srv := serveTLS(t, mux)
	saved := registryTransport
	registryTransport = registry.Client.Transport
	t.Cleanup(func() { registryTransport = saved })
	return registry, srv
}

// deleteImage removes an image and, synchronously, its content and
// snapshots.
func deleteImage(t testing.TB, rt *Runtime, ref string) {
	t.Helper()
	name, _ := container.NormalizeRef(ref)
	err := rt.client.ImageService().Delete(rt.ns(context.Background()), name, images.SynchronousDelete())
	if err != nil && !isNotFound(err) {
		t.Fatal(fmt.Errorf("deleting image %s: %w", name, err))
	}
}

// TestPullWithCredentials: a registry that wants credentials refuses an
// anonymous pull and a wrong password, and serves the pull that answers
// its challenge with what Credentials returns for its host.
func TestPullWithCredentials(t *testing.T) {
	rtReg, rtB := newRuntime(t, sharedDaemon(t)), newRuntime(t, startDaemon(t))
	ctx := context.Background()
	hits := &requestLog{}
	registry, _ := serveRegistryAuth(t, rtReg, hits, "robot", "s3cret")
	ref := registry.Host + "/team/private:v1"
	archive, res := buildBusybox(t, ref)
	importArchive(t, rtReg, archive)

	if _, err := rtB.PullImage(ctx, ref, container.PullOptions{Registry: true}); err == nil {
		t.Fatal("anonymous pull from a private registry succeeded")
	}
	var asked []string
	creds := func(password string) func(string) (string, string, error) {
		return func(host string) (string, string, error) {
			asked = append(asked, host)
			return "robot", password, nil
		}
	}
	if _, err := rtB.PullImage(ctx, ref, container.PullOptions{Registry: true, Credentials: creds("wrong")}); err == nil {
		t.Fatal("pull with a wrong password succeeded")
	}
	img, err := rtB.PullImage(ctx, ref, container.PullOptions{Registry: true, Credentials: creds("s3cret")})
	if err != nil || img.Digest != res.ManifestDigest {
		t.Fatalf("pull with credentials: %+v, %v", img, err)
	}
	if len(asked) == 0 || asked[len(asked)-1] != registry.Host {
		t.Errorf("credentials asked for %q, want %q", asked, registry.Host)
	}
}
