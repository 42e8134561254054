package replicaset

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// TestCreatesPodsFromTemplate: a new ReplicaSet gets its replicas as pods
// made from its template, with the metadata the API server would set, and
// a status that counts them.
func TestCreatesPodsFromTemplate(t *testing.T) {
	h := newHarness(t)
	rs := h.newRS("web", 3)
	h.createRS(rs)
	h.mustSync("web")

	pods := h.pods()
	if len(pods) != 3 {
		t.Fatalf("pods = %v, want 3", names(pods))
	}
	for _, p := range pods {
		if !strings.HasPrefix(p.Name, "web-") || len(p.Name) != len("web-")+5 || p.GenerateName != "web-" {
			t.Errorf("pod name %q (generateName %q), want web-xxxxx", p.Name, p.GenerateName)
		}
		if p.UID == "" || !p.CreationTimestamp.Time.Equal(t0) || p.Generation != 1 || p.Status.Phase != corev1.PodPending {
			t.Errorf("pod %s metadata: uid %q created %v generation %d phase %q", p.Name, p.UID, p.CreationTimestamp, p.Generation, p.Status.Phase)
		}
		if p.Labels["app"] != "web" || p.Labels["tier"] != "web" || p.Annotations["note"] != "x" {
			t.Errorf("pod %s labels %v annotations %v", p.Name, p.Labels, p.Annotations)
		}
		if len(p.Spec.Containers) != 1 || p.Spec.Containers[0].Image != "busybox:1.36" {
			t.Errorf("pod %s spec %+v", p.Name, p.Spec)
		}
		refs := p.OwnerReferences
		if len(refs) != 1 || refs[0].Kind != "ReplicaSet" || refs[0].APIVersion != "apps/v1" || refs[0].Name != "web" ||
			refs[0].UID != rs.UID || refs[0].Controller == nil || !*refs[0].Controller || refs[0].BlockOwnerDeletion == nil || !*refs[0].BlockOwnerDeletion {
			t.Errorf("pod %s ownerReferences %+v", p.Name, refs)
		}
	}
	st := h.getRS("web").Status
	if st.Replicas != 3 || st.FullyLabeledReplicas != 3 || st.ReadyReplicas != 0 || st.AvailableReplicas != 0 || st.ObservedGeneration != 1 {
		t.Errorf("status %+v", st)
	}
}

// TestNoDoubleCreate: syncing again and again (as repeated events do)
// never creates more than replicas pods.
func TestNoDoubleCreate(t *testing.T) {
	h := newHarness(t)
	h.createRS(h.newRS("web", 4))
	for range 5 {
		h.mustSync("web")
	}
	if n := len(h.pods()); n != 4 {
		t.Fatalf("%d pods, want 4", n)
	}
	// Concurrent syncs of different keys are the queue's normal use;
	// the same key is never synced concurrently (the queue guarantees it).
	h.createRS(h.newRS("api", 7))
	var wg sync.WaitGroup
	for _, n := range []string{"web", "api"} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = h.sync(n) }()
	}
	wg.Wait()
	if n := len(h.activeOf("api")); n != 7 {
		t.Fatalf("api: %d pods, want 7", n)
	}
}

// TestSlowStart: creates go in batches of 1, 2, 4, …; the first failing
// batch stops the sync, the ReplicaSet reports ReplicaFailure, and a
// later sync finishes the job and clears the condition.
func TestSlowStart(t *testing.T) {
	h := newHarness(t)
	h.createRS(h.newRS("web", 10))
	var creates atomic.Int64
	h.prop.setHook(func(ops []state.Op) (bool, []state.Result, error) {
		if ops[0].Type != state.OpCreate || ops[0].Resource != "pods" {
			return false, nil, nil
		}
		if creates.Add(1) == 4 {
			return true, nil, &state.ResultError{Code: state.CodeInvalid, Message: "exceeded quota"}
		}
		return false, nil, nil
	})
	if err := h.sync("web"); err == nil || !strings.Contains(err.Error(), "exceeded quota") {
		t.Fatalf("sync error %v, want the create failure", err)
	}
	// Batches 1, 2, 4: the 4th call is in the third batch, which still
	// runs in full; nothing after it.
	if n := creates.Load(); n != 7 {
		t.Errorf("%d create calls, want 7 (batches 1+2+4)", n)
	}
	if n := len(h.pods()); n != 6 {
		t.Errorf("%d pods, want 6", n)
	}
	st := h.getRS("web").Status
	c := condition(st.Conditions, appsv1.ReplicaSetReplicaFailure)
	if c == nil || c.Status != corev1.ConditionTrue || c.Reason != "FailedCreate" || !strings.Contains(c.Message, "exceeded quota") {
		t.Fatalf("ReplicaFailure condition %+v", c)
	}
	if st.Replicas != 6 {
		t.Errorf("status.replicas %d, want 6", st.Replicas)
	}

	h.prop.setHook(nil)
	h.mustSync("web")
	if n := len(h.pods()); n != 10 {
		t.Errorf("%d pods after recovery, want 10", n)
	}
	if c := condition(h.getRS("web").Status.Conditions, appsv1.ReplicaSetReplicaFailure); c != nil {
		t.Errorf("ReplicaFailure still set: %+v", c)
	}
}

func TestSlowStartBatch(t *testing.T) {
	for _, c := range []struct{ count, failAt, wantCalls, wantOK int }{
		{0, 0, 0, 0}, {1, 0, 1, 1}, {3, 0, 3, 3}, {10, 0, 10, 10}, {10, 1, 1, 0}, {10, 2, 3, 2}, {10, 8, 10, 9},
	} {
		var calls atomic.Int64
		ok, err := slowStartBatch(c.count, 1, func() error {
			if int(calls.Add(1)) == c.failAt {
				return fmt.Errorf("fail")
			}
			return nil
		})
		if int(calls.Load()) != c.wantCalls || ok != c.wantOK || (err != nil) != (c.failAt > 0) {
			t.Errorf("count %d failAt %d: calls %d ok %d err %v; want calls %d ok %d", c.count, c.failAt, calls.Load(), ok, err, c.wantCalls, c.wantOK)
		}
	}
}

// TestScaleDownOrder: scaling down removes pods in Kubernetes' order, one
// rule at a time: unassigned, Pending, Unknown, not ready, more restarts,
// newer.
func TestScaleDownOrder(t *testing.T) {
	h := newHarness(t)
	h.createRS(h.newRS("web", 0))
	ref := *controller.NewControllerRef(h.getRS("web"), GVK)
	mk := func(name string, created time.Time, mutate func(p *corev1.Pod)) {
		p := bareOrphan(name, map[string]string{"app": "web"})
		p.OwnerReferences = []metav1.OwnerReference{ref}
		p.CreationTimestamp = metav1.NewTime(created)
		if mutate != nil {
			mutate(p)
		}
		h.propose(state.Create(p))
	}
	older := t0.Add(-time.Hour)
	readyAt := t0.Add(-30 * time.Minute)
	mk("a-unassigned", older, nil)
	mk("b-pending", older, func(p *corev1.Pod) { p.Spec.NodeName = "n1" })
	mk("c-unknown", older, func(p *corev1.Pod) { p.Spec.NodeName = "n1"; p.Status.Phase = corev1.PodUnknown })
	mk("d-notready", older, run("n1", false, readyAt))
	mk("e-restarts", older, func(p *corev1.Pod) {
		run("n1", true, readyAt)(p)
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", RestartCount: 4}}
	})
	mk("f-newer", t0.Add(-time.Minute), run("n1", true, readyAt))
	mk("g-oldest", older.Add(-time.Hour), run("n1", true, readyAt))
	// A ready pod that became ready later goes before both of the above
	// but after the not-ready one: ready for less time.
	mk("h-readylater", older, run("n1", true, readyAt.Add(time.Minute)))

	want := []string{"a-unassigned", "b-pending", "c-unknown", "d-notready", "h-readylater", "e-restarts", "f-newer"}
	for i, victim := range want {
		h.updateRS("web", func(rs *appsv1.ReplicaSet) { n := int32(len(want) - i); rs.Spec.Replicas = &n })
		h.mustSync("web")
		p, ok := h.store.Get("pods", "default", victim)
		if ok && p.GetDeletionTimestamp() == nil {
			t.Fatalf("step %d: %s was not deleted; active: %v", i, victim, names(h.activeOf("web")))
		}
		if n := len(h.activeOf("web")); n != len(want)-i {
			t.Fatalf("step %d: %d active pods, want %d", i, n, len(want)-i)
		}
	}
	if got := names(h.activeOf("web")); len(got) != 1 || got[0] != "g-oldest" {
		t.Fatalf("survivor %v, want g-oldest", got)
	}
	// Unbound pods went at once; bound ones are terminating gracefully.
	if _, ok := h.store.Get("pods", "default", "a-unassigned"); ok {
		t.Error("unassigned pod should be deleted at once")
	}
	if p := h.pod("f-newer"); p.DeletionTimestamp == nil || *p.DeletionGracePeriodSeconds != 30 {
		t.Errorf("bound pod should be terminating with the default grace: %v %v", p.DeletionTimestamp, p.DeletionGracePeriodSeconds)
	}
}

func TestDeletionRankTieBreakers(t *testing.T) {
	ready := run("n1", true, t0)
	mk := func(name, node string, cost string) *corev1.Pod {
		p := bareOrphan(name, nil)
		ready(p)
		p.Spec.NodeName = node
		if cost != "" {
			p.Annotations = map[string]string{controller.PodDeletionCostAnnotation: cost}
		}
		return p
	}
	// Deletion cost beats crowding; crowding beats age.
	pods := []*corev1.Pod{mk("cheap", "n1", "-5"), mk("alone", "n2", ""), mk("crowded1", "n3", ""), mk("crowded2", "n3", ""), mk("dear", "n3", "100")}
	got := names(podsToDelete(pods, pods, 3))
	want := []string{"cheap", "crowded1", "crowded2"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("podsToDelete = %v, want %v", got, want)
	}
}

// TestAdoptAndRelease: an orphan the selector matches is adopted (and
// counts); an owned pod whose labels no longer match is released; pods
// of another controller, terminating orphans and orphans elsewhere are
// left alone.
func TestAdoptAndRelease(t *testing.T) {
	h := newHarness(t)
	h.createRS(h.newRS("web", 2))
	h.propose(state.Create(bareOrphan("orphan", map[string]string{"app": "web"})))
	other := bareOrphan("others", map[string]string{"app": "web"})
	other.OwnerReferences = []metav1.OwnerReference{*controller.NewControllerRef(&metav1.ObjectMeta{Name: "x", UID: "other-uid"}, GVK)}
	h.propose(state.Create(other))
	dying := bareOrphan("dying", map[string]string{"app": "web"})
	now := metav1.NewTime(t0)
	dying.DeletionTimestamp = &now
	dying.Finalizers = []string{"example.com/hold"}
	h.propose(state.Create(dying))
	elsewhere := bareOrphan("elsewhere", map[string]string{"app": "web"})
	elsewhere.Namespace = "other"
	h.propose(state.Create(elsewhere))

	h.mustSync("web")
	rs := h.getRS("web")
	orphan := h.pod("orphan")
	if !controller.IsControlledBy(orphan, rs) {
		t.Fatalf("orphan not adopted: %+v", orphan.OwnerReferences)
	}
	if r := orphan.OwnerReferences[0]; !*r.Controller || !*r.BlockOwnerDeletion || r.Kind != "ReplicaSet" {
		t.Errorf("adoption reference %+v", r)
	}
	if got := h.activeOf("web"); len(got) != 2 {
		t.Fatalf("active pods %v, want the orphan and one new pod", names(got))
	}
	if p := h.pod("others"); len(p.OwnerReferences) != 1 || p.OwnerReferences[0].UID != "other-uid" {
		t.Errorf("another controller's pod was touched: %+v", p.OwnerReferences)
	}
	if len(h.pod("dying").OwnerReferences) != 0 {
		t.Error("a terminating orphan was adopted")
	}
	if o, _ := h.store.Get("pods", "other", "elsewhere"); len(o.GetOwnerReferences()) != 0 {
		t.Error("an orphan in another namespace was adopted")
	}

	// Relabel the adopted pod: it is released and replaced.
	h.setPod("orphan", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "debug"} })
	h.mustSync("web")
	if refs := h.pod("orphan").OwnerReferences; len(refs) != 0 {
		t.Errorf("relabelled pod not released: %+v", refs)
	}
	if got := h.activeOf("web"); len(got) != 2 {
		t.Errorf("active pods %v, want 2 after release", names(got))
	}
}

// TestExpectations: a create whose outcome is unknown (the proposer timed
// out; the write may still commit) holds further creates back until the
// pod shows up or the expectation expires.
func TestExpectations(t *testing.T) {
	h := newHarness(t)
	h.createRS(h.newRS("web", 3))
	var mu sync.Mutex
	var held [][]state.Op
	var attempts atomic.Int64
	h.prop.setHook(func(ops []state.Op) (bool, []state.Result, error) {
		if ops[0].Type != state.OpCreate || ops[0].Resource != "pods" {
			return false, nil, nil
		}
		attempts.Add(1)
		mu.Lock()
		held = append(held, ops)
		mu.Unlock()
		return true, nil, fmt.Errorf("%w: timed out", state.ErrUnavailable)
	})
	if err := h.sync("web"); err == nil {
		t.Fatal("sync should report the failed create")
	}
	if n := attempts.Load(); n != 1 {
		t.Fatalf("%d create attempts, want 1 (slow start stops at the failure)", n)
	}
	for range 3 {
		_ = h.sync("web")
	}
	if n := attempts.Load(); n != 1 {
		t.Fatalf("%d create attempts while one is in doubt, want 1", n)
	}
	// The write commits late: it is seen, and the next sync creates only
	// the two still missing.
	h.prop.setHook(nil)
	mu.Lock()
	for _, ops := range held {
		h.propose(ops...)
	}
	held = nil
	mu.Unlock()
	h.mustSync("web")
	if n := len(h.activeOf("web")); n != 3 {
		t.Fatalf("%d pods, want 3", n)
	}

	// A create in doubt that never commits expires.
	h.updateRS("web", func(rs *appsv1.ReplicaSet) { n := int32(4); rs.Spec.Replicas = &n })
	h.prop.setHook(func(ops []state.Op) (bool, []state.Result, error) {
		if ops[0].Type == state.OpCreate && ops[0].Resource == "pods" {
			return true, nil, context.DeadlineExceeded
		}
		return false, nil, nil
	})
	_ = h.sync("web")
	h.prop.setHook(nil)
	h.mustSync("web")
	if n := len(h.activeOf("web")); n != 3 {
		t.Fatalf("%d pods while a create is in doubt, want 3", n)
	}
	h.clock.Step(ExpectationsTimeout + time.Second)
	h.mustSync("web")
	if n := len(h.activeOf("web")); n != 4 {
		t.Fatalf("%d pods after the expectation expired, want 4", n)
	}
}

// TestExpectationsObservedByWatch: a pod in doubt that committed and was
// deleted again before the next sync is known from the watch event.
func TestExpectationsObservedByWatch(t *testing.T) {
	h := newHarness(t)
	h.createRS(h.newRS("web", 1))
	pod := newPodForTest(h)
	h.rc.exp.Expect("default/web", pod, true, h.clock.Now())
	if ok, _ := h.rc.exp.Satisfied("default/web", h.store, h.clock.Now()); ok {
		t.Fatal("expectation satisfied before the pod was seen")
	}
	h.rc.onPod(state.Event{Type: state.Added, Object: pod})
	if ok, _ := h.rc.exp.Satisfied("default/web", h.store, h.clock.Now()); !ok {
		t.Fatal("expectation not satisfied by the Added event")
	}
}

func newPodForTest(h *harness) *corev1.Pod {
	rs := h.getRS("web")
	return controller.NewPodFromTemplate(h.c, &rs.Spec.Template, rs, controller.NewControllerRef(rs, GVK))
}

// TestStatusAndMinReadySeconds: ready and available counts, with
// availability after minReadySeconds and a requeue when it is due; pods
// missing a template label are not fully labelled.
func TestStatusAndMinReadySeconds(t *testing.T) {
	h := newHarness(t)
	rs := h.newRS("web", 3)
	rs.Spec.MinReadySeconds = 10
	h.createRS(rs)
	h.mustSync("web")
	pods := h.activeOf("web")
	h.setPod(pods[0].Name, run("n1", true, t0))
	h.setPod(pods[1].Name, run("n1", true, t0))
	h.setPod(pods[2].Name, func(p *corev1.Pod) { delete(p.Labels, "tier") }) // still selected
	h.mustSync("web")
	st := h.getRS("web").Status
	if st.Replicas != 3 || st.FullyLabeledReplicas != 2 || st.ReadyReplicas != 2 || st.AvailableReplicas != 0 {
		t.Fatalf("status %+v, want replicas 3 fullyLabeled 2 ready 2 available 0", st)
	}
	// The sync asked to come back once the pods are available (10 s
	// after they became ready, strictly after: 11 s).
	if n := h.rc.queue.Len(); n != 0 {
		t.Fatalf("queue has %d items before the delay", n)
	}
	h.clock.Step(11 * time.Second)
	waitFor(t, "the requeue after minReadySeconds", func() bool { return h.rc.queue.Len() == 1 })
	h.mustSync("web")
	if st := h.getRS("web").Status; st.AvailableReplicas != 2 {
		t.Fatalf("available %d, want 2", st.AvailableReplicas)
	}

	// A spec change is observed.
	h.updateRS("web", func(rs *appsv1.ReplicaSet) { rs.Spec.MinReadySeconds = 0 })
	h.mustSync("web")
	if st := h.getRS("web").Status; st.ObservedGeneration != 2 {
		t.Errorf("observedGeneration %d, want 2", st.ObservedGeneration)
	}
}

// TestInactivePodsAreReplaced: finished pods and pods being deleted do
// not count.
func TestInactivePodsAreReplaced(t *testing.T) {
	h := newHarness(t)
	h.createRS(h.newRS("web", 2))
	h.mustSync("web")
	pods := h.activeOf("web")
	h.setPod(pods[0].Name, func(p *corev1.Pod) { p.Spec.NodeName = "n1"; p.Status.Phase = corev1.PodFailed })
	h.setPod(pods[1].Name, func(p *corev1.Pod) {
		p.Spec.NodeName = "n1"
		now := metav1.NewTime(t0)
		p.DeletionTimestamp = &now
	})
	h.mustSync("web")
	active := h.activeOf("web")
	if len(active) != 2 || active[0].Name == pods[0].Name || active[0].Name == pods[1].Name {
		t.Fatalf("active %v, want two new pods", names(active))
	}
	if st := h.getRS("web").Status; st.Replicas != 2 {
		t.Errorf("status.replicas %d, want 2", st.Replicas)
	}
}

// TestDeletingReplicaSetIsLeftAlone: a ReplicaSet being deleted creates
// and deletes nothing; its status still follows its pods.
func TestDeletingReplicaSetIsLeftAlone(t *testing.T) {
	h := newHarness(t)
	rs := h.newRS("web", 2)
	now := metav1.NewTime(t0)
	rs.DeletionTimestamp = &now
	rs.Finalizers = []string{metav1.FinalizerDeleteDependents}
	h.createRS(rs)
	h.propose(state.Create(bareOrphan("orphan", map[string]string{"app": "web"})))
	h.mustSync("web")
	if n := len(h.pods()); n != 1 {
		t.Fatalf("%d pods, want just the orphan", n)
	}
	if len(h.pod("orphan").OwnerReferences) != 0 {
		t.Error("a ReplicaSet being deleted adopted a pod")
	}
	if st := h.getRS("web").Status; st.ObservedGeneration != 1 || st.Replicas != 0 {
		t.Errorf("status %+v", st)
	}
}

// TestGoneReplicaSet: syncing a key whose ReplicaSet is gone is success.
func TestGoneReplicaSet(t *testing.T) {
	h := newHarness(t)
	if err := h.sync("nothing"); err != nil {
		t.Fatal(err)
	}
}

// TestRun: with Run, a ReplicaSet created later gets its pods, and a pod
// deleted behind its back is replaced.
func TestRun(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.rc.Run(ctx); close(done) }()
	h.createRS(h.newRS("web", 3))
	waitFor(t, "3 pods", func() bool { return len(h.pods()) == 3 })
	victim := h.pods()[0]
	h.propose(state.Delete(podKindForTest(), "default", victim.Name, 0, ""))
	waitFor(t, "a replacement", func() bool {
		ps := h.pods()
		return len(ps) == 3 && !contains(names(ps), victim.Name)
	})
	waitFor(t, "status", func() bool { return h.getRS("web").Status.Replicas == 3 })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func podKindForTest() *state.Kind { k, _ := state.KindFor("pods"); return k }

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
