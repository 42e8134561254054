package apiservice

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
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

type countingProposer struct {
	inner state.Proposer
	calls atomic.Int64
}

func (p *countingProposer) Propose(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	p.calls.Add(1)
	return p.inner.Propose(ctx, ops...)
}

type harness struct {
	t     *testing.T
	ctx   context.Context
	store *state.Store
	local *state.LocalProposer
	prop  *countingProposer
	c     controller.Context
	ac    *Controller
	uids  atomic.Int64
}

func newHarness(t *testing.T, cfg Config) *harness {
	store := state.NewStore(0)
	local := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	h := &harness{t: t, ctx: context.Background(), store: store, local: local, prop: &countingProposer{inner: local}}
	h.c = controller.Context{
		Store: store, Proposer: h.prop, Clock: clocktesting.NewFakeClock(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)),
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", h.uids.Add(1))) },
	}
	h.ac = New(h.c, cfg)
	t.Cleanup(h.ac.queue.ShutDown)
	return h
}

func (h *harness) propose(ops ...state.Op) {
	h.t.Helper()
	if _, err := h.local.Propose(h.ctx, ops...); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) sync() {
	h.t.Helper()
	if err := h.ac.Sync(h.ctx); err != nil {
		h.t.Fatal(err)
	}
}

func node(name, ip string, ready bool) *corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("node-" + name)},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}},
		},
	}
}

func (h *harness) service() *corev1.Service {
	h.t.Helper()
	o, ok := h.store.Get(resourceServices, Namespace, ServiceName)
	if !ok {
		h.t.Fatal("no kubernetes service")
	}
	return o.(*corev1.Service)
}

func (h *harness) endpoints() *corev1.Endpoints {
	h.t.Helper()
	o, ok := h.store.Get(resourceEndpoints, Namespace, ServiceName)
	if !ok {
		h.t.Fatal("no kubernetes endpoints")
	}
	return o.(*corev1.Endpoints)
}

func (h *harness) slice() *discoveryv1.EndpointSlice {
	h.t.Helper()
	o, ok := h.store.Get(resourceEndpointSlices, Namespace, ServiceName)
	if !ok {
		h.t.Fatal("no kubernetes slice")
	}
	return o.(*discoveryv1.EndpointSlice)
}

func epIPs(ep *corev1.Endpoints) []string {
	out := []string{}
	for _, s := range ep.Subsets {
		for _, a := range s.Addresses {
			out = append(out, a.IP)
		}
	}
	return out
}

func sliceIPs(s *discoveryv1.EndpointSlice) []string {
	out := []string{}
	for _, e := range s.Endpoints {
		out = append(out, e.Addresses...)
	}
	return out
}

func TestCreatesServiceEndpointsAndSlice(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	hollow := node("h1", "10.0.9.9", true)
	hollow.Annotations = map[string]string{HollowKey: "true"}
	for _, n := range []*corev1.Node{node("n1", "10.0.0.2", true), node("n2", "10.0.0.1", true), node("n3", "10.0.0.3", false), hollow} {
		h.propose(state.Create(n))
	}
	h.sync()

	svc := h.service()
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.ClusterIP != "10.43.0.1" || !reflect.DeepEqual(svc.Spec.ClusterIPs, []string{"10.43.0.1"}) {
		t.Errorf("spec %+v", svc.Spec)
	}
	wantPorts := []corev1.ServicePort{{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(6443)}}
	if !reflect.DeepEqual(svc.Spec.Ports, wantPorts) || svc.Spec.Selector != nil {
		t.Errorf("ports %+v selector %v", svc.Spec.Ports, svc.Spec.Selector)
	}
	if svc.Labels["component"] != "apiserver" || svc.Labels["provider"] != "kubernetes" || svc.UID == "" || svc.Generation != 1 {
		t.Errorf("metadata %+v", svc.ObjectMeta)
	}
	if svc.Spec.SessionAffinity != corev1.ServiceAffinityNone || svc.Spec.IPFamilyPolicy == nil || *svc.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack {
		t.Errorf("defaults not applied: %+v", svc.Spec)
	}

	ep := h.endpoints()
	if got := epIPs(ep); !reflect.DeepEqual(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Errorf("endpoints %v", got)
	}
	if p := ep.Subsets[0].Ports; len(p) != 1 || p[0].Name != "https" || p[0].Port != 6443 || p[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("endpoint ports %+v", p)
	}
	if ep.Labels[LabelSkipMirror] != "true" {
		t.Errorf("endpoints labels %v", ep.Labels)
	}

	s := h.slice()
	if got := sliceIPs(s); !reflect.DeepEqual(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Errorf("slice %v", got)
	}
	if s.AddressType != discoveryv1.AddressTypeIPv4 || s.Labels[discoveryv1.LabelManagedBy] != ManagedBy || s.Labels[discoveryv1.LabelServiceName] != ServiceName {
		t.Errorf("slice %s labels %v", s.AddressType, s.Labels)
	}
	if len(s.Ports) != 1 || *s.Ports[0].Name != "https" || *s.Ports[0].Port != 6443 || !*s.Endpoints[0].Conditions.Ready || *s.Endpoints[0].NodeName != "n2" {
		t.Errorf("slice ports %+v endpoints %+v", s.Ports, s.Endpoints)
	}
	if h.prop.calls.Load() != 1 {
		t.Errorf("%d proposals, want 1", h.prop.calls.Load())
	}
	h.sync()
	if h.prop.calls.Load() != 1 {
		t.Error("a second sync wrote")
	}
	// A new leader's controller writes nothing either.
	h.ac = New(h.c, DefaultConfig())
	h.sync()
	if h.prop.calls.Load() != 1 {
		t.Error("a new controller wrote over a converged store")
	}
}

func TestAPIPortAndClusterIPConfig(t *testing.T) {
	h := newHarness(t, Config{APIPort: 7443, ClusterIP: FirstIP(netip.MustParsePrefix("10.96.0.0/12"))})
	h.propose(state.Create(node("n1", "10.0.0.1", true)))
	h.sync()
	svc := h.service()
	if svc.Spec.ClusterIP != "10.96.0.1" || svc.Spec.Ports[0].TargetPort.IntVal != 7443 || svc.Spec.Ports[0].Port != 443 {
		t.Errorf("spec %+v", svc.Spec)
	}
	if p := h.endpoints().Subsets[0].Ports[0].Port; p != 7443 {
		t.Errorf("endpoints port %d", p)
	}
	if p := *h.slice().Ports[0].Port; p != 7443 {
		t.Errorf("slice port %d", p)
	}
}

func TestRepairs(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.propose(state.Create(node("n1", "10.0.0.1", true)))
	h.sync()

	// A user turns it into a NodePort service on another port with a
	// selector and drops a label; and sets session affinity, which is
	// theirs to set.
	svc := h.service().DeepCopy()
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.Ports = []corev1.ServicePort{{Name: "https", Protocol: corev1.ProtocolTCP, Port: 8443, TargetPort: intstr.FromInt32(8443), NodePort: 31000}}
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	svc.Spec.Selector = map[string]string{"app": "x"}
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	delete(svc.Labels, "provider")
	svc.Labels["mine"] = "yes"
	svc.Annotations = map[string]string{"note": "kept"}
	h.propose(state.Update(svc, controller.RV(svc)))
	gen := h.service().Generation
	h.sync()
	got := h.service()
	if got.Spec.Type != corev1.ServiceTypeClusterIP || got.Spec.Ports[0].Port != 443 || got.Spec.Ports[0].NodePort != 0 ||
		got.Spec.Selector != nil || got.Spec.ExternalTrafficPolicy != "" {
		t.Errorf("not repaired: %+v", got.Spec)
	}
	if got.Labels["provider"] != "kubernetes" || got.Labels["mine"] != "yes" || got.Annotations["note"] != "kept" {
		t.Errorf("metadata %+v", got.ObjectMeta)
	}
	if got.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		t.Errorf("session affinity reverted")
	}
	if got.Generation != gen+1 {
		t.Errorf("generation %d, want %d", got.Generation, gen+1)
	}

	// Endpoints edited, slice edited: repaired.
	ep := h.endpoints().DeepCopy()
	ep.Subsets[0].Addresses = append(ep.Subsets[0].Addresses, corev1.EndpointAddress{IP: "192.0.2.1"})
	h.propose(state.Update(ep, controller.RV(ep)))
	s := h.slice().DeepCopy()
	s.Endpoints = nil
	delete(s.Labels, discoveryv1.LabelManagedBy)
	h.propose(state.Update(s, controller.RV(s)))
	h.sync()
	if got := epIPs(h.endpoints()); !reflect.DeepEqual(got, []string{"10.0.0.1"}) {
		t.Errorf("endpoints %v", got)
	}
	if got := sliceIPs(h.slice()); !reflect.DeepEqual(got, []string{"10.0.0.1"}) || h.slice().Labels[discoveryv1.LabelManagedBy] != ManagedBy {
		t.Errorf("slice %v labels %v", got, h.slice().Labels)
	}

	// All three deleted: recreated, same address.
	h.propose(
		state.Delete(mustKind(resourceServices), Namespace, ServiceName, 0, ""),
		state.Delete(mustKind(resourceEndpoints), Namespace, ServiceName, 0, ""),
		state.Delete(sliceKind, Namespace, ServiceName, 0, ""),
	)
	h.sync()
	if h.service().Spec.ClusterIP != "10.43.0.1" || len(epIPs(h.endpoints())) != 1 || len(sliceIPs(h.slice())) != 1 {
		t.Error("not recreated")
	}

	// A second slice claiming to be the service's: deleted.
	name, port := "https", int32(6443)
	dup := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "kubernetes-x", Namespace: Namespace, Labels: map[string]string{discoveryv1.LabelServiceName: ServiceName, discoveryv1.LabelManagedBy: ManagedBy}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
	}
	h.propose(state.Create(dup))
	h.sync()
	if _, ok := h.store.Get(resourceEndpointSlices, Namespace, "kubernetes-x"); ok {
		t.Error("duplicate slice left")
	}
}

func mustKind(key string) *state.Kind {
	k, ok := state.KindFor(key)
	if !ok {
		panic(key)
	}
	return k
}

func TestNodesChange(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.propose(state.Create(node("n1", "10.0.0.1", true)), state.Create(node("n2", "10.0.0.2", false)))
	h.sync()
	if got := epIPs(h.endpoints()); !reflect.DeepEqual(got, []string{"10.0.0.1"}) {
		t.Fatalf("endpoints %v", got)
	}
	o, _ := h.store.Get(controller.ResourceNodes, "", "n2")
	n2 := o.(*corev1.Node).DeepCopy()
	n2.Status.Conditions[0].Status = corev1.ConditionTrue
	if !nodeChanged(state.Event{Type: state.Modified, Object: n2, Prev: o}) {
		t.Error("a node becoming Ready is not a change")
	}
	h.propose(state.Update(n2, controller.RV(n2)))
	o, _ = h.store.Get(controller.ResourceNodes, "", "n1")
	relabelled := o.(*corev1.Node).DeepCopy()
	relabelled.Labels = map[string]string{"x": "y"}
	if nodeChanged(state.Event{Type: state.Modified, Object: relabelled, Prev: o}) {
		t.Error("a label change counts as a change")
	}
	h.propose(state.Delete(mustKind(controller.ResourceNodes), "", "n1", 0, ""))
	h.sync()
	if got := epIPs(h.endpoints()); !reflect.DeepEqual(got, []string{"10.0.0.2"}) {
		t.Errorf("endpoints %v", got)
	}
	if got := sliceIPs(h.slice()); !reflect.DeepEqual(got, []string{"10.0.0.2"}) {
		t.Errorf("slice %v", got)
	}
	// No Ready node: no addresses, but the objects stay.
	h.propose(state.Delete(mustKind(controller.ResourceNodes), "", "n2", 0, ""))
	h.sync()
	if ep := h.endpoints(); len(ep.Subsets) != 0 || len(h.slice().Endpoints) != 0 {
		t.Errorf("endpoints %+v", ep.Subsets)
	}
}

func TestIPv6ReplacesTheSlice(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.propose(state.Create(node("n1", "10.0.0.1", true)))
	h.sync()
	// The same store, configured for an IPv6 service range: the slice's
	// address type cannot change, so it is replaced in one proposal.
	h.propose(state.Delete(mustKind(resourceServices), Namespace, ServiceName, 0, ""))
	h.ac = New(h.c, Config{ClusterIP: FirstIP(netip.MustParsePrefix("fd00:43::/112"))})
	h.sync()
	if s := h.slice(); s.AddressType != discoveryv1.AddressTypeIPv6 || len(s.Endpoints) != 0 {
		t.Errorf("slice %s with %d endpoints", s.AddressType, len(s.Endpoints))
	}
	if svc := h.service(); svc.Spec.ClusterIP != "fd00:43::1" || svc.Spec.IPFamilies[0] != corev1.IPv6Protocol {
		t.Errorf("service %+v", svc.Spec)
	}
}

func TestRun(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.propose(state.Create(node("n1", "10.0.0.1", true)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.ac.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "endpoints", func() bool {
		o, ok := h.store.Get(resourceEndpoints, Namespace, ServiceName)
		return ok && reflect.DeepEqual(epIPs(o.(*corev1.Endpoints)), []string{"10.0.0.1"})
	})
	h.propose(state.Create(node("n2", "10.0.0.2", true)))
	waitFor(t, "second node", func() bool {
		return reflect.DeepEqual(sliceIPs(h.slice()), []string{"10.0.0.1", "10.0.0.2"}) &&
			reflect.DeepEqual(epIPs(h.endpoints()), []string{"10.0.0.1", "10.0.0.2"})
	})
	h.propose(state.Delete(mustKind(resourceServices), Namespace, ServiceName, 0, ""))
	waitFor(t, "service recreated", func() bool {
		_, ok := h.store.Get(resourceServices, Namespace, ServiceName)
		return ok
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
