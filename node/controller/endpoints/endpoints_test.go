package endpoints

import (
	"fmt"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

func TestReadyNotReadyTerminating(t *testing.T) {
	h := newHarness(t)
	h.create(newService("web"))
	h.create(newPod("a", "web", "10.42.0.1", true))
	h.create(newPod("b", "web", "10.42.0.2", false))
	h.create(newPod("c", "web", "", true)) // no IP yet
	h.create(newPod("other", "db", "10.42.0.9", true))
	h.step()

	ep := h.endpoints("web")
	if len(ep.Subsets) != 1 {
		t.Fatalf("subsets: %+v", ep.Subsets)
	}
	s := ep.Subsets[0]
	if got := addrs(s.Addresses); !reflect.DeepEqual(got, []string{"a"}) {
		t.Errorf("addresses %v, want [a]", got)
	}
	if got := addrs(s.NotReadyAddresses); !reflect.DeepEqual(got, []string{"b"}) {
		t.Errorf("notReadyAddresses %v, want [b]", got)
	}
	want := []corev1.EndpointPort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}}
	if !reflect.DeepEqual(s.Ports, want) {
		t.Errorf("ports %+v, want %+v", s.Ports, want)
	}
	a := s.Addresses[0]
	if a.IP != "10.42.0.1" || a.NodeName == nil || *a.NodeName != "n1" || a.TargetRef.Kind != "Pod" || a.TargetRef.UID != "pod-a" || a.TargetRef.Namespace != "default" {
		t.Errorf("address %+v", a)
	}
	if ep.Labels["team"] != "x" || ep.Labels[LabelEndpointsManagedBy] != EndpointsControllerName {
		t.Errorf("labels %v", ep.Labels)
	}
	if _, headless := ep.Labels[corev1.IsHeadlessService]; headless {
		t.Errorf("a ClusterIP service's endpoints are labelled headless: %v", ep.Labels)
	}

	slices := h.slices("web")
	if len(slices) != 1 {
		t.Fatalf("%d slices, want 1", len(slices))
	}
	sl := slices[0]
	if sl.AddressType != discoveryv1.AddressTypeIPv4 || sl.Labels[discoveryv1.LabelManagedBy] != ControllerName || sl.Labels["team"] != "x" {
		t.Errorf("slice %s: addressType %s labels %v", sl.Name, sl.AddressType, sl.Labels)
	}
	ref := metav1.GetControllerOf(sl)
	if ref == nil || ref.UID != "svc-web" || ref.Kind != "Service" || ref.APIVersion != "v1" || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
		t.Errorf("slice owner %+v", sl.OwnerReferences)
	}
	if len(sl.Name) != len("web-")+5 || sl.Name[:4] != "web-" || sl.GenerateName != "web-" {
		t.Errorf("slice name %q generateName %q", sl.Name, sl.GenerateName)
	}
	if len(sl.Ports) != 1 || *sl.Ports[0].Name != "http" || *sl.Ports[0].Port != 8080 || *sl.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("slice ports %+v", sl.Ports)
	}
	eps := sliceEndpoints(t, slices)
	if len(eps) != 2 || conds(eps["a"]) != "110" || conds(eps["b"]) != "000" {
		t.Fatalf("slice endpoints %v", eps)
	}
	if e := eps["a"]; !reflect.DeepEqual(e.Addresses, []string{"10.42.0.1"}) || *e.NodeName != "n1" || e.Zone != nil {
		t.Errorf("endpoint a %+v", e)
	}

	// b becomes ready.
	h.setPod("b", setReady(true))
	h.step()
	if got := addrs(h.endpoints("web").Subsets[0].Addresses); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("after b ready: addresses %v", got)
	}
	if eps := sliceEndpoints(t, h.slices("web")); conds(eps["b"]) != "110" {
		t.Errorf("after b ready: b %s", conds(eps["b"]))
	}

	// a starts terminating: out of Endpoints, in the slice not ready but serving.
	h.setPod("a", func(p *corev1.Pod) {
		now := metav1.NewTime(t0)
		p.DeletionTimestamp = &now
	})
	h.step()
	if got := addrs(h.endpoints("web").Subsets[0].Addresses); !reflect.DeepEqual(got, []string{"b"}) {
		t.Errorf("a terminating: addresses %v", got)
	}
	if eps := sliceEndpoints(t, h.slices("web")); conds(eps["a"]) != "011" {
		t.Errorf("a terminating: slice conditions %s, want ready=0 serving=1 terminating=1", conds(eps["a"]))
	}

	// c gets its IP; b fails; a is gone.
	h.setPod("c", func(p *corev1.Pod) { p.Status.PodIP = "10.42.0.3"; p.Status.PodIPs = []corev1.PodIP{{IP: "10.42.0.3"}} })
	h.setPod("b", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed })
	h.deletePod("a")
	h.step()
	ep = h.endpoints("web")
	if len(ep.Subsets) != 1 || !reflect.DeepEqual(addrs(ep.Subsets[0].Addresses), []string{"c"}) || len(ep.Subsets[0].NotReadyAddresses) != 0 {
		t.Errorf("final subsets %+v", ep.Subsets)
	}
	eps = sliceEndpoints(t, h.slices("web"))
	if len(eps) != 1 || conds(eps["c"]) != "110" {
		t.Errorf("final slice endpoints %v", eps)
	}
	if n := len(h.slices("web")); n != 1 {
		t.Errorf("%d slices, want the one updated in place", n)
	}
}

func TestNamedTargetPorts(t *testing.T) {
	h := newHarness(t)
	svc := newService("web")
	svc.Spec.Ports = []corev1.ServicePort{
		{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("web")},
		{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9100)},
	}
	h.create(svc)
	p1 := newPod("p1", "web", "10.42.0.1", true) // web = 8080
	p2 := newPod("p2", "web", "10.42.0.2", true)
	p2.Spec.Containers[0].Ports[0].ContainerPort = 8081
	p3 := newPod("p3", "web", "10.42.0.3", true)
	p3.Spec.Containers[0].Ports = nil // no port named web
	p4 := newPod("p4", "web", "10.42.0.4", true)
	p4.Spec.Containers[0].Ports[0].Protocol = corev1.ProtocolUDP // web/UDP does not match a TCP service port
	p5 := newPod("p5", "web", "10.42.0.5", true)
	p5.Spec.Containers[0].Ports = nil
	always := corev1.ContainerRestartPolicyAlways
	p5.Spec.InitContainers = []corev1.Container{{Name: "sidecar", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8082}}}}
	for _, p := range []*corev1.Pod{p1, p2, p3, p4, p5} {
		h.create(p)
	}
	h.step()

	type subset struct {
		ports string
		pods  []string
	}
	var got []subset
	for _, s := range h.endpoints("web").Subsets {
		got = append(got, subset{endpointPortsKey(s.Ports), addrs(s.Addresses)})
	}
	want := []subset{
		{"http/8080/TCP/,metrics/9100/TCP/,", []string{"p1"}},
		{"http/8081/TCP/,metrics/9100/TCP/,", []string{"p2"}},
		{"http/8082/TCP/,metrics/9100/TCP/,", []string{"p5"}},
		{"metrics/9100/TCP/,", []string{"p3", "p4"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("subsets\n got %v\nwant %v", got, want)
	}

	byPorts := map[string][]string{}
	for _, s := range h.slices("web") {
		for _, ep := range s.Endpoints {
			byPorts[slicePortsKey(s.Ports)] = append(byPorts[slicePortsKey(s.Ports)], ep.TargetRef.Name)
		}
	}
	wantSlices := map[string][]string{
		"http/8080/TCP/,metrics/9100/TCP/,": {"p1"},
		"http/8081/TCP/,metrics/9100/TCP/,": {"p2"},
		"http/8082/TCP/,metrics/9100/TCP/,": {"p5"},
		"metrics/9100/TCP/,":                {"p3", "p4"},
	}
	if !reflect.DeepEqual(byPorts, wantSlices) {
		t.Errorf("slices by ports\n got %v\nwant %v", byPorts, wantSlices)
	}
	if n := len(h.slices("web")); n != 4 {
		t.Errorf("%d slices, want 4 (one per port set)", n)
	}

	// p3 gains the named port: it joins p1's port set, and its old slice,
	// now empty, goes.
	h.setPod("p3", func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}}
	})
	h.step()
	byPorts = map[string][]string{}
	for _, s := range h.slices("web") {
		for _, ep := range s.Endpoints {
			byPorts[slicePortsKey(s.Ports)] = append(byPorts[slicePortsKey(s.Ports)], ep.TargetRef.Name)
		}
	}
	if got := byPorts["http/8080/TCP/,metrics/9100/TCP/,"]; !reflect.DeepEqual(got, []string{"p1", "p3"}) {
		t.Errorf("after p3 named its port: %v", byPorts)
	}
	if n := len(h.slices("web")); n != 4 {
		t.Errorf("%d slices, want 4", n)
	}
}

func TestPublishNotReadyAddresses(t *testing.T) {
	h := newHarness(t)
	svc := newService("db")
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
	svc.Spec.PublishNotReadyAddresses = true
	h.create(svc)
	h.create(newPod("db-0", "db", "10.42.0.1", false))
	term := newPod("db-1", "db", "10.42.0.2", true)
	now := metav1.NewTime(t0)
	term.DeletionTimestamp = &now
	h.create(term)
	h.step()

	ep := h.endpoints("db")
	if len(ep.Subsets) != 1 || !reflect.DeepEqual(addrs(ep.Subsets[0].Addresses), []string{"db-0", "db-1"}) || len(ep.Subsets[0].NotReadyAddresses) != 0 {
		t.Errorf("subsets %+v: want both pods ready", ep.Subsets)
	}
	if _, ok := ep.Labels[corev1.IsHeadlessService]; !ok {
		t.Errorf("headless service's endpoints lack %s: %v", corev1.IsHeadlessService, ep.Labels)
	}
	eps := sliceEndpoints(t, h.slices("db"))
	if conds(eps["db-0"]) != "100" || conds(eps["db-1"]) != "111" {
		t.Errorf("slice conditions db-0 %s db-1 %s, want 100 and 111", conds(eps["db-0"]), conds(eps["db-1"]))
	}
	if s := h.slices("db")[0]; s.Labels[corev1.IsHeadlessService] != "" {
		t.Errorf("slice labels %v", s.Labels)
	} else if _, ok := s.Labels[corev1.IsHeadlessService]; !ok {
		t.Errorf("headless service's slice lacks %s", corev1.IsHeadlessService)
	}

	// Without publishNotReadyAddresses the same pods are not ready.
	h.updateService("db", func(s *corev1.Service) { s.Spec.PublishNotReadyAddresses = false })
	h.step()
	ep = h.endpoints("db")
	if len(ep.Subsets) != 1 || len(ep.Subsets[0].Addresses) != 0 || !reflect.DeepEqual(addrs(ep.Subsets[0].NotReadyAddresses), []string{"db-0"}) {
		t.Errorf("after publishNotReadyAddresses=false: %+v", ep.Subsets)
	}
	eps = sliceEndpoints(t, h.slices("db"))
	if conds(eps["db-0"]) != "000" || conds(eps["db-1"]) != "011" {
		t.Errorf("after publishNotReadyAddresses=false: db-0 %s db-1 %s", conds(eps["db-0"]), conds(eps["db-1"]))
	}
}

func TestHostnameAndZone(t *testing.T) {
	h := newHarness(t)
	h.node("n2", "zone-a")
	svc := newService("db")
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
	svc.Spec.Ports = nil // headless without ports
	h.create(svc)
	p := newPod("db-0", "db", "10.42.0.1", true)
	p.Spec.Hostname, p.Spec.Subdomain, p.Spec.NodeName = "db-0", "db", "n2"
	h.create(p)
	q := newPod("x", "db", "10.42.0.2", true)
	q.Spec.Hostname, q.Spec.Subdomain = "x", "other" // subdomain of another service
	h.create(q)
	h.step()

	ep := h.endpoints("db")
	if len(ep.Subsets) != 1 || len(ep.Subsets[0].Ports) != 0 {
		t.Fatalf("subsets %+v", ep.Subsets)
	}
	host := map[string]string{}
	for _, a := range ep.Subsets[0].Addresses {
		host[a.TargetRef.Name] = a.Hostname
	}
	if host["db-0"] != "db-0" || host["x"] != "" {
		t.Errorf("hostnames %v", host)
	}
	eps := sliceEndpoints(t, h.slices("db"))
	if e := eps["db-0"]; e.Hostname == nil || *e.Hostname != "db-0" || e.Zone == nil || *e.Zone != "zone-a" {
		t.Errorf("db-0 endpoint %+v", e)
	}
	if e := eps["x"]; e.Hostname != nil || e.Zone != nil {
		t.Errorf("x endpoint %+v", e)
	}

	// The node moves to another zone: the slice follows.
	o, _ := h.store.Get(controller.ResourceNodes, "", "n2")
	n := o.(*corev1.Node).DeepCopy()
	n.Labels[corev1.LabelTopologyZone] = "zone-b"
	h.propose(state.Update(n, controller.RV(n)))
	h.step()
	if e := sliceEndpoints(t, h.slices("db"))["db-0"]; e.Zone == nil || *e.Zone != "zone-b" {
		t.Errorf("after the zone change: %+v", e)
	}
}

func TestSelectorChange(t *testing.T) {
	h := newHarness(t)
	h.create(newService("web"))
	h.create(newPod("a1", "a", "10.42.0.1", true))
	h.create(newPod("b1", "b", "10.42.0.2", true))
	h.updateService("web", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "a"} })
	h.step()
	if got := addrs(h.endpoints("web").Subsets[0].Addresses); !reflect.DeepEqual(got, []string{"a1"}) {
		t.Fatalf("addresses %v", got)
	}
	before := h.slices("web")
	if len(before) != 1 {
		t.Fatalf("%d slices", len(before))
	}

	h.updateService("web", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "b"} })
	h.step()
	if got := addrs(h.endpoints("web").Subsets[0].Addresses); !reflect.DeepEqual(got, []string{"b1"}) {
		t.Errorf("after the selector change: %v", got)
	}
	after := h.slices("web")
	if len(after) != 1 || after[0].Name != before[0].Name {
		t.Errorf("slices %v, want %s updated in place", sliceNames(after), before[0].Name)
	}
	if eps := sliceEndpoints(t, after); len(eps) != 1 || conds(eps["b1"]) != "110" {
		t.Errorf("slice endpoints %v", eps)
	}

	// The selector goes: the controller's slices go, the Endpoints stay
	// as they were (the user's from now on).
	epBefore := h.endpoints("web")
	h.updateService("web", func(s *corev1.Service) { s.Spec.Selector = nil })
	h.step()
	if n := len(h.slices("web")); n != 0 {
		t.Errorf("%d slices left after the selector was removed", n)
	}
	if ep := h.endpoints("web"); ep.ResourceVersion != epBefore.ResourceVersion {
		t.Errorf("Endpoints rewritten after the selector was removed")
	}
	// Pods changing no longer touch it.
	writes := h.writes()
	h.setPod("b1", setReady(false))
	h.step()
	if h.writes() != writes {
		t.Errorf("a selectorless service's endpoints were written")
	}
}

func TestExternalNameGetsNothing(t *testing.T) {
	h := newHarness(t)
	svc := newService("ext")
	svc.Spec.Type = corev1.ServiceTypeExternalName
	svc.Spec.ExternalName = "example.com"
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs, svc.Spec.IPFamilies = "", nil, nil
	h.create(svc)
	h.create(newPod("e", "ext", "10.42.0.1", true))
	h.step()
	if h.hasEndpoints("ext") || len(h.slices("ext")) != 0 || h.writes() != 0 {
		t.Errorf("an ExternalName service got endpoints (%d writes)", h.writes())
	}
}

func TestServiceDeleted(t *testing.T) {
	h := newHarness(t)
	h.create(newService("web"))
	h.create(newPod("a", "web", "10.42.0.1", true))
	h.step()
	if !h.hasEndpoints("web") || len(h.slices("web")) != 1 {
		t.Fatal("not set up")
	}
	h.deleteService("web")
	h.step()
	if h.hasEndpoints("web") {
		t.Error("Endpoints left after the service was deleted")
	}
	if n := len(h.slices("web")); n != 0 {
		t.Errorf("%d slices left after the service was deleted", n)
	}
	// A pod change afterwards writes nothing.
	writes := h.writes()
	h.setPod("a", setReady(false))
	h.step()
	if h.writes() != writes {
		t.Error("writes for a deleted service")
	}
}

func TestServiceRecreated(t *testing.T) {
	h := newHarness(t)
	h.create(newService("web"))
	h.create(newPod("a", "web", "10.42.0.1", true))
	h.step()
	old := h.slices("web")[0]
	// Deleted and created again (new UID) before the controller looks.
	h.deleteService("web")
	svc := newService("web")
	svc.UID = "svc-web-2"
	h.create(svc)
	h.step()
	slices := h.slices("web")
	if len(slices) != 1 || slices[0].UID == old.UID {
		t.Fatalf("slices %v: want one new slice", sliceNames(slices))
	}
	if ref := metav1.GetControllerOf(slices[0]); ref == nil || ref.UID != "svc-web-2" {
		t.Errorf("owner %+v", slices[0].OwnerReferences)
	}
	if eps := sliceEndpoints(t, slices); len(eps) != 1 {
		t.Errorf("endpoints %v", eps)
	}
}

func TestPlaceholderSlice(t *testing.T) {
	h := newHarness(t)
	h.create(newService("web"))
	h.step()
	slices := h.slices("web")
	if len(slices) != 1 || len(slices[0].Endpoints) != 0 || len(slices[0].Ports) != 0 {
		t.Fatalf("want one empty placeholder slice, got %+v", slices)
	}
	if ep := h.endpoints("web"); len(ep.Subsets) != 0 {
		t.Errorf("subsets %+v", ep.Subsets)
	}
	placeholder := slices[0].Name
	h.create(newPod("a", "web", "10.42.0.1", true))
	h.step()
	slices = h.slices("web")
	if len(slices) != 1 || slices[0].Name != placeholder || len(slices[0].Endpoints) != 1 || len(slices[0].Ports) != 1 {
		t.Errorf("the placeholder was not reused: %v", slices)
	}
	h.deletePod("a")
	h.step()
	slices = h.slices("web")
	if len(slices) != 1 || slices[0].Name != placeholder || len(slices[0].Endpoints) != 0 || len(slices[0].Ports) != 0 {
		t.Errorf("want the placeholder back, got %v", slices)
	}
}

func TestManyEndpointsSplitAcrossSlices(t *testing.T) {
	h := newHarness(t)
	h.create(newService("big"))
	var ops []state.Op
	for i := range 250 {
		ops = append(ops, state.Create(newPod(fmt.Sprintf("p%03d", i), "big", fmt.Sprintf("10.42.%d.%d", i/200, i%200+1), true)))
	}
	h.propose(ops...)
	h.step()

	slices := h.slices("big")
	var sizes []int
	for _, s := range slices {
		sizes = append(sizes, len(s.Endpoints))
		if len(s.Endpoints) > DefaultMaxEndpointsPerSlice {
			t.Errorf("slice %s has %d endpoints", s.Name, len(s.Endpoints))
		}
	}
	if len(sliceEndpoints(t, slices)) != 250 || len(slices) != 3 {
		t.Fatalf("%d slices with sizes %v, want 250 endpoints in 3", len(slices), sizes)
	}
	if n := len(h.endpoints("big").Subsets[0].Addresses); n != 250 {
		t.Errorf("Endpoints has %d addresses", n)
	}

	// One pod goes not ready: one slice changes, the others are untouched.
	rv := map[string]string{}
	for _, s := range slices {
		rv[s.Name] = s.ResourceVersion
	}
	h.setPod("p123", setReady(false))
	h.step()
	changed := 0
	for _, s := range h.slices("big") {
		if rv[s.Name] != s.ResourceVersion {
			changed++
		}
	}
	if changed != 1 {
		t.Errorf("%d slices rewritten for one pod, want 1", changed)
	}
	if eps := sliceEndpoints(t, h.slices("big")); conds(eps["p123"]) != "000" {
		t.Errorf("p123 %s", conds(eps["p123"]))
	}

	// Scale down to 40: the surplus slices go.
	var dels []state.Op
	for i := 40; i < 250; i++ {
		dels = append(dels, state.Delete(mustKind(controller.ResourcePods), "default", fmt.Sprintf("p%03d", i), 0, ""))
	}
	h.propose(dels...)
	h.step()
	slices = h.slices("big")
	if len(sliceEndpoints(t, slices)) != 40 || len(slices) != 1 {
		t.Errorf("after scaling down: %d slices with %d endpoints", len(slices), len(sliceEndpoints(t, slices)))
	}
}

func TestEndpointsOverCapacity(t *testing.T) {
	h := newHarness(t)
	h.create(newService("huge"))
	var ops []state.Op
	for i := range MaxEndpointsAddresses + 10 {
		ready := i%2 == 0
		ops = append(ops, state.Create(newPod(fmt.Sprintf("p%04d", i), "huge", fmt.Sprintf("10.42.%d.%d", i/250, i%250+1), ready)))
	}
	h.propose(ops...)
	h.step()
	ep := h.endpoints("huge")
	n := 0
	for _, s := range ep.Subsets {
		n += len(s.Addresses) + len(s.NotReadyAddresses)
	}
	if n != MaxEndpointsAddresses || ep.Annotations[corev1.EndpointsOverCapacity] != "truncated" {
		t.Errorf("%d addresses, annotation %q", n, ep.Annotations[corev1.EndpointsOverCapacity])
	}
	if got := len(ep.Subsets[0].Addresses); got != (MaxEndpointsAddresses+10)/2 {
		t.Errorf("%d ready addresses kept, want all %d", got, (MaxEndpointsAddresses+10)/2)
	}
	if got := len(sliceEndpoints(t, h.slices("huge"))); got != MaxEndpointsAddresses+10 {
		t.Errorf("slices hold %d endpoints, want all", got)
	}
	// Idempotent when over capacity too.
	writes := h.writes()
	if err := h.ec.Sync(h.ctx, "default/huge"); err != nil || h.writes() != writes {
		t.Errorf("second sync: err %v, %d writes", err, h.writes()-writes)
	}
}

func TestIdempotent(t *testing.T) {
	h := newHarness(t)
	for _, name := range []string{"a", "b", "c"} {
		h.create(newService(name))
		for i := range 3 {
			h.create(newPod(fmt.Sprintf("%s-%d", name, i), name, fmt.Sprintf("10.42.%d.%d", len(name), i+1+10*int(name[0]-'a')), i != 1))
		}
	}
	h.step()
	writes := h.writes()
	if writes == 0 {
		t.Fatal("nothing written")
	}
	for _, name := range []string{"a", "b", "c"} {
		if err := h.ec.Sync(h.ctx, controller.Key("default", name)); err != nil {
			t.Fatal(err)
		}
	}
	if h.writes() != writes {
		t.Errorf("a second sync wrote %d times", h.writes()-writes)
	}
	// The controller's own writes queue nothing: a pod change, one sync
	// that writes, and its watch events bring no second sync.
	h.setPod("a-1", setReady(true))
	h.drain()
	if q := h.queued(); !reflect.DeepEqual(q, []string{"default/a"}) {
		t.Fatalf("queued %v", q)
	}
	writes = h.writes()
	if err := h.ec.Sync(h.ctx, "default/a"); err != nil || h.writes() != writes+1 {
		t.Fatalf("sync: err %v, %d writes", err, h.writes()-writes)
	}
	h.drain()
	if q := h.queued(); len(q) != 0 {
		t.Errorf("the controller's own writes queued %v", q)
	}
	// A pod status change endpoints do not depend on queues nothing.
	h.setPod("a-0", func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", RestartCount: 3}}
	})
	h.drain()
	if q := h.queued(); len(q) != 0 {
		t.Errorf("an irrelevant pod change queued %v", q)
	}
	// Nor does a service status write.
	h.updateService("a", func(s *corev1.Service) {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.1"}}
	})
	h.drain()
	if q := h.queued(); len(q) != 0 {
		t.Errorf("a service status change queued %v", q)
	}
}

func TestPodEventRouting(t *testing.T) {
	h := newHarness(t)
	for _, name := range []string{"a", "b"} {
		h.create(newService(name))
	}
	c := newService("c")
	c.Spec.Selector = map[string]string{"app": "a", "tier": "web"}
	h.create(c)
	other := newService("a")
	other.Namespace = "other"
	other.UID = "svc-other-a"
	h.create(other)
	h.step()

	h.create(newPod("p", "a", "10.42.0.1", true))
	h.drain()
	if q := h.queued(); !reflect.DeepEqual(q, []string{"default/a"}) {
		t.Errorf("pod app=a queued %v", q)
	}
	h.setPod("p", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "a", "tier": "web"} })
	h.drain()
	if q := h.queued(); !reflect.DeepEqual(q, []string{"default/a", "default/c"}) {
		t.Errorf("pod app=a,tier=web queued %v", q)
	}
	// Relabelled to b: the old and new services.
	h.setPod("p", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "b"} })
	h.drain()
	if q := h.queued(); !reflect.DeepEqual(q, []string{"default/a", "default/b", "default/c"}) {
		t.Errorf("relabelled pod queued %v", q)
	}
	h.deletePod("p")
	h.drain()
	if q := h.queued(); !reflect.DeepEqual(q, []string{"default/b"}) {
		t.Errorf("deleted pod queued %v", q)
	}
}

func TestRepairsOthersChanges(t *testing.T) {
	h := newHarness(t)
	h.create(newService("web"))
	h.create(newPod("a", "web", "10.42.0.1", true))
	h.create(newPod("b", "web", "10.42.0.2", true))
	h.step()

	// Someone removes an endpoint from the slice.
	s := h.slices("web")[0].DeepCopy()
	s.Endpoints = s.Endpoints[:1]
	h.propose(state.Update(s, controller.RV(s)))
	h.step()
	if n := len(sliceEndpoints(t, h.slices("web"))); n != 2 {
		t.Errorf("slice not repaired: %d endpoints", n)
	}
	// Someone deletes the slice.
	s = h.slices("web")[0]
	h.propose(state.Delete(sliceKind, "default", s.Name, 0, ""))
	h.step()
	if n := len(sliceEndpoints(t, h.slices("web"))); n != 2 || len(h.slices("web")) != 1 {
		t.Errorf("slice not recreated")
	}
	// Someone edits the Endpoints.
	ep := h.endpoints("web").DeepCopy()
	ep.Subsets = nil
	h.propose(state.Update(ep, controller.RV(ep)))
	h.step()
	if got := addrs(h.endpoints("web").Subsets[0].Addresses); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("Endpoints not repaired: %v", got)
	}
	// Someone deletes the Endpoints.
	h.propose(state.Delete(endpointsKind, "default", "web", 0, ""))
	h.step()
	if !h.hasEndpoints("web") {
		t.Error("Endpoints not recreated")
	}
	// A user's Endpoints for a service that does not exist are left alone.
	mine := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "manual", Namespace: "default"},
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "192.0.2.7"}}}}}
	h.create(mine)
	h.step()
	if !h.hasEndpoints("manual") {
		t.Error("a user's Endpoints were deleted")
	}
}

func TestLeaderRestart(t *testing.T) {
	h := newHarness(t)
	for _, name := range []string{"a", "b", "gone"} {
		h.create(newService(name))
		for i := range 2 {
			h.create(newPod(fmt.Sprintf("%s-%d", name, i), name, fmt.Sprintf("10.42.%d.%d", name[0], i+1), true))
		}
	}
	big := newService("big")
	h.create(big)
	var ops []state.Op
	for i := range 150 {
		ops = append(ops, state.Create(newPod(fmt.Sprintf("big-%03d", i), "big", fmt.Sprintf("10.42.200.%d", i+1), true)))
	}
	h.propose(ops...)
	h.step()
	names := map[string][]string{}
	for _, s := range []string{"a", "b", "gone", "big"} {
		names[s] = sliceNames(h.slices(s))
	}

	// A new leader on the same store converges without writing.
	h.startController()
	writes := h.writes()
	h.step()
	if h.writes() != writes {
		t.Errorf("a new leader wrote %d times over a converged store", h.writes()-writes)
	}
	for s, want := range names {
		if got := sliceNames(h.slices(s)); !reflect.DeepEqual(got, want) {
			t.Errorf("slices of %s: %v, want %v", s, got, want)
		}
	}

	// While no leader ran: a service went, a pod went not ready.
	h.ec.queue.ShutDown()
	for _, f := range h.ec.feeds {
		f.w.Stop()
	}
	h.deleteService("gone")
	h.setPod("a-1", setReady(false))
	h.startController()
	h.step()
	if h.hasEndpoints("gone") || len(h.slices("gone")) != 0 {
		t.Error("the deleted service's endpoints are left")
	}
	if got := addrs(h.endpoints("a").Subsets[0].NotReadyAddresses); !reflect.DeepEqual(got, []string{"a-1"}) {
		t.Errorf("a's not-ready addresses %v", got)
	}
	if got := sliceNames(h.slices("a")); !reflect.DeepEqual(got, names["a"]) {
		t.Errorf("a's slices %v, want %v updated in place", got, names["a"])
	}
}

func TestWriteFailureRetries(t *testing.T) {
	h := newHarness(t)
	h.create(newService("web"))
	h.create(newPod("a", "web", "10.42.0.1", true))
	h.drain()
	h.prop.mu.Lock()
	h.prop.fail = state.ErrUnavailable
	h.prop.mu.Unlock()
	if err := h.ec.Sync(h.ctx, "default/web"); err == nil {
		t.Fatal("sync succeeded without a quorum")
	}
	h.prop.mu.Lock()
	h.prop.fail = nil
	h.prop.mu.Unlock()
	h.step()
	if !h.hasEndpoints("web") || len(h.slices("web")) != 1 {
		t.Error("not written after the failure")
	}
}

func sliceNames(ss []*discoveryv1.EndpointSlice) []string {
	out := []string{}
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

func TestNothingCreatedInATerminatingNamespace(t *testing.T) {
	h := newHarness(t)
	now := metav1.NewTime(t0)
	h.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default", DeletionTimestamp: &now}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}})
	h.create(newService("web"))
	h.create(newPod("a", "web", "10.42.0.1", true))
	h.step()
	if h.hasEndpoints("web") || len(h.slices("web")) != 0 {
		t.Error("endpoints created in a terminating namespace")
	}
}

// TestLeavesOthersSlicesAlone: a selectorless service with Endpoints and a
// slice managed by someone else (the kubernetes service's, kept by the
// apiservice controller) is never written.
func TestLeavesOthersSlicesAlone(t *testing.T) {
	h := newHarness(t)
	svc := newService("kubernetes")
	svc.Spec.Selector = nil
	h.create(svc)
	h.create(&corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.0.0.1"}}, Ports: []corev1.EndpointPort{{Name: "https", Port: 6443, Protocol: corev1.ProtocolTCP}}}}})
	name, port := "https", int32(6443)
	h.create(&discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "kubernetes", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "shoal.dev/apiserver"}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}},
	})
	h.step()
	h.startController() // a new leader too
	h.step()
	if h.writes() != 0 {
		t.Errorf("%d writes", h.writes())
	}
	// Deleted, the service takes its Endpoints along (as in Kubernetes),
	// not the other manager's slice.
	h.deleteService("kubernetes")
	h.step()
	if h.hasEndpoints("kubernetes") {
		t.Error("Endpoints of a deleted service left")
	}
	if len(h.slices("kubernetes")) != 1 {
		t.Error("another manager's slice was deleted")
	}
}
