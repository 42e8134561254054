package dns

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"

	miekg "github.com/miekg/dns"
)

// NewZone precomputes every answer of the zone described by cfg. Names that
// are not valid DNS labels (service, namespace, hostname, port names) are
// skipped; an invalid Domain falls back to DefaultDomain.
func NewZone(cfg ZoneConfig) *Zone {
	b := newBuilder(cfg)
	b.addApexes()
	for _, ns := range cfg.Namespaces {
		ns = lowerASCII(ns)
		if validLabel(ns) {
			b.set(ns+".svc."+b.z.domain, b.z.cluster)
			b.set(ns+".pod."+b.z.domain, b.z.cluster)
		}
	}
	svcs := slices.Clone(cfg.Services)
	slices.SortStableFunc(svcs, func(x, y Service) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	for i := range svcs {
		b.addService(&svcs[i])
	}
	for _, p := range cfg.Pods {
		b.addPod(p)
	}
	b.addPTRs()
	return b.finish()
}

// rrsets collects the records of one name while a zone is built.
type rrsets struct {
	auth                              *authority
	a, aaaa, srv, ptr, soa, ns, cname []miekg.RR
}

type ptrCandidate struct {
	prio    int // 0 service, 1 headless endpoint, 2 pod: the lowest present wins
	targets []string
}

type builder struct {
	z       *Zone
	sets    map[string]*rrsets
	ptrs    map[netip.Addr]*ptrCandidate
	arpa    map[string]*authority // reverse names outside ReverseCIDRs
	nsName  string
	mbox    string
	serial  uint32
	nsAddrs []netip.Addr
}

func newBuilder(cfg ZoneConfig) *builder {
	domain := lowerASCII(miekg.Fqdn(strings.TrimSpace(cfg.Domain)))
	if _, ok := miekg.IsDomainName(domain); !ok || domain == "." || strings.IndexByte(domain, '\\') >= 0 {
		domain = DefaultDomain + "."
	}
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	serial := cfg.Serial
	if serial == 0 {
		serial = uint32(time.Now().Unix())
	}
	b := &builder{
		z:      &Zone{domain: domain, podSuffix: ".pod." + domain, ttl: ttl},
		sets:   make(map[string]*rrsets),
		ptrs:   make(map[netip.Addr]*ptrCandidate),
		arpa:   make(map[string]*authority),
		nsName: "ns.dns." + domain,
		mbox:   "hostmaster." + domain,
		serial: serial,
	}
	for _, ip := range cfg.NameserverIPs {
		if ip.IsValid() {
			b.nsAddrs = append(b.nsAddrs, normIP(ip))
		}
	}
	b.z.cluster = b.newAuthority(domain)
	cidrs := cfg.ReverseCIDRs
	if cidrs == nil {
		cidrs = DefaultReverseCIDRs
	}
	for _, p := range cidrs {
		if !p.IsValid() {
			continue
		}
		p = netip.PrefixFrom(normIP(p.Addr()), p.Bits()).Masked()
		if p.Addr().Is4In6() || !p.IsValid() {
			continue
		}
		apex, aligned := reverseApex(p)
		a := b.newAuthority(apex)
		a.prefix, a.aligned = p, aligned
		b.z.reverse = append(b.z.reverse, a)
	}
	return b
}

func (b *builder) newAuthority(apex string) *authority {
	soa := &miekg.SOA{
		Hdr: miekg.RR_Header{Name: apex, Rrtype: miekg.TypeSOA, Class: miekg.ClassINET, Ttl: b.z.ttl},
		Ns:  b.nsName, Mbox: b.mbox, Serial: b.serial,
		Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: b.z.ttl,
	}
	return &authority{
		apex:     apex,
		soa:      soa,
		nxdomain: newAnswer("", miekg.RcodeNameError, nil, []miekg.RR{soa}, nil),
		nodata:   newAnswer("", miekg.RcodeSuccess, nil, []miekg.RR{soa}, nil),
	}
}

// set returns the record sets of name, creating it and its missing
// ancestors down to the apex of auth (empty non-terminals, NODATA).
func (b *builder) set(name string, auth *authority) *rrsets {
	if s := b.sets[name]; s != nil {
		return s
	}
	s := &rrsets{auth: auth}
	b.sets[name] = s
	for p := parent(name); p != "" && isSubdomain(p, auth.apex) && b.sets[p] == nil; p = parent(p) {
		if p == auth.apex && auth.prefix.IsValid() && !auth.aligned {
			break // the apex is wider than the CIDR: not ours
		}
		b.sets[p] = &rrsets{auth: auth}
	}
	return s
}

func (b *builder) hdr(name string, t uint16) miekg.RR_Header {
	return miekg.RR_Header{Name: name, Rrtype: t, Class: miekg.ClassINET, Ttl: b.z.ttl}
}

// addAddr adds an A or AAAA record for ip at s.
func (b *builder) addAddr(name string, s *rrsets, ip netip.Addr) {
	if ip.Is4() {
		s.a = append(s.a, &miekg.A{Hdr: b.hdr(name, miekg.TypeA), A: ip.AsSlice()})
	} else {
		s.aaaa = append(s.aaaa, &miekg.AAAA{Hdr: b.hdr(name, miekg.TypeAAAA), AAAA: ip.AsSlice()})
	}
}

func (b *builder) addSRV(name string, s *rrsets, port uint16, target string) {
	s.srv = append(s.srv, &miekg.SRV{Hdr: b.hdr(name, miekg.TypeSRV), Port: port, Target: target})
}

func (b *builder) addPTRCandidate(ip netip.Addr, prio int, target string) {
	c := b.ptrs[ip]
	switch {
	case c == nil:
		b.ptrs[ip] = &ptrCandidate{prio: prio, targets: []string{target}}
	case prio < c.prio:
		c.prio, c.targets = prio, []string{target}
	case prio == c.prio:
		c.targets = append(c.targets, target)
	}
}

// addApexes adds the SOA and NS records of every zone apex and the fixed
// names of the cluster domain.
func (b *builder) addApexes() {
	d := b.z.domain
	for _, a := range append([]*authority{b.z.cluster}, b.z.reverse...) {
		if a != b.z.cluster && !a.aligned {
			continue // the apex is wider than the CIDR: not ours to answer
		}
		s := b.set(a.apex, a)
		s.soa = []miekg.RR{a.soa}
		s.ns = []miekg.RR{&miekg.NS{Hdr: b.hdr(a.apex, miekg.TypeNS), Ns: b.nsName}}
	}
	b.set("svc."+d, b.z.cluster)
	b.set("pod."+d, b.z.cluster)
	ns := b.set(b.nsName, b.z.cluster)
	for _, ip := range b.nsAddrs {
		b.addAddr(b.nsName, ns, ip)
	}
}

// portProto returns the SRV label of a port's protocol ("_tcp"), or false.
func portProto(p Port) (string, bool) {
	switch strings.ToLower(p.Protocol) {
	case "", "tcp":
		return "_tcp", true
	case "udp":
		return "_udp", true
	case "sctp":
		return "_sctp", true
	}
	return "", false
}

// namedPortName returns "_name._proto.<svcName>" for a named port, or false.
func namedPortName(p Port, svcName string) (string, bool) {
	proto, ok := portProto(p)
	name := lowerASCII(p.Name)
	if !ok || !validLabel(name) {
		return "", false
	}
	return "_" + name + "." + proto + "." + svcName, true
}

func (b *builder) addService(svc *Service) {
	ns, name := lowerASCII(svc.Namespace), lowerASCII(svc.Name)
	if !validLabel(ns) || !validLabel(name) {
		return
	}
	svcName := name + "." + ns + ".svc." + b.z.domain
	auth := b.z.cluster
	s := b.set(svcName, auth)
	switch {
	case svc.ExternalName != "":
		target := lowerASCII(miekg.Fqdn(strings.TrimSpace(svc.ExternalName)))
		if _, ok := miekg.IsDomainName(target); !ok || target == "." {
			return
		}
		s.cname = []miekg.RR{&miekg.CNAME{Hdr: b.hdr(svcName, miekg.TypeCNAME), Target: target}}
		for _, p := range svc.Ports {
			if pn, ok := namedPortName(p, svcName); ok {
				b.addSRV(pn, b.set(pn, auth), p.Port, target)
			}
		}
	case svc.Headless:
		for _, ep := range svc.Endpoints {
			if !ep.IP.IsValid() {
				continue
			}
			ip := normIP(ep.IP)
			host := lowerASCII(ep.Hostname)
			if !validLabel(host) {
				host = dashedIP(ip)
			}
			epName := host + "." + svcName
			b.addAddr(svcName, s, ip)
			b.addAddr(epName, b.set(epName, auth), ip)
			b.addPTRCandidate(ip, 1, epName)
			ports := ep.Ports
			if len(ports) == 0 {
				ports = svc.Ports
			}
			for _, p := range ports {
				if _, ok := portProto(p); !ok {
					continue
				}
				b.addSRV(svcName, s, p.Port, epName)
				if pn, ok := namedPortName(p, svcName); ok {
					b.addSRV(pn, b.set(pn, auth), p.Port, epName)
				}
			}
		}
	default:
		for _, ip := range svc.ClusterIPs {
			if !ip.IsValid() {
				continue
			}
			ip = normIP(ip)
			b.addAddr(svcName, s, ip)
			b.addPTRCandidate(ip, 0, svcName)
		}
		for _, p := range svc.Ports {
			if _, ok := portProto(p); !ok {
				continue
			}
			b.addSRV(svcName, s, p.Port, svcName)
			if pn, ok := namedPortName(p, svcName); ok {
				b.addSRV(pn, b.set(pn, auth), p.Port, svcName)
			}
		}
	}
}

func (b *builder) addPod(p Pod) {
	ns := lowerASCII(p.Namespace)
	if !validLabel(ns) {
		return
	}
	for _, ip := range p.IPs {
		if !ip.IsValid() {
			continue
		}
		ip = normIP(ip)
		name := dashedIP(ip) + "." + ns + ".pod." + b.z.domain
		b.addAddr(name, b.set(name, b.z.cluster), ip)
		b.addPTRCandidate(ip, 2, name)
	}
}

// reverseAuthority returns the reverse zone ip's PTR name belongs to. An
// address outside ReverseCIDRs still gets its PTR record; its negative
// answers (other types) carry an SOA for in-addr.arpa or ip6.arpa.
func (b *builder) reverseAuthority(ip netip.Addr) (*authority, bool) {
	for _, a := range b.z.reverse {
		if a.prefix.Contains(ip) {
			return a, true
		}
	}
	apex := "ip6.arpa."
	if ip.Is4() {
		apex = "in-addr.arpa."
	}
	a := b.arpa[apex]
	if a == nil {
		a = b.newAuthority(apex)
		b.arpa[apex] = a
	}
	return a, false
}

func (b *builder) addPTRs() {
	for ip, c := range b.ptrs {
		name := reverseName(ip)
		auth, ours := b.reverseAuthority(ip)
		var s *rrsets
		if ours {
			s = b.set(name, auth)
		} else if s = b.sets[name]; s == nil {
			s = &rrsets{auth: auth}
			b.sets[name] = s
		}
		for _, t := range c.targets {
			s.ptr = append(s.ptr, &miekg.PTR{Hdr: b.hdr(name, miekg.TypePTR), Ptr: t})
		}
	}
}

// finish sorts and deduplicates every record set and precomputes the
// answers.
func (b *builder) finish() *Zone {
	z := b.z
	z.names = make(map[string]*entry, len(b.sets))
	for _, s := range b.sets {
		s.a = sortDedup(s.a)
		s.aaaa = sortDedup(s.aaaa)
		s.srv = sortDedup(s.srv)
		s.ptr = sortDedup(s.ptr)
	}
	for name, s := range b.sets {
		e := &entry{auth: s.auth}
		z.names[name] = e
		if len(s.cname) > 0 {
			e.cname = newAnswer(name, miekg.RcodeSuccess, s.cname, nil, nil)
			continue
		}
		pos := func(an, ex []miekg.RR) *answer {
			if len(an) == 0 {
				return nil
			}
			return newAnswer(name, miekg.RcodeSuccess, an, nil, ex)
		}
		e.answers[kindA] = pos(s.a, nil)
		e.answers[kindAAAA] = pos(s.aaaa, nil)
		setSRVWeights(s.srv)
		e.answers[kindSRV] = pos(s.srv, b.targetAddrs(s.srv))
		e.answers[kindPTR] = pos(s.ptr, nil)
		e.answers[kindSOA] = pos(s.soa, nil)
		e.answers[kindNS] = pos(s.ns, b.targetAddrs(s.ns))
		var all []miekg.RR
		for _, rrs := range [][]miekg.RR{s.soa, s.ns, s.a, s.aaaa, s.srv, s.ptr} {
			all = append(all, rrs...)
		}
		e.answers[kindANY] = pos(all, nil)
	}
	return z
}

// targetAddrs returns the A and AAAA records of the in-zone targets of SRV
// or NS records, for the additional section.
func (b *builder) targetAddrs(rrs []miekg.RR) []miekg.RR {
	var out []miekg.RR
	seen := make(map[string]bool)
	for _, rr := range rrs {
		var t string
		switch rr := rr.(type) {
		case *miekg.SRV:
			t = rr.Target
		case *miekg.NS:
			t = rr.Ns
		}
		if seen[t] {
			continue
		}
		seen[t] = true
		if s := b.sets[t]; s != nil {
			out = append(out, s.a...)
			out = append(out, s.aaaa...)
		}
	}
	return out
}

// setSRVWeights gives every SRV record the weight CoreDNS gives it: all at
// priority 0, each weighted 100/n (at least 1).
func setSRVWeights(rrs []miekg.RR) {
	if len(rrs) == 0 {
		return
	}
	w := uint16(max(1, 100/len(rrs)))
	for _, rr := range rrs {
		rr.(*miekg.SRV).Weight = w
	}
}

// sortDedup sorts records of one type by their data and drops duplicates.
func sortDedup(rrs []miekg.RR) []miekg.RR {
	if len(rrs) < 2 {
		return rrs
	}
	slices.SortStableFunc(rrs, compareRR)
	return slices.CompactFunc(rrs, func(x, y miekg.RR) bool { return compareRR(x, y) == 0 })
}

func compareRR(x, y miekg.RR) int {
	switch x := x.(type) {
	case *miekg.A:
		return slices.Compare(x.A.To4(), y.(*miekg.A).A.To4())
	case *miekg.AAAA:
		return slices.Compare(x.AAAA, y.(*miekg.AAAA).AAAA)
	case *miekg.SRV:
		y := y.(*miekg.SRV)
		return cmp.Or(cmp.Compare(x.Target, y.Target), cmp.Compare(x.Port, y.Port))
	case *miekg.PTR:
		return cmp.Compare(x.Ptr, y.(*miekg.PTR).Ptr)
	}
	return cmp.Compare(x.String(), y.String())
}
