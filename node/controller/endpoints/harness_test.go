package endpoints

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// countingProposer wraps the test store's proposer and counts the
// controller's proposals and ops.
type countingProposer struct {
	inner state.Proposer
	calls atomic.Int64
	ops   atomic.Int64
	mu    sync.Mutex
	fail  error // guarded by mu: when set, every proposal fails with it
}

func (p *countingProposer) Propose(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	p.calls.Add(1)
	p.ops.Add(int64(len(ops)))
	p.mu.Lock()
	fail := p.fail
	p.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	return p.inner.Propose(ctx, ops...)
}

type harness struct {
	t     testing.TB
	ctx   context.Context
	store *state.Store
	local *state.LocalProposer
	prop  *countingProposer
	clock *clocktesting.FakeClock
	c     controller.Context
	ec    *Controller
	uids  atomic.Int64
}

// newHarness returns a store with node n1 and a controller whose index is
// loaded (start) but that runs no goroutines: tests drive it with step.
func newHarness(t testing.TB) *harness {
	t.Helper()
	h := newStore(t)
	h.node("n1", "")
	h.startController()
	return h
}

// newStore returns a harness with an empty store and no controller.
func newStore(t testing.TB) *harness {
	store := state.NewStore(0)
	local := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	h := &harness{t: t, ctx: context.Background(), store: store, local: local, prop: &countingProposer{inner: local}, clock: clocktesting.NewFakeClock(t0)}
	h.c = controller.Context{
		Store: store, Proposer: h.prop, Clock: h.clock,
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", h.uids.Add(1))) },
	}
	return h
}

// startController makes a new controller (a new leader) on the store.
func (h *harness) startController() {
	if h.ec != nil {
		for _, f := range h.ec.feeds {
			f.w.Stop()
		}
		h.ec.queue.ShutDown()
	}
	h.ec = New(h.c)
	h.ec.start()
	ec := h.ec
	h.t.Cleanup(func() {
		ec.queue.ShutDown()
		for _, f := range ec.feeds {
			f.w.Stop()
		}
	})
}

// drain hands the controller every watch event delivered so far.
func (h *harness) drain() {
	for _, f := range h.ec.feeds {
		f.drain()
	}
}

// step delivers pending events and syncs queued services until nothing is
// left, failing on a sync error or when it never settles.
func (h *harness) step() {
	h.t.Helper()
	for i := 0; ; i++ {
		h.drain()
		if h.ec.queue.Len() == 0 {
			return
		}
		if i > 100000 {
			h.t.Fatal("the controller never settled")
		}
		key, _ := h.ec.queue.Get()
		err := h.ec.sync(h.ctx, key)
		h.ec.queue.Forget(key)
		h.ec.queue.Done(key)
		if err != nil {
			h.t.Fatalf("sync %s: %v", key, err)
		}
	}
}

// queued returns the queued keys (and empties the queue).
func (h *harness) queued() []string {
	var out []string
	for h.ec.queue.Len() > 0 {
		k, _ := h.ec.queue.Get()
		h.ec.queue.Done(k)
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (h *harness) propose(ops ...state.Op) {
	h.t.Helper()
	if _, err := h.local.Propose(h.ctx, ops...); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) node(name, zone string) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("node-" + name)}}
	if zone != "" {
		n.Labels = map[string]string{corev1.LabelTopologyZone: zone}
	}
	h.propose(state.Create(n))
}

// serviceIPs hands out distinct cluster IPs (the store refuses duplicates).
var serviceIPs atomic.Int64

// newService is a ClusterIP service selecting app=<name>, port http 80 →
// targetPort 8080.
func newService(name string) *corev1.Service {
	n := serviceIPs.Add(1)
	ip := fmt.Sprintf("10.43.%d.%d", n/250%250, n%250+1)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("svc-" + name), Labels: map[string]string{"team": "x"}},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  ip,
			ClusterIPs: []string{ip},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Selector:   map[string]string{"app": name},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

func (h *harness) create(obj state.Object) {
	h.t.Helper()
	h.propose(state.Create(obj))
}

func (h *harness) service(name string) *corev1.Service {
	h.t.Helper()
	o, ok := h.store.Get(resourceServices, "default", name)
	if !ok {
		h.t.Fatalf("service %s not found", name)
	}
	return o.(*corev1.Service)
}

// updateService changes a stored service as an API client would.
func (h *harness) updateService(name string, mutate func(s *corev1.Service)) {
	h.t.Helper()
	s := h.service(name).DeepCopy()
	mutate(s)
	h.propose(state.Update(s, controller.RV(s)))
}

func (h *harness) deleteService(name string) {
	h.t.Helper()
	s := h.service(name)
	h.propose(state.Delete(mustKind(resourceServices), "default", name, 0, string(s.UID)))
}

func mustKind(key string) *state.Kind {
	k, ok := state.KindFor(key)
	if !ok {
		panic(key)
	}
	return k
}

// newPod is a running pod on n1 with IP ip labelled app=<app>, ready or
// not, whose container names port 8080 "web".
func newPod(name, app, ip string, ready bool) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("pod-" + name), Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			NodeName:   "n1",
			Containers: []corev1.Container{{Name: "main", Image: "busybox", Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}},
		},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
		},
	}
	if ip != "" {
		p.Status.PodIP = ip
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	return p
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

func (h *harness) deletePod(name string) {
	h.t.Helper()
	h.propose(state.Delete(mustKind(controller.ResourcePods), "default", name, 0, ""))
}

func setReady(ready bool) func(p *corev1.Pod) {
	return func(p *corev1.Pod) {
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	}
}

func (h *harness) endpoints(name string) *corev1.Endpoints {
	h.t.Helper()
	o, ok := h.store.Get(ResourceEndpoints, "default", name)
	if !ok {
		h.t.Fatalf("endpoints %s not found", name)
	}
	return o.(*corev1.Endpoints)
}

func (h *harness) hasEndpoints(name string) bool {
	_, ok := h.store.Get(ResourceEndpoints, "default", name)
	return ok
}

// slices lists the stored EndpointSlices labelled for service svc, by name.
func (h *harness) slices(svc string) []*discoveryv1.EndpointSlice {
	objs, _ := h.store.List(ResourceEndpointSlices, "default")
	var out []*discoveryv1.EndpointSlice
	for _, o := range objs {
		s := o.(*discoveryv1.EndpointSlice)
		if s.Labels[discoveryv1.LabelServiceName] == svc {
			out = append(out, s)
		}
	}
	return out
}

// writes is how many proposals the controller made so far.
func (h *harness) writes() int64 { return h.prop.calls.Load() }

// addrs returns the pod names of Endpoints addresses.
func addrs(as []corev1.EndpointAddress) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.TargetRef.Name)
	}
	return out
}

// sliceEndpoints maps pod name → endpoint over slices.
func sliceEndpoints(t testing.TB, slices []*discoveryv1.EndpointSlice) map[string]discoveryv1.Endpoint {
	t.Helper()
	out := map[string]discoveryv1.Endpoint{}
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			if _, dup := out[ep.TargetRef.Name]; dup {
				t.Fatalf("pod %s is in more than one slice", ep.TargetRef.Name)
			}
			out[ep.TargetRef.Name] = ep
		}
	}
	return out
}

// conds renders an endpoint's conditions as "ready/serving/terminating"
// with 1 and 0.
func conds(ep discoveryv1.Endpoint) string {
	b := func(p *bool) string {
		switch {
		case p == nil:
			return "-"
		case *p:
			return "1"
		}
		return "0"
	}
	return b(ep.Conditions.Ready) + b(ep.Conditions.Serving) + b(ep.Conditions.Terminating)
}

// waitFor polls cond until it holds or a few seconds passed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
