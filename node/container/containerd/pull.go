package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	ctd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	remoteerrors "github.com/containerd/containerd/remotes/errors"
	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"github.com/shoal-dev/shoal/node/container"
)

// PullImage implements container.Runtime with containerd's docker resolver
// and client-side pull: the mirrors are registry hosts of their own (https,
// each with its Client; containerd asks them with ?ns=<registry>, see
// RegistryHandler), the image's registry comes last when opts.Registry. The
// image is stored under the normalized ref and unpacked for the runtime's
// snapshotter, for this platform only when ref names an index.
func (r *Runtime) PullImage(ctx context.Context, ref string, opts container.PullOptions) (container.Image, error) {
	name, err := container.NormalizeRef(ref)
	if err != nil {
		return container.Image{}, err
	}
	unlock, err := r.pulls.Lock(ctx, name)
	if err != nil {
		return container.Image{}, fmt.Errorf("pulling image %s: %w", name, err)
	}
	defer unlock()
	ctx = r.ns(ctx)
	img, err := r.presentImage(ctx, name)
	if !errors.Is(err, container.ErrNotFound) {
		if err != nil || !opts.Refresh || !opts.Registry {
			return img, err
		}
		if !r.stale(ctx, name, img) {
			return img, nil
		}
		// The registry names something else now: pull it from there.
		opts.Mirrors = nil
	}
	sources, registry, err := pullSources(name, opts)
	if err != nil {
		return container.Image{}, err
	}
	if len(sources) == 0 {
		return container.Image{}, fmt.Errorf("image %s is not present, and there is nowhere to pull it from (no mirror, registry not asked): %w", name, container.ErrNotFound)
	}
	// The resolver logs each host it gives up on; the error says it all.
	ctx = log.WithLogger(ctx, quietLog)
	res := &pullResolver{ref: name, sources: sources, progress: opts.Progress}
	if !opts.Registry && registry != "" {
		res.notAsked = "registry " + registry + ": not asked"
	}
	i, err := r.client.Pull(ctx, name,
		ctd.WithPullUnpack,
		ctd.WithPullSnapshotter(r.cfg.Snapshotter),
		ctd.WithResolver(res))
	if err != nil {
		if res.resolveErr != nil && errors.Is(err, res.resolveErr) {
			return container.Image{}, res.resolveErr
		}
		if ctx.Err() != nil {
			return container.Image{}, fmt.Errorf("pulling image %s: %w", name, ctx.Err())
		}
		return container.Image{}, wrapErr(err, "pulling image %s from %s", name, res.resolvedFrom())
	}
	return r.describe(ctx, i.Metadata())
}

// refreshTimeout bounds asking a registry about a present image: a node
// cut off from it starts its containers from the local copy without waiting
// out connection timeouts.
const refreshTimeout = 5 * time.Second

// stale reports whether the ref's registry resolves name to another
// digest than the present image's. A registry that cannot answer (or a
// name it cannot be asked about) leaves the image as it is.
func (r *Runtime) stale(ctx context.Context, name string, img container.Image) bool {
	sources, _, err := pullSources(name, container.PullOptions{Registry: true})
	if err != nil || len(sources) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	res := &pullResolver{ref: name, sources: sources}
	_, desc, err := res.Resolve(log.WithLogger(ctx, quietLog), name)
	if err != nil {
		r.cfg.logf("image %s: keeping the local copy (%s): %v", name, img.Digest, err)
		return false
	}
	return desc.Digest.String() != img.Digest
}

// presentImage returns the image called name if present, unpacking it
// first if it is not (no network either way).
func (r *Runtime) presentImage(ctx context.Context, name string) (container.Image, error) {
	img, err := r.client.ImageService().Get(ctx, name)
	if err != nil {
		return container.Image{}, wrapErr(err, "image %s", name)
	}
	i := ctd.NewImage(r.client, img)
	unpacked, err := i.IsUnpacked(ctx, r.cfg.Snapshotter)
	if err != nil {
		return container.Image{}, wrapErr(err, "checking image %s", name)
	}
	if !unpacked {
		if err := i.Unpack(ctx, r.cfg.Snapshotter); err != nil {
			return container.Image{}, wrapErr(err, "unpacking image %s", name)
		}
	}
	return r.describe(ctx, img)
}

// pullSource is one place to pull from.
type pullSource struct {
	what string // "mirror 10.0.0.2:7443", "registry registry-1.docker.io"
	host docker.RegistryHost
}

// pullSources lists the mirrors then, with opts.Registry, the ref's
// registry; registry is the ref's registry host ("" for a bare digest).
func pullSources(name string, opts container.PullOptions) (sources []pullSource, registry string, err error) {
	if _, err := digest.Parse(name); err == nil {
		// A bare digest, the name of an unnamed import: no repository to
		// ask for it.
		return nil, "", fmt.Errorf("image %s is not present, and a bare digest names no repository to pull from: %w", name, container.ErrNotFound)
	}
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return nil, "", fmt.Errorf("image reference %q: %v: %w", name, err, container.ErrInvalid)
	}
	registry = reference.Domain(named)
	for _, m := range opts.Mirrors {
		if _, port, err := net.SplitHostPort(m.Host); err != nil || port == "" || strings.ContainsAny(m.Host, "/?#@ ") {
			return nil, "", fmt.Errorf("pulling image %s: mirror host %q: want host:port: %w", name, m.Host, container.ErrInvalid)
		}
		client := m.Client
		if client == nil {
			client = http.DefaultClient
		}
		sources = append(sources, pullSource{what: "mirror " + m.Host, host: docker.RegistryHost{
			Client:       client,
			Host:         m.Host,
			Scheme:       "https",
			Path:         "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
		}})
	}
	if opts.Registry {
		host, _ := docker.DefaultHost(registry) // docker.io → registry-1.docker.io
		client := &http.Client{Transport: registryTransport}
		authOpts := []docker.AuthorizerOpt{docker.WithAuthClient(client)}
		if opts.Credentials != nil {
			authOpts = append(authOpts, docker.WithAuthCreds(opts.Credentials))
		}
		sources = append(sources, pullSource{what: "registry " + host, host: docker.RegistryHost{
			Client:       client,
			Authorizer:   docker.NewDockerAuthorizer(authOpts...),
			Host:         host,
			Scheme:       "https",
			Path:         "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
		}})
	}
	return sources, registry, nil
}

// quietLog silences containerd's client-side logging during pulls.
var quietLog = logrus.NewEntry(&logrus.Logger{Out: io.Discard, Formatter: new(logrus.TextFormatter), Hooks: make(logrus.LevelHooks), Level: logrus.ErrorLevel})

// registryTransport carries pulls from real registries (tests swap it).
var registryTransport http.RoundTripper = &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	ForceAttemptHTTP2:     true,
	MaxIdleConns:          10,
	IdleConnTimeout:       90 * time.Second,
	TLSHandshakeTimeout:   10 * time.Second,
	ExpectContinueTimeout: 1 * time.Second,
}

// pullResolver is a remotes.Resolver that asks its sources one at a time,
// so that it can say what each answered, then fetches blobs from the
// source that resolved the ref, falling back on the others (but those that
// could not be reached). One is used for one pull.
type pullResolver struct {
	ref      string
	sources  []pullSource
	progress func(container.PullProgress)
	notAsked string // appended to the sources listed in errors

	resolved   int          // index of the source that resolved the ref, -1 if none; set by Resolve
	failed     map[int]bool // sources that could not be reached; set by Resolve
	resolveErr error        // what Resolve returned, if it failed

	mu      sync.Mutex // serializes progress calls
	fetched int64      // guarded by mu
}

var _ remotes.Resolver = (*pullResolver)(nil)

func singleHost(h docker.RegistryHost) docker.RegistryHosts {
	return func(string) ([]docker.RegistryHost, error) { return []docker.RegistryHost{h}, nil }
}

func (p *pullResolver) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	var (
		tried    []string
		firstErr error
	)
	p.resolved, p.failed = -1, make(map[int]bool)
	answered := 0
	for i, s := range p.sources {
		res := docker.NewResolver(docker.ResolverOptions{Hosts: singleHost(s.host)})
		name, desc, err := res.Resolve(ctx, ref)
		if err == nil {
			p.resolved = i
			return name, desc, nil
		}
		if ctx.Err() != nil {
			return "", ocispec.Descriptor{}, ctx.Err()
		}
		answer, ok := classify(err)
		if ok {
			answered++
		} else {
			p.failed[i] = true
			if firstErr == nil {
				firstErr = err
			}
		}
		tried = append(tried, s.what+": "+answer)
	}
	if p.notAsked != "" {
		tried = append(tried, p.notAsked)
	}
	where := strings.Join(tried, "; ")
	if answered == 0 {
		p.resolveErr = &pullError{msg: fmt.Sprintf("pulling image %s: no mirror or registry could be reached (%s)", p.ref, where), err: firstErr}
	} else {
		p.resolveErr = &pullError{msg: fmt.Sprintf("image %s: no mirror or registry has it (%s)", p.ref, where), err: container.ErrNotFound}
	}
	return "", ocispec.Descriptor{}, p.resolveErr
}

// pullError is a failed resolve: what each source answered, wrapping
// ErrNotFound or the first transport error.
type pullError struct {
	msg string
	err error
}

func (e *pullError) Error() string { return e.msg }
func (e *pullError) Unwrap() error { return e.err }

// classify describes a source's failure to resolve, and whether the
// source answered (it does not have the image for us) rather than failed.
func classify(err error) (string, bool) {
	var status remoteerrors.ErrUnexpectedStatus
	switch {
	case errdefs.IsNotFound(err):
		return "not found", true
	case errors.Is(err, docker.ErrInvalidAuthorization):
		return "access denied", true
	case errors.As(err, &status) && status.StatusCode >= 400 && status.StatusCode < 500:
		return "refused (" + status.Status + ")", true
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		// "dial tcp ...: connection refused", not the whole request.
		return "unreachable (" + uerr.Err.Error() + ")", false
	}
	return "failed (" + err.Error() + ")", false
}

// resolvedFrom names the source that resolved the ref.
func (p *pullResolver) resolvedFrom() string {
	if p.resolved < 0 {
		return "nowhere"
	}
	return p.sources[p.resolved].what
}

// Fetcher fetches from the source that resolved the ref, then from the
// others in order, skipping those Resolve could not reach.
func (p *pullResolver) Fetcher(ctx context.Context, ref string) (remotes.Fetcher, error) {
	if p.resolved < 0 {
		return nil, fmt.Errorf("fetching %s before resolving it: %w", ref, errdefs.ErrFailedPrecondition)
	}
	hosts := []docker.RegistryHost{p.sources[p.resolved].host}
	for i, s := range p.sources {
		if i != p.resolved && !p.failed[i] {
			hosts = append(hosts, s.host)
		}
	}
	f, err := docker.NewResolver(docker.ResolverOptions{
		Hosts: func(string) ([]docker.RegistryHost, error) { return hosts, nil },
	}).Fetcher(ctx, ref)
	if err != nil || p.progress == nil {
		return f, err
	}
	return progressFetcher{f, p}, nil
}

func (p *pullResolver) Pusher(context.Context, string) (remotes.Pusher, error) {
	return nil, fmt.Errorf("pushing: %w", errdefs.ErrNotImplemented)
}

// report adds n bytes received, and reports the blob when done.
func (p *pullResolver) report(desc ocispec.Descriptor, n int64, done bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fetched += n
	if done {
		p.progress(container.PullProgress{
			Ref: p.ref, Source: p.sources[p.resolved].host.Host,
			Digest: desc.Digest.String(), Size: desc.Size, Fetched: p.fetched,
		})
	}
}

type progressFetcher struct {
	remotes.Fetcher
	p *pullResolver
}

func (f progressFetcher) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := f.Fetcher.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	return &progressReader{rc: rc, desc: desc, p: f.p}, nil
}

// progressReader counts what a fetch reads and reports the blob at EOF.
// It seeks when the fetcher's reader does (containerd resumes partial
// downloads by seeking).
type progressReader struct {
	rc   io.ReadCloser
	desc ocispec.Descriptor
	p    *pullResolver
	done bool
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.rc.Read(b)
	eof := errors.Is(err, io.EOF) && !r.done
	if n > 0 || eof {
		r.done = r.done || eof
		r.p.report(r.desc, int64(n), eof)
	}
	return n, err
}

func (r *progressReader) Seek(offset int64, whence int) (int64, error) {
	s, ok := r.rc.(io.Seeker)
	if !ok {
		return 0, errors.New("seek: not supported")
	}
	return s.Seek(offset, whence)
}

func (r *progressReader) Close() error { return r.rc.Close() }
