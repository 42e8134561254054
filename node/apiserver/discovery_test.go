package apiserver

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	discoveryclient "k8s.io/client-go/discovery"
)

// pathRecorder records the paths of the requests a client sends.
type pathRecorder struct {
	next  http.RoundTripper
	mu    sync.Mutex
	paths []string
}

func (p *pathRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	p.mu.Lock()
	p.paths = append(p.paths, r.URL.Path)
	p.mu.Unlock()
	return p.next.RoundTrip(r)
}

// TestAggregatedDiscovery: client-go's discovery (what kubectl uses) gets
// every group and resource from the two aggregated documents, and finds
// exactly what the legacy documents list, one request per group version.
func TestAggregatedDiscovery(t *testing.T) {
	e := newEnv(t)
	p := newTestPKI(t)
	ts := e.startTLS(p)
	discover := func(legacy bool) (map[string][]metav1.APIResource, []string) {
		t.Helper()
		cfg := p.restConfig(ts.URL)
		rec := &pathRecorder{}
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { rec.next = rt; return rec }
		dc, err := discoveryclient.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		dc.UseLegacyDiscovery = legacy
		groups, lists, err := dc.ServerGroupsAndResources()
		if err != nil {
			t.Fatalf("legacy=%v: %v", legacy, err)
		}
		out := map[string][]metav1.APIResource{}
		for _, g := range groups {
			if g.PreferredVersion.Version != "v1" || len(g.Versions) != 1 {
				t.Fatalf("legacy=%v: group %q versions %+v", legacy, g.Name, g.Versions)
			}
		}
		for _, l := range lists {
			gv, err := schema.ParseGroupVersion(l.GroupVersion)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range l.APIResources {
				// Aggregated discovery names every resource's group and
				// version; legacy leaves them empty when they are the list's.
				if r.Group == "" && r.Version == "" {
					r.Group, r.Version = gv.Group, gv.Version
				}
				out[l.GroupVersion] = append(out[l.GroupVersion], r)
			}
			slices.SortFunc(out[l.GroupVersion], func(a, b metav1.APIResource) int { return strings.Compare(a.Name, b.Name) })
		}
		return out, rec.paths
	}
	legacy, legacyPaths := discover(true)
	agg, aggPaths := discover(false)
	if !slices.Equal(aggPaths, []string{"/api", "/apis"}) {
		t.Fatalf("aggregated discovery sent %v, want /api and /apis only", aggPaths)
	}
	if len(legacyPaths) <= 2 {
		t.Fatalf("legacy discovery sent only %v", legacyPaths)
	}
	if len(agg) != len(legacy) {
		t.Fatalf("aggregated group versions %d, legacy %d", len(agg), len(legacy))
	}
	for gv, want := range legacy {
		got := agg[gv]
		if len(got) != len(want) {
			t.Fatalf("%s: aggregated lists %d resources, legacy %d", gv, len(got), len(want))
		}
		for i := range want {
			w, g := want[i], got[i]
			if g.Name != w.Name || g.Namespaced != w.Namespaced || g.Kind != w.Kind || g.Group != w.Group || g.Version != w.Version ||
				!slices.Equal(g.Verbs, w.Verbs) || !slices.Equal(g.ShortNames, w.ShortNames) || !slices.Equal(g.Categories, w.Categories) ||
				(!strings.Contains(w.Name, "/") && g.SingularName != w.SingularName) {
				t.Fatalf("%s: aggregated %+v\nlegacy %+v", gv, g, w)
			}
		}
	}
	deploy := agg["apps/v1"][slices.IndexFunc(agg["apps/v1"], func(r metav1.APIResource) bool { return r.Name == "deployments" })]
	if !slices.Equal(deploy.ShortNames, []string{"deploy"}) || !slices.Contains(deploy.Categories, "all") {
		t.Fatalf("deployments = %+v", deploy)
	}
}

func TestAggregatedDiscoveryNegotiation(t *testing.T) {
	const v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
	const v2beta1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
	for _, c := range []struct{ accept, want string }{
		{"", ""},
		{"application/json", ""},
		{"*/*", ""},
		{v2 + "," + v2beta1 + ",application/json", "v2"},
		{v2beta1 + ",application/json", "v2beta1"},
		{"application/json;v=v2;g=apidiscovery.k8s.io;as=APIGroupDiscoveryList", "v2"}, // any parameter order
		{"application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList, application/json", ""},
		{"application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList, " + v2beta1, "v2beta1"},
		{"application/json, " + v2, ""},
		{"garbage;;, " + v2, "v2"},
	} {
		if got := aggregatedVersion(c.accept); got != c.want {
			t.Errorf("Accept %q: %q, want %q", c.accept, got, c.want)
		}
	}

	e := newEnv(t)
	for _, path := range []string{"/api", "/apis"} {
		w := e.ok(req{method: "GET", path: path, accept: v2beta1 + ",application/json"}, 200, nil)
		if ct := w.Header().Get("Content-Type"); ct != v2beta1 {
			t.Fatalf("%s: Content-Type %q", path, ct)
		}
		if !strings.Contains(w.Body.String(), `"apiVersion":"apidiscovery.k8s.io/v2beta1"`) {
			t.Fatalf("%s: body %s", path, w.Body.String())
		}
		etag := w.Header().Get("ETag")
		if etag == "" || w.Header().Get("Vary") != "Accept" {
			t.Fatalf("%s: headers %v", path, w.Header())
		}
		r := req{method: "GET", path: path, accept: v2beta1, ifNoneMatch: etag}
		if w := e.do(r); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
			t.Fatalf("%s with If-None-Match: %d %q", path, w.Code, w.Body.String())
		}
		// The legacy document for a client that asks for plain JSON.
		if w := e.ok(req{method: "GET", path: path, accept: "application/json"}, 200, nil); strings.Contains(w.Body.String(), "apidiscovery") {
			t.Fatalf("%s: plain JSON request got %s", path, w.Body.String())
		}
	}
}
