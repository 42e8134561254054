package deployment

import (
	"context"
	"errors"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/replicaset"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const ns = "default"

// badImage never becomes ready under the fake kubelet.
const badImage = "registry.example/broken:1"

// switchProposer forwards to the store's proposer; after cut is set,
// every write fails as on a leader that lost its leadership (nothing is
// applied).
type switchProposer struct {
	inner   state.Proposer
	writes  atomic.Int64
	cutAt   atomic.Int64 // fail writes numbered above this (0: never)
	created *sync.Map    // resource → *atomic.Int64: objects created
}

var errNotLeader = fmt.Errorf("%w: not the leader any more", state.ErrUnavailable)

func (p *switchProposer) Propose(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	n := p.writes.Add(1)
	if cut := p.cutAt.Load(); cut > 0 && n > cut {
		return nil, errNotLeader
	}
	rs, err := p.inner.Propose(ctx, ops...)
	if err == nil {
		for _, op := range ops {
			if op.Type == state.OpCreate {
				n, _ := p.created.LoadOrStore(op.Resource, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}
	}
	return rs, err
}

// harness is an in-memory store with both controllers driven by hand and
// a fake kubelet.
type harness struct {
	t     testing.TB
	ctx   context.Context
	store *state.Store
	local *state.LocalProposer
	clock *clocktesting.FakeClock
	uids  *atomic.Int64
	dc    *Controller
	rc    *replicaset.Controller
	prop  *switchProposer
	// created counts the objects the controllers created, by resource.
	created sync.Map
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	store := state.NewStore(0)
	local := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	h := &harness{t: t, ctx: context.Background(), store: store, local: local, clock: clocktesting.NewFakeClock(t0), uids: new(atomic.Int64)}
	h.newControllers()
	h.propose(state.Create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "node-n1"}}))
	return h
}

// newControllers starts a fresh pair of controllers on the same store,
// as a new leader would (nothing carried over).
func (h *harness) newControllers() *switchProposer {
	p := &switchProposer{inner: h.local, created: &h.created}
	c := controller.Context{
		Store: h.store, Proposer: p, Clock: h.clock,
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", h.uids.Add(1))) },
	}
	h.dc, h.rc, h.prop = New(c), replicaset.New(c), p
	h.t.Cleanup(h.dc.queue.ShutDown)
	return p
}

func (h *harness) withEvents() *events.Recorder {
	rec := events.New(events.Config{Proposer: h.local, Component: "deployment-controller", Now: h.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel)
	go rec.Run(ctx)
	c := h.dc.c
	c.Events = rec
	h.dc = New(c)
	h.t.Cleanup(h.dc.queue.ShutDown)
	return rec
}

func (h *harness) propose(ops ...state.Op) {
	h.t.Helper()
	if _, err := h.local.Propose(h.ctx, ops...); err != nil {
		h.t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// newDeployment is a Deployment as the API server stores it after
// defaulting.
func newDeployment(name string, replicas int32, image string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{
					Containers:                    []corev1.Container{{Name: "main", Image: image, ImagePullPolicy: corev1.PullIfNotPresent}},
					RestartPolicy:                 corev1.RestartPolicyAlways,
					TerminationGracePeriodSeconds: ptr(int64(30)),
				},
			},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxSurge: ptr(intstr.FromString("25%")), MaxUnavailable: ptr(intstr.FromString("25%")),
				},
			},
			RevisionHistoryLimit:    ptr(int32(10)),
			ProgressDeadlineSeconds: ptr(int32(600)),
		},
	}
}

// create stores d as the API server would create it.
func (h *harness) create(d *appsv1.Deployment) {
	h.t.Helper()
	d.UID = types.UID("deploy-" + d.Name)
	d.CreationTimestamp = metav1.NewTime(h.clock.Now().Truncate(time.Second))
	d.Generation = 1
	h.propose(state.Create(d))
}

func (h *harness) get(name string) *appsv1.Deployment {
	h.t.Helper()
	o, ok := h.store.Get(Resource, ns, name)
	if !ok {
		h.t.Fatalf("deployment %s not found", name)
	}
	return o.(*appsv1.Deployment)
}

// update changes a Deployment as an API client would: generation bumped
// when the spec changed.
func (h *harness) update(name string, mutate func(d *appsv1.Deployment)) {
	h.t.Helper()
	cur := h.get(name)
	d := cur.DeepCopy()
	mutate(d)
	if !reflect.DeepEqual(cur.Spec, d.Spec) {
		d.Generation++
	}
	h.propose(state.Update(d, controller.RV(cur)))
}

func (h *harness) setImage(name, image string) {
	h.update(name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = image })
}

// undo does what `kubectl rollout undo --to-revision` does client-side:
// the revision's ReplicaSet template, hash label removed, patched in.
func (h *harness) undo(name string, revision int64) {
	h.t.Helper()
	for _, rs := range h.replicaSets(name) {
		if Revision(rs) == revision {
			h.update(name, func(d *appsv1.Deployment) {
				tmpl := rs.Spec.Template.DeepCopy()
				delete(tmpl.Labels, TemplateHashLabel)
				d.Spec.Template = *tmpl
			})
			return
		}
	}
	h.t.Fatalf("no replicaset with revision %d", revision)
}

// replicaSets are the ReplicaSets controlled by the Deployment name, by
// revision.
func (h *harness) replicaSets(name string) []*appsv1.ReplicaSet {
	d := h.get(name)
	objs, _ := h.store.List(replicaset.Resource, ns)
	var out []*appsv1.ReplicaSet
	for _, o := range objs {
		if controller.IsControlledBy(o, d) {
			out = append(out, o.(*appsv1.ReplicaSet))
		}
	}
	sortByRevision(out)
	return out
}

func (h *harness) pods() []*corev1.Pod {
	objs, _ := h.store.List(controller.ResourcePods, ns)
	out := make([]*corev1.Pod, len(objs))
	for i, o := range objs {
		out[i] = o.(*corev1.Pod)
	}
	return out
}

// syncRS syncs every ReplicaSet once.
func (h *harness) syncRS() error {
	objs, _ := h.store.List(replicaset.Resource, ns)
	var errs []error
	for _, o := range objs {
		errs = append(errs, h.rc.Sync(h.ctx, controller.Key(ns, o.GetName())))
	}
	return errors.Join(errs...)
}

func (h *harness) syncD(name string) error {
	return h.dc.Sync(h.ctx, controller.Key(ns, name))
}

// settle syncs the controllers (not the kubelet) until nothing changes.
func (h *harness) settle(name string) {
	h.t.Helper()
	for range 100 {
		rev := h.store.Revision()
		_ = h.syncRS()
		_ = h.syncD(name)
		_ = h.syncRS()
		if h.store.Revision() == rev {
			if err := h.syncD(name); err != nil {
				h.t.Fatalf("settled, but sync fails: %v", err)
			}
			return
		}
	}
	h.t.Fatal("controllers did not settle")
}

// kubelet plays every node's agent once: pods being deleted finish; new
// pods start on n1 and become ready at once unless their image is
// badImage or ready says no.
func (h *harness) kubelet(ready func(p *corev1.Pod) bool) {
	h.t.Helper()
	podKind, _ := state.KindFor("pods")
	for _, p := range h.pods() {
		switch {
		case p.DeletionTimestamp != nil:
			h.propose(state.Delete(podKind, p.Namespace, p.Name, controller.RV(p), string(p.UID)))
		case p.Status.Phase == corev1.PodPending || p.Status.Phase == corev1.PodRunning && !controller.IsPodReady(p):
			ok := p.Spec.Containers[0].Image != badImage && (ready == nil || ready(p))
			if p.Status.Phase == corev1.PodRunning && !ok {
				continue
			}
			next := p.DeepCopy()
			next.Spec.NodeName = "n1"
			next.Status.Phase = corev1.PodRunning
			st := corev1.ConditionFalse
			if ok {
				st = corev1.ConditionTrue
			}
			next.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.NewTime(h.clock.Now().Truncate(time.Second))}}
			h.propose(state.Update(next, controller.RV(p)))
		}
	}
}

// rollout runs controllers and kubelet until nothing changes.
func (h *harness) rollout(name string) {
	h.t.Helper()
	for range 100 {
		rev := h.store.Revision()
		h.settle(name)
		h.kubelet(nil)
		h.settle(name)
		if h.store.Revision() == rev {
			return
		}
	}
	h.t.Fatal("rollout did not finish")
}

// createdCount is how many objects of resource the controllers created.
func (h *harness) createdCount(resource string) int64 {
	n, ok := h.created.Load(resource)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

func condOf(d *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	return getCondition(d.Status, t)
}

// rolloutStatus answers as `kubectl rollout status` does: done, or the
// error it would exit with.
func rolloutStatus(d *appsv1.Deployment) (bool, error) {
	if d.Generation > d.Status.ObservedGeneration {
		return false, nil
	}
	if c := condOf(d, appsv1.DeploymentProgressing); c != nil && c.Reason == ReasonProgressDeadline {
		return false, fmt.Errorf("deployment %q exceeded its progress deadline", d.Name)
	}
	r := deploymentReplicas(d)
	st := d.Status
	return st.UpdatedReplicas >= r && st.Replicas <= st.UpdatedReplicas && st.AvailableReplicas >= st.UpdatedReplicas, nil
}

// podsByRS counts active pods per controlling ReplicaSet name.
func (h *harness) podsByRS() map[string]int {
	owners := map[types.UID]string{}
	objs, _ := h.store.List(replicaset.Resource, ns)
	for _, o := range objs {
		owners[o.GetUID()] = o.GetName()
	}
	out := map[string]int{}
	for _, p := range h.pods() {
		if ref := controller.ControllerOf(p); ref != nil && controller.IsPodActive(p) {
			out[owners[ref.UID]]++
		}
	}
	return out
}

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

func (h *harness) waitEvent(substr string) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, m := range h.eventMessages() {
			if strings.Contains(m, substr) {
				return
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no event %q in %q", substr, h.eventMessages())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
