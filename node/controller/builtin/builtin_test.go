package builtin

import (
	"context"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/controllertest"
	"github.com/shoal-dev/shoal/node/state"
)

const (
	roles    = "clusterroles.rbac.authorization.k8s.io"
	bindings = "clusterrolebindings.rbac.authorization.k8s.io"
)

func objects() []Object {
	return []Object{
		{Resource: roles, Object: &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "r"}}},
		{Resource: bindings, Object: &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "b"},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "r"}}},
	}
}

// TestBuiltinsOfTwoResources: both kinds are created in one proposal, an
// existing one is left alone, and a deleted one of either kind comes back.
func TestBuiltinsOfTwoResources(t *testing.T) {
	c, store, local := controllertest.New()
	bc := New(c, "test built-ins", objects)
	mine := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "r", UID: "mine"},
		Rules: []rbacv1.PolicyRule{{Verbs: []string{"get"}, NonResourceURLs: []string{"/x"}}}}
	if _, err := local.Propose(context.Background(), state.Create(mine)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); bc.Run(ctx) }()
	defer func() { cancel(); <-done }()

	get := func(resource, name string) state.Object {
		o, _ := store.Get(resource, "", name)
		return o
	}
	controllertest.WaitFor(t, "the binding", func() bool { return get(bindings, "b") != nil })
	if r := get(roles, "r").(*rbacv1.ClusterRole); r.UID != "mine" || len(r.Rules) != 1 {
		t.Fatalf("existing role changed: %+v", r)
	}
	old := get(bindings, "b")
	if ts := old.GetCreationTimestamp(); old.GetUID() == "" || ts.IsZero() {
		t.Fatalf("created without uid or timestamp: %+v", old)
	}
	kind, _ := state.KindFor(bindings)
	if _, err := local.Propose(context.Background(), state.Delete(kind, "", "b", controller.RV(old), string(old.GetUID()))); err != nil {
		t.Fatal(err)
	}
	controllertest.WaitFor(t, "the binding again", func() bool {
		o := get(bindings, "b")
		return o != nil && o.GetUID() != old.GetUID()
	})
	rk, _ := state.KindFor(roles)
	r := get(roles, "r")
	if _, err := local.Propose(context.Background(), state.Delete(rk, "", "r", controller.RV(r), string(r.GetUID()))); err != nil {
		t.Fatal(err)
	}
	controllertest.WaitFor(t, "the role again", func() bool {
		o := get(roles, "r")
		return o != nil && o.GetUID() != "mine"
	})
}

// TestReconcile: a built-in with a Reconcile function that finds the stored
// object out of date is updated (in the same proposal as the creates); one
// that is up to date is not written.
func TestReconcile(t *testing.T) {
	c, store, local := controllertest.New()
	rule := rbacv1.PolicyRule{Verbs: []string{"get"}, NonResourceURLs: []string{"/new"}}
	objs := func() []Object {
		o := objects()
		o[0].Reconcile = func(stored state.Object) (state.Object, bool) {
			r := stored.(*rbacv1.ClusterRole)
			for _, have := range r.Rules {
				if have.NonResourceURLs[0] == "/new" {
					return nil, false
				}
			}
			r.Rules = append(r.Rules, rule)
			return r, true
		}
		return o
	}
	bc := New(c, "test built-ins", objs)
	defer bc.ShutDown()
	old := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "r", UID: "old"},
		Rules: []rbacv1.PolicyRule{{Verbs: []string{"get"}, NonResourceURLs: []string{"/x"}}}}
	if _, err := local.Propose(context.Background(), state.Create(old)); err != nil {
		t.Fatal(err)
	}
	if err := bc.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	o, _ := store.Get(roles, "", "r")
	r := o.(*rbacv1.ClusterRole)
	if r.UID != "old" || len(r.Rules) != 2 || r.Rules[1].NonResourceURLs[0] != "/new" {
		t.Fatalf("role not reconciled in place: %+v", r)
	}
	if _, ok := store.Get(bindings, "", "b"); !ok {
		t.Fatal("the missing binding was not created with the update")
	}
	rv := controller.RV(o)
	if err := bc.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if o, _ := store.Get(roles, "", "r"); controller.RV(o) != rv {
		t.Fatal("an up-to-date role was written again")
	}
}
