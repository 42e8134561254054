package daemonset

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/scheduler"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const ns = "default"

// badImage never becomes ready under the fake kubelet.
const badImage = "registry.example/broken:1"

var podKind, _ = state.KindFor(controller.ResourcePods)

// faultProposer forwards to the store's proposer and counts the pods
// created through it; hook, when set, sees every call first and may fail
// it (returning handled=true).
type faultProposer struct {
	inner   state.Proposer
	mu      sync.Mutex
	hook    func(ops []state.Op) (handled bool, rs []state.Result, err error) // guarded by mu
	created *atomic.Int64
}

func (p *faultProposer) Propose(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	p.mu.Lock()
	hook := p.hook
	p.mu.Unlock()
	if hook != nil {
		if handled, rs, err := hook(ops); handled {
			return rs, err
		}
	}
	rs, err := p.inner.Propose(ctx, ops...)
	if err == nil {
		for _, op := range ops {
			if op.Type == state.OpCreate && op.Resource == controller.ResourcePods {
				p.created.Add(1)
			}
		}
	}
	return rs, err
}

func (p *faultProposer) setHook(h func(ops []state.Op) (bool, []state.Result, error)) {
	p.mu.Lock()
	p.hook = h
	p.mu.Unlock()
}

// harness is an in-memory store with the controller driven by hand, a
// scheduling round from node/scheduler standing in for the leader's
// scheduler, and a fake kubelet.
type harness struct {
	t     testing.TB
	ctx   context.Context
	store *state.Store
	local *state.LocalProposer
	prop  *faultProposer
	clock *clocktesting.FakeClock
	c     controller.Context
	dc    *Controller
	uids  atomic.Int64
	// created counts the pods the controllers created.
	created atomic.Int64
	// down names the nodes whose agent the fake kubelet does not play.
	down map[string]bool
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	store := state.NewStore(0)
	local := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	h := &harness{t: t, ctx: context.Background(), store: store, local: local, clock: clocktesting.NewFakeClock(t0)}
	h.newController()
	return h
}

// newController replaces the controller by a fresh one on the same store,
// as a new leader would start one (nothing carried over).
func (h *harness) newController() {
	h.prop = &faultProposer{inner: h.local, created: &h.created}
	h.c = controller.Context{
		Store: h.store, Proposer: h.prop, Clock: h.clock,
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", h.uids.Add(1))) },
	}
	h.dc = New(h.c)
	h.t.Cleanup(h.dc.queue.ShutDown)
}

// withEvents gives the controller an event recorder writing to the store.
func (h *harness) withEvents() {
	rec := events.New(events.Config{Proposer: h.local, Component: "daemonset-controller", Now: h.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel)
	go rec.Run(ctx)
	h.c.Events = rec
	h.dc = New(h.c)
	h.t.Cleanup(h.dc.queue.ShutDown)
}

func (h *harness) propose(ops ...state.Op) {
	h.t.Helper()
	if _, err := h.local.Propose(h.ctx, ops...); err != nil {
		h.t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// newNode is a Ready node with room for many pods.
func newNode(name string, labels map[string]string) *corev1.Node {
	l := map[string]string{corev1.LabelHostname: name}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("node-" + name), Labels: l},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"),
				corev1.ResourcePods: resource.MustParse("110"),
			},
		},
	}
}

func (h *harness) addNode(n *corev1.Node) {
	h.t.Helper()
	h.propose(state.Create(n))
}

func (h *harness) addNodes(names ...string) {
	h.t.Helper()
	for _, n := range names {
		h.addNode(newNode(n, nil))
	}
}

func (h *harness) getNode(name string) *corev1.Node {
	h.t.Helper()
	o, ok := h.store.Get(controller.ResourceNodes, "", name)
	if !ok {
		h.t.Fatalf("node %s not found", name)
	}
	return o.(*corev1.Node)
}

func (h *harness) updateNode(name string, mutate func(n *corev1.Node)) {
	h.t.Helper()
	n := h.getNode(name).DeepCopy()
	mutate(n)
	h.propose(state.Update(n, controller.RV(n)))
}

func (h *harness) deleteNode(name string) {
	h.t.Helper()
	nodeKind, _ := state.KindFor(controller.ResourceNodes)
	h.propose(state.Delete(nodeKind, "", name, 0, ""))
}

func (h *harness) nodes() []*corev1.Node {
	objs, _ := h.store.List(controller.ResourceNodes, "")
	out := make([]*corev1.Node, len(objs))
	for i, o := range objs {
		out[i] = o.(*corev1.Node)
	}
	return out
}

// newDS is a DaemonSet as the API server stores it after defaulting.
func newDS(name string) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{
					Containers:                    []corev1.Container{{Name: "main", Image: "agent:1", ImagePullPolicy: corev1.PullIfNotPresent}},
					RestartPolicy:                 corev1.RestartPolicyAlways,
					TerminationGracePeriodSeconds: ptr(int64(30)),
				},
			},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{
					MaxUnavailable: ptr(intstr.FromInt32(1)), MaxSurge: ptr(intstr.FromInt32(0)),
				},
			},
			RevisionHistoryLimit: ptr(int32(10)),
		},
	}
}

// create stores ds as the API server would create it.
func (h *harness) create(ds *appsv1.DaemonSet) {
	h.t.Helper()
	ds.UID = types.UID("ds-" + ds.Name)
	ds.CreationTimestamp = metav1.NewTime(h.clock.Now().Truncate(time.Second))
	ds.Generation = 1
	h.propose(state.Create(ds))
}

func (h *harness) get(name string) *appsv1.DaemonSet {
	h.t.Helper()
	o, ok := h.store.Get(Resource, ns, name)
	if !ok {
		h.t.Fatalf("daemonset %s not found", name)
	}
	return o.(*appsv1.DaemonSet)
}

// update changes a DaemonSet as an API client would: generation bumped
// when the spec changed.
func (h *harness) update(name string, mutate func(ds *appsv1.DaemonSet)) {
	h.t.Helper()
	cur := h.get(name)
	ds := cur.DeepCopy()
	mutate(ds)
	if !reflect.DeepEqual(cur.Spec, ds.Spec) {
		ds.Generation++
	}
	h.propose(state.Update(ds, controller.RV(cur)))
}

func (h *harness) setImage(name, image string) {
	h.update(name, func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Containers[0].Image = image })
}

func (h *harness) sync(name string) error { return h.dc.Sync(h.ctx, controller.Key(ns, name)) }

func (h *harness) mustSync(name string) {
	h.t.Helper()
	if err := h.sync(name); err != nil {
		h.t.Fatalf("sync %s: %v", name, err)
	}
}

func (h *harness) pods() []*corev1.Pod {
	objs, _ := h.store.List(controller.ResourcePods, ns)
	out := make([]*corev1.Pod, len(objs))
	for i, o := range objs {
		out[i] = o.(*corev1.Pod)
	}
	return out
}

func (h *harness) pod(name string) *corev1.Pod {
	h.t.Helper()
	o, ok := h.store.Get(controller.ResourcePods, ns, name)
	if !ok {
		h.t.Fatalf("pod %s not found", name)
	}
	return o.(*corev1.Pod)
}

// setPod changes a stored pod as its kubelet (or a user) would.
func (h *harness) setPod(name string, mutate func(p *corev1.Pod)) {
	h.t.Helper()
	p := h.pod(name).DeepCopy()
	mutate(p)
	h.propose(state.Update(p, controller.RV(p)))
}

// live lists the pods of the DaemonSet name that are neither finished nor
// being deleted, by target node.
func (h *harness) live(name string) map[string][]*corev1.Pod {
	ds := h.get(name)
	out := map[string][]*corev1.Pod{}
	for _, p := range h.pods() {
		if !controller.IsControlledBy(p, ds) || !controller.IsPodActive(p) {
			continue
		}
		node, _ := targetNode(p)
		out[node] = append(out[node], p)
	}
	return out
}

// liveNodes lists the nodes that have a live pod of name, sorted.
func (h *harness) liveNodes(name string) []string {
	var out []string
	for n := range h.live(name) {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// schedule plays the leader's scheduler for one round with node/scheduler:
// every pending pod is placed where it fits, or stays pending.
func (h *harness) schedule() {
	h.t.Helper()
	var bound, pending []*corev1.Pod
	for _, p := range h.pods() {
		switch {
		case p.Spec.NodeName != "":
			bound = append(bound, p)
		case p.DeletionTimestamp == nil && !controller.IsPodFinished(p):
			pending = append(pending, p)
		}
	}
	snap, err := scheduler.NewSnapshot(h.nodes(), bound, scheduler.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, p := range pending {
		res, err := snap.Schedule(p)
		if err != nil {
			h.t.Fatalf("scheduling %s: %v", p.Name, err)
		}
		if !res.Scheduled() {
			continue
		}
		if err := snap.Assume(p, res.NodeName); err != nil {
			h.t.Fatal(err)
		}
		next := p.DeepCopy()
		next.Spec.NodeName = res.NodeName
		h.propose(state.Update(next, controller.RV(p)))
	}
}

// kubelet plays every node's agent once: pods being deleted finish (their
// objects go); bound pending pods start and are ready at once unless their
// image is badImage. Nodes in h.down are skipped.
func (h *harness) kubelet() {
	h.t.Helper()
	for _, p := range h.pods() {
		switch {
		case h.down[p.Spec.NodeName]:
		case p.DeletionTimestamp != nil:
			h.propose(state.Delete(podKind, p.Namespace, p.Name, controller.RV(p), string(p.UID)))
		case p.Spec.NodeName != "" && p.Status.Phase == corev1.PodPending:
			h.setPod(p.Name, running(p.Spec.Containers[0].Image != badImage, h.clock.Now()))
		}
	}
}

// running marks a pod Running, ready (since at) or not.
func running(ready bool, at time.Time) func(p *corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodRunning
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.NewTime(at.Truncate(time.Second))}}
	}
}

// converge runs controller, scheduler and kubelet in turn until nothing
// changes, calling check (if set) after every step.
func (h *harness) converge(name string, check func(step string)) {
	h.t.Helper()
	for i := range 200 {
		rev := h.store.Revision()
		for _, step := range []string{"sync", "schedule", "kubelet"} {
			switch step {
			case "sync":
				h.mustSync(name)
			case "schedule":
				h.schedule()
			case "kubelet":
				h.kubelet()
			}
			if check != nil {
				check(fmt.Sprintf("round %d %s", i, step))
			}
		}
		if h.store.Revision() == rev {
			return
		}
	}
	h.t.Fatal("did not converge")
}

// rolloutStatus answers as `kubectl rollout status daemonset` does
// (DaemonSetStatusViewer).
func rolloutStatus(ds *appsv1.DaemonSet) (done bool, msg string) {
	st := ds.Status
	switch {
	case ds.Generation > st.ObservedGeneration:
		return false, "Waiting for daemon set spec update to be observed..."
	case st.UpdatedNumberScheduled < st.DesiredNumberScheduled:
		return false, fmt.Sprintf("%d out of %d new pods have been updated", st.UpdatedNumberScheduled, st.DesiredNumberScheduled)
	case st.NumberAvailable < st.DesiredNumberScheduled:
		return false, fmt.Sprintf("%d of %d updated pods are available", st.NumberAvailable, st.DesiredNumberScheduled)
	}
	return true, fmt.Sprintf("daemon set %q successfully rolled out", ds.Name)
}

func (h *harness) eventMessages() []string {
	objs, _ := h.store.List("events", ns)
	var out []string
	for _, o := range objs {
		ev := o.(*corev1.Event)
		out = append(out, ev.Type+" "+ev.Reason+": "+ev.Message)
	}
	sort.Strings(out)
	return out
}

func (h *harness) waitEvent(substr string) {
	h.t.Helper()
	waitFor(h.t, "event "+substr, func() bool {
		for _, m := range h.eventMessages() {
			if strings.Contains(m, substr) {
				return true
			}
		}
		return false
	})
}

// waitFor polls cond until it holds or a few seconds passed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
