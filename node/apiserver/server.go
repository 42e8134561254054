// Package apiserver is the Kubernetes REST API every Shoal node serves: discovery,
// OpenAPI v3 (enough for kubectl's server-side validation), CRUD, watch, patch,
// the status and scale subresources, tables, authentication by client
// certificate and per-kind strategies (defaulting, validation, status split).
//
// Reads and watches are served from the node's local replica (state.Store);
// writes go through a state.Proposer and are answered once the local replica has
// applied them, so a client reads its own writes on the node it talks to.
//
// The node owns the TLS listener and mounts Server as an http.Handler. Server is
// safe for concurrent use. Objects read from the store are shared and are never
// modified here: every write path works on a copy.
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/version"

	"github.com/shoal-dev/shoal/node/rbac"
	"github.com/shoal-dev/shoal/node/state"
)

// DefaultMaxRequestBytes bounds request bodies when Config.MaxRequestBytes is 0.
const DefaultMaxRequestBytes = 3 << 20

// Config is what the node hands to New. It is not modified after New.
type Config struct {
	// Store is the local replica: every read and watch is served from it.
	Store *state.Store
	// Proposer commits writes; it returns after the local replica applied them.
	Proposer state.Proposer
	// Now is the clock (default time.Now).
	Now func() time.Time
	// NewUID returns a new object UID (default: a random UUID).
	NewUID func() types.UID
	// Registerer receives the request metrics (nil: not registered).
	Registerer prometheus.Registerer
	// MaxRequestBytes bounds request bodies (default DefaultMaxRequestBytes).
	MaxRequestBytes int64
	// Version is what /version reports.
	Version version.Info
	// ConsistentRead, when set, is called before a get or list that asks for
	// the latest state (no resourceVersion, no continue token): it returns
	// once the local replica holds everything committed when it was called
	// (a raft read index). If it fails — no quorum — the request is served
	// from the local replica anyway with a Warning: a cut-off node keeps
	// answering reads (headless autonomy). resourceVersion=0 reads never
	// wait, as in Kubernetes.
	ConsistentRead func(ctx context.Context) error
	// PodStreams serves pods/log, exec, attach and portforward; nil
	// answers them with 503.
	PodStreams PodStreamFunc
	// Tokens issues and verifies service-account tokens; nil refuses
	// TokenRequests (503) and bearer tokens.
	Tokens Tokens
	// ServiceCIDR is where cluster IPs come from (default 10.43.0.0/16);
	// DNSIP is the cluster DNS address, never given to a Service (default
	// 10.43.0.10).
	ServiceCIDR netip.Prefix
	DNSIP       netip.Addr
}

// DefaultVersion is the version Shoal reports when Config.Version is empty:
// kubectl's dispatcher picks its client by the server's minor version.
func DefaultVersion() version.Info {
	return version.Info{
		Major: "1", Minor: "33", GitVersion: "v1.33.0-shoal", GitCommit: "unknown",
		GitTreeState: "clean", GoVersion: "go1.26", Compiler: "gc", Platform: "linux/amd64",
	}
}

// Validate reports what is missing from a Config.
func (c *Config) Validate() error {
	if c.Store == nil {
		return errors.New("apiserver: Config.Store is required")
	}
	if c.Proposer == nil {
		return errors.New("apiserver: Config.Proposer is required")
	}
	if c.MaxRequestBytes < 0 {
		return errors.New("apiserver: Config.MaxRequestBytes must not be negative")
	}
	return nil
}

// Server serves the Kubernetes API. Create it with New.
type Server struct {
	store   *state.Store
	prop    state.Proposer
	now     func() time.Time
	newUID  func() types.UID
	maxBody int64
	version version.Info

	metrics *metrics
	disc    *discovery
	openapi *openAPI

	// bookmarkInterval is how often a watch that asked for bookmarks gets one.
	bookmarkInterval time.Duration
	// authorize decides whether a request may be made: RBAC over the
	// local replica (node/rbac).
	authorize func(a rbac.Attributes) bool
	rbac      *rbac.Authorizer
	tokens    Tokens

	consistentRead func(ctx context.Context) error
	podStreams     PodStreamFunc
	svcAlloc       *serviceAlloc

	// ctx bounds background work (namespace finalization); Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup
	nsMu   sync.Mutex
	nsBusy map[string]bool // namespaces being finalized; guarded by nsMu
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		store: cfg.Store, prop: cfg.Proposer, now: cfg.Now, newUID: cfg.NewUID,
		maxBody: cfg.MaxRequestBytes, version: cfg.Version, consistentRead: cfg.ConsistentRead, podStreams: cfg.PodStreams,
		bookmarkInterval: time.Minute,
		rbac:             rbac.NewAuthorizer(cfg.Store),
		tokens:           cfg.Tokens,
		nsBusy:           map[string]bool{},
	}
	s.authorize = s.rbac.Allowed
	if s.now == nil {
		s.now = time.Now
	}
	if s.newUID == nil {
		s.newUID = func() types.UID { return types.UID(uuid.NewString()) }
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxRequestBytes
	}
	if s.version.GitVersion == "" {
		s.version = DefaultVersion()
	}
	if !cfg.ServiceCIDR.IsValid() {
		cfg.ServiceCIDR = DefaultServiceCIDR
	}
	if !cfg.DNSIP.IsValid() {
		cfg.DNSIP = DefaultDNSIP
	}
	s.svcAlloc = newServiceAlloc(cfg.Store, cfg.ServiceCIDR, cfg.DNSIP)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	if s.disc, err = newDiscovery(); err != nil {
		return nil, err
	}
	if s.openapi, err = newOpenAPI(s.version.GitVersion); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.resumeNamespaceFinalization()
	return s, nil
}

// Close stops background work (namespace finalization) and waits for it.
// Requests in flight are not affected.
func (s *Server) Close() {
	s.cancel()
	s.bg.Wait()
}

// userInfo is the authenticated client: certificate CN and O, or a service
// account; UID and Extra come only from impersonation.
type userInfo struct {
	Name   string
	Groups []string
	UID    string
	Extra  map[string][]string
}

// authenticate reads the identity from the verified client certificate
// (user = CN, groups = O, as Kubernetes does). The node's listener verifies
// certificates against the cluster CA (tls.VerifyClientCertIfGiven), so a
// peer certificate here is a verified one. Every authenticated user is also
// in system:authenticated.
func authenticate(r *http.Request) (*userInfo, bool) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, false
	}
	c := r.TLS.PeerCertificates[0]
	groups := slices.Clone(c.Subject.Organization)
	if !slices.Contains(groups, rbac.GroupAuthenticated) {
		groups = append(groups, rbac.GroupAuthenticated)
	}
	return &userInfo{Name: c.Subject.CommonName, Groups: groups}, true
}

// attributes describes rq, with verb, for the authorizer.
func (rq *request) attributes(verb string) rbac.Attributes {
	a := rbac.Attributes{User: rq.user.Name, Groups: rq.user.Groups, Verb: verb}
	if rq.res == nil {
		a.Path = rq.r.URL.Path
		return a
	}
	a.ResourceRequest = true
	a.APIGroup, a.Resource, a.Subresource = rq.res.Group, rq.res.Resource, rq.sub
	a.Namespace, a.Name = rq.namespace, rq.name
	return a
}

// allowed authorizes rq for verb; when it is not, it answers 403 and
// reports false.
func (s *Server) allowed(rq *request, verb string) bool { return s.allow(rq, rq.attributes(verb)) }

// allow authorizes a for rq, answering 403 when it is refused.
func (s *Server) allow(rq *request, a rbac.Attributes) bool {
	if s.authorize(a) {
		return true
	}
	var gr schema.GroupResource
	if a.ResourceRequest {
		gr = schema.GroupResource{Group: a.APIGroup, Resource: a.Resource}
	}
	rq.fail(apierrors.NewForbidden(gr, a.Name, errors.New(rbac.Describe(a))))
	return false
}

// growStackBytes is how much stack a request with a body gets at once.
const growStackBytes = 12 << 10

// growStack grows the calling goroutine's stack in one step so that it
// holds growStackBytes more. net/http runs every request on a new goroutine
// whose stack starts small; decoding a JSON body (encoding/json's validating
// scan and its decoder recurse) then grew it a step or two at a time, and
// every growth copies the stack and adjusts each frame on it. Grown here,
// while the stack is shallow, the copy is cheap: with 100 clients creating
// ConfigMaps through a leader, stack growth fell from 5.4% to 2.3% of its
// CPU and JSON decoding from 10.2% to 5.8% (16 KiB in all is enough for
// it; 24 KiB more grew the stack past the per-P stack caches and cost
// more). i is always 0; it keeps the compiler from dropping the array.
//
//go:noinline
func growStack(i int) byte {
	var pad [growStackBytes]byte
	return pad[i]
}

// ServeHTTP authenticates, authorizes, routes and records metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodGet {
		growStack(0)
	}
	rw := &statusWriter{ResponseWriter: w}
	rq := &request{s: s, r: r, w: rw, verb: strings.ToLower(r.Method)}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			if !rw.wrote {
				rq.fail(apierrors.NewInternalError(fmt.Errorf("internal error while serving %s %s", r.Method, r.URL.Path)))
			}
		}
		s.metrics.observe(rq.verb, rq.metricResource(), rw.code(), time.Since(start))
	}()

	u, ok := authenticate(r)
	if !ok {
		var err error
		if u, err = s.authenticateToken(r); err != nil {
			msg := "Unauthorized: a client certificate signed by the cluster CA or a service-account token is required"
			if !errors.Is(err, errNoCredentials) {
				msg = "Unauthorized: " + err.Error()
			}
			rq.fail(apierrors.NewUnauthorized(msg))
			return
		}
	}
	rq.user = u
	if rq.user = s.impersonate(rq); rq.user == nil {
		return
	}
	s.route(rq)
}

// statusWriter records the status code for metrics and passes Flush through.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.status
}

// writeContext is the context a write is proposed with: the request's
// values, but a client that goes away does not cut its write short. The
// write commits or fails on its own, within the proposer's bound, as it
// would have had the connection dropped a moment later; and the proposer,
// given a context nothing can cancel, shares one deadline timer among the
// writes of the same few milliseconds instead of arming one per write.
func (rq *request) writeContext() context.Context { return context.WithoutCancel(rq.r.Context()) }
