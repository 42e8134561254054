package servicelb

import (
	"context"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
	lc    *Controller
}

func newHarness(t *testing.T) *harness {
	store := state.NewStore(0)
	local := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	h := &harness{t: t, ctx: context.Background(), store: store, local: local, prop: &countingProposer{inner: local}}
	h.c = controller.Context{Store: store, Proposer: h.prop, Clock: clocktesting.NewFakeClock(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))}
	h.lc = New(h.c)
	t.Cleanup(h.lc.queue.ShutDown)
	return h
}

func (h *harness) propose(ops ...state.Op) {
	h.t.Helper()
	if _, err := h.local.Propose(h.ctx, ops...); err != nil {
		h.t.Fatal(err)
	}
}

// node is a Ready node with InternalIP ip (none when empty).
func node(name, ip string) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("node-" + name)},
		Status:     corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}},
	}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
	}
	return n
}

func (h *harness) getNode(name string) *corev1.Node {
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

var ips atomic.Int64

func lbService(name string) *corev1.Service {
	ip := fmt.Sprintf("10.43.1.%d", ips.Add(1))
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("svc-" + name)},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, ClusterIP: ip, ClusterIPs: []string{ip},
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 30000 + int32(ips.Load())}},
		},
	}
}

func (h *harness) service(name string) *corev1.Service {
	h.t.Helper()
	o, ok := h.store.Get(resourceServices, "default", name)
	if !ok {
		h.t.Fatalf("service %s not found", name)
	}
	return o.(*corev1.Service)
}

func (h *harness) updateService(name string, mutate func(s *corev1.Service)) {
	h.t.Helper()
	s := h.service(name).DeepCopy()
	mutate(s)
	h.propose(state.Update(s, controller.RV(s)))
}

func (h *harness) sync(name string) {
	h.t.Helper()
	if err := h.lc.Sync(h.ctx, controller.Key("default", name)); err != nil {
		h.t.Fatal(err)
	}
}

func ingressIPs(s *corev1.Service) []string {
	out := []string{}
	for _, in := range s.Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return out
}

func (h *harness) queued() []string {
	var out []string
	for h.lc.queue.Len() > 0 {
		k, _ := h.lc.queue.Get()
		h.lc.queue.Done(k)
		out = append(out, k)
	}
	return out
}

func TestIngressFromEligibleNodes(t *testing.T) {
	h := newHarness(t)
	notReady := node("n3", "10.0.0.4")
	notReady.Status.Conditions[0].Status = corev1.ConditionFalse
	cordoned := node("n4", "10.0.0.5")
	cordoned.Spec.Unschedulable = true
	hollowA := node("n5", "10.0.0.6")
	hollowA.Annotations = map[string]string{HollowKey: "true"}
	hollowL := node("n6", "10.0.0.7")
	hollowL.Labels = map[string]string{HollowKey: "true"}
	excluded := node("n7", "10.0.0.8")
	excluded.Labels = map[string]string{LabelExcludeFromLB: ""}
	for _, n := range []*corev1.Node{node("n1", "10.0.0.3"), node("n2", "10.0.0.1"), notReady, cordoned, hollowA, hollowL, excluded, node("n8", ""), node("n9", "10.0.0.10")} {
		h.propose(state.Create(n))
	}
	h.propose(state.Create(lbService("web")))
	clusterIP := lbService("internal")
	clusterIP.Spec.Type = corev1.ServiceTypeClusterIP
	clusterIP.Spec.Ports[0].NodePort = 0
	h.propose(state.Create(clusterIP))

	h.sync("web")
	h.sync("internal")
	svc := h.service("web")
	if got := ingressIPs(svc); !reflect.DeepEqual(got, []string{"10.0.0.1", "10.0.0.3", "10.0.0.10"}) {
		t.Errorf("ingress %v, want the three eligible nodes by address", got)
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IPMode == nil || *in.IPMode != corev1.LoadBalancerIPModeVIP || in.Hostname != "" {
			t.Errorf("ingress entry %+v", in)
		}
	}
	if len(h.service("internal").Status.LoadBalancer.Ingress) != 0 {
		t.Error("a ClusterIP service got an ingress")
	}
	writes := h.prop.calls.Load()
	if writes != 1 {
		t.Errorf("%d writes, want 1", writes)
	}
	h.sync("web")
	h.sync("internal")
	if h.prop.calls.Load() != writes {
		t.Error("a second sync wrote")
	}

	// n3 becomes Ready; n1 is cordoned; n9 changes address; n2 goes.
	h.updateNode("n3", func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionTrue })
	h.updateNode("n1", func(n *corev1.Node) { n.Spec.Unschedulable = true })
	h.updateNode("n9", func(n *corev1.Node) { n.Status.Addresses[1].Address = "10.0.0.2" })
	h.propose(state.Delete(mustKind(controller.ResourceNodes), "", "n2", 0, ""))
	h.sync("web")
	if got := ingressIPs(h.service("web")); !reflect.DeepEqual(got, []string{"10.0.0.2", "10.0.0.4"}) {
		t.Errorf("after node changes: %v", got)
	}
}

func mustKind(key string) *state.Kind {
	k, ok := state.KindFor(key)
	if !ok {
		panic(key)
	}
	return k
}

func TestStopsBeingALoadBalancer(t *testing.T) {
	h := newHarness(t)
	h.propose(state.Create(node("n1", "10.0.0.1")))
	h.propose(state.Create(lbService("web")))
	h.sync("web")
	if got := ingressIPs(h.service("web")); len(got) != 1 {
		t.Fatalf("ingress %v", got)
	}
	h.updateService("web", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
	})
	h.sync("web")
	if got := h.service("web").Status.LoadBalancer.Ingress; len(got) != 0 {
		t.Errorf("ingress %v left on a NodePort service", got)
	}
	// And back.
	h.updateService("web", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeLoadBalancer })
	h.sync("web")
	if got := ingressIPs(h.service("web")); !reflect.DeepEqual(got, []string{"10.0.0.1"}) {
		t.Errorf("ingress %v", got)
	}
	// No eligible node: no address (kubectl shows <pending>).
	h.updateNode("n1", func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionUnknown })
	h.sync("web")
	if got := h.service("web").Status.LoadBalancer.Ingress; len(got) != 0 {
		t.Errorf("ingress %v without a Ready node", got)
	}
}

func TestLoadBalancerClassIsLeftAlone(t *testing.T) {
	h := newHarness(t)
	h.propose(state.Create(node("n1", "10.0.0.1")))
	svc := lbService("metal")
	class := "example.com/lb"
	svc.Spec.LoadBalancerClass = &class
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.10"}}
	h.propose(state.Create(svc))
	h.sync("metal")
	if got := ingressIPs(h.service("metal")); !reflect.DeepEqual(got, []string{"192.0.2.10"}) || h.prop.calls.Load() != 0 {
		t.Errorf("another implementation's status was changed: %v", got)
	}
}

func TestEventRouting(t *testing.T) {
	h := newHarness(t)
	lb := lbService("web")
	other := lbService("internal")
	other.Spec.Type = corev1.ServiceTypeClusterIP
	h.lc.onService(state.Event{Type: state.Added, Object: lb})
	h.lc.onService(state.Event{Type: state.Added, Object: other})
	if got := h.queued(); !reflect.DeepEqual(got, []string{"default/web"}) {
		t.Errorf("services queued %v", got)
	}
	n := node("n1", "10.0.0.1")
	h.lc.onNode(state.Event{Type: state.Added, Object: n})
	if got := h.queued(); !reflect.DeepEqual(got, []string{"default/web"}) {
		t.Errorf("new node queued %v", got)
	}
	// A change that does not move its address queues nothing.
	labelled := n.DeepCopy()
	labelled.Labels = map[string]string{"x": "y"}
	h.lc.onNode(state.Event{Type: state.Modified, Object: labelled, Prev: n})
	if got := h.queued(); len(got) != 0 {
		t.Errorf("irrelevant node change queued %v", got)
	}
	cordoned := n.DeepCopy()
	cordoned.Spec.Unschedulable = true
	h.lc.onNode(state.Event{Type: state.Modified, Object: cordoned, Prev: n})
	if got := h.queued(); !reflect.DeepEqual(got, []string{"default/web"}) {
		t.Errorf("cordon queued %v", got)
	}
	// Once it is no LoadBalancer and carries no ingress, nodes do not
	// queue it any more.
	plain := lb.DeepCopy()
	plain.Spec.Type = corev1.ServiceTypeClusterIP
	h.lc.onService(state.Event{Type: state.Modified, Object: plain, Prev: lb})
	h.queued()
	h.lc.onNode(state.Event{Type: state.Modified, Object: n, Prev: cordoned})
	if got := h.queued(); len(got) != 0 {
		t.Errorf("a ClusterIP service was queued by a node: %v", got)
	}
}

func TestRun(t *testing.T) {
	h := newHarness(t)
	h.propose(state.Create(node("n1", "10.0.0.1")))
	h.propose(state.Create(lbService("web")))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.lc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "ingress", func() bool { return reflect.DeepEqual(ingressIPs(h.service("web")), []string{"10.0.0.1"}) })
	h.propose(state.Create(node("n2", "10.0.0.2")))
	waitFor(t, "second node in the ingress", func() bool {
		return reflect.DeepEqual(ingressIPs(h.service("web")), []string{"10.0.0.1", "10.0.0.2"})
	})
	h.updateNode("n1", func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse })
	waitFor(t, "not-ready node out of the ingress", func() bool {
		return reflect.DeepEqual(ingressIPs(h.service("web")), []string{"10.0.0.2"})
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
