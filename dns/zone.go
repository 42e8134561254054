package dns

import (
	"net/netip"
	"strings"

	miekg "github.com/miekg/dns"
)

// Zone is an immutable, precomputed answer index for the cluster domain and
// the reverse zones. Build it once with NewZone and share it read-only; a
// query is one map lookup plus a copy of packed bytes.
type Zone struct {
	domain    string // lower case, fully qualified
	podSuffix string // ".pod.<domain>"
	ttl       uint32
	names     map[string]*entry
	cluster   *authority   // the cluster domain
	reverse   []*authority // ZoneConfig.ReverseCIDRs
}

// authority is a zone the server is authoritative for: its SOA and the
// negative answers that carry it.
type authority struct {
	apex     string
	prefix   netip.Prefix // reverse zones: the CIDR; invalid for the cluster domain
	aligned  bool         // reverse zones: the CIDR ends on a label boundary
	soa      *miekg.SOA
	nxdomain *answer
	nodata   *answer
}

// entry is one existing name: its answers by query type.
type entry struct {
	auth    *authority
	cname   *answer // ExternalName: the answer to every type
	answers [numKinds]*answer
}

// Answer kinds: the query types a cluster name can have records for.
const (
	kindA = iota
	kindAAAA
	kindSRV
	kindPTR
	kindSOA
	kindNS
	kindANY
	numKinds
)

// kindOf maps a query type to its answer kind, or -1 for types no cluster
// name has (NODATA).
func kindOf(qtype uint16) int {
	switch qtype {
	case miekg.TypeA:
		return kindA
	case miekg.TypeAAAA:
		return kindAAAA
	case miekg.TypeSRV:
		return kindSRV
	case miekg.TypePTR:
		return kindPTR
	case miekg.TypeSOA:
		return kindSOA
	case miekg.TypeNS:
		return kindNS
	case miekg.TypeANY:
		return kindANY
	}
	return -1
}

// answerFor returns the answer for qtype at this name: its records, or
// NODATA.
func (e *entry) answerFor(qtype uint16) *answer {
	if e.cname != nil {
		return e.cname
	}
	if k := kindOf(qtype); k >= 0 && e.answers[k] != nil {
		return e.answers[k]
	}
	return e.auth.nodata
}

// Domain returns the cluster domain, fully qualified and lower case
// ("cluster.local.").
func (z *Zone) Domain() string { return z.domain }

// TTL returns the TTL of the zone's answers.
func (z *Zone) TTL() uint32 { return z.ttl }

// Len returns the number of names in the zone, empty non-terminals included.
func (z *Zone) Len() int { return len(z.names) }

// find returns the entry of an existing name, or the authority under which
// a missing name is NXDOMAIN; both nil means the name is not the zone's (it
// is forwarded). name is lower case and fully qualified.
func (z *Zone) find(name string) (*entry, *authority) {
	if e := z.names[name]; e != nil {
		return e, e.auth
	}
	return nil, z.authorityFor(name)
}

// authorityFor returns the zone a name that does not exist falls in, or nil.
func (z *Zone) authorityFor(name string) *authority {
	if isSubdomain(name, z.domain) {
		return z.cluster
	}
	if !strings.HasSuffix(name, ".arpa.") {
		return nil
	}
	for _, a := range z.reverse {
		if !isSubdomain(name, a.apex) {
			continue
		}
		if a.aligned {
			return a
		}
		// The apex is wider than the CIDR: only names inside it are ours.
		if p, ok := parseReverse(name); ok && p.Bits() >= a.prefix.Bits() && a.prefix.Contains(p.Addr()) {
			return a
		}
	}
	return nil
}

// podAlias resolves another spelling of a pod's dashed IPv6 name
// (fd00-0-0-0-0-0-0-1.ns.pod.<domain> for fd00--1.ns.pod.<domain>) to the
// canonical name and its entry.
func (z *Zone) podAlias(name string) (string, *entry) {
	label, rest, ok := strings.Cut(name, ".")
	if !ok || !isSubdomain(rest, "pod."+z.domain) || strings.Count(rest, ".") != strings.Count(z.domain, ".")+2 {
		return "", nil
	}
	ip, ok := parseDashedIP(label)
	if !ok {
		return "", nil
	}
	canon := dashedIP(ip) + "." + rest
	if canon == name {
		return "", nil
	}
	if e := z.names[canon]; e != nil {
		return canon, e
	}
	return "", nil
}
