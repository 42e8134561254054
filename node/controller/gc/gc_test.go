package gc

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

type env struct {
	t     *testing.T
	ctx   context.Context
	store *state.Store
	p     state.Proposer
	clk   *testingclock.FakeClock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	store := state.NewStore(0)
	e := &env{
		t: t, ctx: context.Background(), store: store,
		p:   state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{})),
		clk: testingclock.NewFakeClock(t0),
	}
	e.create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "node-n1"}})
	return e
}

// start runs a collector until the test ends.
func (e *env) start() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	gc := New(controller.Context{Store: e.store, Proposer: e.p, Clock: e.clk})
	done := make(chan struct{})
	go func() {
		gc.Run(ctx)
		close(done)
	}()
	e.t.Cleanup(func() {
		cancel()
		<-done
	})
}

func (e *env) create(o state.Object) {
	e.t.Helper()
	if ts := o.GetCreationTimestamp(); ts.IsZero() {
		o.SetCreationTimestamp(metav1.NewTime(t0))
	}
	if _, err := e.p.Propose(e.ctx, state.Create(o)); err != nil {
		e.t.Fatalf("creating %s: %v", o.GetName(), err)
	}
}

func (e *env) get(resource, ns, name string) state.Object {
	o, _ := e.store.Get(resource, ns, name)
	return o
}

func (e *env) delete(resource, ns, name string) {
	e.t.Helper()
	k, _ := state.KindFor(resource)
	if _, err := e.p.Propose(e.ctx, state.Delete(k, ns, name, 0, "")); err != nil {
		e.t.Fatalf("deleting %s %s: %v", resource, name, err)
	}
}

// markDeleting does what the API's delete does with a propagation policy
// that adds finalizer f.
func (e *env) markDeleting(resource, ns, name, f string) {
	e.t.Helper()
	o := e.get(resource, ns, name)
	next := o.DeepCopyObject().(state.Object)
	now := metav1.NewTime(e.clk.Now())
	next.SetDeletionTimestamp(&now)
	next.SetFinalizers(append(next.GetFinalizers(), f))
	if _, err := e.p.Propose(e.ctx, state.Update(next, rvOf(o))); err != nil {
		e.t.Fatalf("marking %s: %v", name, err)
	}
}

// agentFinish deletes the pods marked for graceful deletion, as their
// node's agent would once the containers stopped.
func (e *env) agentFinish() int {
	e.t.Helper()
	k, _ := state.KindFor("pods")
	pods, _ := e.store.List("pods", "")
	n := 0
	for _, p := range pods {
		if p.GetDeletionTimestamp() != nil && len(p.GetFinalizers()) == 0 {
			if _, err := e.p.Propose(e.ctx, state.Delete(k, p.GetNamespace(), p.GetName(), 0, string(p.GetUID()))); err != nil {
				e.t.Fatal(err)
			}
			n++
		}
	}
	return n
}

func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func ref(kind, apiVersion, name string, uid types.UID, controller, block bool) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: uid, Controller: &controller, BlockOwnerDeletion: &block}
}

func deployment(name string, uid types.UID) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: uid}}
}

func replicaSet(name string, uid types.UID, owners ...metav1.OwnerReference) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: uid, OwnerReferences: owners}}
}

// pod returns a pod; running ones are bound to node n1 and Running.
func pod(name string, running bool, owners ...metav1.OwnerReference) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("pod-" + name), OwnerReferences: owners}}
	p.Status.Phase = corev1.PodPending
	if running {
		p.Spec.NodeName = "n1"
		p.Status.Phase = corev1.PodRunning
	}
	return p
}

func configMap(name string, uid types.UID, owners ...metav1.OwnerReference) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: uid, OwnerReferences: owners}}
}

func (e *env) gone(resource, ns, name string) func() bool {
	return func() bool { return e.get(resource, ns, name) == nil }
}

// TestBackgroundCascade: deleting a Deployment removes its ReplicaSet and
// the ReplicaSet's pods; running pods are deleted gracefully.
func TestBackgroundCascade(t *testing.T) {
	e := newEnv(t)
	e.create(deployment("web", "d1"))
	e.create(replicaSet("web-1", "rs1", ref("Deployment", "apps/v1", "web", "d1", true, true)))
	rsRef := ref("ReplicaSet", "apps/v1", "web-1", "rs1", true, true)
	e.create(pod("web-1-a", true, rsRef))
	e.create(pod("web-1-b", false, rsRef))
	e.start()
	e.delete("deployments.apps", "default", "web")

	e.eventually("replicaset deleted", e.gone("replicasets.apps", "default", "web-1"))
	e.eventually("pending pod deleted at once", e.gone("pods", "default", "web-1-b"))
	e.eventually("running pod marked", func() bool {
		p := e.get("pods", "default", "web-1-a")
		return p != nil && p.GetDeletionTimestamp() != nil
	})
	p := e.get("pods", "default", "web-1-a").(*corev1.Pod)
	if g := p.DeletionGracePeriodSeconds; g == nil || *g != 30 {
		t.Errorf("grace period = %v, want 30", g)
	}
	if want := t0.Add(30 * time.Second); !p.DeletionTimestamp.Time.Equal(want) {
		t.Errorf("deletionTimestamp = %v, want %v", p.DeletionTimestamp.Time, want)
	}
	if n := e.agentFinish(); n != 1 {
		t.Fatalf("agent finished %d pods, want 1", n)
	}
}

// TestForeground: dependents go first, transitively for blocking
// dependents with dependents of their own; the owner goes once no blocking
// dependent is left, and a non-blocking one does not hold it.
func TestForeground(t *testing.T) {
	e := newEnv(t)
	e.create(deployment("web", "d1"))
	e.create(replicaSet("web-1", "rs1", ref("Deployment", "apps/v1", "web", "d1", true, true)))
	rsRef := ref("ReplicaSet", "apps/v1", "web-1", "rs1", true, true)
	e.create(pod("web-1-a", true, rsRef))
	e.create(pod("web-1-b", true, rsRef))
	// A non-blocking dependent that will not go away soon (finalizer of
	// someone else).
	cm := configMap("web-cfg", "cm1", ref("Deployment", "apps/v1", "web", "d1", false, false))
	cm.Finalizers = []string{"example.com/keep"}
	e.create(cm)

	var mu sync.Mutex
	type deletion struct {
		rv   uint64
		name string
	}
	var deleted []deletion
	for _, res := range []string{"pods", "replicasets.apps", "deployments.apps"} {
		w, err := e.store.Watch(state.WatchOptions{Resource: res})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
		go func() {
			for ev := range w.Events() {
				if ev.Type == state.Deleted {
					mu.Lock()
					deleted = append(deleted, deletion{ev.RV, res + "/" + ev.Object.GetName()})
					mu.Unlock()
				}
			}
		}()
	}

	e.start()
	e.markDeleting("deployments.apps", "default", "web", finalizerForeground)

	e.eventually("replicaset deleting in the foreground", func() bool {
		rs := e.get("replicasets.apps", "default", "web-1")
		return rs != nil && rs.GetDeletionTimestamp() != nil && hasString(rs.GetFinalizers(), finalizerForeground)
	})
	e.eventually("pods marked", func() bool {
		for _, n := range []string{"web-1-a", "web-1-b"} {
			if p := e.get("pods", "default", n); p == nil || p.GetDeletionTimestamp() == nil {
				return false
			}
		}
		return true
	})
	e.eventually("non-blocking dependent marked", func() bool {
		o := e.get("configmaps", "default", "web-cfg")
		return o != nil && o.GetDeletionTimestamp() != nil
	})
	// The pods are still terminating: the owners wait.
	time.Sleep(50 * time.Millisecond)
	if e.get("deployments.apps", "default", "web") == nil || e.get("replicasets.apps", "default", "web-1") == nil {
		t.Fatal("owner deleted before its blocking dependents")
	}
	e.agentFinish()
	e.eventually("deployment deleted", e.gone("deployments.apps", "default", "web"))
	if e.get("configmaps", "default", "web-cfg") == nil {
		t.Error("the non-blocking dependent with a foreign finalizer should stay (marked)")
	}
	e.eventually("all deletions seen", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(deleted) >= 4
	})
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(deleted, func(i, j int) bool { return deleted[i].rv < deleted[j].rv })
	var order []string
	for _, d := range deleted {
		order = append(order, d.name)
	}
	pos := map[string]int{}
	for i, s := range order {
		pos[s] = i
	}
	rs, d := pos["replicasets.apps/web-1"], pos["deployments.apps/web"]
	if len(order) != 4 || pos["pods/web-1-a"] > rs || pos["pods/web-1-b"] > rs || rs > d {
		t.Errorf("deletion order %v: want pods, then the replicaset, then the deployment", order)
	}
}

// TestForegroundOwnerWithoutBlockingDependents: the finalizer goes at once
// and the owner with it.
func TestForegroundNoDependents(t *testing.T) {
	e := newEnv(t)
	e.create(deployment("web", "d1"))
	e.start()
	e.markDeleting("deployments.apps", "default", "web", finalizerForeground)
	e.eventually("deployment deleted", e.gone("deployments.apps", "default", "web"))
}

// TestOrphan: the references go, the dependents stay, then the owner goes.
func TestOrphan(t *testing.T) {
	e := newEnv(t)
	e.create(replicaSet("web-1", "rs1"))
	rsRef := ref("ReplicaSet", "apps/v1", "web-1", "rs1", true, true)
	other := ref("ConfigMap", "v1", "keeper", "cm-keeper", false, false)
	e.create(configMap("keeper", "cm-keeper"))
	e.create(pod("web-1-a", true, rsRef))
	e.create(pod("web-1-b", false, rsRef, other))
	e.start()
	e.markDeleting("replicasets.apps", "default", "web-1", finalizerOrphan)

	e.eventually("replicaset deleted", e.gone("replicasets.apps", "default", "web-1"))
	a := e.get("pods", "default", "web-1-a")
	b := e.get("pods", "default", "web-1-b")
	if a == nil || b == nil {
		t.Fatal("orphaned pods were deleted")
	}
	if refs := a.GetOwnerReferences(); len(refs) != 0 {
		t.Errorf("web-1-a references %v, want none", refs)
	}
	if refs := b.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != "cm-keeper" {
		t.Errorf("web-1-b references %v, want only the configmap", refs)
	}
	if a.GetDeletionTimestamp() != nil || b.GetDeletionTimestamp() != nil {
		t.Error("orphaned pods were marked for deletion")
	}
}

// TestOrphanKeepsOtherFinalizers: with another finalizer left the owner is
// not deleted, only the orphan finalizer removed.
func TestOrphanKeepsOtherFinalizers(t *testing.T) {
	e := newEnv(t)
	rs := replicaSet("web-1", "rs1")
	rs.Finalizers = []string{"example.com/keep"}
	e.create(rs)
	e.create(pod("web-1-a", false, ref("ReplicaSet", "apps/v1", "web-1", "rs1", true, true)))
	e.start()
	e.markDeleting("replicasets.apps", "default", "web-1", finalizerOrphan)
	e.eventually("orphan finalizer removed", func() bool {
		o := e.get("replicasets.apps", "default", "web-1")
		return o != nil && !hasString(o.GetFinalizers(), finalizerOrphan)
	})
	if p := e.get("pods", "default", "web-1-a"); p == nil || len(p.GetOwnerReferences()) != 0 {
		t.Errorf("pod = %v, want it kept without references", p)
	}
}

// TestOwnerRecreated: an owner deleted and recreated under the same name is
// a different owner; the old one's dependents are collected — whether the
// collector saw the deletion or starts afterwards (a new leader).
func TestOwnerRecreated(t *testing.T) {
	e := newEnv(t)
	// Before the collector runs: "web" now has UID d2, and a ReplicaSet
	// still points at d1.
	e.create(deployment("web", "d2"))
	e.create(replicaSet("old", "rs-old", ref("Deployment", "apps/v1", "web", "d1", true, true)))
	e.create(replicaSet("new", "rs-new", ref("Deployment", "apps/v1", "web", "d2", true, true)))
	e.start()
	e.eventually("dependent of the old owner deleted", e.gone("replicasets.apps", "default", "old"))

	// While it runs: replace the owner in one atomic step.
	k, _ := state.KindFor("deployments.apps")
	if _, err := e.p.Propose(e.ctx, state.Delete(k, "default", "web", 0, "d2"), state.Create(deployment("web", "d3"))); err != nil {
		t.Fatal(err)
	}
	e.eventually("dependent of the replaced owner deleted", e.gone("replicasets.apps", "default", "new"))
	if e.get("deployments.apps", "default", "web") == nil {
		t.Error("the new owner was deleted")
	}
}

// TestLiveOwnersKeepDependents: nothing with a live owner is deleted;
// references to absent owners are removed from objects that keep another
// owner; references the collector cannot resolve keep their objects.
func TestLiveOwnersKeepDependents(t *testing.T) {
	e := newEnv(t)
	e.create(deployment("web", "d1"))
	live := ref("Deployment", "apps/v1", "web", "d1", true, true)
	dangling := ref("Deployment", "apps/v1", "gone", "d-gone", false, true)
	e.create(replicaSet("plain", "rs1", live))
	e.create(replicaSet("mixed", "rs2", dangling, live))
	// The right UID with a wrong name still names a live owner.
	e.create(replicaSet("misnamed", "rs3", ref("Deployment", "apps/v1", "webby", "d1", true, true)))
	// A kind Shoal does not store is never taken as gone.
	e.create(configMap("widget-cfg", "cm1", ref("Widget", "example.com/v1", "w", "w1", true, true)))
	// A cluster-scoped owner that exists.
	e.create(pod("on-node", false, ref("Node", "v1", "n1", "node-n1", false, false)))
	e.start()

	e.eventually("dangling reference removed", func() bool {
		o := e.get("replicasets.apps", "default", "mixed")
		return o != nil && len(o.GetOwnerReferences()) == 1 && o.GetOwnerReferences()[0].UID == "d1"
	})
	time.Sleep(50 * time.Millisecond)
	for _, c := range []struct{ res, name string }{
		{"replicasets.apps", "plain"}, {"replicasets.apps", "mixed"}, {"replicasets.apps", "misnamed"},
		{"configmaps", "widget-cfg"}, {"pods", "on-node"}, {"deployments.apps", "web"},
	} {
		o := e.get(c.res, "default", c.name)
		if o == nil || o.GetDeletionTimestamp() != nil {
			t.Errorf("%s %s was deleted", c.res, c.name)
		}
	}
}

// TestClusterScopedOwner: a namespaced dependent of a Node goes with it;
// its pod is deleted at once since its node is gone.
func TestClusterScopedOwner(t *testing.T) {
	e := newEnv(t)
	e.create(pod("on-node", true, ref("Node", "v1", "n1", "node-n1", false, false)))
	e.start()
	time.Sleep(20 * time.Millisecond)
	if e.get("pods", "default", "on-node") == nil {
		t.Fatal("pod deleted while its node exists")
	}
	e.delete("nodes", "", "n1")
	e.eventually("pod deleted", e.gone("pods", "default", "on-node"))
}

// TestForegroundDependentWithAnotherOwner: a dependent that has another
// live owner is not deleted with a foreground owner; the reference to the
// owner being deleted is removed instead, and the owner goes.
func TestForegroundDependentWithAnotherOwner(t *testing.T) {
	e := newEnv(t)
	e.create(deployment("a", "da"))
	e.create(deployment("b", "db"))
	e.create(configMap("shared", "cm1", ref("Deployment", "apps/v1", "a", "da", false, true), ref("Deployment", "apps/v1", "b", "db", false, true)))
	e.start()
	e.markDeleting("deployments.apps", "default", "a", finalizerForeground)
	e.eventually("owner deleted", e.gone("deployments.apps", "default", "a"))
	o := e.get("configmaps", "default", "shared")
	if o == nil {
		t.Fatal("shared dependent deleted")
	}
	if refs := o.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != "db" {
		t.Errorf("references %v, want only b", refs)
	}
}

// TestRestartResumes: objects left mid-cascade by a previous leader are
// finished by a new collector.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t)
	rs := replicaSet("web-1", "rs1")
	rs.Finalizers = []string{finalizerForeground}
	now := metav1.NewTime(t0)
	rs.DeletionTimestamp = &now
	e.create(rs)
	e.create(pod("web-1-a", false, ref("ReplicaSet", "apps/v1", "web-1", "rs1", true, true)))
	e.create(pod("orphan", false, ref("ReplicaSet", "apps/v1", "gone", "rs-gone", true, true)))
	e.start()
	e.eventually("replicaset deleted", e.gone("replicasets.apps", "default", "web-1"))
	e.eventually("dangling pod deleted", e.gone("pods", "default", "orphan"))
	if e.get("pods", "default", "web-1-a") != nil {
		t.Error("dependent of the foreground owner still there")
	}
}

func TestItemKeys(t *testing.T) {
	for _, c := range []struct{ res, ns, name string }{{"pods", "default", "a"}, {"nodes", "", "n1"}, {"deployments.apps", "x", "y"}} {
		res, ns, name, ok := splitItemKey(itemKey(c.res, c.ns, c.name))
		if !ok || res != c.res || ns != c.ns || name != c.name {
			t.Errorf("round trip of %v = %q %q %q %v", c, res, ns, name, ok)
		}
	}
}

func TestGraphIndex(t *testing.T) {
	g := graph{items: map[string]item{}, byUID: map[types.UID]string{}, deps: map[types.UID]map[string]struct{}{}}
	keyOf := func(uid types.UID) string { k, _ := g.keyOf(uid); return k }

	g.set("cm/ns/a", "u1", nil, "")
	g.set("pods/ns/b", "u2", []types.UID{"u1"}, "")
	if keyOf("u1") != "cm/ns/a" || keyOf("u2") != "pods/ns/b" {
		t.Fatalf("byUID = %v", g.byUID)
	}
	if _, ok := g.items["cm/ns/a"]; ok || len(g.items) != 1 {
		t.Errorf("items = %v, want only the owned object", g.items)
	}
	if d := g.dependents("u1"); len(d) != 1 || d[0] != "pods/ns/b" {
		t.Errorf("dependents(u1) = %v", d)
	}

	// An ownerless object is removed by its UID.
	if it, ok := g.remove("cm/ns/a", "u1"); !ok || it.uid != "u1" || len(it.owners) != 0 {
		t.Errorf("remove(a) = %v, %v", it, ok)
	}
	if _, ok := g.remove("cm/ns/a", "u1"); ok {
		t.Error("removed twice")
	}
	// An owned one by its key alone; its owners come back.
	if it, ok := g.remove("pods/ns/b", ""); !ok || it.uid != "u2" || len(it.owners) != 1 {
		t.Errorf("remove(b) = %v, %v", it, ok)
	}
	if len(g.byUID) != 0 || len(g.items) != 0 || len(g.deps) != 0 {
		t.Errorf("index not empty: %v %v %v", g.byUID, g.items, g.deps)
	}

	// Dropping the owners of an object drops its item and its dependency.
	g.set("pods/ns/c", "u3", []types.UID{"u9"}, "")
	g.set("pods/ns/c", "u3", nil, "u3")
	if len(g.items) != 0 || len(g.deps) != 0 || keyOf("u3") != "pods/ns/c" {
		t.Errorf("after dropping owners: %v %v %v", g.byUID, g.items, g.deps)
	}

	// A name recreated unseen (a relist adds it without its previous
	// version): both UIDs are indexed until the relist forgets the old one.
	g.set("cm/ns/d", "u4", nil, "")
	g.set("cm/ns/d", "u5", nil, "")
	if got := g.indexed("cm"); len(got) != 2 || got["u4"] != "cm/ns/d" || got["u5"] != "cm/ns/d" {
		t.Errorf("indexed(cm) = %v", got)
	}
	if _, ok := g.remove("cm/ns/d", "u4"); !ok {
		t.Error("stale UID not removed")
	}
	if keyOf("u4") != "" || keyOf("u5") != "cm/ns/d" {
		t.Errorf("after forgetting the stale UID: %v", g.byUID)
	}
}

// BenchmarkGraphSetOwnerless is the index's cost for an object that owns
// nothing and is owned by nothing (a ConfigMap create).
func BenchmarkGraphSetOwnerless(b *testing.B) {
	g := graph{items: map[string]item{}, byUID: map[types.UID]string{}, deps: map[types.UID]map[string]struct{}{}}
	keys := make([]string, b.N)
	uids := make([]types.UID, b.N)
	for i := range keys {
		keys[i] = itemKey("configmaps", "default", fmt.Sprintf("cm-%d", i))
		uids[i] = types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		g.set(keys[i], uids[i], nil, "")
	}
}
