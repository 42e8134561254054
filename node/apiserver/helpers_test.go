package apiserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type testEnv struct {
	t     *testing.T
	srv   *Server
	store *state.Store
	prop  state.Proposer
	clock *fakeClock
}

type envOption func(*Config)

func newEnv(t *testing.T, opts ...envOption) *testEnv {
	t.Helper()
	return newEnvWithStore(t, state.NewStore(0), opts...)
}

func newEnvWithStore(t *testing.T, store *state.Store, opts ...envOption) *testEnv {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	var uid atomic.Int64
	cfg := Config{
		Store:    store,
		Proposer: state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{})),
		Now:      clock.Now,
		NewUID:   func() types.UID { return types.UID(fmt.Sprintf("uid-%d", uid.Add(1))) },
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(srv.Close)
	if err := srv.EnsureNamespaces(context.Background()); err != nil {
		t.Fatalf("EnsureNamespaces: %v", err)
	}
	return &testEnv{t: t, srv: srv, store: store, prop: cfg.Proposer, clock: clock}
}

func certFor(cn string, groups ...string) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: groups}}
}

// adminTLS is what the node's listener hands the handler for a verified
// admin client certificate.
var adminTLS = &tls.ConnectionState{
	HandshakeComplete: true,
	PeerCertificates:  []*x509.Certificate{certFor("admin", "system:masters")},
}

// req is one test request.
type req struct {
	method, path string
	body         any // string, []byte or an object marshalled as JSON
	ct           string
	accept       string
	userAgent    string
	ifNoneMatch  string
	bearer       string // Authorization: Bearer, over TLS without a client certificate
	tls          *tls.ConnectionState
	noTLS        bool
	header       http.Header // more request headers
}

func (e *testEnv) do(r req) *httptest.ResponseRecorder {
	e.t.Helper()
	var body io.Reader
	switch b := r.body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("marshal body: %v", err)
		}
		body = bytes.NewReader(js)
	}
	hr := httptest.NewRequest(r.method, r.path, body)
	if body != nil {
		ct := r.ct
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	if r.accept != "" {
		hr.Header.Set("Accept", r.accept)
	}
	if r.ifNoneMatch != "" {
		hr.Header.Set("If-None-Match", r.ifNoneMatch)
	}
	for k, vs := range r.header {
		for _, v := range vs {
			hr.Header.Add(k, v)
		}
	}
	if r.userAgent != "" {
		hr.Header.Set("User-Agent", r.userAgent)
	}
	if r.bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	switch {
	case r.bearer != "":
		hr.TLS = &tls0
	case r.noTLS:
		hr.TLS = nil
	case r.tls != nil:
		hr.TLS = r.tls
	default:
		hr.TLS = adminTLS
	}
	w := httptest.NewRecorder()
	e.srv.ServeHTTP(w, hr)
	return w
}

// ok performs r and fails unless the answer has code want; it decodes the
// body into out when out is not nil.
func (e *testEnv) ok(r req, want int, out any) *httptest.ResponseRecorder {
	e.t.Helper()
	w := e.do(r)
	if w.Code != want {
		e.t.Fatalf("%s %s: code %d, want %d: %s", r.method, r.path, w.Code, want, w.Body.String())
	}
	if out != nil {
		// Decode into a zero value: unmarshalling into a used struct merges maps.
		if v := reflect.ValueOf(out); v.Kind() == reflect.Pointer && !v.IsNil() {
			v.Elem().Set(reflect.Zero(v.Elem().Type()))
		}
		if err := json.Unmarshal(w.Body.Bytes(), out); err != nil {
			e.t.Fatalf("%s %s: decoding %T: %v\n%s", r.method, r.path, out, err, w.Body.String())
		}
	}
	return w
}

// status decodes a Status answer.
// refused sends r and checks that it is answered with code and changes
// nothing stored; for an error code, that the Status has reason and code,
// msg in its message and every one of fields among its causes.
func (e *testEnv) refused(t *testing.T, r req, code int, reason metav1.StatusReason, fields []string, msg string) {
	t.Helper()
	rev := e.store.Revision()
	w := e.do(r)
	if w.Code != code {
		t.Fatalf("code %d, want %d: %s", w.Code, code, w.Body.String())
	}
	if e.store.Revision() != rev {
		t.Fatalf("store revision moved %d → %d", rev, e.store.Revision())
	}
	if code < 300 {
		return
	}
	st := status(t, w)
	if st.Reason != reason || int(st.Code) != code {
		t.Fatalf("Status %s/%d, want %s/%d: %s", st.Reason, st.Code, reason, code, st.Message)
	}
	if !strings.Contains(st.Message, msg) {
		t.Errorf("message %q lacks %q", st.Message, msg)
	}
	got := causes(st)
	for _, f := range fields {
		if !slices.Contains(got, f) {
			t.Errorf("causes %v lack %q (%s)", got, f, st.Message)
		}
	}
}

func status(t *testing.T, w *httptest.ResponseRecorder) metav1.Status {
	t.Helper()
	var st metav1.Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatalf("decoding Status: %v\n%s", err, w.Body.String())
	}
	if st.Kind != "Status" || st.APIVersion != "v1" {
		t.Fatalf("not a Status: %s", w.Body.String())
	}
	return st
}

// causes lists a Status' field paths.
func causes(st metav1.Status) []string {
	var out []string
	if st.Details != nil {
		for _, c := range st.Details.Causes {
			out = append(out, c.Field)
		}
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var tls0 = tls.ConnectionState{HandshakeComplete: true}

func tlsFor(c *x509.Certificate) *tls.ConnectionState {
	return &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{c}}
}

func ptr[T any](v T) *T { return &v }
