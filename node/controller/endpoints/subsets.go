package endpoints

import (
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/node/controller"
)

// primaryIsIPv6 reports whether svc's Endpoints list IPv6 addresses: its
// first IP family, else its cluster IP's, else (headless, no families)
// the pod's own.
func primaryIsIPv6(svc *corev1.Service, pod *corev1.Pod) bool {
	if len(svc.Spec.IPFamilies) > 0 {
		return svc.Spec.IPFamilies[0] == corev1.IPv6Protocol
	}
	if !isHeadless(svc) {
		a, err := netip.ParseAddr(svc.Spec.ClusterIP)
		return err == nil && a.Is6() && !a.Is4In6()
	}
	ips := podIPsOf(pod)
	return len(ips) > 0 && ips[0].Is6()
}

// subsetGroup collects the addresses of one set of ports.
type subsetGroup struct {
	ports           []corev1.EndpointPort
	ready, notReady []corev1.EndpointAddress
}

// desiredSubsets computes the subsets of svc's Endpoints from its pods, as
// Kubernetes' endpoints controller does: every pod that is in service
// (podIncluded; terminating pods only with publishNotReadyAddresses) with
// an IP of the service's family, under the ports it resolves (a pod that
// resolves none is left out; a headless service without ports lists
// addresses without ports); ready when its Ready condition is true or the
// service publishes not-ready addresses. Addresses with the same ports
// share a subset. The result is sorted (subsets by ports, addresses by IP
// then pod name), so the same input always gives the same subsets.
func desiredSubsets(svc *corev1.Service, pods []*corev1.Pod) []corev1.EndpointSubset {
	publish := svc.Spec.PublishNotReadyAddresses
	groups := map[string]*subsetGroup{}
	for _, pod := range pods {
		if !podIncluded(pod, publish) {
			continue
		}
		ip := podIPOfFamily(pod, primaryIsIPv6(svc, pod))
		if ip == "" {
			continue
		}
		var ports []corev1.EndpointPort
		if len(svc.Spec.Ports) == 0 {
			if svc.Spec.ClusterIP != corev1.ClusterIPNone {
				continue
			}
		} else {
			for i := range svc.Spec.Ports {
				sp := &svc.Spec.Ports[i]
				n, ok := findPort(pod, sp)
				if !ok {
					continue
				}
				ports = append(ports, corev1.EndpointPort{
					Name: sp.Name, Port: n, Protocol: protocolOr(sp.Protocol), AppProtocol: copyString(sp.AppProtocol),
				})
			}
			if len(ports) == 0 {
				continue
			}
		}
		sort.Slice(ports, func(i, j int) bool { return endpointPortLess(&ports[i], &ports[j]) })
		key := endpointPortsKey(ports)
		g := groups[key]
		if g == nil {
			g = &subsetGroup{ports: ports}
			groups[key] = g
		}
		addr := corev1.EndpointAddress{
			IP:        ip,
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		}
		if pod.Spec.NodeName != "" {
			addr.NodeName = copyString(&pod.Spec.NodeName)
		}
		if shouldSetHostname(pod, svc) {
			addr.Hostname = pod.Spec.Hostname
		}
		if publish || controller.IsPodReady(pod) {
			g.ready = append(g.ready, addr)
		} else {
			g.notReady = append(g.notReady, addr)
		}
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	subsets := make([]corev1.EndpointSubset, 0, len(keys))
	for _, k := range keys {
		g := groups[k]
		sortAddresses(g.ready)
		sortAddresses(g.notReady)
		subsets = append(subsets, corev1.EndpointSubset{Addresses: g.ready, NotReadyAddresses: g.notReady, Ports: g.ports})
	}
	return subsets
}

func sortAddresses(as []corev1.EndpointAddress) {
	sort.Slice(as, func(i, j int) bool {
		if as[i].IP != as[j].IP {
			return as[i].IP < as[j].IP
		}
		return as[i].TargetRef.Name < as[j].TargetRef.Name
	})
}

func endpointPortLess(a, b *corev1.EndpointPort) bool {
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	if a.Port != b.Port {
		return a.Port < b.Port
	}
	return a.Protocol < b.Protocol
}

// endpointPortsKey names a list of ports.
func endpointPortsKey(ports []corev1.EndpointPort) string {
	var b strings.Builder
	for i := range ports {
		p := &ports[i]
		b.WriteString(p.Name)
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(int(p.Port)))
		b.WriteByte('/')
		b.WriteString(string(p.Protocol))
		b.WriteByte('/')
		if p.AppProtocol != nil {
			b.WriteString(*p.AppProtocol)
		}
		b.WriteByte(',')
	}
	return b.String()
}

// truncateSubsets cuts subsets to at most max addresses, as Kubernetes'
// endpoints controller does (EndpointSlices have no such limit): ready
// addresses are kept first; what is cut from each subset is in proportion
// to its size. It reports whether anything was cut.
func truncateSubsets(subsets []corev1.EndpointSubset, max int) bool {
	ready, notReady := 0, 0
	for _, s := range subsets {
		ready += len(s.Addresses)
		notReady += len(s.NotReadyAddresses)
	}
	if ready+notReady <= max {
		return false
	}
	cutReady := ready > max
	budget, total := max-ready, notReady
	if cutReady {
		budget, total = max, ready
	}
	left := budget
	for i := range subsets {
		s := &subsets[i]
		n := len(s.NotReadyAddresses)
		if cutReady {
			n = len(s.Addresses)
		}
		keep := int(math.Ceil(float64(n) / float64(total) * float64(budget)))
		keep = min(keep, left, n)
		if cutReady {
			s.Addresses = s.Addresses[:keep]
			s.NotReadyAddresses = nil
		} else {
			s.NotReadyAddresses = s.NotReadyAddresses[:keep]
		}
		left -= keep
	}
	return true
}

// endpointsLabels are the labels of svc's Endpoints: the service's own,
// the managed-by label of Kubernetes' endpoints controller, and the
// headless-service label when svc has no cluster IP.
func endpointsLabels(svc *corev1.Service) map[string]string {
	l := make(map[string]string, len(svc.Labels)+2)
	for k, v := range svc.Labels {
		l[k] = v
	}
	l[LabelEndpointsManagedBy] = EndpointsControllerName
	if isHeadless(svc) {
		l[corev1.IsHeadlessService] = ""
	} else {
		delete(l, corev1.IsHeadlessService)
	}
	return l
}

func copyString(s *string) *string {
	if s == nil {
		return nil
	}
	v := *s
	return &v
}
