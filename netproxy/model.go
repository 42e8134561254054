package netproxy

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// The rule model: what rendering produces from a Config, what the state
// diffs and what the nftables layer encodes. It is plain data, so rendering
// and diffing are tested without a kernel.

// masqMark is the packet mark bit that asks nat-postrouting to masquerade
// (kube-proxy's value).
const masqMark = 0x4000

// ctStatusDstNAT is conntrack's IPS_DST_NAT status bit (`ct status dnat`):
// the connection's destination was translated.
const ctStatusDstNAT = 1 << 5

// ipPortKey is an element key of service-ips and no-endpoint-services.
type ipPortKey struct {
	IP    netip.Addr
	Proto Protocol
	Port  uint16
}

func (k ipPortKey) String() string {
	return fmt.Sprintf("%s . %s . %d", k.IP, protoName(k.Proto), k.Port)
}

// protoPortKey is an element key of service-nodeports and
// no-endpoint-nodeports.
type protoPortKey struct {
	Proto Protocol
	Port  uint16
}

func (k protoPortKey) String() string { return fmt.Sprintf("%s . %d", protoName(k.Proto), k.Port) }

// elemRef is an element of one of the verdict maps, as a change adds or
// deletes it: its key and Ref, the chain it goes to (service-ips,
// service-nodeports) or, for the reject maps, the hash of the service port
// that owns it. Either names the service port whose shard table holds the
// element.
type elemRef[K comparable] struct {
	Key K
	Ref string
}

type (
	ipRef   = elemRef[ipPortKey]
	portRef = elemRef[protoPortKey]
)

func protoName(p Protocol) string { return strings.ToLower(string(p)) }

// saddrMatch is a rule's optional test of the source address.
type saddrMatch uint8

const (
	saddrAny      saddrMatch = iota
	saddrIn                  // ip saddr Prefix
	saddrAffinity            // ip saddr . DNAT address . DNAT port @AffSet
)

// numgenKind selects a rule's optional numgen match.
type numgenKind uint8

const (
	numgenNone numgenKind = iota
	numgenInc
	numgenRandom
)

// markOp is a rule's optional change of the masquerade mark bit.
type markOp uint8

const (
	markNone  markOp = iota
	markSet          // meta mark set meta mark | 0x4000
	markClear        // meta mark set meta mark & 0xffffbfff
)

// rule is one rule of a service-level chain: matches first (source test,
// numgen), then statements (mark, affinity update, NAT, verdict) in the
// order the String method prints them. It is comparable, so chains compare
// with slices.Equal.
type rule struct {
	Saddr     saddrMatch
	Numgen    numgenKind
	Mark      markOp
	AffUpdate bool // update @AffSet { ip saddr . DNAT address . DNAT port }
	Drop      bool
	Redirect  uint16 // redirect to :port
	Mod       uint32 // numgen modulus
	Less      uint32 // 0: `numgen … mod Mod 0`; otherwise `… < Less` (weighted)
	DNAT      netip.AddrPort
	Prefix    netip.Prefix // for saddrIn
	AffSet    string
	Goto      string
	Comment   string // the service port, on the first rule of a chain
}

// String renders the rule in nft syntax, close to `nft list` output.
func (r rule) String() string {
	var p []string
	switch r.Saddr {
	case saddrIn:
		p = append(p, "ip saddr "+r.Prefix.String())
	case saddrAffinity:
		p = append(p, fmt.Sprintf("ip saddr . %s . %d @%s", r.DNAT.Addr(), r.DNAT.Port(), r.AffSet))
	}
	if r.Numgen != numgenNone {
		kind := "inc"
		if r.Numgen == numgenRandom {
			kind = "random"
		}
		if r.Less > 0 {
			p = append(p, fmt.Sprintf("numgen %s mod %d < %d", kind, r.Mod, r.Less))
		} else {
			p = append(p, fmt.Sprintf("numgen %s mod %d 0", kind, r.Mod))
		}
	}
	switch r.Mark {
	case markSet:
		p = append(p, fmt.Sprintf("meta mark set meta mark | 0x%08x", masqMark))
	case markClear:
		p = append(p, fmt.Sprintf("meta mark set meta mark & 0x%08x", ^uint32(masqMark)))
	}
	if r.AffUpdate {
		p = append(p, fmt.Sprintf("update @%s { ip saddr . %s . %d }", r.AffSet, r.DNAT.Addr(), r.DNAT.Port()))
	}
	if r.DNAT.IsValid() {
		p = append(p, "dnat to "+r.DNAT.String())
	}
	if r.Redirect != 0 {
		p = append(p, fmt.Sprintf("redirect to :%d", r.Redirect))
	}
	if r.Goto != "" {
		p = append(p, "goto "+r.Goto)
	}
	if r.Drop {
		p = append(p, "drop")
	}
	if r.Comment != "" {
		p = append(p, fmt.Sprintf("comment %q", r.Comment))
	}
	return strings.Join(p, " ")
}

// udpPort is what the conntrack cleanup needs to know of a UDP service port.
type udpPort struct {
	IPs       []netip.Addr // ClusterIPs and external IPs
	Port      uint16
	NodePort  uint16
	Endpoints []netip.AddrPort
	// Proxy is the port of the least-conn proxy the svc chain redirects
	// to (0: none, the chains DNAT to Endpoints).
	Proxy uint16
}

// leastConnPort is a service port served by the userspace proxy.
type leastConnPort struct {
	Name      string   // namespace/name:port/protocol, for logs
	Protocol  Protocol // TCP or UDP
	Endpoints []netip.AddrPort
	Affinity  time.Duration
}

// ruleset is a flat view of the whole rendered dataplane (what the full
// resync programs and what the tests inspect). The static skeleton (base
// chains, reject chain, the per-table sets and maps) is implied, apart from
// the cluster CIDR the services chain marks with. It does not depend on
// the number of shards: every chain, set and element names the service
// port whose shard holds it.
type ruleset struct {
	CIDR       netip.Prefix
	Chains     map[string][]rule       // svc-*, ext-* and int-* chains
	ServiceIPs map[ipPortKey]string    // → target chain
	NodePorts  map[protoPortKey]string // → target chain
	NoEPIPs    map[ipPortKey]string    // → owner hash (reject)
	NoEPPorts  map[protoPortKey]string // → owner hash (reject)
	NodeIPs    map[netip.Addr]struct{}
	Hairpin    map[netip.Addr]struct{} // endpoint IP → element IP . IP
	Affinity   map[string]time.Duration
	LeastConn  map[string]leastConnPort // by svc chain name
	UDP        map[string]udpPort       // by svc chain name
}

func newRuleset() *ruleset {
	return &ruleset{
		Chains:     map[string][]rule{},
		ServiceIPs: map[ipPortKey]string{},
		NodePorts:  map[protoPortKey]string{},
		NoEPIPs:    map[ipPortKey]string{},
		NoEPPorts:  map[protoPortKey]string{},
		NodeIPs:    map[netip.Addr]struct{}{},
		Hairpin:    map[netip.Addr]struct{}{},
		Affinity:   map[string]time.Duration{},
		LeastConn:  map[string]leastConnPort{},
		UDP:        map[string]udpPort{},
	}
}
