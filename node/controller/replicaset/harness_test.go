package replicaset

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// faultProposer wraps the test store's proposer: hook, when set, sees
// every call first and may fail it (returning handled=true).
type faultProposer struct {
	inner state.Proposer
	mu    sync.Mutex
	hook  func(ops []state.Op) (handled bool, rs []state.Result, err error) // guarded by mu
	calls atomic.Int64
}

func (p *faultProposer) Propose(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	p.calls.Add(1)
	p.mu.Lock()
	hook := p.hook
	p.mu.Unlock()
	if hook != nil {
		if handled, rs, err := hook(ops); handled {
			return rs, err
		}
	}
	return p.inner.Propose(ctx, ops...)
}

func (p *faultProposer) setHook(h func(ops []state.Op) (bool, []state.Result, error)) {
	p.mu.Lock()
	p.hook = h
	p.mu.Unlock()
}

type harness struct {
	t     *testing.T
	ctx   context.Context
	store *state.Store
	local *state.LocalProposer
	prop  *faultProposer
	clock *clocktesting.FakeClock
	c     controller.Context
	rc    *Controller
	uids  atomic.Int64
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	store := state.NewStore(0)
	local := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	h := &harness{t: t, ctx: context.Background(), store: store, local: local, prop: &faultProposer{inner: local}, clock: clocktesting.NewFakeClock(t0)}
	h.c = controller.Context{
		Store: store, Proposer: h.prop, Clock: h.clock,
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", h.uids.Add(1))) },
	}
	h.rc = New(h.c)
	t.Cleanup(h.rc.queue.ShutDown)
	h.node("n1")
	return h
}

func (h *harness) propose(ops ...state.Op) {
	h.t.Helper()
	if _, err := h.local.Propose(h.ctx, ops...); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) node(name string) {
	h.propose(state.Create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("node-" + name)}}))
}

func (h *harness) newRS(name string, replicas int32) *appsv1.ReplicaSet {
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("rs-" + name), Generation: 1, CreationTimestamp: metav1.NewTime(t0)},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name, "tier": "web"}, Annotations: map[string]string{"note": "x"}},
				Spec: corev1.PodSpec{
					Containers:    []corev1.Container{{Name: "main", Image: "busybox:1.36"}},
					RestartPolicy: corev1.RestartPolicyAlways,
				},
			},
		},
	}
	return rs
}

func (h *harness) createRS(rs *appsv1.ReplicaSet) {
	h.t.Helper()
	h.propose(state.Create(rs))
}

func (h *harness) getRS(name string) *appsv1.ReplicaSet {
	h.t.Helper()
	o, ok := h.store.Get(Resource, "default", name)
	if !ok {
		h.t.Fatalf("replicaset %s not found", name)
	}
	return o.(*appsv1.ReplicaSet)
}

// updateRS changes a ReplicaSet as an API client would (generation bumped).
func (h *harness) updateRS(name string, mutate func(rs *appsv1.ReplicaSet)) {
	h.t.Helper()
	rs := h.getRS(name).DeepCopy()
	mutate(rs)
	rs.Generation++
	h.propose(state.Update(rs, controller.RV(rs)))
}

func (h *harness) sync(name string) error {
	return h.rc.Sync(h.ctx, controller.Key("default", name))
}

func (h *harness) mustSync(name string) {
	h.t.Helper()
	if err := h.sync(name); err != nil {
		h.t.Fatalf("sync %s: %v", name, err)
	}
}

// pods lists the pods in the default namespace, by name.
func (h *harness) pods() []*corev1.Pod {
	objs, _ := h.store.List(controller.ResourcePods, "default")
	out := make([]*corev1.Pod, len(objs))
	for i, o := range objs {
		out[i] = o.(*corev1.Pod)
	}
	return out
}

// activeOf lists the active pods controlled by the ReplicaSet named name.
func (h *harness) activeOf(name string) []*corev1.Pod {
	rs := h.getRS(name)
	var out []*corev1.Pod
	for _, p := range h.pods() {
		if controller.IsControlledBy(p, rs) && controller.IsPodActive(p) {
			out = append(out, p)
		}
	}
	return out
}

func (h *harness) pod(name string) *corev1.Pod {
	h.t.Helper()
	o, ok := h.store.Get(controller.ResourcePods, "default", name)
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

// run marks pod running on node; ready since readyAt when ready.
func run(node string, ready bool, readyAt time.Time) func(p *corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.NodeName = node
		p.Status.Phase = corev1.PodRunning
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.NewTime(readyAt)}}
	}
}

func names(pods []*corev1.Pod) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.Name
	}
	sort.Strings(out)
	return out
}

// bareOrphan is a pod no controller owns.
func bareOrphan(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("pod-" + name), Labels: labels, CreationTimestamp: metav1.NewTime(t0)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "busybox:1.36"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
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
