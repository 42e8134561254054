package rbac

import (
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

func TestRuleAllows(t *testing.T) {
	res := func(verb, group, resource, sub, name string) Attributes {
		return Attributes{ResourceRequest: true, Verb: verb, APIGroup: group, Resource: resource, Subresource: sub, Name: name, Namespace: "ns"}
	}
	path := func(verb, p string) Attributes { return Attributes{Verb: verb, Path: p} }
	r := func(verbs, groups, resources, names []string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{Verbs: verbs, APIGroups: groups, Resources: resources, ResourceNames: names}
	}
	l := func(s ...string) []string { return s }
	for _, c := range []struct {
		name string
		a    Attributes
		rule rbacv1.PolicyRule
		want bool
	}{
		{"exact", res("get", "", "pods", "", "p"), r(l("get"), l(""), l("pods"), nil), true},
		{"other verb", res("delete", "", "pods", "", "p"), r(l("get", "list"), l(""), l("pods"), nil), false},
		{"verb star", res("delete", "", "pods", "", "p"), r(l("*"), l(""), l("pods"), nil), true},
		{"other group", res("get", "apps", "pods", "", ""), r(l("get"), l(""), l("pods"), nil), false},
		{"group star", res("get", "apps", "deployments", "", ""), r(l("get"), l("*"), l("deployments"), nil), true},
		{"resource star covers subresources", res("get", "", "pods", "log", ""), r(l("get"), l(""), l("*"), nil), true},
		{"subresource needs its own entry", res("get", "", "pods", "log", ""), r(l("get"), l(""), l("pods"), nil), false},
		{"subresource entry", res("get", "", "pods", "log", ""), r(l("get"), l(""), l("pods/log"), nil), true},
		{"subresource entry is not the object", res("get", "", "pods", "", ""), r(l("get"), l(""), l("pods/log"), nil), false},
		{"star slash subresource", res("update", "apps", "deployments", "scale", ""), r(l("update"), l("apps"), l("*/scale"), nil), true},
		{"resourceNames match", res("get", "", "configmaps", "", "a"), r(l("get"), l(""), l("configmaps"), l("a", "b")), true},
		{"resourceNames miss", res("get", "", "configmaps", "", "c"), r(l("get"), l(""), l("configmaps"), l("a", "b")), false},
		{"resourceNames never match a list", res("list", "", "configmaps", "", ""), r(l("list"), l(""), l("configmaps"), l("a")), false},
		{"non-resource exact", path("get", "/healthz"), rbacv1.PolicyRule{Verbs: l("get"), NonResourceURLs: l("/healthz")}, true},
		{"non-resource prefix", path("get", "/apis/apps/v1"), rbacv1.PolicyRule{Verbs: l("get"), NonResourceURLs: l("/apis/*")}, true},
		{"non-resource prefix is not the bare path", path("get", "/apis"), rbacv1.PolicyRule{Verbs: l("get"), NonResourceURLs: l("/apis/*")}, false},
		{"non-resource verb", path("post", "/healthz"), rbacv1.PolicyRule{Verbs: l("get"), NonResourceURLs: l("/healthz")}, false},
		{"resource rule never grants a path", path("get", "/healthz"), r(l("*"), l("*"), l("*"), nil), false},
		{"path rule never grants a resource", res("get", "", "pods", "", ""), rbacv1.PolicyRule{Verbs: l("*"), NonResourceURLs: l("*")}, false},
	} {
		if got := RuleAllows(c.a, c.rule); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestBootstrapRoles(t *testing.T) {
	roles, bindings := Bootstrap()
	byName := map[string]*rbacv1.ClusterRole{}
	for _, r := range roles {
		byName[r.Name] = r
	}
	allows := func(role string, a Attributes) bool {
		for _, r := range byName[role].Rules {
			if RuleAllows(a, r) {
				return true
			}
		}
		return false
	}
	res := func(verb, group, resource, sub string) Attributes {
		return Attributes{ResourceRequest: true, Verb: verb, APIGroup: group, Resource: resource, Subresource: sub, Namespace: "ns"}
	}
	for _, c := range []struct {
		role string
		a    Attributes
		want bool
	}{
		{"view", res("list", "", "pods", ""), true},
		{"view", res("get", "", "pods", "log"), true},
		{"view", res("get", "", "secrets", ""), false},
		{"view", res("create", "", "pods", "exec"), false},
		{"view", res("update", "apps", "deployments", ""), false},
		{"edit", res("update", "apps", "deployments", ""), true},
		{"edit", res("patch", "apps", "deployments", "scale"), true},
		{"edit", res("create", "", "pods", "exec"), true},
		{"edit", res("get", "", "secrets", ""), true},
		{"edit", res("create", "rbac.authorization.k8s.io", "rolebindings", ""), false},
		{"edit", res("delete", "", "namespaces", ""), false},
		{"admin", res("create", "rbac.authorization.k8s.io", "rolebindings", ""), true},
		{"admin", res("update", "", "nodes", ""), false},
		{"cluster-admin", res("delete", "", "nodes", ""), true},
		{"cluster-admin", Attributes{Verb: "get", Path: "/metrics"}, true},
		{"system:discovery", Attributes{Verb: "get", Path: "/apis/batch/v1"}, true},
		{"system:discovery", Attributes{Verb: "get", Path: "/metrics"}, false},
	} {
		if got := allows(c.role, c.a); got != c.want {
			t.Errorf("%s allows %+v: %v, want %v", c.role, c.a, got, c.want)
		}
	}
	if len(bindings) != 3 || bindings[0].Subjects[0].Name != GroupMasters {
		t.Fatalf("bindings %+v", bindings)
	}
}

func TestServiceAccountSubjects(t *testing.T) {
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "ci"}}
	if !appliesTo(subjects, Attributes{User: "system:serviceaccount:dev:ci"}, "dev") {
		t.Fatal("a RoleBinding's service account subject defaults to the binding's namespace")
	}
	if appliesTo(subjects, Attributes{User: "system:serviceaccount:other:ci"}, "dev") {
		t.Fatal("service account of another namespace matched")
	}
	if appliesTo(subjects, Attributes{User: "system:serviceaccount::ci"}, "") {
		t.Fatal("a cluster binding's service account without namespace matched")
	}
}

// TestReconcileBootstrap upgrades a role and binding stored by an older
// policy: what is missing is added, what the administrator added stays,
// and autoupdate "false" leaves them alone.
func TestReconcileBootstrap(t *testing.T) {
	roles, bindings := Bootstrap()
	byName := map[string]*rbacv1.ClusterRole{}
	for _, r := range roles {
		byName[r.Name] = r
	}
	// edit as an older version stored it: plain rules, no aggregation.
	mine := rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{"example.com"}, Resources: []string{"widgets"}}
	old := &rbacv1.ClusterRole{}
	old.Name = "edit"
	old.Annotations = map[string]string{AnnotationAutoupdate: "true", "note": "mine"}
	old.Rules = []rbacv1.PolicyRule{mine}
	got, changed := ReconcileClusterRole(old, byName["edit"])
	if !changed || got.AggregationRule == nil || len(got.AggregationRule.ClusterRoleSelectors) != 1 ||
		got.AggregationRule.ClusterRoleSelectors[0].MatchLabels[LabelAggregateToEdit] != "true" {
		t.Fatalf("edit not given its aggregation rule: %+v", got)
	}
	if got.Labels[LabelAggregateToAdmin] != "true" || got.Annotations["note"] != "mine" || len(got.Rules) != 1 {
		t.Fatalf("edit's labels, annotations or rules: %+v", got.ObjectMeta)
	}
	if _, changed := ReconcileClusterRole(got, byName["edit"]); changed {
		t.Fatal("a reconciled role reconciles again")
	}
	// A plain role gains missing rules and keeps its own.
	disc := byName["system:discovery"].DeepCopy()
	disc.Rules = []rbacv1.PolicyRule{mine}
	got, changed = ReconcileClusterRole(disc, byName["system:discovery"])
	if !changed || len(got.Rules) != 1+len(byName["system:discovery"].Rules) || !equality.Semantic.DeepEqual(got.Rules[0], mine) {
		t.Fatalf("system:discovery rules: %+v", got.Rules)
	}
	disc.Annotations[AnnotationAutoupdate] = "false"
	if _, changed := ReconcileClusterRole(disc, byName["system:discovery"]); changed {
		t.Fatal("autoupdate false was reconciled")
	}
	// A binding gains its subject back.
	b := bindings[0].DeepCopy()
	b.Subjects = []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "root"}}
	gotB, changed := ReconcileClusterRoleBinding(b, bindings[0])
	if !changed || len(gotB.Subjects) != 2 || gotB.Subjects[1] != bindings[0].Subjects[0] {
		t.Fatalf("binding subjects: %+v", gotB.Subjects)
	}
}
