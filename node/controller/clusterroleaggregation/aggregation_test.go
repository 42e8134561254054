package clusterroleaggregation

import (
	"context"
	"fmt"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/controllertest"
	"github.com/shoal-dev/shoal/node/rbac"
	"github.com/shoal-dev/shoal/node/state"
)

func rule(verb, resource string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{Verbs: []string{verb}, APIGroups: []string{""}, Resources: []string{resource}}
}

func clusterRole(name string, labels map[string]string, rules ...rbacv1.PolicyRule) *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Labels: labels}, Rules: rules}
}

func aggregate(name string, labels map[string]string, selects ...string) *rbacv1.ClusterRole {
	r := clusterRole(name, labels)
	r.AggregationRule = &rbacv1.AggregationRule{}
	for _, s := range selects {
		r.AggregationRule.ClusterRoleSelectors = append(r.AggregationRule.ClusterRoleSelectors,
			metav1.LabelSelector{MatchLabels: map[string]string{s: "true"}})
	}
	return r
}

// rulesOf renders a role's rules as "verb resource" strings, in order.
func rulesOf(store *state.Store, name string) string {
	o, ok := store.Get(rbac.ResourceClusterRoles, "", name)
	if !ok {
		return "<missing>"
	}
	var s []string
	for _, r := range o.(*rbacv1.ClusterRole).Rules {
		s = append(s, r.Verbs[0]+" "+r.Resources[0])
	}
	return fmt.Sprint(s)
}

// TestAggregation follows aggregated roles through the changes that move
// their rules: sources labelled and unlabelled, their rules edited, sources
// deleted, aggregated roles gathering each other, and a hand-edited
// aggregated role put back.
func TestAggregation(t *testing.T) {
	c, store, local := controllertest.New()
	ac := New(c)
	ctx := context.Background()
	if _, err := local.Propose(ctx,
		state.Create(aggregate("monitoring", nil, "team/monitoring", "team/ops")),
		state.Create(aggregate("all-ops", nil, "team/all")),
		state.Create(clusterRole("b-metrics", map[string]string{"team/monitoring": "true"}, rule("get", "pods"), rule("list", "pods"))),
		state.Create(clusterRole("a-logs", map[string]string{"team/monitoring": "true", "team/ops": "true"}, rule("get", "pods/log"), rule("get", "pods"))),
		state.Create(clusterRole("unrelated", map[string]string{"team/other": "true"}, rule("delete", "nodes"))),
	); err != nil {
		t.Fatal(err)
	}
	run, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); ac.Run(run) }()
	defer func() { cancel(); <-done }()

	wait := func(name, want string) {
		t.Helper()
		controllertest.WaitFor(t, name+" to hold "+want, func() bool { return rulesOf(store, name) == want })
	}
	// Selector by selector, sources by name, each rule once.
	wait("monitoring", "[get pods/log get pods list pods]")
	wait("all-ops", "[]")

	modify := func(name string, f func(r *rbacv1.ClusterRole)) {
		t.Helper()
		if _, err := controller.Modify(ctx, c, rbac.ResourceClusterRoles, "", name, func(o state.Object) error {
			f(o.(*rbacv1.ClusterRole))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// A new source, then an edited one.
	if _, err := local.Propose(ctx, state.Create(clusterRole("c-events", map[string]string{"team/ops": "true"}, rule("list", "events")))); err != nil {
		t.Fatal(err)
	}
	wait("monitoring", "[get pods/log get pods list pods list events]")
	modify("b-metrics", func(r *rbacv1.ClusterRole) { r.Rules = append(r.Rules, rule("watch", "pods")) })
	wait("monitoring", "[get pods/log get pods list pods watch pods list events]")
	// Unlabelled, deleted.
	modify("a-logs", func(r *rbacv1.ClusterRole) { delete(r.Labels, "team/ops"); delete(r.Labels, "team/monitoring") })
	wait("monitoring", "[get pods list pods watch pods list events]")
	o, _ := store.Get(rbac.ResourceClusterRoles, "", "c-events")
	kind, _ := state.KindFor(rbac.ResourceClusterRoles)
	if _, err := local.Propose(ctx, state.Delete(kind, "", "c-events", controller.RV(o), string(o.GetUID()))); err != nil {
		t.Fatal(err)
	}
	wait("monitoring", "[get pods list pods watch pods]")
	// An aggregated role can be a source of another.
	modify("monitoring", func(r *rbacv1.ClusterRole) { r.Labels = map[string]string{"team/all": "true"} })
	wait("all-ops", "[get pods list pods watch pods]")
	// Hand-written rules of an aggregated role are replaced.
	modify("all-ops", func(r *rbacv1.ClusterRole) { r.Rules = []rbacv1.PolicyRule{rule("delete", "nodes")} })
	wait("all-ops", "[get pods list pods watch pods]")
	// An empty selector list gathers nothing; roles without an
	// aggregation rule are left alone.
	modify("all-ops", func(r *rbacv1.ClusterRole) { r.AggregationRule.ClusterRoleSelectors = nil })
	wait("all-ops", "[]")
	if err := ac.Sync(ctx, "unrelated"); err != nil {
		t.Fatal(err)
	}
	if got := rulesOf(store, "unrelated"); got != "[delete nodes]" {
		t.Fatalf("a plain role changed: %s", got)
	}
	if err := ac.Sync(ctx, "missing"); err != nil {
		t.Fatalf("sync of a deleted role: %v", err)
	}
}

// TestBootstrapAggregation checks that the built-in admin, edit and view
// come with their aggregated rules already in place (the controller has
// nothing to write) and that a user's role labelled aggregate-to-view
// reaches all three.
func TestBootstrapAggregation(t *testing.T) {
	c, store, local := controllertest.New()
	ac := New(c)
	defer ac.ShutDown()
	ctx := context.Background()
	roles, _ := rbac.Bootstrap()
	var ops []state.Op
	for _, r := range roles {
		r.UID = types.UID("uid-" + r.Name)
		ops = append(ops, state.Create(r))
	}
	if _, err := local.Propose(ctx, ops...); err != nil {
		t.Fatal(err)
	}
	rv := func(name string) uint64 {
		o, _ := store.Get(rbac.ResourceClusterRoles, "", name)
		return controller.RV(o)
	}
	before := map[string]uint64{"admin": rv("admin"), "edit": rv("edit"), "view": rv("view")}
	for name := range before {
		if err := ac.Sync(ctx, name); err != nil {
			t.Fatal(err)
		}
		if rv(name) != before[name] {
			t.Errorf("the bootstrap %s was not aggregated already: the controller rewrote it", name)
		}
	}
	allowed := func(role, verb, group, resource string) bool {
		o, _ := store.Get(rbac.ResourceClusterRoles, "", role)
		a := rbac.Attributes{Verb: verb, APIGroup: group, Resource: resource, ResourceRequest: true}
		for _, r := range o.(*rbacv1.ClusterRole).Rules {
			if rbac.RuleAllows(a, r) {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		role, verb, resource string
		want                 bool
	}{
		{"view", "list", "pods", true}, {"view", "get", "secrets", false}, {"view", "create", "pods", false},
		{"edit", "list", "pods", true}, {"edit", "create", "pods", true}, {"edit", "get", "secrets", true},
		{"edit", "create", "roles", false}, {"edit", "impersonate", "serviceaccounts", true},
		{"admin", "list", "pods", true}, {"admin", "delete", "secrets", true},
	} {
		if got := allowed(c.role, c.verb, "", c.resource); got != c.want {
			t.Errorf("%s %s %s: %v, want %v", c.role, c.verb, c.resource, got, c.want)
		}
	}
	if !allowed("admin", "create", "rbac.authorization.k8s.io", "roles") {
		t.Error("admin may not create roles")
	}

	// A custom resource's reader, labelled for view: view, edit and admin
	// all gain it (edit and admin through the roles they gather).
	crd := clusterRole("widgets-view", map[string]string{rbac.LabelAggregateToView: "true"})
	crd.Rules = []rbacv1.PolicyRule{{Verbs: []string{"get", "list"}, APIGroups: []string{"example.com"}, Resources: []string{"widgets"}}}
	if _, err := local.Propose(ctx, state.Create(crd)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"view", "edit", "admin"} { // in dependency order
		if err := ac.Sync(ctx, name); err != nil {
			t.Fatal(err)
		}
		if !allowed(name, "list", "example.com", "widgets") {
			t.Errorf("%s did not gather the aggregate-to-view role", name)
		}
	}
}
