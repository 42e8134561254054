package nodelifecycle

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

var nodeKind, _ = state.KindFor(controller.ResourceNodes)

type harness struct {
	t     *testing.T
	ctx   context.Context
	store *state.Store
	local *state.LocalProposer
	clock *clocktesting.FakeClock
	c     controller.Context
	lc    *Controller
	uids  atomic.Int64
}

// newHarness returns a controller on an empty in-memory store with a fake
// clock at t0 and an event recorder writing to the store, and Ready nodes
// of the given names.
func newHarness(t *testing.T, nodes ...string) *harness {
	t.Helper()
	store := state.NewStore(0)
	local := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	h := &harness{t: t, ctx: context.Background(), store: store, local: local, clock: clocktesting.NewFakeClock(t0)}
	rec := events.New(events.Config{Proposer: local, Component: "shoal-controller-manager", Now: h.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go rec.Run(ctx)
	h.c = controller.Context{
		Store: store, Proposer: local, Clock: h.clock, Events: rec,
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", h.uids.Add(1))) },
	}
	h.lc = New(h.c, Config{})
	t.Cleanup(h.lc.queue.ShutDown)
	for _, n := range nodes {
		h.addNode(n)
	}
	return h
}

func (h *harness) propose(ops ...state.Op) {
	h.t.Helper()
	if _, err := h.local.Propose(h.ctx, ops...); err != nil {
		h.t.Fatal(err)
	}
}

// addNode creates a Ready node, as membership leaves it.
func (h *harness) addNode(name string) {
	h.t.Helper()
	h.propose(state.Create(&corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("node-" + name)},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "NodeReady",
			LastTransitionTime: metav1.NewTime(t0),
		}}},
	}))
}

func (h *harness) node(name string) *corev1.Node {
	h.t.Helper()
	o, ok := h.store.Get(controller.ResourceNodes, "", name)
	if !ok {
		h.t.Fatalf("node %s not found", name)
	}
	return o.(*corev1.Node)
}

func (h *harness) updateNode(name string, mutate func(n *corev1.Node)) {
	h.t.Helper()
	n := h.node(name).DeepCopy()
	mutate(n)
	h.propose(state.Update(n, controller.RV(n)))
}

// setReady sets a node's Ready condition as membership does.
func (h *harness) setReady(name string, status corev1.ConditionStatus) {
	h.t.Helper()
	h.updateNode(name, func(n *corev1.Node) {
		for i := range n.Status.Conditions {
			if n.Status.Conditions[i].Type == corev1.NodeReady {
				n.Status.Conditions[i].Status = status
				n.Status.Conditions[i].LastTransitionTime = metav1.NewTime(h.clock.Now())
			}
		}
	})
}

func (h *harness) deleteNode(name string) {
	h.t.Helper()
	h.propose(state.Delete(nodeKind, "", name, 0, ""))
}

// newPod is a pod running on node with no tolerations at all (as if it
// bypassed the API's defaults).
func newPod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("pod-" + name), CreationTimestamp: metav1.NewTime(t0)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "main", Image: "busybox:1.36"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, HostIP: "10.0.0.1", StartTime: &metav1.Time{Time: t0}},
	}
}

// defaulted gives pod the API's defaults (the 5 s tolerations among them).
func defaulted(pod *corev1.Pod) *corev1.Pod {
	defaults.Apply(pod)
	return pod
}

// ownedBy makes pod controlled by an owner of kind (apps/v1).
func ownedBy(pod *corev1.Pod, kind string) *corev1.Pod {
	pod.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(
		&metav1.ObjectMeta{Name: "owner", UID: "owner-uid"}, appsv1.SchemeGroupVersion.WithKind(kind))}
	return pod
}

func (h *harness) createPod(pod *corev1.Pod) {
	h.t.Helper()
	h.propose(state.Create(pod))
}

func (h *harness) pod(name string) (*corev1.Pod, bool) {
	o, ok := h.store.Get(controller.ResourcePods, "default", name)
	if !ok {
		return nil, false
	}
	return o.(*corev1.Pod), true
}

func (h *harness) mustSync(key string) {
	h.t.Helper()
	if err := h.lc.sync(h.ctx, key); err != nil {
		h.t.Fatalf("sync %s: %v", key, err)
	}
}

func (h *harness) syncNode(name string) { h.t.Helper(); h.mustSync(prefixNode + name) }
func (h *harness) syncPod(name string)  { h.t.Helper(); h.mustSync(prefixPod + "default/" + name) }

// syncAllPods syncs every pod in the store.
func (h *harness) syncAllPods() {
	h.t.Helper()
	objs, _ := h.store.List(controller.ResourcePods, "")
	for _, o := range objs {
		h.mustSync(prefixPod + controller.Key(o.GetNamespace(), o.GetName()))
	}
}

// conditionTaints returns the keys of node's not-ready/unreachable taints.
func (h *harness) conditionTaints(name string) []string {
	h.t.Helper()
	var out []string
	for _, t := range h.node(name).Spec.Taints {
		if isConditionTaint(&t) {
			out = append(out, t.Key)
		}
	}
	return out
}

// mustExist fails unless pod exists and, per marked, is or is not being
// deleted.
func (h *harness) mustExist(name string, marked bool) {
	h.t.Helper()
	p, ok := h.pod(name)
	if !ok {
		h.t.Fatalf("pod %s is gone, want it kept", name)
	}
	if got := p.DeletionTimestamp != nil; got != marked {
		h.t.Fatalf("pod %s: marked for deletion %v, want %v", name, got, marked)
	}
}

func (h *harness) mustBeGone(name string) {
	h.t.Helper()
	if _, ok := h.pod(name); ok {
		h.t.Fatalf("pod %s still exists, want it deleted", name)
	}
}

// waitEvent waits for an event with reason about the object named name.
func (h *harness) waitEvent(reason, name string) *corev1.Event {
	h.t.Helper()
	var found *corev1.Event
	waitFor(h.t, fmt.Sprintf("event %s about %s", reason, name), func() bool {
		objs, _ := h.store.List("events", "")
		for _, o := range objs {
			if ev := o.(*corev1.Event); ev.Reason == reason && ev.InvolvedObject.Name == name {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

// waitFor polls cond until it holds or a few seconds passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
