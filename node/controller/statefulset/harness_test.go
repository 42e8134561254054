package statefulset

import (
	"context"
	"fmt"
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
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const ns = "default"

// recordingProposer passes proposals to the test store's proposer and
// logs the object writes ("create pods/web-0"), so tests can check the
// order of writes; hook, when set, may fail a call first.
type recordingProposer struct {
	inner state.Proposer
	mu    sync.Mutex
	log   []string                                                          // guarded by mu
	hook  func(ops []state.Op) (handled bool, rs []state.Result, err error) // guarded by mu
}

func (p *recordingProposer) Propose(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
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
		p.mu.Lock()
		for _, op := range ops {
			if op.Resource == "events" || op.Resource == "" {
				continue
			}
			verb := map[state.OpType]string{state.OpCreate: "create", state.OpUpdate: "update", state.OpDelete: "delete"}[op.Type]
			p.log = append(p.log, verb+" "+op.Resource+"/"+op.Name)
		}
		p.mu.Unlock()
	}
	return rs, err
}

func (p *recordingProposer) setHook(h func(ops []state.Op) (bool, []state.Result, error)) {
	p.mu.Lock()
	p.hook = h
	p.mu.Unlock()
}

// takeLog returns the writes logged since the last call.
func (p *recordingProposer) takeLog() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.log
	p.log = nil
	return out
}

type harness struct {
	t     *testing.T
	ctx   context.Context
	store *state.Store
	local *state.LocalProposer
	prop  *recordingProposer
	clock *clocktesting.FakeClock
	c     controller.Context
	sc    *Controller
	uids  atomic.Int64
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	store := state.NewStore(0)
	local := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	h := &harness{t: t, ctx: context.Background(), store: store, local: local,
		prop: &recordingProposer{inner: local}, clock: clocktesting.NewFakeClock(t0)}
	h.c = controller.Context{
		Store: store, Proposer: h.prop, Clock: h.clock,
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", h.uids.Add(1))) },
	}
	h.newLeader()
	h.propose(state.Create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "node-n1"}}))
	return h
}

// newLeader replaces the controller by a new one, as a new leader term
// does: nothing carries over but the store.
func (h *harness) newLeader() {
	h.sc = New(h.c)
	h.t.Cleanup(h.sc.queue.ShutDown)
}

// withEvents gives the controller an event recorder writing to the store.
func (h *harness) withEvents() {
	rec := events.New(events.Config{Proposer: h.local, Component: "statefulset-controller", Now: h.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel)
	go rec.Run(ctx)
	h.c.Events = rec
	h.newLeader()
}

func (h *harness) propose(ops ...state.Op) {
	h.t.Helper()
	if _, err := h.local.Propose(h.ctx, ops...); err != nil {
		h.t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// newSet is a StatefulSet as the API server stores it (defaulted).
func newSet(name string, replicas int32) *appsv1.StatefulSet {
	set := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("sts-" + name), Generation: 1, CreationTimestamp: metav1.NewTime(t0)},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr(replicas),
			ServiceName: name + "-svc",
			Selector:    &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name, "tier": "db"}},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "main", Image: "app:v1"}},
					Volumes:    []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			},
		},
	}
	defaults.Apply(set)
	return set
}

// claimTemplate is a volumeClaimTemplate asking for size.
func claimTemplate(name, size string) corev1.PersistentVolumeClaim {
	return corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"volume": name}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
}

func (h *harness) create(set *appsv1.StatefulSet) {
	h.t.Helper()
	h.propose(state.Create(set))
}

func (h *harness) get(name string) *appsv1.StatefulSet {
	h.t.Helper()
	o, ok := h.store.Get(Resource, ns, name)
	if !ok {
		h.t.Fatalf("statefulset %s not found", name)
	}
	return o.(*appsv1.StatefulSet)
}

// update changes a StatefulSet as an API client would (generation bumped,
// defaults applied).
func (h *harness) update(name string, mutate func(set *appsv1.StatefulSet)) {
	h.t.Helper()
	set := h.get(name).DeepCopy()
	mutate(set)
	defaults.Apply(set)
	set.Generation++
	h.propose(state.Update(set, controller.RV(set)))
}

func (h *harness) setImage(name, image string) {
	h.t.Helper()
	h.update(name, func(s *appsv1.StatefulSet) { s.Spec.Template.Spec.Containers[0].Image = image })
}

func (h *harness) scale(name string, n int32) {
	h.t.Helper()
	h.update(name, func(s *appsv1.StatefulSet) { s.Spec.Replicas = ptr(n) })
}

func (h *harness) sync(name string) error { return h.sc.Sync(h.ctx, controller.Key(ns, name)) }

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

// podNames lists the pods that exist, "(T)" marking terminating ones.
func (h *harness) podNames() string {
	var out []string
	for _, p := range h.pods() {
		n := p.Name
		if p.DeletionTimestamp != nil {
			n += "(T)"
		}
		out = append(out, n)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func (h *harness) pod(name string) *corev1.Pod {
	h.t.Helper()
	o, ok := h.store.Get(controller.ResourcePods, ns, name)
	if !ok {
		h.t.Fatalf("pod %s not found (pods: %s)", name, h.podNames())
	}
	return o.(*corev1.Pod)
}

func (h *harness) claim(name string) (*corev1.PersistentVolumeClaim, bool) {
	o, ok := h.store.Get(resourceClaims, ns, name)
	if !ok {
		return nil, false
	}
	return o.(*corev1.PersistentVolumeClaim), true
}

func (h *harness) claimNames() string {
	objs, _ := h.store.List(resourceClaims, ns)
	var out []string
	for _, o := range objs {
		out = append(out, o.GetName())
	}
	return strings.Join(out, " ")
}

// setPod changes a stored pod as its kubelet (or a user) would.
func (h *harness) setPod(name string, mutate func(p *corev1.Pod)) {
	h.t.Helper()
	p := h.pod(name).DeepCopy()
	mutate(p)
	h.propose(state.Update(p, controller.RV(p)))
}

// run plays scheduler and kubelet: the pod is bound to n1 and Running,
// Ready since now when ready.
func (h *harness) run(name string, ready bool) {
	h.t.Helper()
	now := metav1.NewTime(h.clock.Now())
	h.setPod(name, func(p *corev1.Pod) {
		p.Spec.NodeName = "n1"
		p.Status.Phase = corev1.PodRunning
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: now}}
	})
}

// terminate plays the kubelet finishing a graceful deletion: the
// terminating pod is removed.
func (h *harness) terminate(name string) {
	h.t.Helper()
	p := h.pod(name)
	if p.DeletionTimestamp == nil {
		h.t.Fatalf("pod %s is not terminating", name)
	}
	h.propose(state.Delete(podKind(), ns, name, controller.RV(p), string(p.UID)))
}

// userDelete deletes a pod as kubectl delete would (gracefully).
func (h *harness) userDelete(name string) {
	h.t.Helper()
	if err := controller.DeletePod(h.ctx, controller.Context{Store: h.store, Proposer: h.local, Clock: h.clock}.WithDefaults(), h.pod(name)); err != nil {
		h.t.Fatal(err)
	}
}

func podKind() *state.Kind { k, _ := state.KindFor(controller.ResourcePods); return k }

// eventMessages lists the stored events' "reason: message", sorted.
func (h *harness) eventMessages() []string {
	objs, _ := h.store.List("events", ns)
	var out []string
	for _, o := range objs {
		ev := o.(*corev1.Event)
		out = append(out, ev.Reason+": "+ev.Message)
	}
	sort.Strings(out)
	return out
}

// waitFor polls cond until it holds or a few seconds passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// expectPods fails unless the existing pods are exactly want.
func (h *harness) expectPods(step, want string) {
	h.t.Helper()
	if got := h.podNames(); got != want {
		h.t.Fatalf("%s: pods %q, want %q", step, got, want)
	}
}
