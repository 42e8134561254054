package netproxy

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// maxWeight caps Endpoint.Weight so the sums stay far from overflowing the
// 32-bit numgen modulus.
const maxWeight = 1 << 16

// portIdent identifies a service port across Sets.
type portIdent struct {
	ns, name, portName string
	port               uint16 // only when portName is empty
	proto              Protocol
}

func identOf(svc *Service, p *Port) portIdent {
	id := portIdent{ns: svc.Namespace, name: svc.Name, portName: p.Name, proto: p.Protocol}
	if p.Name == "" {
		id.port = p.Port
	}
	return id
}

// label is the port part of names: the port name, or the number when the
// port is unnamed.
func (id portIdent) label() string {
	if id.portName != "" {
		return id.portName
	}
	return strconv.Itoa(int(id.port))
}

// hash is the stable short hash naming a service port's chains
// (svc-<hash>, ext-<hash>, aff-<hash>): base32 of SHA-256 over
// namespace/name:port/protocol, as kube-proxy names its chains. Ten
// characters are 50 bits: a collision among 10,000 service ports has a
// probability of about 4e-8, and the state detects it anyway.
func (id portIdent) hash() string {
	sum := sha256.Sum256([]byte(id.ns + "/" + id.name + ":" + id.label() + "/" + string(id.proto)))
	return base32.StdEncoding.EncodeToString(sum[:])[:10]
}

// String is the human-readable name used in rule comments and logs.
func (id portIdent) String() string {
	return fmt.Sprintf("%s/%s:%s/%s", id.ns, id.name, id.label(), protoName(id.proto))
}

// redirectFunc returns the local port of the least-conn proxy for a service
// port (creating or updating it), or 0 when there is none: the port then
// falls back to round robin.
type redirectFunc func(chain string, spec leastConnPort) uint16

// ipClaim is a service address a port wants: Target is the chain to go to,
// or "" when the port has no endpoints (reject).
type ipClaim struct {
	Key    ipPortKey
	Target string
}

// portOut is everything one service port contributes to the dataplane.
type portOut struct {
	ID         string
	Hash       string
	SvcRules   []rule // nil: no svc chain (no endpoints)
	ExtRules   []rule // nil: no ext chain
	IntRules   []rule // nil: no int chain (ClusterIP traffic goes to the svc chain)
	IPs        []ipClaim
	NodePort   protoPortKey // Port 0: none
	NodeTarget string       // "" with a node port: reject
	Hairpin    []netip.Addr
	Affinity   time.Duration // > 0: the set aff-<Hash>
	LeastConn  *leastConnPort
	WantsProxy bool // least-conn was asked for but no proxy could be started
	UDP        *udpPort
}

func ipv4(a netip.Addr) (netip.Addr, bool) {
	a = a.Unmap()
	return a, a.Is4()
}

// addrs returns the IPv4 addresses of as (others are skipped silently, as
// dual-stack services carry an IPv6 ClusterIP).
func addrs(as []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if a4, ok := ipv4(a); ok {
			out = append(out, a4)
		}
	}
	return out
}

// normalizeCIDR returns the cluster CIDR to mark with (zero: none).
func normalizeCIDR(p netip.Prefix) (netip.Prefix, string) {
	if !p.IsValid() {
		return netip.Prefix{}, ""
	}
	a, ok := ipv4(p.Addr())
	if !ok {
		return netip.Prefix{}, fmt.Sprintf("cluster CIDR %s: not IPv4, nothing is masqueraded by source", p)
	}
	return netip.PrefixFrom(a, p.Bits()).Masked(), ""
}

// renderPort renders one service port. It is pure apart from redirect (nil:
// least-conn falls back to round robin). skip collects what could not be
// programmed.
func renderPort(svc *Service, p *Port, id portIdent, hash string, cidr netip.Prefix, redirect redirectFunc, skip func(string, ...any)) *portOut {
	out := &portOut{ID: id.String(), Hash: hash}
	svcChain, extChain := "svc-"+hash, "ext-"+hash
	cluster, external := addrs(svc.ClusterIPs), addrs(svc.ExternalIPs)
	eps := make([]Endpoint, 0, len(p.Endpoints))
	for _, ep := range p.Endpoints {
		ip, ok := ipv4(ep.IP)
		if !ok || ep.Port == 0 {
			skip("service port %s: endpoint %s port %d: not an IPv4 address and port", out.ID, ep.IP, ep.Port)
			continue
		}
		ep.IP = ip
		eps = append(eps, ep)
	}
	if p.Protocol == UDP {
		u := &udpPort{IPs: append(append([]netip.Addr{}, cluster...), external...), Port: p.Port, NodePort: p.NodePort}
		for _, ep := range eps {
			u.Endpoints = append(u.Endpoints, netip.AddrPortFrom(ep.IP, ep.Port))
		}
		out.UDP = u
	}
	if p.NodePort != 0 {
		out.NodePort = protoPortKey{p.Protocol, p.NodePort}
	}
	if len(eps) == 0 {
		for _, ip := range cluster {
			out.IPs = append(out.IPs, ipClaim{Key: ipPortKey{ip, p.Protocol, p.Port}})
		}
		for _, ip := range external {
			out.IPs = append(out.IPs, ipClaim{Key: ipPortKey{ip, p.Protocol, p.Port}})
		}
		return out
	}

	strategy := svc.Strategy
	switch strategy {
	case "", RoundRobin, Random, Weighted, LeastConn:
	default:
		skip("service port %s: unknown strategy %q, using round robin", out.ID, strategy)
		strategy = RoundRobin
	}
	if strategy == LeastConn && p.Protocol == SCTP {
		// The proxy would need SCTP sockets, which a node's kernel may
		// not have (CONFIG_IP_SCTP), while the kernel's SCTP conntrack
		// and NAT balance it like any other protocol.
		skip("service port %s: least-conn is not available for SCTP, using round robin", out.ID)
		strategy = RoundRobin
	}
	affSet := ""
	if svc.AffinityTimeout > 0 {
		affSet = "aff-" + hash
		out.Affinity = svc.AffinityTimeout
	}

	// The service chain: ClusterIP traffic, and external traffic that the
	// ext chain passes on.
	var rules []rule
	if strategy == LeastConn { // TCP or UDP: SCTP fell back above
		spec := leastConnPort{Name: out.ID, Protocol: p.Protocol, Affinity: svc.AffinityTimeout}
		for _, ep := range eps {
			spec.Endpoints = append(spec.Endpoints, netip.AddrPortFrom(ep.IP, ep.Port))
		}
		var port uint16
		if redirect != nil {
			port = redirect(svcChain, spec)
		}
		if port != 0 {
			out.LeastConn = &spec
			rules = []rule{{Redirect: port}}
			if out.UDP != nil {
				out.UDP.Proxy = port
			}
		} else {
			out.WantsProxy = true
		}
	}
	if rules == nil {
		rules = lbRules(eps, strategy, affSet)
	}
	rules[0].Comment = out.ID
	out.SvcRules = rules
	clusterTarget := svcChain
	if svc.InternalLocal {
		// internalTrafficPolicy Local: ClusterIP traffic gets a chain of
		// its own over the node's endpoints, and is dropped when the node
		// has none (kube-proxy's "has no local endpoints"). The svc chain
		// stays the Cluster policy for external traffic.
		var local []Endpoint
		for _, ep := range eps {
			if ep.Local {
				local = append(local, ep)
			}
		}
		if len(local) == 0 {
			out.IntRules = []rule{{Drop: true}}
		} else {
			s := strategy
			if s == LeastConn {
				s = RoundRobin // the proxy balances over every endpoint
			}
			out.IntRules = lbRules(local, s, affSet)
		}
		out.IntRules[0].Comment = out.ID
		clusterTarget = "int-" + hash
	}
	for _, ip := range cluster {
		out.IPs = append(out.IPs, ipClaim{Key: ipPortKey{ip, p.Protocol, p.Port}, Target: clusterTarget})
	}

	// The external chain: NodePorts and external IPs, with the traffic
	// policy.
	if p.NodePort != 0 || len(external) > 0 {
		var ext []rule
		if !svc.ExternalLocal {
			ext = []rule{{Mark: markSet, Goto: svcChain}}
		} else {
			// The services chain marked traffic to external IPs from
			// outside the cluster: Local keeps the client address.
			ext = append(ext, rule{Mark: markClear})
			if cidr.IsValid() {
				// Pods reaching a NodePort or external IP get the
				// Cluster behaviour (kube-proxy's short-circuit).
				ext = append(ext, rule{Saddr: saddrIn, Prefix: cidr, Goto: svcChain})
			}
			var local []Endpoint
			for _, ep := range eps {
				if ep.Local {
					local = append(local, ep)
				}
			}
			if len(local) == 0 {
				ext = append(ext, rule{Drop: true})
			} else {
				s := strategy
				if s == LeastConn {
					s = RoundRobin // a proxy would hide the client address
				}
				ext = append(ext, lbRules(local, s, affSet)...)
			}
		}
		ext[0].Comment = out.ID
		out.ExtRules = ext
		for _, ip := range external {
			out.IPs = append(out.IPs, ipClaim{Key: ipPortKey{ip, p.Protocol, p.Port}, Target: extChain})
		}
		if p.NodePort != 0 {
			out.NodeTarget = extChain
		}
	}
	for _, ep := range eps {
		if ep.Local {
			out.Hairpin = append(out.Hairpin, ep.IP)
		}
	}
	return out
}

func weight(ep Endpoint) uint32 {
	return uint32(min(max(ep.Weight, 1), maxWeight))
}

// lbRules spreads new connections over eps, one plain rule per endpoint
// (see the package doc for the numgen trick). With an affinity set, a
// client with a live entry goes back to its endpoint first, and every pick
// records (or refreshes) the entry.
func lbRules(eps []Endpoint, s Strategy, affSet string) []rule {
	n := len(eps)
	size := n
	if affSet != "" {
		size = 2 * n
	}
	out := make([]rule, 0, size)
	if affSet != "" {
		for _, ep := range eps {
			out = append(out, rule{Saddr: saddrAffinity, AffSet: affSet, AffUpdate: true,
				DNAT: netip.AddrPortFrom(ep.IP, ep.Port)})
		}
	}
	var rest uint32
	for _, ep := range eps {
		rest += weight(ep)
	}
	for k, ep := range eps {
		r := rule{DNAT: netip.AddrPortFrom(ep.IP, ep.Port), AffSet: affSet, AffUpdate: affSet != ""}
		w := weight(ep)
		if k < n-1 {
			switch s {
			case Random:
				r.Numgen, r.Mod = numgenRandom, uint32(n-k)
			case Weighted:
				r.Numgen, r.Mod, r.Less = numgenInc, rest, w
			default:
				r.Numgen, r.Mod = numgenInc, uint32(n-k)
			}
		}
		rest -= w
		out = append(out, r)
	}
	return out
}
