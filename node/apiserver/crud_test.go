package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kube-openapi/pkg/spec3"

	"github.com/shoal-dev/shoal/node/rbac"
	"github.com/shoal-dev/shoal/node/state"
)

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		r    req
		want int
	}{
		{"no TLS", req{method: "GET", path: "/api/v1/namespaces", noTLS: true}, 401},
		{"no certificate", req{method: "GET", path: "/api/v1/namespaces", tls: &tls0}, 401},
		{"unprivileged user", req{method: "GET", path: "/api/v1/namespaces", tls: tlsFor(certFor("bob", "developers"))}, 403},
		{"unprivileged user, discovery", req{method: "GET", path: "/api", tls: tlsFor(certFor("bob"))}, 403},
		{"node", req{method: "GET", path: "/api/v1/namespaces", tls: tlsFor(certFor("system:node:n1", "system:nodes"))}, 200},
		{"admin", req{method: "GET", path: "/api/v1/namespaces"}, 200},
		{"no TLS, version", req{method: "GET", path: "/version", noTLS: true}, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.do(tt.r)
			if w.Code != tt.want {
				t.Fatalf("code %d, want %d: %s", w.Code, tt.want, w.Body.String())
			}
			if tt.want >= 400 {
				st := status(t, w)
				if int(st.Code) != tt.want {
					t.Fatalf("Status code %d, want %d", st.Code, tt.want)
				}
			}
		})
	}
}

func TestDiscovery(t *testing.T) {
	e := newEnv(t)
	var v struct{ Major, Minor, GitVersion string }
	e.ok(req{method: "GET", path: "/version"}, 200, &v)
	if v.Major != "1" || v.Minor != "33" || !strings.HasPrefix(v.GitVersion, "v1.33.0-shoal") {
		t.Fatalf("version = %+v", v)
	}
	var versions metav1.APIVersions
	e.ok(req{method: "GET", path: "/api"}, 200, &versions)
	if !slices.Equal(versions.Versions, []string{"v1"}) {
		t.Fatalf("/api versions = %v", versions.Versions)
	}
	var groups metav1.APIGroupList
	e.ok(req{method: "GET", path: "/apis"}, 200, &groups)
	var names []string
	for _, g := range groups.Groups {
		names = append(names, g.PreferredVersion.GroupVersion)
	}
	if !slices.Equal(names, []string{"apps/v1", "batch/v1", "discovery.k8s.io/v1", "scheduling.k8s.io/v1", "rbac.authorization.k8s.io/v1"}) {
		t.Fatalf("/apis groups = %v", names)
	}
	find := func(path, name string) metav1.APIResource {
		t.Helper()
		var l metav1.APIResourceList
		e.ok(req{method: "GET", path: path}, 200, &l)
		for _, r := range l.APIResources {
			if r.Name == name {
				return r
			}
		}
		t.Fatalf("%s has no %s", path, name)
		return metav1.APIResource{}
	}
	cm := find("/api/v1", "configmaps")
	if !cm.Namespaced || cm.Kind != "ConfigMap" || cm.SingularName != "configmap" || !slices.Equal(cm.ShortNames, []string{"cm"}) || !slices.Contains(cm.Verbs, "watch") {
		t.Fatalf("configmaps = %+v", cm)
	}
	if po := find("/api/v1", "pods"); !slices.Contains(po.Categories, "all") {
		t.Fatalf("pods categories = %v", po.Categories)
	}
	find("/api/v1", "pods/status")
	if ns := find("/api/v1", "namespaces"); ns.Namespaced {
		t.Fatal("namespaces are cluster-scoped")
	}
	if sc := find("/apis/apps/v1", "deployments/scale"); sc.Group != "autoscaling" || sc.Kind != "Scale" {
		t.Fatalf("deployments/scale = %+v", sc)
	}
	find("/apis/apps/v1", "statefulsets/scale")
	find("/apis/batch/v1", "cronjobs")
	if pc := find("/apis/scheduling.k8s.io/v1", "priorityclasses"); pc.Namespaced || pc.Kind != "PriorityClass" || !slices.Equal(pc.ShortNames, []string{"pc"}) {
		t.Fatalf("priorityclasses = %+v", pc)
	}
	e.ok(req{method: "GET", path: "/apis/apps"}, 200, nil)
	e.ok(req{method: "GET", path: "/apis/nope/v1"}, 404, nil)
	e.ok(req{method: "GET", path: "/openapi/v2"}, 200, nil)
}

// TestOpenAPIFieldValidation parses the OpenAPI v3 documents the way kubectl
// does and checks every kind's PATCH advertises fieldValidation.
func TestOpenAPIFieldValidation(t *testing.T) {
	e := newEnv(t)
	var root struct {
		Paths map[string]struct {
			URL string `json:"serverRelativeURL"`
		} `json:"paths"`
	}
	e.ok(req{method: "GET", path: "/openapi/v3"}, 200, &root)
	for _, k := range state.Kinds {
		gv := "api/v1"
		if k.Group != "" {
			gv = "apis/" + k.Group + "/v1"
		}
		entry, ok := root.Paths[gv]
		if !ok {
			t.Fatalf("root has no %s", gv)
		}
		w := e.ok(req{method: "GET", path: entry.URL}, 200, nil)
		var doc spec3.OpenAPI
		if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
			t.Fatalf("%s: %v", gv, err)
		}
		found := false
		for _, p := range doc.Paths.Paths {
			if p == nil || p.Patch == nil {
				continue
			}
			var gvk map[string]string
			if err := p.Patch.Extensions.GetObject("x-kubernetes-group-version-kind", &gvk); err != nil {
				t.Fatalf("%s: gvk extension: %v", gv, err)
			}
			if gvk["group"] != k.Group || gvk["version"] != k.Version || gvk["kind"] != k.Kind {
				continue
			}
			for _, prm := range p.Patch.Parameters {
				if prm.Name == "fieldValidation" && prm.In == "query" {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("%s: no PATCH with fieldValidation", k.GVK())
		}
	}
}

func cmBody(name string, data map[string]string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": name}, "data": data}
}

func TestConfigMapCRUD(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *Config) { c.Registerer = reg })
	base := "/api/v1/namespaces/default/configmaps"

	var created corev1.ConfigMap
	e.ok(req{method: "POST", path: base, body: cmBody("a", map[string]string{"k": "v"})}, 201, &created)
	if created.UID == "" || created.CreationTimestamp.IsZero() || created.ResourceVersion == "" || created.Namespace != "default" {
		t.Fatalf("created = %+v", created.ObjectMeta)
	}
	if created.Generation != 0 {
		t.Fatalf("configmaps have no generation, got %d", created.Generation)
	}
	stored, ok := e.store.Get("configmaps", "default", "a")
	if !ok || stored.GetResourceVersion() != created.ResourceVersion || stored.GetUID() != created.UID {
		t.Fatalf("stored %v %+v", ok, stored)
	}

	var got corev1.ConfigMap
	e.ok(req{method: "GET", path: base + "/a"}, 200, &got)
	if got.Data["k"] != "v" || got.Kind != "ConfigMap" || got.APIVersion != "v1" {
		t.Fatalf("got = %+v", got)
	}
	e.ok(req{method: "POST", path: base, body: cmBody("a", nil)}, 409, nil)

	// Update with the current resourceVersion, then with the stale one.
	upd := got.DeepCopy()
	upd.Data["k"] = "v2"
	var updated corev1.ConfigMap
	e.ok(req{method: "PUT", path: base + "/a", body: upd}, 200, &updated)
	if updated.ResourceVersion == got.ResourceVersion || updated.Data["k"] != "v2" || updated.UID != got.UID || !updated.CreationTimestamp.Equal(&got.CreationTimestamp) {
		t.Fatalf("updated = %+v", updated)
	}
	rev := e.store.Revision()
	upd.Data["k"] = "stale"
	st := status(t, e.ok(req{method: "PUT", path: base + "/a", body: upd}, 409, nil))
	if st.Reason != metav1.StatusReasonConflict {
		t.Fatalf("stale update: %+v", st)
	}
	if e.store.Revision() != rev {
		t.Fatal("a rejected update changed the store")
	}
	// Without a resourceVersion the update applies to the latest version.
	upd.ResourceVersion = ""
	e.ok(req{method: "PUT", path: base + "/a", body: upd}, 200, &updated)
	if updated.Data["k"] != "stale" {
		t.Fatalf("unconditional update: %+v", updated.Data)
	}
	// A no-op update writes nothing.
	rev = e.store.Revision()
	e.ok(req{method: "PUT", path: base + "/a", body: &updated}, 200, nil)
	if e.store.Revision() != rev {
		t.Fatal("a no-op update wrote")
	}
	// Name in the body must match the URL; the object must exist.
	e.ok(req{method: "PUT", path: base + "/b", body: &updated}, 400, nil)
	nb := updated.DeepCopy()
	nb.Name, nb.ResourceVersion = "missing", ""
	e.ok(req{method: "PUT", path: base + "/missing", body: nb}, 404, nil)

	var list corev1.ConfigMapList
	e.ok(req{method: "GET", path: base}, 200, &list)
	if len(list.Items) != 1 || list.ResourceVersion != fmt.Sprint(e.store.Revision()) {
		t.Fatalf("list = %d items, rv %s (store %d)", len(list.Items), list.ResourceVersion, e.store.Revision())
	}
	e.ok(req{method: "GET", path: "/api/v1/configmaps"}, 200, &list)
	if len(list.Items) != 1 {
		t.Fatalf("all-namespace list = %d items", len(list.Items))
	}

	st = status(t, e.ok(req{method: "DELETE", path: base + "/a"}, 200, nil))
	if st.Status != metav1.StatusSuccess || st.Details == nil || st.Details.Name != "a" || st.Details.UID != got.UID {
		t.Fatalf("delete: %+v", st)
	}
	st = status(t, e.ok(req{method: "GET", path: base + "/a"}, 404, nil))
	if st.Reason != metav1.StatusReasonNotFound || st.Details.Kind != "configmaps" {
		t.Fatalf("get after delete: %+v", st)
	}
	e.ok(req{method: "DELETE", path: base + "/a"}, 404, nil)

	if n := testutil.ToFloat64(e.srv.metrics.requests.WithLabelValues("create", "configmaps", "201")); n != 1 {
		t.Fatalf("create metric = %v", n)
	}
	if n, err := testutil.GatherAndCount(reg, "shoal_apiserver_request_duration_seconds"); err != nil || n == 0 {
		t.Fatalf("latency histogram: %d, %v", n, err)
	}
}

// TestRejectedWritesChangeNothing sends bad requests and checks each gets its
// Status and leaves the store as it was.
func TestRejectedWritesChangeNothing(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxRequestBytes = 64 << 10 })
	base := "/api/v1/namespaces/default/configmaps"
	e.ok(req{method: "POST", path: base, body: cmBody("exists", map[string]string{"a": "b"})}, 201, nil)
	big := strings.Repeat("x", 70<<10)
	tests := []struct {
		name       string
		r          req
		code       int
		reason     metav1.StatusReason
		wantFields []string
	}{
		{"bad name", req{method: "POST", path: base, body: cmBody("Bad_Name", nil)}, 422, metav1.StatusReasonInvalid, []string{"metadata.name"}},
		{"bad label", req{method: "POST", path: base, body: map[string]any{"metadata": map[string]any{"name": "x", "labels": map[string]string{"a": "not valid!"}}}}, 422, metav1.StatusReasonInvalid, []string{"metadata.labels"}},
		{"bad data key", req{method: "POST", path: base, body: cmBody("x", map[string]string{"bad/key": "v"})}, 422, metav1.StatusReasonInvalid, []string{"data[bad/key]"}},
		{"unknown field strict", req{method: "POST", path: base + "?fieldValidation=Strict", body: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","foo":1},"bar":2}`}, 422, metav1.StatusReasonInvalid, []string{"metadata.foo", "bar"}},
		{"duplicate field strict", req{method: "POST", path: base + "?fieldValidation=Strict", body: `{"metadata":{"name":"x","name":"y"}}`}, 422, metav1.StatusReasonInvalid, []string{"metadata.name"}},
		{"bad fieldValidation", req{method: "POST", path: base + "?fieldValidation=Loud", body: cmBody("x", nil)}, 400, metav1.StatusReasonBadRequest, nil},
		{"too large", req{method: "POST", path: base, body: cmBody("x", map[string]string{"k": big})}, 413, metav1.StatusReasonRequestEntityTooLarge, nil},
		{"too large update", req{method: "PUT", path: base + "/exists", body: cmBody("exists", map[string]string{"k": big})}, 413, metav1.StatusReasonRequestEntityTooLarge, nil},
		{"too large patch", req{method: "PATCH", path: base + "/exists", ct: "application/merge-patch+json", body: cmBody("exists", map[string]string{"k": big})}, 413, metav1.StatusReasonRequestEntityTooLarge, nil},
		{"malformed JSON", req{method: "POST", path: base, body: `{"metadata":{"name":"x"`}, 400, metav1.StatusReasonBadRequest, nil},
		{"JSON of the wrong shape", req{method: "POST", path: base, body: `{"metadata":{"name":["x"]}}`}, 400, metav1.StatusReasonBadRequest, nil},
		{"empty body", req{method: "POST", path: base, body: ""}, 400, metav1.StatusReasonBadRequest, nil},
		{"malformed YAML", req{method: "POST", path: base, ct: "application/yaml", body: "metadata: [x\n  name: y"}, 400, metav1.StatusReasonBadRequest, nil},
		{"malformed protobuf", req{method: "POST", path: base, ct: "application/vnd.kubernetes.protobuf", body: "k8s\x00\xff\xff\xff"}, 400, metav1.StatusReasonBadRequest, nil},
		{"protobuf without magic", req{method: "POST", path: base, ct: "application/vnd.kubernetes.protobuf", body: "hello"}, 400, metav1.StatusReasonBadRequest, nil},
		{"unsupported media type", req{method: "POST", path: base, ct: "text/plain", body: "hello"}, 415, metav1.StatusReasonUnsupportedMediaType, nil},
		{"wrong kind", req{method: "POST", path: base, body: `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}`}, 400, metav1.StatusReasonBadRequest, nil},
		{"wrong version", req{method: "POST", path: base, body: `{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}`}, 400, metav1.StatusReasonBadRequest, nil},
		{"namespace mismatch", req{method: "POST", path: base, body: map[string]any{"metadata": map[string]any{"name": "x", "namespace": "kube-system"}}}, 400, metav1.StatusReasonBadRequest, nil},
		{"resourceVersion on create", req{method: "POST", path: base, body: map[string]any{"metadata": map[string]any{"name": "x", "resourceVersion": "5"}}}, 400, metav1.StatusReasonBadRequest, nil},
		{"no name", req{method: "POST", path: base, body: map[string]any{"data": map[string]string{}}}, 422, metav1.StatusReasonInvalid, []string{"metadata.name"}},
		{"missing namespace", req{method: "POST", path: "/api/v1/namespaces/nope/configmaps", body: cmBody("x", nil)}, 404, metav1.StatusReasonNotFound, nil},
		{"unknown resource", req{method: "POST", path: "/api/v1/namespaces/default/widgets", body: cmBody("x", nil)}, 404, metav1.StatusReasonNotFound, nil},
		{"post to a name", req{method: "POST", path: base + "/x", body: cmBody("x", nil)}, 405, metav1.StatusReasonMethodNotAllowed, nil},
		{"apply patch without fieldManager", req{method: "PATCH", path: base + "/exists", ct: "application/apply-patch+yaml", body: "data: {a: c}"}, 422, metav1.StatusReasonInvalid, []string{"fieldManager"}},
		{"apply patch without kind", req{method: "PATCH", path: base + "/exists?fieldManager=m", ct: "application/apply-patch+yaml", body: "data: {a: c}"}, 400, metav1.StatusReasonBadRequest, nil},
		{"CBOR apply patch", req{method: "PATCH", path: base + "/exists?fieldManager=m", ct: "application/apply-patch+cbor", body: "\xa0"}, 415, metav1.StatusReasonUnsupportedMediaType, nil},
		{"malformed merge patch", req{method: "PATCH", path: base + "/exists", ct: "application/merge-patch+json", body: "{"}, 400, metav1.StatusReasonBadRequest, nil},
		{"malformed json patch", req{method: "PATCH", path: base + "/exists", ct: "application/json-patch+json", body: `{"op":"add"}`}, 400, metav1.StatusReasonBadRequest, nil},
		{"failed json patch test", req{method: "PATCH", path: base + "/exists", ct: "application/json-patch+json", body: `[{"op":"test","path":"/data/a","value":"zzz"}]`}, 422, metav1.StatusReasonInvalid, nil},
		{"patch renames", req{method: "PATCH", path: base + "/exists", ct: "application/merge-patch+json", body: `{"metadata":{"name":"other"}}`}, 422, metav1.StatusReasonInvalid, []string{"metadata.name"}},
		{"patch to an invalid object", req{method: "PATCH", path: base + "/exists", ct: "application/merge-patch+json", body: `{"metadata":{"labels":{"a":"not valid!"}}}`}, 422, metav1.StatusReasonInvalid, []string{"metadata.labels"}},
		{"patch with unknown field strict", req{method: "PATCH", path: base + "/exists?fieldValidation=Strict", ct: "application/merge-patch+json", body: `{"spec":{"x":1}}`}, 422, metav1.StatusReasonInvalid, []string{"spec"}},
		{"bad dryRun", req{method: "POST", path: base + "?dryRun=Some", body: cmBody("x", nil)}, 400, metav1.StatusReasonBadRequest, nil},
		{"dryRun create", req{method: "POST", path: base + "?dryRun=All", body: cmBody("dry", nil)}, 201, "", nil},
		{"dryRun delete", req{method: "DELETE", path: base + "/exists?dryRun=All"}, 200, "", nil},
		{"delete precondition uid", req{method: "DELETE", path: base + "/exists", body: `{"preconditions":{"uid":"nope"}}`}, 409, metav1.StatusReasonConflict, nil},
		{"delete precondition rv", req{method: "DELETE", path: base + "/exists", body: `{"preconditions":{"resourceVersion":"1"}}`}, 409, metav1.StatusReasonConflict, nil},
		{"bad propagation policy", req{method: "DELETE", path: base + "/exists?propagationPolicy=Sideways"}, 422, metav1.StatusReasonInvalid, []string{"propagationPolicy"}},
		{"protected namespace", req{method: "DELETE", path: "/api/v1/namespaces/default"}, 403, metav1.StatusReasonForbidden, nil},
		{"unsupported field selector", req{method: "GET", path: base + "?fieldSelector=spec.foo%3Dx"}, 400, metav1.StatusReasonBadRequest, nil},
		{"bad label selector", req{method: "GET", path: base + "?labelSelector=a%3D%3D%3Db"}, 400, metav1.StatusReasonBadRequest, nil},
		{"bad continue", req{method: "GET", path: base + "?limit=1&continue=garbage"}, 400, metav1.StatusReasonBadRequest, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { e.refused(t, tt.r, tt.code, tt.reason, tt.wantFields, "") })
	}
	if _, ok := e.store.Get("configmaps", "default", "exists"); !ok {
		t.Fatal("dry-run delete deleted")
	}
}

func TestFieldValidationWarnAndIgnore(t *testing.T) {
	e := newEnv(t)
	base := "/api/v1/namespaces/default/configmaps"
	body := `{"metadata":{"name":"w"},"data":{"a":"b"},"spec":{"foo":1}}`
	w := e.ok(req{method: "POST", path: base, body: body}, 201, nil)
	if got := w.Header().Values("Warning"); len(got) != 1 || got[0] != `299 - "unknown field \"spec\""` {
		t.Fatalf("warnings = %q", got)
	}
	w = e.ok(req{method: "POST", path: base + "?fieldValidation=Ignore", body: strings.Replace(body, `"w"`, `"i"`, 1)}, 201, nil)
	if got := w.Header().Values("Warning"); len(got) != 0 {
		t.Fatalf("Ignore gave warnings %q", got)
	}
	// YAML with a duplicate key.
	w = e.ok(req{method: "POST", path: base, ct: "application/yaml", body: "metadata:\n  name: yaml-dup\ndata:\n  a: b\n  a: c\n"}, 201, nil)
	if got := w.Header().Values("Warning"); len(got) != 1 || !strings.Contains(got[0], "duplicate") && !strings.Contains(got[0], "already set") {
		t.Fatalf("YAML duplicate warnings = %q", got)
	}
}

func TestGenerateName(t *testing.T) {
	e := newEnv(t)
	seen := map[string]bool{}
	for i := 0; i < 5; i++ {
		var cm corev1.ConfigMap
		e.ok(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", body: map[string]any{"metadata": map[string]any{"generateName": "gen-"}}}, 201, &cm)
		if !strings.HasPrefix(cm.Name, "gen-") || len(cm.Name) != len("gen-")+5 || seen[cm.Name] {
			t.Fatalf("generated name %q", cm.Name)
		}
		seen[cm.Name] = true
	}
}

// failingProposer fails every write as a proposer without quorum does.
type failingProposer struct{}

func (failingProposer) Propose(context.Context, ...state.Op) ([]state.Result, error) {
	return nil, fmt.Errorf("forwarding to leader: %w", state.ErrUnavailable)
}

func TestUnavailable(t *testing.T) {
	e := newEnv(t)
	srv, err := New(Config{Store: e.store, Proposer: failingProposer{}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	e.srv = srv
	w := e.do(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", body: cmBody("x", nil)})
	st := status(t, w)
	if w.Code != 503 || st.Reason != metav1.StatusReasonServiceUnavailable || !strings.Contains(st.Message, "quorum") || w.Header().Get("Retry-After") != "" {
		t.Fatalf("code %d: %+v", w.Code, st)
	}
	// Reads still work from the local replica.
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default"}, 200, nil)
}

func TestPanicsBecome500(t *testing.T) {
	e := newEnv(t)
	e.srv.authorize = func(rbac.Attributes) bool { panic("boom") }
	w := e.do(req{method: "GET", path: "/api/v1/namespaces"})
	if st := status(t, w); w.Code != http.StatusInternalServerError || st.Reason != metav1.StatusReasonInternalError {
		t.Fatalf("code %d: %+v", w.Code, st)
	}
}

func deployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{
					{Name: "web", Image: "nginx:1.25", Ports: []corev1.ContainerPort{{ContainerPort: 80}}},
					{Name: "sidecar", Image: "busybox"},
				}},
			},
		},
	}
}
