package apiserver

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/shoal-dev/shoal/node/state"
)

// Service address defaults (DESIGN §8).
var (
	DefaultServiceCIDR = netip.MustParsePrefix("10.43.0.0/16")
	// DefaultDNSIP is the cluster DNS address every node answers on; no
	// Service may take it.
	DefaultDNSIP = netip.MustParseAddr("10.43.0.10")
)

// Default node port range, as in Kubernetes.
const (
	DefaultNodePortMin = 30000
	DefaultNodePortMax = 32767
)

// serviceAlloc hands out cluster IPs and node ports. Uniqueness is the FSM's
// (state's unique index, on every replica alike); this picks free values from
// the local replica and turns impossible requests into field errors. A value
// that another writer took between the pick and the commit comes back as
// CodeTaken, and create retries with a fresh pick.
type serviceAlloc struct {
	cidr       netip.Prefix
	reserved   map[netip.Addr]string // address → why it is reserved
	portMin    int32
	portMax    int32
	store      *state.Store
	apiIP      netip.Addr // the `kubernetes` service's address (first of the range): only by request
	rangeFirst netip.Addr // first allocatable address
	size       int        // allocatable addresses from rangeFirst
}

func newServiceAlloc(store *state.Store, cidr netip.Prefix, dnsIP netip.Addr) *serviceAlloc {
	cidr = cidr.Masked()
	a := &serviceAlloc{cidr: cidr, store: store, portMin: DefaultNodePortMin, portMax: DefaultNodePortMax,
		reserved: map[netip.Addr]string{}}
	bits := 32 - cidr.Bits()
	if bits > 20 {
		bits = 20 // at most a million candidates
	}
	a.apiIP = cidr.Addr().Next()
	a.rangeFirst = a.apiIP.Next()
	a.size = 1<<bits - 3 // minus network, broadcast and the API address
	if dnsIP.IsValid() {
		a.reserved[dnsIP] = "it is the cluster DNS address"
	}
	return a
}

// allocated records what allocate handed out automatically, so a create can
// retry with fresh picks when the FSM finds one taken.
type allocated struct{ ip, ports bool }

// allocate fills in the cluster IP and node ports of svc (a create when
// old is nil, else an update of old) and checks requested values. Values the
// service already had are kept.
func (a *serviceAlloc) allocate(svc, old *corev1.Service) (allocated, field.ErrorList) {
	var got allocated
	var errs field.ErrorList
	s := &svc.Spec
	path := field.NewPath("spec")
	owner := ""
	if old != nil {
		owner = "services/" + old.Namespace + "/" + old.Name
		keepAllocated(svc, old)
	}
	// Cluster IP.
	if s.Type == corev1.ServiceTypeExternalName {
		if s.ClusterIP != "" && (old == nil || s.ClusterIP != old.Spec.ClusterIP) {
			errs = append(errs, field.Forbidden(path.Child("clusterIP"), "may not be set for type ExternalName"))
		}
		if old != nil && old.Spec.Type != corev1.ServiceTypeExternalName {
			s.ClusterIP, s.ClusterIPs = "", nil // released with the update
		}
	} else {
		switch {
		case old != nil && old.Spec.ClusterIP != "" && old.Spec.Type != corev1.ServiceTypeExternalName && s.ClusterIP != old.Spec.ClusterIP:
			errs = append(errs, field.Invalid(path.Child("clusterIP"), s.ClusterIP, "field is immutable"))
		case s.ClusterIP == corev1.ClusterIPNone:
			s.ClusterIPs = []string{corev1.ClusterIPNone}
		case s.ClusterIP == "":
			ip, ok := a.pickIP()
			if !ok {
				errs = append(errs, field.Invalid(path.Child("clusterIPs"), s.ClusterIPs,
					fmt.Sprintf("failed to allocate IP: range %s is full", a.cidr)))
				break
			}
			s.ClusterIP, s.ClusterIPs = ip.String(), []string{ip.String()}
			got.ip = true
		default:
			if len(s.ClusterIPs) == 0 {
				s.ClusterIPs = []string{s.ClusterIP}
			}
			if len(s.ClusterIPs) != 1 || s.ClusterIPs[0] != s.ClusterIP {
				errs = append(errs, field.Invalid(path.Child("clusterIPs"), s.ClusterIPs,
					"must hold exactly the clusterIP (Shoal serves single-stack IPv4 services)"))
				break
			}
			if old != nil && old.Spec.ClusterIP == s.ClusterIP {
				break
			}
			if msg := a.checkIP(s.ClusterIP, owner); msg != "" {
				errs = append(errs, field.Invalid(path.Child("clusterIPs"), s.ClusterIPs,
					fmt.Sprintf("failed to allocate IP %s: %s", s.ClusterIP, msg)))
			}
		}
		if s.ClusterIP != corev1.ClusterIPNone && s.ClusterIP != "" {
			s.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
			if s.IPFamilyPolicy == nil {
				p := corev1.IPFamilyPolicySingleStack
				s.IPFamilyPolicy = &p
			}
		}
	}
	// Node ports.
	wantPorts := s.Type == corev1.ServiceTypeNodePort || s.Type == corev1.ServiceTypeLoadBalancer
	if s.Type == corev1.ServiceTypeLoadBalancer && s.AllocateLoadBalancerNodePorts == nil {
		t := true
		s.AllocateLoadBalancerNodePorts = &t
	}
	auto := s.Type == corev1.ServiceTypeNodePort ||
		s.Type == corev1.ServiceTypeLoadBalancer && *s.AllocateLoadBalancerNodePorts
	taken := map[int32]bool{}
	for i := range s.Ports {
		p := &s.Ports[i]
		pp := path.Child("ports").Index(i).Child("nodePort")
		if p.NodePort == 0 {
			continue
		}
		if !wantPorts {
			errs = append(errs, field.Forbidden(pp, fmt.Sprintf("may not be used when `type` is '%s'", s.Type)))
			continue
		}
		if taken[p.NodePort] {
			continue // the same port for another protocol of this service
		}
		taken[p.NodePort] = true
		if hadNodePort(old, p.NodePort) {
			continue
		}
		if p.NodePort < a.portMin || p.NodePort > a.portMax {
			errs = append(errs, field.Invalid(pp, p.NodePort,
				fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %d-%d", a.portMin, a.portMax)))
			continue
		}
		if h, ok := a.store.UniqueOwner(state.NodePortKey(p.NodePort)); ok && h != owner {
			errs = append(errs, field.Invalid(pp, p.NodePort, "provided port is already allocated"))
		}
	}
	if auto {
		for i := range s.Ports {
			p := &s.Ports[i]
			if p.NodePort != 0 {
				continue
			}
			n, ok := a.pickPort(taken)
			if !ok {
				errs = append(errs, field.Invalid(path.Child("ports").Index(i).Child("nodePort"), 0,
					fmt.Sprintf("failed to allocate a node port: range %d-%d is full", a.portMin, a.portMax)))
				break
			}
			p.NodePort = n
			taken[n] = true
			got.ports = true
		}
	}
	return got, errs
}

// keepAllocated carries over what old was given when an update leaves it
// out (a PUT of the original manifest), as Kubernetes does: the cluster IP
// while the service keeps needing one, and each port's node port while the
// type keeps needing node ports.
func keepAllocated(svc, old *corev1.Service) {
	s, o := &svc.Spec, &old.Spec
	if s.Type != corev1.ServiceTypeExternalName && o.Type != corev1.ServiceTypeExternalName && s.ClusterIP == "" {
		s.ClusterIP, s.ClusterIPs = o.ClusterIP, append([]string(nil), o.ClusterIPs...)
	}
	if s.Type != corev1.ServiceTypeNodePort && s.Type != corev1.ServiceTypeLoadBalancer {
		return
	}
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.NodePort != 0 {
			continue
		}
		for _, op := range o.Ports {
			if op.NodePort != 0 && op.Port == p.Port && op.Protocol == p.Protocol {
				p.NodePort = op.NodePort
				break
			}
		}
	}
}

func hadNodePort(old *corev1.Service, n int32) bool {
	if old == nil {
		return false
	}
	for _, p := range old.Spec.Ports {
		if p.NodePort == n {
			return true
		}
	}
	return false
}

// checkIP explains why ip cannot be given to owner ("" = it can).
func (a *serviceAlloc) checkIP(ip, owner string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return "not a valid IP address"
	}
	if !a.cidr.Contains(addr) {
		return fmt.Sprintf("the provided IP (%s) is not in the valid range. The range of valid IPs is %s", ip, a.cidr)
	}
	if addr == a.cidr.Addr() || !a.cidr.Contains(addr.Next()) {
		return fmt.Sprintf("the provided IP (%s) is the network or broadcast address of %s", ip, a.cidr)
	}
	if why, ok := a.reserved[addr]; ok {
		return fmt.Sprintf("the provided IP (%s) is reserved: %s", ip, why)
	}
	if h, ok := a.store.UniqueOwner(state.ServiceIPKey(ip)); ok && h != owner {
		return "provided IP is already allocated"
	}
	return ""
}

// pickIP returns a free address: a random start, then the next free one.
func (a *serviceAlloc) pickIP() (netip.Addr, bool) {
	if a.size <= 0 {
		return netip.Addr{}, false
	}
	base := a.rangeFirst.As4()
	b := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	start := rand.IntN(a.size)
	for i := 0; i < a.size; i++ {
		v := b + uint32((start+i)%a.size)
		ip := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if _, r := a.reserved[ip]; r {
			continue
		}
		if _, held := a.store.UniqueOwner(state.ServiceIPKey(ip.String())); !held {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// pickPort returns a free node port not in also.
func (a *serviceAlloc) pickPort(also map[int32]bool) (int32, bool) {
	n := int(a.portMax - a.portMin + 1)
	start := rand.IntN(n)
	for i := 0; i < n; i++ {
		p := a.portMin + int32((start+i)%n)
		if also[p] {
			continue
		}
		if _, held := a.store.UniqueOwner(state.NodePortKey(p)); !held {
			return p, true
		}
	}
	return 0, false
}
