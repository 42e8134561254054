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
