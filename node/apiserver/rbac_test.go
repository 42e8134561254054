package apiserver

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/rbac"
	"github.com/shoal-dev/shoal/node/state"
)

// withBootstrapPolicy stores the built-in roles and bindings, as the
// leader's builtin controller does.
func withBootstrapPolicy(t *testing.T, e *testEnv) {
	t.Helper()
	roles, bindings := rbac.Bootstrap()
	var ops []state.Op
	for _, r := range roles {
		r.UID = types.UID("uid-role-" + r.Name)
		ops = append(ops, state.Create(r))
	}
	for _, b := range bindings {
		b.UID = types.UID("uid-binding-" + b.Name)
		ops = append(ops, state.Create(b))
	}
	if _, err := e.prop.Propose(context.Background(), ops...); err != nil {
		t.Fatal(err)
	}
}

// TestRBAC walks a developer through what the built-in policy and a
// RoleBinding allow: discovery and self-review for everyone, nothing else
// until bound, then the edit role in one namespace only.
func TestRBAC(t *testing.T) {
	e := newEnv(t)
	withBootstrapPolicy(t, e)
	bob := tlsFor(certFor("bob", "developers"))
	e.ok(req{method: "POST", path: "/api/v1/namespaces", body: `{"metadata":{"name":"dev"}}`}, 201, nil)

	// Discovery and the version: every authenticated user.
	e.ok(req{method: "GET", path: "/api", tls: bob}, 200, nil)
	e.ok(req{method: "GET", path: "/apis/apps/v1", tls: bob}, 200, nil)
	e.ok(req{method: "GET", path: "/version", tls: bob}, 200, nil)

	// Nothing else yet, refused in Kubernetes' words.
	st := status(t, e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/configmaps", tls: bob}, 403, nil))
	if st.Reason != metav1.StatusReasonForbidden ||
		st.Message != `configmaps is forbidden: User "bob" cannot list resource "configmaps" in API group "" in the namespace "dev"` {
		t.Fatalf("forbidden: %+v", st)
	}
	st = status(t, e.ok(req{method: "GET", path: "/api/v1/nodes/n1", tls: bob}, 403, nil))
	if !strings.Contains(st.Message, `nodes "n1" is forbidden: User "bob" cannot get resource "nodes" in API group "" at the cluster scope`) {
		t.Fatalf("forbidden node: %+v", st)
	}

	// An admin binds the edit ClusterRole to bob's group in dev.
	e.ok(req{method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/namespaces/dev/rolebindings", body: `{
		"metadata":{"name":"developers-edit"},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"edit"},
		"subjects":[{"kind":"Group","apiGroup":"rbac.authorization.k8s.io","name":"developers"}]}`}, 201, nil)
	e.ok(req{method: "POST", path: "/api/v1/namespaces/dev/configmaps", tls: bob, body: `{"metadata":{"name":"x"}}`}, 201, nil)
	e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/configmaps", tls: bob}, 200, nil)
	e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/pods", tls: bob}, 200, nil)
	e.ok(req{method: "POST", path: "/apis/apps/v1/namespaces/dev/deployments", tls: bob, body: deployment("web", 1)}, 201, nil)
	e.ok(req{method: "GET", path: "/apis/apps/v1/namespaces/dev/deployments/web/scale", tls: bob}, 200, nil)
	// Not in another namespace, not across namespaces, not the bindings.
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", tls: bob, body: `{"metadata":{"name":"x"}}`}, 403, nil)
	e.ok(req{method: "GET", path: "/api/v1/configmaps", tls: bob}, 403, nil)
	e.ok(req{method: "GET", path: "/apis/rbac.authorization.k8s.io/v1/namespaces/dev/rolebindings", tls: bob}, 403, nil)
	e.ok(req{method: "DELETE", path: "/api/v1/namespaces/dev", tls: bob}, 403, nil)

	// A Role of the namespace, bound to one user by name.
	e.ok(req{method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", body: `{
		"metadata":{"name":"cm-reader"},
		"rules":[{"apiGroups":[""],"resources":["configmaps"],"resourceNames":["settings"],"verbs":["get"]}]}`}, 201, nil)
	e.ok(req{method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", body: `{
		"metadata":{"name":"bob-reads"},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"cm-reader"},
		"subjects":[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"bob"}]}`}, 201, nil)
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", body: `{"metadata":{"name":"settings"}}`}, 201, nil)
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps/settings", tls: bob}, 200, nil)
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps/other", tls: bob}, 403, nil)
	carol := tlsFor(certFor("carol", "developers"))
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps/settings", tls: carol}, 403, nil)

	// Deleting the binding takes the access away at once.
	e.ok(req{method: "DELETE", path: "/apis/rbac.authorization.k8s.io/v1/namespaces/dev/rolebindings/developers-edit"}, 200, nil)
	e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/configmaps", tls: bob}, 403, nil)
}

func TestSelfReviews(t *testing.T) {
	e := newEnv(t)
	withBootstrapPolicy(t, e)
	bob := tlsFor(certFor("bob", "developers"))
	e.ok(req{method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body: `{
		"metadata":{"name":"developers-view"},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},
		"subjects":[{"kind":"Group","apiGroup":"rbac.authorization.k8s.io","name":"developers"}]}`}, 201, nil)
	can := func(u *tls.ConnectionState, verb, resource, ns string) bool {
		t.Helper()
		var r authorizationv1.SelfSubjectAccessReview
		e.ok(req{method: "POST", path: "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", tls: u, body: &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: verb, Resource: resource}}}}, 201, &r)
		return r.Status.Allowed
	}
	if !can(bob, "list", "pods", "default") || can(bob, "create", "pods", "default") || can(bob, "get", "secrets", "default") {
		t.Fatal("bob's view access reviewed wrong")
	}
	if !can(adminTLS, "delete", "nodes", "") {
		t.Fatal("admin may not delete nodes?")
	}
	var who authenticationv1.SelfSubjectReview
	e.ok(req{method: "POST", path: "/apis/authentication.k8s.io/v1/selfsubjectreviews", tls: bob, body: `{}`}, 201, &who)
	if who.Status.UserInfo.Username != "bob" || strings.Join(who.Status.UserInfo.Groups, ",") != "developers,system:authenticated" {
		t.Fatalf("whoami: %+v", who.Status.UserInfo)
	}
	var rules authorizationv1.SelfSubjectRulesReview
	e.ok(req{method: "POST", path: "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", tls: bob,
		body: `{"spec":{"namespace":"default"}}`}, 201, &rules)
	found := false
	for _, r := range rules.Status.ResourceRules {
		if contains(r.Resources, "pods") && contains(r.Verbs, "list") {
			found = true
		}
	}
	if !found {
		t.Fatalf("rules review lacks the view rules: %+v", rules.Status)
	}
	// Without the bootstrap binding to system:authenticated, even the
	// reviews are refused.
	e2 := newEnv(t)
	e2.ok(req{method: "POST", path: "/apis/authentication.k8s.io/v1/selfsubjectreviews", tls: bob, body: `{}`}, 403, nil)
	e.ok(req{method: "GET", path: "/apis/authentication.k8s.io/v1/selfsubjectreviews", tls: bob}, http.StatusMethodNotAllowed, nil)
}

func TestRBACValidation(t *testing.T) {
	e := newEnv(t)
	base := "/apis/rbac.authorization.k8s.io/v1/"
	e.refused(t, req{method: "POST", path: base + "namespaces/default/rolebindings", body: `{
		"metadata":{"name":"b"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"x"},
		"subjects":[{"kind":"Robot","name":"r"},{"kind":"ServiceAccount","apiGroup":"rbac.authorization.k8s.io","name":"sa"}]}`},
		422, metav1.StatusReasonInvalid, []string{"roleRef.kind", "subjects[0].kind", "subjects[1].apiGroup"}, "")
	e.refused(t, req{method: "POST", path: base + "clusterrolebindings", body: `{
		"metadata":{"name":"b"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"x"},
		"subjects":[{"kind":"ServiceAccount","name":"sa"}]}`},
		422, metav1.StatusReasonInvalid, []string{"roleRef.kind", "subjects[0].namespace"}, "")
	e.refused(t, req{method: "POST", path: base + "namespaces/default/roles", body: `{
		"metadata":{"name":"r"},"rules":[{"verbs":[]},{"verbs":["get"],"nonResourceURLs":["/x"]}]}`},
		422, metav1.StatusReasonInvalid, []string{"rules[0].verbs", "rules[0].apiGroups", "rules[0].resources", "rules[1].nonResourceURLs"}, "")
	e.refused(t, req{method: "POST", path: base + "clusterroles", body: `{"metadata":{"name":"agg"},"aggregationRule":{}}`},
		422, metav1.StatusReasonInvalid, []string{"aggregationRule.clusterRoleSelectors"}, "at least one clusterRoleSelector")
	e.refused(t, req{method: "POST", path: base + "clusterroles", body: `{"metadata":{"name":"agg"},"aggregationRule":{"clusterRoleSelectors":[
		{"matchLabels":{"a":"true"}},{"matchExpressions":[{"key":"b","operator":"Sometimes"}]}]}}`},
		422, metav1.StatusReasonInvalid, []string{"aggregationRule.clusterRoleSelectors[1].matchExpressions[0].operator"}, "")
	// Names are path segments: the built-in style works, a slash does not.
	e.ok(req{method: "POST", path: base + "clusterroles", body: `{"metadata":{"name":"system:custom"},"rules":[{"verbs":["get"],"nonResourceURLs":["/metrics"]}]}`}, 201, nil)
	e.refused(t, req{method: "POST", path: base + "clusterroles", body: `{"metadata":{"name":"a/b"}}`}, 422, metav1.StatusReasonInvalid, []string{"metadata.name"}, "")
	// roleRef is immutable.
	e.ok(req{method: "POST", path: base + "clusterrolebindings", body: `{"metadata":{"name":"b"},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},"subjects":[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"u"}]}`}, 201, nil)
	e.refused(t, req{method: "PATCH", path: base + "clusterrolebindings/b", ct: "application/merge-patch+json",
		body: `{"roleRef":{"name":"edit"}}`}, 422, metav1.StatusReasonInvalid, []string{"roleRef"}, "cannot change roleRef")
	var crb rbacv1.ClusterRoleBinding
	e.ok(req{method: "GET", path: base + "clusterrolebindings/b"}, 200, &crb)
	if crb.RoleRef.Name != "view" {
		t.Fatalf("stored roleRef changed: %+v", crb.RoleRef)
	}
}

// TestImpersonation checks kubectl's --as, --as-group, --as-uid and
// client-go's extra headers: an admin may act as anyone, a user only as
// the identities RBAC lets them impersonate, and the request then runs with
// exactly the impersonated identity.
func TestImpersonation(t *testing.T) {
	e := newEnv(t)
	withBootstrapPolicy(t, e)
	e.ok(req{method: "POST", path: "/api/v1/namespaces", body: `{"metadata":{"name":"dev"}}`}, 201, nil)
	e.ok(req{method: "POST", path: "/api/v1/namespaces/dev/serviceaccounts", body: `{"metadata":{"name":"ci"}}`}, 201, nil)
	e.ok(req{method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/namespaces/dev/rolebindings", body: `{
		"metadata":{"name":"bob-view"},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},
		"subjects":[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"bob"}]}`}, 201, nil)
	as := func(user string, groups ...string) http.Header {
		h := http.Header{}
		if user != "" {
			h.Set("Impersonate-User", user)
		}
		for _, g := range groups {
			h.Add("Impersonate-Group", g)
		}
		return h
	}
	whoami := func(tls *tls.ConnectionState, h http.Header) authenticationv1.UserInfo {
		t.Helper()
		var who authenticationv1.SelfSubjectReview
		e.ok(req{method: "POST", path: "/apis/authentication.k8s.io/v1/selfsubjectreviews", tls: tls, header: h, body: `{}`}, 201, &who)
		return who.Status.UserInfo
	}

	// The admin (system:masters) acts as bob: bob's access, not the admin's.
	e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/pods", header: as("bob")}, 200, nil)
	st := status(t, e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/secrets", header: as("bob")}, 403, nil))
	if !strings.Contains(st.Message, `User "bob" cannot list resource "secrets"`) {
		t.Fatalf("as bob: %s", st.Message)
	}
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/pods", header: as("bob")}, 403, nil)
	if u := whoami(nil, as("bob")); u.Username != "bob" || strings.Join(u.Groups, ",") != "system:authenticated" {
		t.Fatalf("as bob: %+v", u)
	}
	// With a group: the group's bindings apply (system:masters is everything).
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/secrets", header: as("bob", "system:masters")}, 200, nil)
	h := as("bob", "developers")
	h.Set("Impersonate-Uid", "1234")
	h.Set("Impersonate-Extra-Scopes", "view")
	h.Add("Impersonate-Extra-Scopes", "dev")
	h.Set("Impersonate-Extra-Example.com%2fteam", "storage")
	u := whoami(nil, h)
	if u.Username != "bob" || u.UID != "1234" || strings.Join(u.Groups, ",") != "developers,system:authenticated" ||
		strings.Join(u.Extra["scopes"], ",") != "view,dev" || strings.Join(u.Extra["example.com/team"], ",") != "storage" {
		t.Fatalf("as bob with groups, uid and extra: %+v", u)
	}
	// A service account: its namespace's groups, and its bindings.
	u = whoami(nil, as("system:serviceaccount:dev:ci"))
	if u.Username != "system:serviceaccount:dev:ci" ||
		strings.Join(u.Groups, ",") != "system:serviceaccounts,system:serviceaccounts:dev,system:authenticated" {
		t.Fatalf("as a service account: %+v", u)
	}

	// bob may impersonate no one.
	bob := tlsFor(certFor("bob"))
	st = status(t, e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/pods", tls: bob, header: as("alice")}, 403, nil))
	if st.Message != `users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope` {
		t.Fatalf("bob as alice: %s", st.Message)
	}
	// Allowed to impersonate alice, and the service accounts of dev, but
	// not the group system:masters, a uid or extras.
	e.ok(req{method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/clusterroles", body: `{
		"metadata":{"name":"impersonate-alice"},
		"rules":[{"apiGroups":[""],"resources":["users"],"verbs":["impersonate"],"resourceNames":["alice"]}]}`}, 201, nil)
	e.ok(req{method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body: `{
		"metadata":{"name":"bob-impersonates-alice"},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"impersonate-alice"},
		"subjects":[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"bob"}]}`}, 201, nil)
	e.ok(req{method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/namespaces/dev/rolebindings", body: `{
		"metadata":{"name":"bob-edit"},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"edit"},
		"subjects":[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"bob"}]}`}, 201, nil)
	if u := whoami(bob, as("alice")); u.Username != "alice" {
		t.Fatalf("bob as alice: %+v", u)
	}
	// alice has no bindings: as alice, bob reads nothing in dev.
	e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/pods", tls: bob, header: as("alice")}, 403, nil)
	e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/pods", tls: bob, header: as("carol")}, 403, nil)
	st = status(t, e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/pods", tls: bob, header: as("alice", "system:masters")}, 403, nil))
	if st.Message != `groups "system:masters" is forbidden: User "bob" cannot impersonate resource "groups" in API group "" at the cluster scope` {
		t.Fatalf("bob as alice in system:masters: %s", st.Message)
	}
	h = as("alice")
	h.Set("Impersonate-Uid", "1")
	e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/pods", tls: bob, header: h}, 403, nil)
	// edit lets bob act as the service accounts of dev (as Kubernetes' edit
	// role does), and only there.
	if u := whoami(bob, as("system:serviceaccount:dev:ci")); u.Username != "system:serviceaccount:dev:ci" {
		t.Fatalf("bob as dev's ci account: %+v", u)
	}
	st = status(t, e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/pods", tls: bob, header: as("system:serviceaccount:default:default")}, 403, nil))
	if st.Message != `serviceaccounts "default" is forbidden: User "bob" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "default"` {
		t.Fatalf("bob as default's account: %s", st.Message)
	}

	// Malformed impersonation.
	e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/pods", header: as("", "developers")}, 400, nil)
	h = as("bob")
	h.Add("Impersonate-User", "alice")
	e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/pods", header: h}, 400, nil)
	e.ok(req{method: "GET", path: "/api/v1/namespaces/dev/pods", header: http.Header{"Impersonate-User": {""}}}, 400, nil)
}
