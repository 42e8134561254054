package services

import (
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/shoal-dev/shoal/dns"
	"github.com/shoal-dev/shoal/netproxy"
)

// Annotations Shoal reads on Services and Pods.
const (
	// StrategyAnnotation on a Service picks its load-balancing strategy:
	// round-robin (default), random, weighted or least-conn (TCP and UDP
	// ports; netproxy balances SCTP ports of such a service round robin).
	StrategyAnnotation = "shoal.dev/lb-strategy"
	// WeightAnnotation on a Pod is its weight in a weighted Service (≥ 1;
	// default 1).
	WeightAnnotation = "shoal.dev/weight"
	// ServiceNameLabel links an EndpointSlice to its Service.
	ServiceNameLabel = discoveryv1.LabelServiceName
)

// strategyOf maps the annotation to a netproxy strategy; unknown values fall
// back to round robin (ok=false).
func strategyOf(svc *corev1.Service) (netproxy.Strategy, bool) {
	switch v := svc.Annotations[StrategyAnnotation]; netproxy.Strategy(v) {
	case "", netproxy.RoundRobin:
		return netproxy.RoundRobin, true
	case netproxy.Random, netproxy.Weighted, netproxy.LeastConn:
		return netproxy.Strategy(v), true
	}
	return netproxy.RoundRobin, false
}

// weightOf reads a pod's weight annotation (1 when absent or invalid).
func weightOf(pod *corev1.Pod) int {
	if pod == nil {
		return 1
	}
	v, ok := pod.Annotations[WeightAnnotation]
	if !ok {
		return 1
	}
	w, err := strconv.Atoi(v)
	if err != nil || w < 1 {
		return 1
	}
	return w
}

func parseAddrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func clusterIPsOf(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, ip := range ips {
		if ip == corev1.ClusterIPNone {
			continue
		}
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func isHeadless(svc *corev1.Service) bool { return svc.Spec.ClusterIP == corev1.ClusterIPNone }

// endpoint is one address of a Service port, as the slices give it.
type endpoint struct {
	ip          netip.Addr
	port        uint16
	node        string
	hostname    string
	pod         string // target pod name ("" if none)
	ready       bool
	serving     bool
	terminating bool
}

// endpointsByPort groups the addresses of a service's slices by port name
// and protocol, sorted by IP for a stable rotation order.
func endpointsByPort(slices []*discoveryv1.EndpointSlice) map[portKey][]endpoint {
	out := map[portKey][]endpoint{}
	seen := map[portKey]map[netip.AddrPort]bool{}
	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, p := range sl.Ports {
			if p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
				continue
			}
			k := portKey{proto: corev1.ProtocolTCP}
			if p.Name != nil {
				k.name = *p.Name
			}
			if p.Protocol != nil {
				k.proto = *p.Protocol
			}
			if seen[k] == nil {
				seen[k] = map[netip.AddrPort]bool{}
			}
			for _, e := range sl.Endpoints {
				if len(e.Addresses) == 0 {
					continue
				}
				ip, err := netip.ParseAddr(e.Addresses[0])
				if err != nil {
					continue
				}
				ap := netip.AddrPortFrom(ip, uint16(*p.Port))
				if seen[k][ap] {
					continue
				}
				seen[k][ap] = true
				ep := endpoint{ip: ip, port: uint16(*p.Port),
					ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
					terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating}
				ep.serving = ep.ready
				if e.Conditions.Serving != nil {
					ep.serving = *e.Conditions.Serving
				}
				if e.NodeName != nil {
					ep.node = *e.NodeName
				}
				if e.Hostname != nil {
					ep.hostname = *e.Hostname
				}
				if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
					ep.pod = e.TargetRef.Name
				}
				out[k] = append(out[k], ep)
			}
		}
	}
	for k := range out {
		eps := out[k]
		sort.Slice(eps, func(i, j int) bool {
			if c := eps[i].ip.Compare(eps[j].ip); c != 0 {
				return c < 0
			}
			return eps[i].port < eps[j].port
		})
	}
	return out
}

type portKey struct {
	name  string
	proto corev1.Protocol
}

// usable picks the endpoints a proxy sends new connections to, as
// kube-proxy does: the ready ones; when none is ready, the serving ones that
// are terminating (so a rollout of the last pod drains gracefully).
func usable(eps []endpoint) []endpoint {
	var out []endpoint
	for _, e := range eps {
		if e.ready {
			out = append(out, e)
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, e := range eps {
		if e.serving && e.terminating {
			out = append(out, e)
		}
	}
	return out
}

// lookupPod finds a pod of the service's namespace (nil if unknown).
type lookupPod func(namespace, name string) *corev1.Pod

// proxyService translates a Service and its slices for netproxy. ok is
// false for services netproxy has nothing to do with (headless,
// ExternalName).
func proxyService(svc *corev1.Service, eps map[portKey][]endpoint, nodeName string, pods lookupPod) (netproxy.Service, bool) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || isHeadless(svc) {
		return netproxy.Service{}, false
	}
	strategy, _ := strategyOf(svc)
	out := netproxy.Service{
		Namespace:     svc.Namespace,
		Name:          svc.Name,
		ClusterIPs:    clusterIPsOf(svc),
		ExternalIPs:   parseAddrs(svc.Spec.ExternalIPs),
		Strategy:      strategy,
		ExternalLocal: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
		InternalLocal: svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal,
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			out.ExternalIPs = append(out.ExternalIPs, a)
		}
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		t := int32(corev1.DefaultClientIPServiceAffinitySeconds)
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			t = *c.ClientIP.TimeoutSeconds
		}
		out.AffinityTimeout = time.Duration(t) * time.Second
	}
	for _, sp := range svc.Spec.Ports {
		p := netproxy.Port{Name: sp.Name, Protocol: netproxy.Protocol(sp.Protocol), Port: uint16(sp.Port), NodePort: uint16(sp.NodePort)}
		for _, e := range usable(eps[portKey{sp.Name, sp.Protocol}]) {
			ne := netproxy.Endpoint{IP: e.ip, Port: e.port, Local: e.node == nodeName, Weight: 1}
			if strategy == netproxy.Weighted && e.pod != "" {
				ne.Weight = weightOf(pods(svc.Namespace, e.pod))
			}
			p.Endpoints = append(p.Endpoints, ne)
		}
		out.Ports = append(out.Ports, p)
	}
	return out, true
}

// dnsService translates a Service and its slices for the DNS zone.
func dnsService(svc *corev1.Service, eps map[portKey][]endpoint) dns.Service {
	out := dns.Service{
		Namespace:  svc.Namespace,
		Name:       svc.Name,
		ClusterIPs: clusterIPsOf(svc),
		Headless:   isHeadless(svc),
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		out.ExternalName = svc.Spec.ExternalName
		out.ClusterIPs = nil
		return out
	}
	for _, sp := range svc.Spec.Ports {
		out.Ports = append(out.Ports, dns.Port{Name: sp.Name, Protocol: string(sp.Protocol), Port: uint16(sp.Port)})
	}
	if !out.Headless {
		return out
	}
	// Headless: every ready address (the endpoints controller marks all of
	// them ready under publishNotReadyAddresses), with its own ports.
	byIP := map[netip.Addr]int{}
	for k, list := range eps {
		for _, e := range list {
			if !e.ready {
				continue
			}
			i, ok := byIP[e.ip]
			if !ok {
				i = len(out.Endpoints)
				byIP[e.ip] = i
				out.Endpoints = append(out.Endpoints, dns.Endpoint{IP: e.ip, Hostname: e.hostname})
			}
			out.Endpoints[i].Ports = append(out.Endpoints[i].Ports, dns.Port{Name: k.name, Protocol: string(k.proto), Port: e.port})
		}
	}
	sort.Slice(out.Endpoints, func(i, j int) bool { return out.Endpoints[i].IP.Compare(out.Endpoints[j].IP) < 0 })
	for i := range out.Endpoints {
		ps := out.Endpoints[i].Ports
		sort.Slice(ps, func(a, b int) bool {
			return ps[a].Name < ps[b].Name || ps[a].Name == ps[b].Name && ps[a].Protocol < ps[b].Protocol
		})
	}
	return out
}

// podIPs lists the IPs of a running pod (none for finished or unscheduled
// pods, or pods sharing the host's network).
func podIPs(pod *corev1.Pod) []netip.Addr {
	if pod.Spec.HostNetwork || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	var ss []string
	for _, ip := range pod.Status.PodIPs {
		ss = append(ss, ip.IP)
	}
	if len(ss) == 0 && pod.Status.PodIP != "" {
		ss = []string{pod.Status.PodIP}
	}
	return parseAddrs(ss)
}

// nodeAddrs lists a node's InternalIP and ExternalIP addresses.
func nodeAddrs(node *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out
}
