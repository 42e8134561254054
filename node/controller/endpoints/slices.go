package endpoints

import (
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/shoal-dev/shoal/node/controller"
)

// addressTypesOf lists the EndpointSlice address types svc gets, IPv4
// first: one per IP family of the service; without families, its cluster
// IP's; for a headless service without families, IPv4 and — only when one
// of its pods has an IPv6 address — IPv6 (Kubernetes assumes both there;
// an empty IPv6 placeholder is noise on single-stack clusters).
func addressTypesOf(svc *corev1.Service, pods []*corev1.Pod) []discoveryv1.AddressType {
	var v4, v6 bool
	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case corev1.IPv4Protocol:
			v4 = true
		case corev1.IPv6Protocol:
			v6 = true
		}
	}
	if !v4 && !v6 {
		if !isHeadless(svc) {
			v6 = primaryIsIPv6(svc, nil)
			v4 = !v6
		} else {
			v4 = true
			for _, p := range pods {
				if podIPOfFamily(p, true) != "" {
					v6 = true
					break
				}
			}
		}
	}
	var out []discoveryv1.AddressType
	if v4 {
		out = append(out, discoveryv1.AddressTypeIPv4)
	}
	if v6 {
		out = append(out, discoveryv1.AddressTypeIPv6)
	}
	return out
}

// sliceGroup is the desired content of the slices of one address type and
// one set of ports.
type sliceGroup struct {
	key       string
	ports     []discoveryv1.EndpointPort
	endpoints []discoveryv1.Endpoint
}

// desiredSliceGroups computes the endpoints of svc's slices of address
// type at, grouped by the ports each pod resolves (sorted by key), as
// Kubernetes' EndpointSlice controller does: every pod that is in service
// or terminating (podIncluded) with an address of the type; conditions
// ready (Ready condition true and not terminating, or the service publishes
// not-ready addresses), serving (Ready condition) and terminating; zone
// from the pod's node.
func desiredSliceGroups(svc *corev1.Service, pods []*corev1.Pod, at discoveryv1.AddressType, zoneOf func(node string) string) []*sliceGroup {
	groups := map[string]*sliceGroup{}
	v6 := at == discoveryv1.AddressTypeIPv6
	for _, pod := range pods {
		if !podIncluded(pod, true) {
			continue
		}
		var addrs []string
		for _, a := range podIPsOf(pod) {
			if a.Is6() == v6 {
				addrs = append(addrs, a.String())
			}
		}
		if len(addrs) == 0 {
			continue
		}
		ports := slicePorts(svc, pod)
		key := slicePortsKey(ports)
		g := groups[key]
		if g == nil {
			g = &sliceGroup{key: key, ports: ports}
			groups[key] = g
		}
		g.endpoints = append(g.endpoints, podEndpoint(svc, pod, addrs, zoneOf))
	}
	out := make([]*sliceGroup, 0, len(groups))
	for _, g := range groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// slicePorts resolves svc's ports on pod, in the service's order; ports
// the pod lacks are left out.
func slicePorts(svc *corev1.Service, pod *corev1.Pod) []discoveryv1.EndpointPort {
	var out []discoveryv1.EndpointPort
	for i := range svc.Spec.Ports {
		sp := &svc.Spec.Ports[i]
		n, ok := findPort(pod, sp)
		if !ok {
			continue
		}
		name, proto := sp.Name, protocolOr(sp.Protocol)
		out = append(out, discoveryv1.EndpointPort{Name: &name, Port: &n, Protocol: &proto, AppProtocol: copyString(sp.AppProtocol)})
	}
	return out
}

// podEndpoint is pod's endpoint in a slice of svc.
func podEndpoint(svc *corev1.Service, pod *corev1.Pod, addrs []string, zoneOf func(string) string) discoveryv1.Endpoint {
	serving := controller.IsPodReady(pod)
	terminating := pod.DeletionTimestamp != nil
	ready := svc.Spec.PublishNotReadyAddresses || serving && !terminating
	ep := discoveryv1.Endpoint{
		Addresses:  addrs,
		Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
	}
	if pod.Spec.NodeName != "" {
		ep.NodeName = copyString(&pod.Spec.NodeName)
		if z := zoneOf(pod.Spec.NodeName); z != "" {
			ep.Zone = &z
		}
	}
	if shouldSetHostname(pod, svc) {
		ep.Hostname = copyString(&pod.Spec.Hostname)
	}
	return ep
}

// slicePortsKey names a slice's list of ports (unset fields as their
// defaults: an unnamed port, TCP).
func slicePortsKey(ports []discoveryv1.EndpointPort) string {
	var b strings.Builder
	for i := range ports {
		p := &ports[i]
		if p.Name != nil {
			b.WriteString(*p.Name)
		}
		b.WriteByte('/')
		if p.Port != nil {
			b.WriteString(strconv.Itoa(int(*p.Port)))
		}
		b.WriteByte('/')
		if p.Protocol != nil {
			b.WriteString(string(*p.Protocol))
		} else {
			b.WriteString(string(corev1.ProtocolTCP))
		}
		b.WriteByte('/')
		if p.AppProtocol != nil {
			b.WriteString(*p.AppProtocol)
		}
		b.WriteByte(',')
	}
	return b.String()
}

// endpointKey identifies an endpoint across syncs: its pod's UID (or its
// first address).
func endpointKey(ep *discoveryv1.Endpoint) string {
	if ep.TargetRef != nil && ep.TargetRef.UID != "" {
		return string(ep.TargetRef.UID)
	}
	if len(ep.Addresses) > 0 {
		return "ip:" + ep.Addresses[0]
	}
	return ""
}

// sliceLabels are the labels of svc's slices: the service's own (except
// the reserved ones), the headless-service label when it has no cluster
// IP, the service name and this controller's managed-by.
func sliceLabels(svc *corev1.Service) map[string]string {
	l := make(map[string]string, len(svc.Labels)+3)
	for k, v := range svc.Labels {
		switch k {
		case discoveryv1.LabelServiceName, discoveryv1.LabelManagedBy, corev1.IsHeadlessService:
			continue
		}
		l[k] = v
	}
	if isHeadless(svc) {
		l[corev1.IsHeadlessService] = ""
	}
	l[discoveryv1.LabelServiceName] = svc.Name
	l[discoveryv1.LabelManagedBy] = ControllerName
	return l
}

// managedService returns the service a slice is managed for by this
// controller, or "" when it is not one of this controller's.
func managedService(s *discoveryv1.EndpointSlice) string {
	if s == nil || s.Labels[discoveryv1.LabelManagedBy] != ControllerName {
		return ""
	}
	return s.Labels[discoveryv1.LabelServiceName]
}

// ownedBy reports whether slice has svc as an owner.
func ownedBy(s *discoveryv1.EndpointSlice, svc *corev1.Service) bool {
	for _, r := range s.OwnerReferences {
		if r.UID == svc.UID && r.Kind == "Service" && r.APIVersion == "v1" {
			return true
		}
	}
	return false
}

// slicePlan is what a sync writes to a service's slices.
type slicePlan struct {
	creates []*discoveryv1.EndpointSlice // new slices (no name yet)
	updates []*discoveryv1.EndpointSlice // next versions of stored slices (resourceVersion as read)
	deletes []*discoveryv1.EndpointSlice // stored slices to delete
}

// sliceWork is one slice being planned: a stored one (orig) or a new one.
type sliceWork struct {
	orig    *discoveryv1.EndpointSlice
	at      discoveryv1.AddressType
	ports   []discoveryv1.EndpointPort
	eps     []discoveryv1.Endpoint
	changed bool // its endpoints or ports change
}

// planSlices decides how svc's slices (existing: the managed slices
// stored for it, sorted by name) become desired (groups per address type
// from desiredSliceGroups), changing as few slices as it can, as
// Kubernetes' EndpointSlice reconciler does:
//
//   - an endpoint stays in the slice that has it (updated in place when it
//     changed); endpoints that left are removed from their slices;
//   - new endpoints fill the slices that change anyway, then whole new
//     slices of maxPer, and the rest the unchanged slice it fills best, or
//     a new one;
//   - slices left empty, of ports or address types no longer wanted, or
//     owned by another service (an older one of the same name) are
//     deleted — or reused for a new slice of the same address type;
//   - an address type without endpoints keeps one empty placeholder slice;
//   - a service being deleted gets no new slices.
//
// Labels are the service's (sliceLabels). Slices being deleted are
// ignored.
func planSlices(svc *corev1.Service, existing []*discoveryv1.EndpointSlice, types []discoveryv1.AddressType,
	desired map[discoveryv1.AddressType][]*sliceGroup, maxPer int) slicePlan {
	labels := sliceLabels(svc)
	var plan slicePlan
	wanted := map[discoveryv1.AddressType]bool{}
	for _, at := range types {
		wanted[at] = true
	}
	byType := map[discoveryv1.AddressType][]*discoveryv1.EndpointSlice{}
	var foreign []*discoveryv1.EndpointSlice
	for _, s := range existing {
		switch {
		case s.DeletionTimestamp != nil:
		case !ownedBy(s, svc) || !wanted[s.AddressType]:
			foreign = append(foreign, s)
		default:
			byType[s.AddressType] = append(byType[s.AddressType], s)
		}
	}
	for _, at := range types {
		creates, updates, spare := planAddressType(at, byType[at], desired[at], maxPer)
		// Reuse slices that would be deleted for slices that would be
		// created: one write instead of two, and no gap.
		for len(creates) > 0 && len(spare) > 0 {
			w := creates[len(creates)-1]
			creates = creates[:len(creates)-1]
			w.orig, spare = spare[0], spare[1:]
			w.changed = true
			updates = append(updates, w)
		}
		for _, w := range updates {
			if next := nextSlice(w, labels); next != nil {
				plan.updates = append(plan.updates, next)
			}
		}
		if svc.DeletionTimestamp == nil {
			for _, w := range creates {
				plan.creates = append(plan.creates, &discoveryv1.EndpointSlice{AddressType: at, Ports: w.ports, Endpoints: w.eps})
			}
		}
		plan.deletes = append(plan.deletes, spare...)
	}
	plan.deletes = append(plan.deletes, foreign...)
	return plan
}

// planAddressType plans the slices of one address type: existing (sorted
// by name) towards groups. It returns the slices to create, the stored
// slices to keep (possibly changed) and the stored slices no longer
// needed.
func planAddressType(at discoveryv1.AddressType, existing []*discoveryv1.EndpointSlice, groups []*sliceGroup, maxPer int) (creates, kept []*sliceWork, spare []*discoveryv1.EndpointSlice) {
	byKey := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range existing {
		k := slicePortsKey(s.Ports)
		byKey[k] = append(byKey[k], s)
	}
	for _, g := range groups {
		stored := byKey[g.key]
		delete(byKey, g.key)
		want := make(map[string]int, len(g.endpoints))
		for i := range g.endpoints {
			want[endpointKey(&g.endpoints[i])] = i
		}
		placed := make([]bool, len(g.endpoints))
		var mine []*sliceWork
		for _, s := range stored {
			w := &sliceWork{orig: s, at: at, ports: g.ports}
			for j := range s.Endpoints {
				ep := &s.Endpoints[j]
				i, ok := want[endpointKey(ep)]
				if !ok || placed[i] || len(w.eps) == maxPer {
					w.changed = true
					continue
				}
				placed[i] = true
				w.eps = append(w.eps, g.endpoints[i])
				if !endpointEqual(ep, &g.endpoints[i]) {
					w.changed = true
				}
			}
			if len(w.eps) == 0 {
				spare = append(spare, s)
				continue
			}
			mine = append(mine, w)
		}
		var rest []discoveryv1.Endpoint
		for i := range g.endpoints {
			if !placed[i] {
				rest = append(rest, g.endpoints[i])
			}
		}
		for _, w := range mine {
			if w.changed && len(rest) > 0 {
				n := min(maxPer-len(w.eps), len(rest))
				w.eps = append(w.eps, rest[:n]...)
				rest = rest[n:]
			}
		}
		for len(rest) >= maxPer {
			creates = append(creates, &sliceWork{at: at, ports: g.ports, eps: rest[:maxPer:maxPer]})
			rest = rest[maxPer:]
		}
		if len(rest) > 0 {
			var best *sliceWork
			for _, w := range mine {
				if !w.changed && len(w.eps)+len(rest) <= maxPer && (best == nil || len(w.eps) > len(best.eps)) {
					best = w
				}
			}
			if best != nil {
				best.eps = append(best.eps, rest...)
				best.changed = true
			} else {
				creates = append(creates, &sliceWork{at: at, ports: g.ports, eps: rest})
			}
		}
		kept = append(kept, mine...)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		spare = append(spare, byKey[k]...)
	}
	if len(groups) == 0 {
		// No endpoints of this type: one empty placeholder slice.
		for i, s := range spare {
			if len(s.Endpoints) == 0 && len(s.Ports) == 0 {
				kept = append(kept, &sliceWork{orig: s, at: at})
				spare = append(spare[:i:i], spare[i+1:]...)
				return creates, kept, spare
			}
		}
		creates = append(creates, &sliceWork{at: at})
	}
	return creates, kept, spare
}

// nextSlice returns the stored slice of w as it must be written (nil when
// it already is).
func nextSlice(w *sliceWork, labels map[string]string) *discoveryv1.EndpointSlice {
	s := w.orig
	if !w.changed && equalMaps(s.Labels, labels) && s.AddressType == w.at {
		return nil
	}
	next := s.DeepCopy()
	next.Labels = labels
	next.Ports = w.ports
	next.Endpoints = w.eps
	next.AddressType = w.at
	if equality.Semantic.DeepEqual(next, s) {
		return nil
	}
	return next
}
