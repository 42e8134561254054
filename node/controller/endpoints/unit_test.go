package endpoints

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/node/state"
)

func TestIndexFilesServicesUnderTheirRarestLabel(t *testing.T) {
	ix := newIndex()
	for i := range 50 {
		svc := newService(fmt.Sprintf("s%02d", i))
		svc.Spec.Selector = map[string]string{"tier": "web", "app": svc.Name}
		ix.setService(svc)
	}
	// All share tier=web; each must be filed under its own app label, so
	// a pod's event looks at one candidate, not fifty.
	for pair, set := range ix.svcsByPair["default"] {
		if len(set) != 1 {
			t.Errorf("%d services filed under %s=%s", len(set), pair.key, pair.value)
		}
	}
	var got []string
	ix.servicesFor("default", map[string]string{"tier": "web", "app": "s07"}, func(k string) { got = append(got, k) })
	if !reflect.DeepEqual(got, []string{"default/s07"}) {
		t.Errorf("servicesFor: %v", got)
	}
	got = nil
	ix.servicesFor("default", map[string]string{"app": "s07"}, func(k string) { got = append(got, k) })
	if len(got) != 0 {
		t.Errorf("a pod without tier=web matched %v", got)
	}
	ix.deleteService("default", "s07")
	got = nil
	ix.servicesFor("default", map[string]string{"tier": "web", "app": "s07"}, func(k string) { got = append(got, k) })
	if len(got) != 0 || ix.hasService("default", "s07") {
		t.Errorf("deleted service still matches: %v", got)
	}
	// Services without a selector, or ExternalName, are not indexed.
	none := newService("none")
	none.Spec.Selector = nil
	ix.setService(none)
	if ix.hasService("default", "none") {
		t.Error("selectorless service indexed")
	}
}

func TestIndexPodsMatching(t *testing.T) {
	ix := newIndex()
	add := func(name string, labels map[string]string) {
		p := newPod(name, "", "10.42.0.1", true)
		p.Labels = labels
		ix.setPod(p)
	}
	add("p3", map[string]string{"app": "a", "tier": "web"})
	add("p1", map[string]string{"app": "a", "tier": "web"})
	add("p2", map[string]string{"app": "a"})
	add("q", map[string]string{"app": "b", "tier": "web"})
	names := func(ps []*corev1.Pod) []string {
		out := []string{}
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	if got := names(ix.podsMatching("default", map[string]string{"app": "a", "tier": "web"})); !reflect.DeepEqual(got, []string{"p1", "p3"}) {
		t.Errorf("app=a,tier=web: %v", got)
	}
	if got := names(ix.podsMatching("default", map[string]string{"app": "a"})); !reflect.DeepEqual(got, []string{"p1", "p2", "p3"}) {
		t.Errorf("app=a: %v", got)
	}
	if got := names(ix.podsMatching("other", map[string]string{"app": "a"})); len(got) != 0 {
		t.Errorf("other namespace: %v", got)
	}
	add("p1", map[string]string{"app": "b"}) // relabelled
	if got := names(ix.podsMatching("default", map[string]string{"app": "a"})); !reflect.DeepEqual(got, []string{"p2", "p3"}) {
		t.Errorf("after relabel: %v", got)
	}
	ix.deletePod("default", "p3")
	if got := names(ix.podsMatching("default", map[string]string{"tier": "web"})); !reflect.DeepEqual(got, []string{"q"}) {
		t.Errorf("after delete: %v", got)
	}
	if len(ix.podsByPair["default"][labelPair{"app", "a"}]) != 1 {
		t.Errorf("posting lists keep deleted pods: %v", ix.podsByPair["default"])
	}
}

func TestFindPort(t *testing.T) {
	pod := newPod("p", "a", "10.42.0.1", true)
	pod.Spec.Containers[0].Ports = append(pod.Spec.Containers[0].Ports, corev1.ContainerPort{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP})
	for _, tc := range []struct {
		sp   corev1.ServicePort
		want int32
		ok   bool
	}{
		{corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(8080)}, 8080, true},
		{corev1.ServicePort{Port: 80}, 80, true}, // unset: the port
		{corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("web")}, 8080, true},
		{corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("web")}, 8080, true},
		{corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString("web")}, 0, false},
		{corev1.ServicePort{Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString("dns")}, 53, true},
		{corev1.ServicePort{Port: 53, TargetPort: intstr.FromString("dns")}, 0, false},
		{corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("nope")}, 0, false},
	} {
		got, ok := findPort(pod, &tc.sp)
		if got != tc.want || ok != tc.ok {
			t.Errorf("findPort(%+v) = %d, %v; want %d, %v", tc.sp, got, ok, tc.want, tc.ok)
		}
	}
}

func TestTruncateSubsets(t *testing.T) {
	mk := func(n int) []corev1.EndpointAddress {
		out := make([]corev1.EndpointAddress, n)
		for i := range out {
			out[i].IP = fmt.Sprintf("10.0.0.%d", i)
		}
		return out
	}
	// Ready addresses fit: not-ready ones are cut, in proportion.
	ss := []corev1.EndpointSubset{{Addresses: mk(4), NotReadyAddresses: mk(6)}, {Addresses: mk(2), NotReadyAddresses: mk(2)}}
	if !truncateSubsets(ss, 10) {
		t.Fatal("not truncated")
	}
	if got := []int{len(ss[0].Addresses), len(ss[0].NotReadyAddresses), len(ss[1].Addresses), len(ss[1].NotReadyAddresses)}; !reflect.DeepEqual(got, []int{4, 3, 2, 1}) {
		t.Errorf("kept %v, want [4 3 2 1]", got)
	}
	// Too many ready addresses: ready ones are cut, every not-ready one goes.
	ss = []corev1.EndpointSubset{{Addresses: mk(8), NotReadyAddresses: mk(1)}, {Addresses: mk(4)}}
	truncateSubsets(ss, 6)
	if got := []int{len(ss[0].Addresses), len(ss[0].NotReadyAddresses), len(ss[1].Addresses)}; !reflect.DeepEqual(got, []int{4, 0, 2}) {
		t.Errorf("kept %v, want [4 0 2]", got)
	}
	ss = []corev1.EndpointSubset{{Addresses: mk(3)}}
	if truncateSubsets(ss, 3) || len(ss[0].Addresses) != 3 {
		t.Error("truncated within capacity")
	}
}

// TestPlanSlicesFillsBeforeCreating checks the packing rules: new
// endpoints go into slices that change anyway, then into whole new
// slices, then into the unchanged slice they fill best.
func TestPlanSlicesFillsBeforeCreating(t *testing.T) {
	svc := newService("web")
	ep := func(i int) discoveryv1.Endpoint {
		r := true
		return discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.0.%d.%d", i/200, i%200)}, Conditions: discoveryv1.EndpointConditions{Ready: &r},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: fmt.Sprintf("p%d", i), UID: types.UID(fmt.Sprintf("u%d", i))}}
	}
	name, port, proto := "http", int32(8080), corev1.ProtocolTCP
	ports := []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}}
	stored := func(sliceName string, from, to int) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: sliceName, Namespace: "default", Labels: sliceLabels(svc), ResourceVersion: "1",
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(svc, serviceGVK)}}, AddressType: discoveryv1.AddressTypeIPv4, Ports: ports}
		for i := from; i < to; i++ {
			s.Endpoints = append(s.Endpoints, ep(i))
		}
		return s
	}
	// Stored: a (0..9), b (10..89). Desired: 0..4 (a loses five), 10..89, and 90..104 new.
	existing := []*discoveryv1.EndpointSlice{stored("a", 0, 10), stored("b", 10, 90)}
	g := &sliceGroup{key: slicePortsKey(ports), ports: ports}
	for i := range 105 {
		if i >= 5 && i < 10 {
			continue
		}
		g.endpoints = append(g.endpoints, ep(i))
	}
	types := []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4}
	plan := planSlices(svc, existing, types, map[discoveryv1.AddressType][]*sliceGroup{discoveryv1.AddressTypeIPv4: {g}}, 10)
	// a changes anyway: it takes five new ones; 10 more make a new slice;
	// b (80, over the limit of 10 for this plan) is trimmed to 10 and its
	// 70 others move to new slices.
	count := func(ss []*discoveryv1.EndpointSlice) []int {
		out := []int{}
		for _, s := range ss {
			out = append(out, len(s.Endpoints))
		}
		sort.Ints(out)
		return out
	}
	if got := count(plan.updates); !reflect.DeepEqual(got, []int{10, 10}) {
		t.Errorf("updates %v", got)
	}
	total := 0
	for _, s := range append(plan.updates, plan.creates...) {
		total += len(s.Endpoints)
		if len(s.Endpoints) > 10 {
			t.Errorf("a slice with %d endpoints", len(s.Endpoints))
		}
	}
	if total != 100 || len(plan.deletes) != 0 {
		t.Errorf("%d endpoints planned, %d deletes", total, len(plan.deletes))
	}

	// With room: a lone new endpoint goes into the unchanged slice it
	// fills best rather than a new slice.
	existing = []*discoveryv1.EndpointSlice{stored("a", 0, 5), stored("b", 5, 8)}
	g = &sliceGroup{key: slicePortsKey(ports), ports: ports}
	for i := range 9 {
		g.endpoints = append(g.endpoints, ep(i))
	}
	plan = planSlices(svc, existing, types, map[discoveryv1.AddressType][]*sliceGroup{discoveryv1.AddressTypeIPv4: {g}}, 10)
	if len(plan.creates) != 0 || len(plan.updates) != 1 || plan.updates[0].Name != "a" || len(plan.updates[0].Endpoints) != 6 {
		t.Errorf("plan: %d creates, updates %v", len(plan.creates), count(plan.updates))
	}
}

// TestRunReflectsReadiness runs the controller as the leader does and
// checks that a readiness change reaches the Endpoints and the slice.
func TestRunReflectsReadiness(t *testing.T) {
	h := newStore(t)
	h.node("n1", "")
	h.create(newService("web"))
	h.create(newPod("a", "web", "10.42.0.1", false))
	ec := New(h.c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ec.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	notReady := func() bool {
		o, ok := h.store.Get(ResourceEndpoints, "default", "web")
		return ok && len(o.(*corev1.Endpoints).Subsets) == 1 && len(o.(*corev1.Endpoints).Subsets[0].NotReadyAddresses) == 1
	}
	waitFor(t, "not-ready endpoints", notReady)
	h.setPod("a", setReady(true))
	waitFor(t, "ready endpoints", func() bool {
		o, _ := h.store.Get(ResourceEndpoints, "default", "web")
		ss := o.(*corev1.Endpoints).Subsets
		if len(ss) != 1 || len(ss[0].Addresses) != 1 {
			return false
		}
		eps := h.slices("web")
		return len(eps) == 1 && len(eps[0].Endpoints) == 1 && *eps[0].Endpoints[0].Conditions.Ready
	})
	h.deleteService("web")
	waitFor(t, "endpoints deleted", func() bool { return !h.hasEndpoints("web") && len(h.slices("web")) == 0 })
	h.propose(state.Create(newService("later")))
	waitFor(t, "placeholder for a new service", func() bool { return len(h.slices("later")) == 1 })
}

// TestEqualityAgreesWithSemantic checks the hand-written comparisons
// against equality.Semantic on variations of every field they look at.
func TestEqualityAgreesWithSemantic(t *testing.T) {
	s := func(v string) *string { return &v }
	bl := func(v bool) *bool { return &v }
	base := func() discoveryv1.Endpoint {
		return discoveryv1.Endpoint{
			Addresses:  []string{"10.0.0.1"},
			Conditions: discoveryv1.EndpointConditions{Ready: bl(true), Serving: bl(true), Terminating: bl(false)},
			Hostname:   s("h"), NodeName: s("n1"), Zone: s("z"),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "p", UID: "u"},
		}
	}
	variants := []func(e *discoveryv1.Endpoint){
		func(e *discoveryv1.Endpoint) {},
		func(e *discoveryv1.Endpoint) { e.Addresses = []string{"10.0.0.2"} },
		func(e *discoveryv1.Endpoint) { e.Addresses = append(e.Addresses, "10.0.0.3") },
		func(e *discoveryv1.Endpoint) { e.Conditions.Ready = bl(false) },
		func(e *discoveryv1.Endpoint) { e.Conditions.Serving = nil },
		func(e *discoveryv1.Endpoint) { e.Conditions.Terminating = bl(true) },
		func(e *discoveryv1.Endpoint) { e.Hostname = nil },
		func(e *discoveryv1.Endpoint) { e.NodeName = s("n2") },
		func(e *discoveryv1.Endpoint) { e.Zone = nil },
		func(e *discoveryv1.Endpoint) { e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: "p", UID: "v"} },
		func(e *discoveryv1.Endpoint) { e.TargetRef = nil },
		func(e *discoveryv1.Endpoint) {
			e.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z"}}}
		},
	}
	for i, vi := range variants {
		for j, vj := range variants {
			a, b := base(), base()
			vi(&a)
			vj(&b)
			if got, want := endpointEqual(&a, &b), equality.Semantic.DeepEqual(a, b); got != want {
				t.Errorf("endpoint variants %d, %d: endpointEqual %v, Semantic %v", i, j, got, want)
			}
		}
	}
	sub := func() []corev1.EndpointSubset {
		return []corev1.EndpointSubset{{
			Addresses:         []corev1.EndpointAddress{{IP: "10.0.0.1", NodeName: s("n1"), TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "p"}}},
			NotReadyAddresses: []corev1.EndpointAddress{{IP: "10.0.0.2", Hostname: "h"}},
			Ports:             []corev1.EndpointPort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, AppProtocol: s("http")}},
		}}
	}
	subVariants := []func(ss []corev1.EndpointSubset) []corev1.EndpointSubset{
		func(ss []corev1.EndpointSubset) []corev1.EndpointSubset { return ss },
		func(ss []corev1.EndpointSubset) []corev1.EndpointSubset { return nil },
		func(ss []corev1.EndpointSubset) []corev1.EndpointSubset { ss[0].Addresses[0].IP = "x"; return ss },
		func(ss []corev1.EndpointSubset) []corev1.EndpointSubset { ss[0].Addresses[0].NodeName = nil; return ss },
		func(ss []corev1.EndpointSubset) []corev1.EndpointSubset {
			ss[0].Addresses[0].TargetRef.UID = "u"
			return ss
		},
		func(ss []corev1.EndpointSubset) []corev1.EndpointSubset {
			ss[0].NotReadyAddresses[0].Hostname = ""
			return ss
		},
		func(ss []corev1.EndpointSubset) []corev1.EndpointSubset { ss[0].NotReadyAddresses = nil; return ss },
		func(ss []corev1.EndpointSubset) []corev1.EndpointSubset { ss[0].Ports[0].Port = 81; return ss },
		func(ss []corev1.EndpointSubset) []corev1.EndpointSubset { ss[0].Ports[0].AppProtocol = nil; return ss },
		func(ss []corev1.EndpointSubset) []corev1.EndpointSubset {
			ss[0].Ports[0].Protocol = corev1.ProtocolUDP
			return ss
		},
		func(ss []corev1.EndpointSubset) []corev1.EndpointSubset { return append(ss, corev1.EndpointSubset{}) },
	}
	for i, vi := range subVariants {
		for j, vj := range subVariants {
			a, b := vi(sub()), vj(sub())
			if got, want := subsetsEqual(a, b), equality.Semantic.DeepEqual(a, b); got != want {
				t.Errorf("subset variants %d, %d: subsetsEqual %v, Semantic %v", i, j, got, want)
			}
		}
	}
}

// TestBrokenWatchRelists: when a watch breaks (a snapshot restore, a slow
// reader), the view is rebuilt from a new list — what changed meanwhile,
// deletions included, is not missed — and every service is synced again.
func TestBrokenWatchRelists(t *testing.T) {
	h := newHarness(t)
	h.create(newService("web"))
	h.create(newPod("a", "web", "10.42.0.1", true))
	h.create(newPod("b", "web", "10.42.0.2", true))
	h.step()
	var pods *feed
	for _, f := range h.ec.feeds {
		if f.resource == "pods" {
			pods = f
		}
	}
	pods.w.Stop() // the watch ends; its events since are lost
	h.deletePod("b")
	h.drain()
	if q := h.queued(); len(q) != 1 || q[0] != "default/web" {
		t.Fatalf("after the relist: queued %v", q)
	}
	if err := h.ec.Sync(h.ctx, "default/web"); err != nil {
		t.Fatal(err)
	}
	if got := addrs(h.endpoints("web").Subsets[0].Addresses); !reflect.DeepEqual(got, []string{"a"}) {
		t.Errorf("addresses %v after a pod was deleted behind a broken watch", got)
	}
}
