package apiserver

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/structured-merge-diff/v4/fieldpath"

	"github.com/shoal-dev/shoal/node/state"
)

const (
	configmaps  = "/api/v1/namespaces/default/configmaps"
	applyYAML   = "application/apply-patch+yaml"
	cmApplyHead = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n"
)

// cmApply is an apply patch of ConfigMap name with data (YAML, as Helm and
// hand-written requests send it; kubectl sends JSON, which is YAML too).
func cmApply(name string, data map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, cmApplyHead, name)
	if len(data) > 0 {
		b.WriteString("data:\n")
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "  %s: %q\n", k, data[k])
		}
	}
	return b.String()
}

func (e *testEnv) apply(path, manager, body string, want int, out any) *httptest.ResponseRecorder {
	e.t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return e.ok(req{method: "PATCH", path: path + sep + "fieldManager=" + manager, ct: applyYAML, body: body}, want, out)
}

// owners lists managedFields as "manager Operation[ subresource]" → the
// leaf fields it owns (".data.x").
func owners(t *testing.T, mf []metav1.ManagedFieldsEntry) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, e := range mf {
		if e.FieldsType != "FieldsV1" || e.FieldsV1 == nil {
			t.Fatalf("entry without FieldsV1: %+v", e)
		}
		set := &fieldpath.Set{}
		if err := set.FromJSON(bytes.NewReader(e.FieldsV1.Raw)); err != nil {
			t.Fatalf("entry %s: %v", e.Manager, err)
		}
		key := e.Manager + " " + string(e.Operation)
		if e.Subresource != "" {
			key += " " + e.Subresource
		}
		if _, dup := out[key]; dup {
			t.Fatalf("two entries for %s: %+v", key, mf)
		}
		var paths []string
		set.Leaves().Iterate(func(p fieldpath.Path) { paths = append(paths, p.String()) })
		sort.Strings(paths)
		out[key] = paths
	}
	return out
}

func wantOwners(t *testing.T, what string, mf []metav1.ManagedFieldsEntry, want map[string][]string) {
	t.Helper()
	got := owners(t, mf)
	if len(got) != len(want) {
		t.Fatalf("%s: managedFields %v, want %v", what, got, want)
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Fatalf("%s: managedFields %v, want %v", what, got, want)
		}
	}
}

func TestServerSideApply(t *testing.T) {
	e := newEnv(t)
	path := configmaps + "/app"

	// Apply creates.
	var cm corev1.ConfigMap
	e.apply(path, "alice", cmApply("app", map[string]string{"x": "1", "z": "9"}), 201, &cm)
	if cm.UID == "" || cm.ResourceVersion == "" || cm.Data["x"] != "1" || cm.Data["z"] != "9" {
		t.Fatalf("created = %+v", cm)
	}
	wantOwners(t, "after the first apply", cm.ManagedFields, map[string][]string{"alice Apply": {".data.x", ".data.z"}})
	if stored, ok := e.store.Get("configmaps", "default", "app"); !ok || len(stored.GetManagedFields()) != 1 {
		t.Fatalf("stored: %v %+v", ok, stored)
	}
	// GET shows the managedFields.
	e.ok(req{method: "GET", path: path}, 200, &cm)
	wantOwners(t, "GET", cm.ManagedFields, map[string][]string{"alice Apply": {".data.x", ".data.z"}})
	if e := cm.ManagedFields[0]; e.APIVersion != "v1" || e.Time == nil || e.Subresource != "" {
		t.Fatalf("entry = %+v", e)
	}

	// The same apply again writes nothing.
	rev := e.store.Revision()
	e.apply(path, "alice", cmApply("app", map[string]string{"x": "1", "z": "9"}), 200, &cm)
	if e.store.Revision() != rev {
		t.Fatal("an unchanged apply wrote")
	}

	// Re-applying without z removes z: alice owned it and no one else does.
	e.apply(path, "alice", cmApply("app", map[string]string{"x": "1"}), 200, &cm)
	if _, ok := cm.Data["z"]; ok || cm.Data["x"] != "1" {
		t.Fatalf("after dropping z: %v", cm.Data)
	}
	wantOwners(t, "after dropping z", cm.ManagedFields, map[string][]string{"alice Apply": {".data.x"}})

	// Another manager applying the same field with another value conflicts.
	rev = e.store.Revision()
	st := status(t, e.apply(path, "bob", cmApply("app", map[string]string{"x": "2", "b": "bob"}), 409, nil))
	if st.Reason != metav1.StatusReasonConflict || st.Details == nil || len(st.Details.Causes) != 1 ||
		st.Details.Causes[0].Field != ".data.x" || st.Details.Causes[0].Type != metav1.CauseTypeFieldManagerConflict ||
		!strings.Contains(st.Details.Causes[0].Message, `"alice"`) || !strings.Contains(st.Message, "Apply failed with 1 conflict") {
		t.Fatalf("conflict Status = %+v", st)
	}
	if e.store.Revision() != rev {
		t.Fatal("a conflicting apply wrote")
	}
	// The same value is shared ownership, not a conflict.
	e.apply(path, "carol", cmApply("app", map[string]string{"x": "1"}), 200, &cm)
	wantOwners(t, "shared", cm.ManagedFields, map[string][]string{"alice Apply": {".data.x"}, "carol Apply": {".data.x"}})

	// force=true takes the field over from both.
	e.apply(path+"?force=true", "bob", cmApply("app", map[string]string{"x": "2", "b": "bob"}), 200, &cm)
	if cm.Data["x"] != "2" || cm.Data["b"] != "bob" {
		t.Fatalf("after the forced apply: %v", cm.Data)
	}
	wantOwners(t, "forced", cm.ManagedFields, map[string][]string{"bob Apply": {".data.b", ".data.x"}})
	// alice lost x: re-applying her old config now conflicts with bob.
	st = status(t, e.apply(path, "alice", cmApply("app", map[string]string{"x": "1"}), 409, nil))
	if causes(st)[0] != ".data.x" || !strings.Contains(st.Message, `"bob"`) {
		t.Fatalf("conflict with bob: %+v", st)
	}

	// A client-side update by another manager, then an apply.
	cm.Data["x"] = "3"
	cm.Data["y"] = "dave"
	e.ok(req{method: "PUT", path: path + "?fieldManager=dave", body: &cm}, 200, &cm)
	wantOwners(t, "after dave's update", cm.ManagedFields, map[string][]string{
		"bob Apply": {".data.b"}, "dave Update": {".data.x", ".data.y"}})
	st = status(t, e.apply(path, "bob", cmApply("app", map[string]string{"x": "2", "b": "bob"}), 409, nil))
	if msg := st.Details.Causes[0].Message; !strings.Contains(msg, `conflict with "dave" using v1`) {
		t.Fatalf("conflict with an updater: %+v", st)
	}
	// An apply of fields nobody else owns goes through and keeps dave's.
	e.apply(path, "bob", cmApply("app", map[string]string{"b": "bob2"}), 200, &cm)
	if cm.Data["b"] != "bob2" || cm.Data["x"] != "3" || cm.Data["y"] != "dave" {
		t.Fatalf("after bob's apply: %v", cm.Data)
	}

	// A plain update without a fieldManager of an applied object is
	// recorded too, under the client's User-Agent.
	cm.Data["y"] = "edited"
	e.ok(req{method: "PUT", path: path, body: &cm, userAgent: "kubectl-edit/v1.33.0 (linux/amd64) kubernetes/abc"}, 200, &cm)
	wantOwners(t, "after the edit", cm.ManagedFields, map[string][]string{
		"bob Apply": {".data.b"}, "dave Update": {".data.x"}, "kubectl-edit Update": {".data.y"}})

	// Dry run: create and update answer as if, store nothing.
	rev = e.store.Revision()
	e.apply(configmaps+"/dry?dryRun=All", "alice", cmApply("dry", map[string]string{"a": "b"}), 201, &cm)
	if len(cm.ManagedFields) != 1 || cm.Data["a"] != "b" {
		t.Fatalf("dry-run create: %+v", cm)
	}
	e.apply(path+"?dryRun=All&force=true", "alice", cmApply("app", map[string]string{"x": "dry"}), 200, &cm)
	if cm.Data["x"] != "dry" {
		t.Fatalf("dry-run apply answered %v", cm.Data)
	}
	if e.store.Revision() != rev {
		t.Fatal("a dry-run apply wrote")
	}
	if _, ok := e.store.Get("configmaps", "default", "dry"); ok {
		t.Fatal("a dry-run apply created")
	}
}

// TestApplyAfterCreate: an object created without a manager is owned by
// "before-first-apply" when first applied, as in Kubernetes.
func TestApplyAfterCreate(t *testing.T) {
	e := newEnv(t)
	e.ok(req{method: "POST", path: configmaps, body: cmBody("plain", map[string]string{"a": "1", "b": "2"})}, 201, nil)
	st := status(t, e.apply(configmaps+"/plain", "alice", cmApply("plain", map[string]string{"a": "changed"}), 409, nil))
	if !slices.Equal(causes(st), []string{".data.a"}) || !strings.Contains(st.Message, "before-first-apply") {
		t.Fatalf("conflict = %+v", st)
	}
	var cm corev1.ConfigMap
	e.apply(configmaps+"/plain", "alice", cmApply("plain", map[string]string{"a": "1", "c": "3"}), 200, &cm)
	wantOwners(t, "first apply", cm.ManagedFields, map[string][]string{
		"before-first-apply Update": {".data.a", ".data.b"}, "alice Apply": {".data.a", ".data.c"}})
}

// deploymentManifest is the YAML of Deployment name (label app: name, 2
// replicas) whose container "web" runs image on port 80; each of extra adds
// a busybox container of that name.
func deploymentManifest(name, image string, extra ...string) string {
	s := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: ` + name + `
  labels: {app: ` + name + `}
spec:
  replicas: 2
  selector:
    matchLabels: {app: ` + name + `}
  template:
    metadata:
      labels: {app: ` + name + `}
    spec:
      containers:
      - name: web
        image: ` + image + `
        ports:
        - containerPort: 80
`
	for _, c := range extra {
		s += "      - name: " + c + "\n        image: busybox\n"
	}
	return s
}

func TestApplyDeployment(t *testing.T) {
	e := newEnv(t)
	path := deployments + "/web"
	manifest := func(image string, containers ...string) string {
		return deploymentManifest("web", image, containers...) + "status:\n  replicas: 7\n"
	}
	var d appsv1.Deployment
	e.apply(path, "ci", manifest("nginx:1.27", "log"), 201, &d)
	if d.Generation != 1 || d.Status.Replicas != 0 || *d.Spec.Replicas != 2 || len(d.Spec.Template.Spec.Containers) != 2 {
		t.Fatalf("created: generation %d status %+v spec %+v", d.Generation, d.Status, d.Spec)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.ImagePullPolicy != corev1.PullIfNotPresent || c.TerminationMessagePath == "" || d.Spec.RevisionHistoryLimit == nil {
		t.Fatalf("defaults missing: %+v", d.Spec)
	}
	for _, p := range owners(t, d.ManagedFields)["ci Apply"] {
		if strings.HasPrefix(p, ".status") {
			t.Fatalf("the applier owns %s: status belongs to the status subresource", p)
		}
	}
	// Another manager adds a sidecar: containers merge by name.
	e.apply(path, "mesh", `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - name: proxy
        image: envoy
`, 200, &d)
	var names []string
	for _, c := range d.Spec.Template.Spec.Containers {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"web", "log", "proxy"}) || d.Generation != 2 {
		t.Fatalf("after the sidecar apply: containers %v generation %d", names, d.Generation)
	}
	// ci drops its log container and changes the image: proxy stays.
	e.apply(path, "ci", manifest("nginx:1.28"), 200, &d)
	names = names[:0]
	for _, c := range d.Spec.Template.Spec.Containers {
		names = append(names, c.Name+"="+c.Image)
	}
	if !slices.Equal(names, []string{"web=nginx:1.28", "proxy=envoy"}) || d.Generation != 3 {
		t.Fatalf("after ci's second apply: containers %v generation %d", names, d.Generation)
	}

	// The status subresource: its own managers, its own fields.
	e.apply(path+"/status", "ctrl", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 9}\nstatus: {replicas: 2, readyReplicas: 1}\n", 200, &d)
	if d.Status.Replicas != 2 || d.Status.ReadyReplicas != 1 || *d.Spec.Replicas != 2 {
		t.Fatalf("after the status apply: spec.replicas %d status %+v", *d.Spec.Replicas, d.Status)
	}
	if got := owners(t, d.ManagedFields)["ctrl Apply status"]; !slices.Equal(got, []string{".status.readyReplicas", ".status.replicas"}) {
		t.Fatalf("status manager owns %v", got)
	}
	// Status cannot be applied to an object that does not exist.
	e.apply(deployments+"/nope/status", "ctrl", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nope}\nstatus: {replicas: 1}\n", 404, nil)

	// Scaling records the scaler's ownership of spec.replicas.
	e.ok(req{method: "PATCH", path: path + "/scale", ct: "application/merge-patch+json", body: `{"spec":{"replicas":5}}`, userAgent: "kubectl/v1.33.0"}, 200, nil)
	e.ok(req{method: "GET", path: path}, 200, &d)
	if got := owners(t, d.ManagedFields)["kubectl Update scale"]; !slices.Equal(got, []string{".spec.replicas"}) {
		t.Fatalf("scale manager owns %v (%v)", got, owners(t, d.ManagedFields))
	}
	st := status(t, e.apply(path, "ci", manifest("nginx:1.28"), 409, nil))
	if !slices.Equal(causes(st), []string{".spec.replicas"}) {
		t.Fatalf("ci's apply after the scale: %+v", st)
	}
}

// TestManagedFieldsOnWrites checks when creates, updates and patches record
// managedFields: only with a fieldManager or on an object that has them.
func TestManagedFieldsOnWrites(t *testing.T) {
	e := newEnv(t)
	var cm corev1.ConfigMap

	// The fast path: no fieldManager, nothing recorded.
	e.ok(req{method: "POST", path: configmaps, body: cmBody("fast", map[string]string{"a": "1"}), userAgent: "controller/v1"}, 201, &cm)
	if cm.ManagedFields != nil {
		t.Fatalf("create without a fieldManager recorded %+v", cm.ManagedFields)
	}
	cm.Data["a"] = "2"
	e.ok(req{method: "PUT", path: configmaps + "/fast", body: &cm, userAgent: "controller/v1"}, 200, &cm)
	e.ok(req{method: "PATCH", path: configmaps + "/fast", ct: "application/merge-patch+json", body: `{"data":{"b":"3"}}`}, 200, &cm)
	if cm.ManagedFields != nil {
		t.Fatalf("update and patch without a fieldManager recorded %+v", cm.ManagedFields)
	}
	// A client cannot sneak managedFields in on the fast path.
	e.ok(req{method: "PATCH", path: configmaps + "/fast", ct: "application/merge-patch+json",
		body: `{"metadata":{"managedFields":[{"manager":"x","operation":"Update","apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}}]}}`}, 200, &cm)
	if cm.ManagedFields != nil {
		t.Fatalf("a patch set managedFields: %+v", cm.ManagedFields)
	}
	// Kubernetes starts tracking only on create (or apply): an update
	// naming a manager of an untracked object records nothing either.
	e.ok(req{method: "PATCH", path: configmaps + "/fast?fieldManager=late", ct: "application/merge-patch+json", body: `{"data":{"c":"4"}}`}, 200, &cm)
	if cm.ManagedFields != nil {
		t.Fatalf("an update of an untracked object recorded %+v", cm.ManagedFields)
	}

	// A create naming its manager is tracked from then on.
	e.ok(req{method: "POST", path: configmaps + "?fieldManager=kubectl-create", body: cmBody("tracked", map[string]string{"a": "1"})}, 201, &cm)
	wantOwners(t, "create", cm.ManagedFields, map[string][]string{"kubectl-create Update": {".data.a"}})
	e.ok(req{method: "PATCH", path: configmaps + "/tracked", ct: "application/strategic-merge-patch+json", body: `{"data":{"b":"2"}}`, userAgent: "helm/v3"}, 200, &cm)
	e.ok(req{method: "PATCH", path: configmaps + "/tracked?fieldManager=kubectl-patch", ct: "application/json-patch+json", body: `[{"op":"add","path":"/data/c","value":"3"}]`}, 200, &cm)
	cm.Data["a"] = "changed"
	e.ok(req{method: "PUT", path: configmaps + "/tracked?fieldManager=kubectl-replace", body: &cm}, 200, &cm)
	wantOwners(t, "after updates", cm.ManagedFields, map[string][]string{
		"kubectl-create Update": {".data"}, // the map it created
		"helm Update":           {".data.b"}, "kubectl-patch Update": {".data.c"}, "kubectl-replace Update": {".data.a"}})
	// A no-op update writes nothing, managedFields included.
	rev := e.store.Revision()
	e.ok(req{method: "PUT", path: configmaps + "/tracked?fieldManager=someone", body: &cm}, 200, nil)
	if e.store.Revision() != rev {
		t.Fatal("a no-op update wrote")
	}
	// managedFields: [{}] resets them, as Kubernetes documents.
	e.ok(req{method: "PATCH", path: configmaps + "/tracked", ct: "application/merge-patch+json", body: `{"metadata":{"managedFields":[{}]}}`}, 200, &cm)
	if cm.ManagedFields != nil {
		t.Fatalf("reset left %+v", cm.ManagedFields)
	}

	// The status subresource records its managers with the subresource.
	e.apply(deployments+"/web", "ci", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n", 201, nil)
	var d appsv1.Deployment
	e.ok(req{method: "GET", path: deployments + "/web"}, 200, &d)
	d.Status.ObservedGeneration = 1
	d.Spec.Paused = true // ignored on /status
	e.ok(req{method: "PUT", path: deployments + "/web/status", body: &d, userAgent: "deployment-controller/v1"}, 200, &d)
	if d.Spec.Paused || d.Status.ObservedGeneration != 1 {
		t.Fatalf("status update: paused %v observedGeneration %d", d.Spec.Paused, d.Status.ObservedGeneration)
	}
	if got := owners(t, d.ManagedFields)["deployment-controller Update status"]; !slices.Equal(got, []string{".status.observedGeneration"}) {
		t.Fatalf("status updater owns %v", owners(t, d.ManagedFields))
	}
}

// TestApplyRejected sends bad apply requests: each gets its Status and the
// store stays as it was.
func TestApplyRejected(t *testing.T) {
	e := newEnv(t)
	e.apply(configmaps+"/exists", "alice", cmApply("exists", map[string]string{"a": "b"}), 201, nil)
	path := configmaps + "/exists?fieldManager=alice"
	good := cmApply("exists", map[string]string{"a": "c"})
	tests := []struct {
		name       string
		r          req
		code       int
		reason     metav1.StatusReason
		wantFields []string
		wantMsg    string
	}{
		{"no fieldManager", req{method: "PATCH", path: configmaps + "/exists", ct: applyYAML, body: good}, 422, metav1.StatusReasonInvalid, []string{"fieldManager"}, "is required for apply patch"},
		{"fieldManager too long", req{method: "PATCH", path: configmaps + "/exists?fieldManager=" + strings.Repeat("m", 129), ct: applyYAML, body: good}, 422, metav1.StatusReasonInvalid, []string{"fieldManager"}, ""},
		{"bad force", req{method: "PATCH", path: path + "&force=yes", ct: applyYAML, body: good}, 400, metav1.StatusReasonBadRequest, nil, "force"},
		{"malformed YAML", req{method: "PATCH", path: path, ct: applyYAML, body: "metadata: [x\n  name: y"}, 400, metav1.StatusReasonBadRequest, nil, "error decoding YAML"},
		{"not an object", req{method: "PATCH", path: path, ct: applyYAML, body: "- a\n- b\n"}, 400, metav1.StatusReasonBadRequest, nil, "error decoding YAML"},
		{"empty", req{method: "PATCH", path: path, ct: applyYAML, body: ""}, 400, metav1.StatusReasonBadRequest, nil, "empty"},
		{"no kind", req{method: "PATCH", path: path, ct: applyYAML, body: "metadata: {name: exists}\ndata: {a: c}\n"}, 400, metav1.StatusReasonBadRequest, nil, "must set apiVersion and kind"},
		{"wrong kind", req{method: "PATCH", path: path, ct: applyYAML, body: "apiVersion: v1\nkind: Secret\nmetadata: {name: exists}\n"}, 400, metav1.StatusReasonBadRequest, nil, "kind in the apply patch (Secret)"},
		{"wrong version", req{method: "PATCH", path: path, ct: applyYAML, body: "apiVersion: apps/v1\nkind: ConfigMap\nmetadata: {name: exists}\n"}, 400, metav1.StatusReasonBadRequest, nil, "API version in the apply patch (apps/v1)"},
		{"other name", req{method: "PATCH", path: path, ct: applyYAML, body: cmApply("other", nil)}, 400, metav1.StatusReasonBadRequest, nil, "does not match the name"},
		{"other namespace", req{method: "PATCH", path: path, ct: applyYAML, body: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: exists, namespace: kube-system}\n"}, 400, metav1.StatusReasonBadRequest, nil, "namespace"},
		{"metadata not an object", req{method: "PATCH", path: path, ct: applyYAML, body: "apiVersion: v1\nkind: ConfigMap\nmetadata: exists\n"}, 400, metav1.StatusReasonBadRequest, nil, "metadata"},
		{"unknown field", req{method: "PATCH", path: path, ct: applyYAML, body: good + "datta: {a: b}\n"}, 400, metav1.StatusReasonBadRequest, nil, ".datta: field not declared in schema"},
		{"unknown field, Ignore", req{method: "PATCH", path: path + "&fieldValidation=Ignore", ct: applyYAML, body: good + "datta: {a: b}\n"}, 400, metav1.StatusReasonBadRequest, nil, ".datta"},
		{"wrong type", req{method: "PATCH", path: path, ct: applyYAML, body: cmApply("exists", nil) + "data: {a: 1}\n"}, 400, metav1.StatusReasonBadRequest, nil, ".data.a: expected string"},
		{"duplicate key strict", req{method: "PATCH", path: path + "&fieldValidation=Strict", ct: applyYAML, body: good + "  a: d\n"}, 400, metav1.StatusReasonBadRequest, nil, "strict decoding"},
		{"managedFields in the patch", req{method: "PATCH", path: path, ct: applyYAML, body: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: exists\n  managedFields: []\n"}, 400, metav1.StatusReasonBadRequest, nil, "managedFields must be nil"},
		{"duplicate list key", req{method: "PATCH", path: deployments + "/web?fieldManager=a", ct: applyYAML, body: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: a}, {name: web, image: b}]}\n"}, 400, metav1.StatusReasonBadRequest, nil, "duplicate entries"},
		{"invalid object", req{method: "PATCH", path: path, ct: applyYAML, body: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: exists\n  labels: {a: not valid!}\n"}, 422, metav1.StatusReasonInvalid, []string{"metadata.labels"}, ""},
		{"invalid new object", req{method: "PATCH", path: configmaps + "/Bad_Name?fieldManager=a", ct: applyYAML, body: cmApply("Bad_Name", nil)}, 422, metav1.StatusReasonInvalid, []string{"metadata.name"}, ""},
		{"stale resourceVersion", req{method: "PATCH", path: path, ct: applyYAML, body: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: exists, resourceVersion: \"1\"}\n"}, 409, metav1.StatusReasonConflict, nil, ""},
		{"resourceVersion on create", req{method: "PATCH", path: configmaps + "/new?fieldManager=a", ct: applyYAML, body: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: new, resourceVersion: \"5\"}\n"}, 409, metav1.StatusReasonConflict, nil, ""},
		{"uid on create", req{method: "PATCH", path: configmaps + "/new?fieldManager=a", ct: applyYAML, body: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: new, uid: abc}\n"}, 409, metav1.StatusReasonConflict, nil, "uid mismatch"},
		{"other uid", req{method: "PATCH", path: path, ct: applyYAML, body: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: exists, uid: abc}\n"}, 409, metav1.StatusReasonConflict, nil, "UID"},
		{"missing namespace", req{method: "PATCH", path: "/api/v1/namespaces/nope/configmaps/x?fieldManager=a", ct: applyYAML, body: cmApply("x", nil)}, 404, metav1.StatusReasonNotFound, nil, ""},
		{"conflict", req{method: "PATCH", path: configmaps + "/exists?fieldManager=bob", ct: applyYAML, body: good}, 409, metav1.StatusReasonConflict, []string{".data.a"}, ""},
		{"CBOR", req{method: "PATCH", path: path, ct: "application/apply-patch+cbor", body: "\xa0"}, 415, metav1.StatusReasonUnsupportedMediaType, nil, "yaml"},
		{"scale", req{method: "PATCH", path: deployments + "/web/scale?fieldManager=a", ct: applyYAML, body: "apiVersion: autoscaling/v1\nkind: Scale\nmetadata: {name: web}\nspec: {replicas: 3}\n"}, 415, metav1.StatusReasonUnsupportedMediaType, nil, "scale"},
		{"force on a merge patch", req{method: "PATCH", path: configmaps + "/exists?force=true", ct: "application/merge-patch+json", body: `{"data":{"a":"z"}}`}, 422, metav1.StatusReasonInvalid, []string{"force"}, ""},
		{"fieldManager too long on create", req{method: "POST", path: configmaps + "?fieldManager=" + strings.Repeat("m", 129), body: cmBody("x", nil)}, 422, metav1.StatusReasonInvalid, []string{"fieldManager"}, ""},
		{"unprintable fieldManager on update", req{method: "PUT", path: configmaps + "/exists?fieldManager=%01", body: cmBody("exists", nil)}, 422, metav1.StatusReasonInvalid, []string{"fieldManager"}, ""},
	}
	e.apply(deployments+"/web", "ci", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n", 201, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { e.refused(t, tt.r, tt.code, tt.reason, tt.wantFields, tt.wantMsg) })
	}
	// Warn (the default) turns a duplicate key into a warning.
	w := e.apply(configmaps+"/exists", "alice", good+"  a: d\n", 200, nil)
	if got := w.Header().Values("Warning"); len(got) != 1 || !strings.Contains(got[0], "already set") {
		t.Fatalf("warnings = %q", got)
	}
}

// TestApplyConcurrent has managers apply their own keys of one object at
// once (creating it, then retrying on the optimistic conflicts) while
// readers read it: every key lands, each with its owner.
func TestApplyConcurrent(t *testing.T) {
	e := newEnv(t)
	const managers = 8
	var wg sync.WaitGroup
	errs := make(chan string, 2*managers)
	for i := 0; i < managers; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			m := fmt.Sprintf("m%d", i)
			for round := 0; round < 3; round++ {
				w := e.do(req{method: "PATCH", path: configmaps + "/shared?fieldManager=" + m, ct: applyYAML,
					body: cmApply("shared", map[string]string{m: fmt.Sprint(round)})})
				if w.Code != 200 && w.Code != 201 {
					errs <- fmt.Sprintf("%s round %d: %d %s", m, round, w.Code, w.Body.String())
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				e.do(req{method: "GET", path: configmaps + "/shared"})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var cm corev1.ConfigMap
	e.ok(req{method: "GET", path: configmaps + "/shared"}, 200, &cm)
	want := map[string][]string{}
	for i := 0; i < managers; i++ {
		m := fmt.Sprintf("m%d", i)
		if cm.Data[m] != "2" {
			t.Errorf("data[%s] = %q", m, cm.Data[m])
		}
		want[m+" Apply"] = []string{".data." + m}
	}
	wantOwners(t, "after the concurrent applies", cm.ManagedFields, want)
}

// TestApplyRewrittenFieldWritesNothing: re-applying a Secret with stringData
// (which the server moves into data) changes nothing but the apply's
// timestamp, and writes nothing, as with Kubernetes.
func TestApplyRewrittenFieldWritesNothing(t *testing.T) {
	e := newEnv(t)
	path := "/api/v1/namespaces/default/secrets/s"
	manifest := "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: hunter2}\n"
	e.apply(path, "alice", manifest, 201, nil)
	// Age the entry, so that a new apply's timestamp differs.
	o, _ := e.store.Get("secrets", "default", "s")
	old := o.DeepCopyObject().(*corev1.Secret)
	old.ManagedFields[0].Time = &metav1.Time{Time: old.ManagedFields[0].Time.Add(-time.Hour)}
	old.ResourceVersion = ""
	if _, err := e.prop.Propose(context.Background(), state.Update(old, rvOf(o))); err != nil {
		t.Fatal(err)
	}
	rev := e.store.Revision()
	var s corev1.Secret
	e.apply(path, "alice", manifest, 200, &s)
	if e.store.Revision() != rev || string(s.Data["password"]) != "hunter2" || s.StringData != nil {
		t.Fatalf("re-apply: revision %d → %d, secret %+v", rev, e.store.Revision(), s)
	}
	// A real change still moves the entry's timestamp.
	e.apply(path, "alice", strings.Replace(manifest, "hunter2", "hunter3", 1), 200, &s)
	if !s.ManagedFields[0].Time.After(old.ManagedFields[0].Time.Time) || string(s.Data["password"]) != "hunter3" {
		t.Fatalf("after a change: %+v", s)
	}
}
