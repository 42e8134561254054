package nodelifecycle

import (
	"context"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/replicaset"
	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/state"
)

// TestTaintsFollowReady: Unknown → unreachable, False → not-ready, True →
// neither; other taints are kept, a NoExecute one gets a timeAdded.
func TestTaintsFollowReady(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	user := corev1.Taint{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule}
	h.updateNode("n1", func(n *corev1.Node) { n.Spec.Taints = []corev1.Taint{user} })
	h.syncNode("n1")
	if got := h.node("n1").Spec.Taints; len(got) != 1 || got[0].Key != "dedicated" {
		t.Fatalf("ready node taints %+v, want only the user's", got)
	}

	h.setReady("n1", corev1.ConditionUnknown)
	h.syncNode("n1")
	taints := h.node("n1").Spec.Taints
	if len(taints) != 2 || taints[0].Key != "dedicated" || taints[1].Key != corev1.TaintNodeUnreachable ||
		taints[1].Effect != corev1.TaintEffectNoExecute || taints[1].TimeAdded == nil || !taints[1].TimeAdded.Equal(&metav1.Time{Time: t0}) {
		t.Fatalf("unknown node taints %+v, want dedicated + unreachable:NoExecute added at t0", taints)
	}
	// Idempotent: another sync later writes nothing.
	rv := h.node("n1").ResourceVersion
	h.clock.Step(3 * time.Second)
	h.syncNode("n1")
	if h.node("n1").ResourceVersion != rv {
		t.Error("a second sync rewrote the node")
	}

	h.setReady("n1", corev1.ConditionFalse)
	h.syncNode("n1")
	if got := h.conditionTaints("n1"); !slices.Equal(got, []string{corev1.TaintNodeNotReady}) {
		t.Fatalf("not-ready node condition taints %v", got)
	}

	h.setReady("n1", corev1.ConditionTrue)
	h.syncNode("n1")
	if got := h.node("n1").Spec.Taints; len(got) != 1 || got[0] != user {
		t.Fatalf("recovered node taints %+v, want only the user's", got)
	}

	// A user's NoExecute taint without timeAdded gets one, so its
	// toleration deadlines are in the store.
	h.updateNode("n2", func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: "maintenance", Effect: corev1.TaintEffectNoExecute}}
	})
	h.syncNode("n2")
	if got := h.node("n2").Spec.Taints; len(got) != 1 || got[0].TimeAdded == nil || !got[0].TimeAdded.Time.Equal(h.clock.Now()) {
		t.Fatalf("user NoExecute taint %+v, want a timeAdded", got)
	}
}

// TestUntoleratedPodEvictedAtOnce: a pod without tolerations on an
// unreachable node is removed from the store at once, with an event; pods
// elsewhere are untouched.
func TestUntoleratedPodEvictedAtOnce(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	h.createPod(newPod("a", "n1"))
	h.createPod(newPod("b", "n2"))
	h.syncAllPods()
	h.mustExist("a", false)

	h.setReady("n1", corev1.ConditionUnknown)
	h.syncAllPods() // not tainted yet: nothing happens
	h.mustExist("a", false)
	h.syncNode("n1")
	h.syncAllPods()
	h.mustBeGone("a")
	h.mustExist("b", false)
	ev := h.waitEvent(ReasonTaintManagerEviction, "a")
	if ev.Message != "Marking for deletion Pod default/a" || ev.InvolvedObject.Kind != "Pod" {
		t.Errorf("event %q about %s", ev.Message, ev.InvolvedObject.Kind)
	}
}

// TestTolerationSeconds: a pod with the default tolerations is evicted
// DefaultTolerationSeconds after the taint was added, not before, through a
// delayed requeue.
func TestTolerationSeconds(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	h.createPod(defaulted(newPod("a", "n1")))
	h.setReady("n1", corev1.ConditionUnknown)
	h.syncNode("n1")
	h.syncPod("a")
	h.mustExist("a", false)
	if n := h.lc.queue.Len(); n != 0 {
		t.Fatalf("queue has %d keys before the toleration ran out", n)
	}
	h.clock.Step(time.Duration(defaults.DefaultTolerationSeconds-1) * time.Second)
	h.syncPod("a")
	h.mustExist("a", false)
	h.clock.Step(time.Second)
	waitFor(t, "the requeue when the toleration runs out", func() bool { return h.lc.queue.Len() > 0 })
	key, _ := h.lc.queue.Get()
	if key != prefixPod+"default/a" {
		t.Fatalf("requeued %q", key)
	}
	h.lc.queue.Done(key)
	h.mustSync(key)
	h.mustBeGone("a")

	// The same for a not-ready node and a pod tolerating 2 s of it (its
	// own toleration, which the defaults leave alone); n1 is back (two of three nodes down
	// would be a mass disruption).
	h.setReady("n1", corev1.ConditionTrue)
	h.createPod(defaulted(func() *corev1.Pod {
		p := newPod("b", "n2")
		p.Spec.Tolerations = []corev1.Toleration{{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists,
			Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(2))}}
		return p
	}()))
	h.setReady("n2", corev1.ConditionFalse)
	h.syncNode("n2")
	h.syncPod("b")
	h.mustExist("b", false)
	h.clock.Step(2 * time.Second)
	h.syncPod("b")
	h.mustBeGone("b")
}

// TestTolerateForever: a pod that tolerates the taint without
// tolerationSeconds stays, and nothing is requeued for it.
func TestTolerateForever(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	p := newPod("daemon", "n1")
	p.Spec.Tolerations = []corev1.Toleration{
		{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	}
	h.createPod(p)
	w := newPod("wildcard", "n1")
	w.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	h.createPod(w)
	h.setReady("n1", corev1.ConditionUnknown)
	h.syncNode("n1")
	h.syncAllPods()
	h.clock.Step(time.Hour)
	h.syncAllPods()
	h.mustExist("daemon", false)
	h.mustExist("wildcard", false)
	if n := h.lc.queue.Len(); n != 0 {
		t.Errorf("queue has %d keys", n)
	}
}

// TestStatefulSetPodOnlyMarked: a StatefulSet's pod on an unreachable node
// is marked for deletion and stays Terminating until the Node object is
// deleted; then it (and every other pod bound there) is removed.
func TestStatefulSetPodOnlyMarked(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	h.createPod(ownedBy(newPod("db-0", "n1"), "StatefulSet"))
	h.createPod(ownedBy(newPod("web-x", "n1"), "ReplicaSet"))
	pending := newPod("pending", "n1")
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending}
	h.createPod(pending)

	h.setReady("n1", corev1.ConditionUnknown)
	h.syncNode("n1")
	h.syncPod("db-0")
	h.syncPod("web-x")
	h.mustExist("db-0", true)
	h.mustBeGone("web-x")
	db, _ := h.pod("db-0")
	if g := db.DeletionGracePeriodSeconds; g == nil || *g != corev1.DefaultTerminationGracePeriodSeconds {
		t.Errorf("grace %v, want the pod's grace period", g)
	}
	h.waitEvent(ReasonTaintManagerEviction, "db-0")

	// Later syncs leave it Terminating.
	h.clock.Step(time.Hour)
	h.syncPod("db-0")
	h.mustExist("db-0", true)

	// The node is deleted: its pods go, whatever their state.
	h.deleteNode("n1")
	h.mustSync(prefixGone + "n1")
	h.mustBeGone("db-0")
	h.mustBeGone("pending")
}

// TestPodGC: a pod bound to a node that does not exist is collected when
// an agent had it (its node was deleted, e.g. before a leader change), not
// when it never ran (it waits for a node of that name to join); a node of
// the same name that came back keeps its pods.
func TestPodGC(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	h.createPod(newPod("ran", "gone"))
	waiting := newPod("waiting", "future")
	waiting.Status = corev1.PodStatus{Phase: corev1.PodPending}
	h.createPod(waiting)
	fin := newPod("finalized", "gone")
	fin.Finalizers = []string{"example.com/keep"}
	h.createPod(fin)
	h.syncAllPods()
	h.mustBeGone("ran")
	h.mustExist("waiting", false)
	f, _ := h.pod("finalized")
	if f.DeletionTimestamp == nil || f.DeletionGracePeriodSeconds == nil || *f.DeletionGracePeriodSeconds != 0 {
		t.Fatalf("pod with a finalizer: deletionTimestamp %v grace %v, want marked with grace 0", f.DeletionTimestamp, f.DeletionGracePeriodSeconds)
	}

	h.createPod(newPod("kept", "n2"))
	h.deleteNode("n2")
	h.addNode("n2") // back before the collection ran
	h.mustSync(prefixGone + "n2")
	h.mustExist("kept", false)
}

// TestMassDisruption: with 2 of 3 nodes unreachable at once nothing is
// tainted or evicted; when one comes back, the other is tainted and its
// pods evicted.
func TestMassDisruption(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	h.createPod(newPod("a", "n1"))
	h.createPod(newPod("b", "n2"))
	h.createPod(newPod("c", "n3"))
	h.setReady("n1", corev1.ConditionUnknown)
	h.setReady("n2", corev1.ConditionUnknown)
	h.syncNode("n1")
	h.syncNode("n2")
	if len(h.conditionTaints("n1"))+len(h.conditionTaints("n2")) != 0 {
		t.Fatal("nodes tainted during a mass disruption")
	}
	h.syncAllPods()
	h.clock.Step(time.Minute)
	h.syncAllPods()
	for _, p := range []string{"a", "b", "c"} {
		h.mustExist(p, false)
	}
	h.waitEvent(ReasonEvictionsSuppressed, "n1")

	// n2 recovers: 1 of 3 is not a mass disruption any more.
	h.setReady("n2", corev1.ConditionTrue)
	h.mustSync(keyAll)
	for h.lc.queue.Len() > 0 {
		key, _ := h.lc.queue.Get()
		h.mustSync(key)
		h.lc.queue.Done(key)
	}
	if got := h.conditionTaints("n1"); !slices.Equal(got, []string{corev1.TaintNodeUnreachable}) {
		t.Fatalf("n1 condition taints %v after the disruption", got)
	}
	h.syncAllPods()
	h.mustBeGone("a")
	h.mustExist("b", false)
	h.mustExist("c", false)
}

// TestMassDisruptionHoldsExistingTaints: a node tainted before the
// disruption keeps its taint, but its pods are not evicted while it lasts;
// they are as soon as it ends (their toleration ran out meanwhile).
func TestMassDisruptionHoldsExistingTaints(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	h.createPod(defaulted(newPod("a", "n1")))
	h.setReady("n1", corev1.ConditionUnknown)
	h.syncNode("n1")
	h.syncPod("a")
	h.setReady("n2", corev1.ConditionUnknown)
	h.syncNode("n2")
	h.clock.Step(10 * time.Second)
	h.syncPod("a")
	h.mustExist("a", false)
	if got := h.conditionTaints("n1"); len(got) != 1 {
		t.Fatalf("n1 lost its taint during the disruption: %v", got)
	}
	h.setReady("n2", corev1.ConditionTrue)
	h.syncPod("a")
	h.mustBeGone("a")
}

// TestDisruptionThreshold: the guard needs more than one node and at least
// the threshold fraction not Ready.
func TestDisruptionThreshold(t *testing.T) {
	for _, tc := range []struct {
		notReady, total int
		want            bool
	}{
		{1, 1, false}, {1, 2, false}, {2, 2, true}, {2, 3, true}, {2, 4, true}, {2, 5, false}, {3, 5, true}, {4, 10, false},
	} {
		h := newHarness(t)
		for i := range tc.total {
			name := "n" + string(rune('a'+i))
			h.addNode(name)
			if i < tc.notReady {
				h.setReady(name, corev1.ConditionUnknown)
			}
		}
		if got := h.lc.massDisruption(); got != tc.want {
			t.Errorf("%d of %d not Ready: mass disruption %v, want %v", tc.notReady, tc.total, got, tc.want)
		}
	}
}

// TestUserTaintOnReadyNode: on a Ready node a NoExecute taint evicts
// gracefully (the agent finishes the deletion).
func TestUserTaintOnReadyNode(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	h.createPod(defaulted(newPod("a", "n1")))
	done := newPod("done", "n1")
	done.Status.Phase = corev1.PodSucceeded
	h.createPod(done)
	h.updateNode("n1", func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: "maintenance", Effect: corev1.TaintEffectNoExecute}}
	})
	h.syncNode("n1")
	h.syncAllPods()
	h.mustExist("a", true)
	h.mustExist("done", false) // finished pods are left alone
	a, _ := h.pod("a")
	if !a.DeletionTimestamp.Time.Equal(t0.Add(30 * time.Second)) {
		t.Errorf("deletionTimestamp %v, want now + the grace period", a.DeletionTimestamp)
	}
}

// TestEvictionTime covers the toleration arithmetic.
func TestEvictionTime(t *testing.T) {
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: t0.Add(d)} }
	unreachable := corev1.Taint{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute, TimeAdded: at(0)}
	other := corev1.Taint{Key: "x", Effect: corev1.TaintEffectNoExecute, TimeAdded: at(-time.Minute)}
	tol := func(key string, secs *int64) corev1.Toleration {
		return corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: secs}
	}
	now := t0.Add(time.Second)
	for _, tc := range []struct {
		name   string
		taints []corev1.Taint
		tols   []corev1.Toleration
		want   time.Time
		evict  bool
	}{
		{"untolerated", []corev1.Taint{unreachable}, nil, now, true},
		{"one of two untolerated", []corev1.Taint{unreachable, other}, []corev1.Toleration{tol(corev1.TaintNodeUnreachable, nil)}, now, true},
		{"forever", []corev1.Taint{unreachable}, []corev1.Toleration{tol(corev1.TaintNodeUnreachable, nil)}, time.Time{}, false},
		{"seconds from timeAdded", []corev1.Taint{unreachable}, []corev1.Toleration{tol(corev1.TaintNodeUnreachable, ptr(int64(5)))}, t0.Add(5 * time.Second), true},
		{"zero seconds", []corev1.Taint{unreachable}, []corev1.Toleration{tol(corev1.TaintNodeUnreachable, ptr(int64(0)))}, now, true},
		{"earliest deadline", []corev1.Taint{unreachable, other},
			[]corev1.Toleration{tol(corev1.TaintNodeUnreachable, ptr(int64(5))), tol("x", ptr(int64(30)))}, t0.Add(-30 * time.Second), true},
		{"first matching toleration", []corev1.Taint{unreachable},
			[]corev1.Toleration{tol(corev1.TaintNodeUnreachable, ptr(int64(5))), tol("", nil)}, t0.Add(5 * time.Second), true},
		{"no timeAdded counts from now", []corev1.Taint{{Key: "x", Effect: corev1.TaintEffectNoExecute}},
			[]corev1.Toleration{tol("x", ptr(int64(5)))}, now.Add(5 * time.Second), true},
	} {
		pod := &corev1.Pod{Spec: corev1.PodSpec{Tolerations: tc.tols}}
		got, evict := evictionTime(pod, tc.taints, now)
		if evict != tc.evict || !got.Equal(tc.want) {
			t.Errorf("%s: (%v, %v), want (%v, %v)", tc.name, got, evict, tc.want, tc.evict)
		}
	}
}

// TestEvictedReplicaSetPodIsReplaced: with the real ReplicaSet controller,
// a pod evicted from an unreachable node is replaced.
func TestEvictedReplicaSetPodIsReplaced(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	rsc := replicaset.New(h.c)
	replicas := int32(2)
	h.propose(state.Create(&appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "rs-web", Generation: 1},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "busybox:1.36"}}},
			},
		},
	}))
	if err := rsc.Sync(h.ctx, "default/web"); err != nil {
		t.Fatal(err)
	}
	objs, _ := h.store.List(controller.ResourcePods, "default")
	if len(objs) != 2 {
		t.Fatalf("%d pods, want 2", len(objs))
	}
	// Controller-made pods carry the default tolerations.
	first := objs[0].(*corev1.Pod)
	if n := len(first.Spec.Tolerations); n != 2 {
		t.Fatalf("pod from the template has %d tolerations, want the 2 defaults", n)
	}
	for i, o := range objs {
		p := o.(*corev1.Pod).DeepCopy()
		p.Spec.NodeName = []string{"n1", "n2"}[i]
		p.Status.Phase = corev1.PodRunning
		h.propose(state.Update(p, controller.RV(p)))
	}
	h.setReady("n1", corev1.ConditionUnknown)
	h.syncNode("n1")
	h.clock.Step(5 * time.Second)
	h.syncAllPods()
	h.mustBeGone(first.Name)
	if err := rsc.Sync(h.ctx, "default/web"); err != nil {
		t.Fatal(err)
	}
	objs, _ = h.store.List(controller.ResourcePods, "default")
	var names []string
	for _, o := range objs {
		names = append(names, o.GetName()+"@"+o.(*corev1.Pod).Spec.NodeName)
	}
	if len(objs) != 2 || slices.Contains(names, first.Name+"@n1") {
		t.Fatalf("pods after the eviction: %v, want the survivor and an unbound replacement", names)
	}
}

// TestRun drives the controller through its watches: an unreachable node
// is tainted, its pods evicted when their toleration runs out (fake
// clock), and the pods of a deleted node collected.
func TestRun(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	h.createPod(defaulted(newPod("a", "n1")))
	h.createPod(defaulted(newPod("b", "n2")))
	h.createPod(ownedBy(defaulted(newPod("db-0", "n2")), "StatefulSet"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.lc.Run(ctx); close(done) }()

	h.setReady("n1", corev1.ConditionUnknown)
	waitFor(t, "the unreachable taint", func() bool { return len(h.conditionTaints("n1")) == 1 })
	h.mustExist("a", false)
	h.clock.Step(5 * time.Second)
	waitFor(t, "the eviction", func() bool { _, ok := h.pod("a"); return !ok })
	h.mustExist("b", false)

	h.setReady("n1", corev1.ConditionTrue)
	waitFor(t, "the taint removed", func() bool { return len(h.conditionTaints("n1")) == 0 })

	h.setReady("n2", corev1.ConditionUnknown)
	waitFor(t, "n2 tainted", func() bool { return len(h.conditionTaints("n2")) == 1 })
	h.clock.Step(5 * time.Second)
	waitFor(t, "db-0 marked", func() bool { p, ok := h.pod("db-0"); return ok && p.DeletionTimestamp != nil })
	h.deleteNode("n2")
	waitFor(t, "n2's pods collected", func() bool {
		_, b := h.pod("b")
		_, db := h.pod("db-0")
		return !b && !db
	})

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func ptr[T any](v T) *T { return &v }

// TestPodsOfUnreadyNodeNotReady: a node that stops being Ready takes its
// pods' Ready condition with it at once (long before any eviction), so
// Services stop sending them traffic.
func TestPodsOfUnreadyNodeNotReady(t *testing.T) {
	h := newHarness(t, "n1", "n2")
	pod := newPod("web", "n1")
	pod.Spec.Tolerations = []corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	h.createPod(pod)
	h.syncPod("web")
	if p, _ := h.pod("web"); p.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Fatal("pod of a Ready node marked not ready")
	}
	h.setReady("n1", corev1.ConditionUnknown)
	h.syncNode("n1")
	h.syncPod("web")
	p, ok := h.pod("web")
	if !ok {
		t.Fatal("tolerating pod evicted")
	}
	if c := p.Status.Conditions[0]; c.Status != corev1.ConditionFalse || c.Reason != "NodeNotReady" {
		t.Fatalf("pod of an unreachable node: Ready %+v", c)
	}
	rv := p.ResourceVersion
	h.syncPod("web")
	if p, _ := h.pod("web"); p.ResourceVersion != rv {
		t.Fatal("a second sync rewrote the pod")
	}
}
