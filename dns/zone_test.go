package dns

import (
	"fmt"
	"net/netip"
	"testing"

	miekg "github.com/miekg/dns"
)

const (
	ok     = miekg.RcodeSuccess
	nxdom  = miekg.RcodeNameError
	domSOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5"
	svcSOA = "43.10.in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5"
	podSOA = "42.10.in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5"
)

// zoneCase is one query against testZoneConfig and its expected reply.
type zoneCase struct {
	q      string
	qtype  uint16
	rcode  int
	answer []string // in any order
	ns     []string
	extra  []string // nil: no additional records expected
}

func (c zoneCase) String() string { return c.q + " " + miekg.TypeToString[c.qtype] }

// nodata and nxdomain are negative answers carrying the SOA of their zone.
func nodata(q string, t uint16, soa string) zoneCase {
	return zoneCase{q: q, qtype: t, rcode: ok, ns: []string{soa}}
}

func nxdomain(q string, t uint16, soa string) zoneCase {
	return zoneCase{q: q, qtype: t, rcode: nxdom, ns: []string{soa}}
}

func positive(q string, t uint16, answer []string, extra ...string) zoneCase {
	return zoneCase{q: q, qtype: t, rcode: ok, answer: answer, extra: extra}
}

var zoneCases = []zoneCase{
	// Services: A/AAAA by family.
	positive("web.default.svc.cluster.local.", miekg.TypeA, []string{"web.default.svc.cluster.local. 5 IN A 10.43.0.20"}),
	positive("web.default.svc.cluster.local.", miekg.TypeAAAA, []string{"web.default.svc.cluster.local. 5 IN AAAA fd00:43::20"}),
	nodata("v4only.default.svc.cluster.local.", miekg.TypeAAAA, domSOA),
	nodata("web.default.svc.cluster.local.", miekg.TypeTXT, domSOA),
	nodata("web.default.svc.cluster.local.", miekg.TypeMX, domSOA),
	nodata("web.default.svc.cluster.local.", miekg.TypeCNAME, domSOA),
	nodata("pending.default.svc.cluster.local.", miekg.TypeA, domSOA),
	nxdomain("nosuch.default.svc.cluster.local.", miekg.TypeA, domSOA),
	nxdomain("x.web.default.svc.cluster.local.", miekg.TypeA, domSOA),
	nxdomain("google.com.default.svc.cluster.local.", miekg.TypeA, domSOA), // a search-path expansion
	nxdomain("skipped.bad_ns.svc.cluster.local.", miekg.TypeA, domSOA),
	positive("web.default.svc.cluster.local.", miekg.TypeANY, []string{
		"web.default.svc.cluster.local. 5 IN A 10.43.0.20",
		"web.default.svc.cluster.local. 5 IN AAAA fd00:43::20",
		"web.default.svc.cluster.local. 5 IN SRV 0 33 53 web.default.svc.cluster.local.",
		"web.default.svc.cluster.local. 5 IN SRV 0 33 80 web.default.svc.cluster.local.",
		"web.default.svc.cluster.local. 5 IN SRV 0 33 8080 web.default.svc.cluster.local.",
	}),

	// Intermediate names and apexes.
	nodata("default.svc.cluster.local.", miekg.TypeA, domSOA),
	nodata("empty.svc.cluster.local.", miekg.TypeA, domSOA), // a namespace without services
	nxdomain("nons.svc.cluster.local.", miekg.TypeA, domSOA),
	nodata("svc.cluster.local.", miekg.TypeA, domSOA),
	nodata("pod.cluster.local.", miekg.TypeA, domSOA),
	nodata("cluster.local.", miekg.TypeA, domSOA),
	nxdomain("nosuch.cluster.local.", miekg.TypeA, domSOA),
	positive("cluster.local.", miekg.TypeSOA, []string{domSOA}),
	positive("cluster.local.", miekg.TypeNS, []string{"cluster.local. 5 IN NS ns.dns.cluster.local."},
		"ns.dns.cluster.local. 5 IN A 10.43.0.10"),
	positive("ns.dns.cluster.local.", miekg.TypeA, []string{"ns.dns.cluster.local. 5 IN A 10.43.0.10"}),

	// SRV for named ports of a ClusterIP service; the target's addresses
	// in the additional section.
	positive("_http._tcp.web.default.svc.cluster.local.", miekg.TypeSRV,
		[]string{"_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."},
		"web.default.svc.cluster.local. 5 IN A 10.43.0.20", "web.default.svc.cluster.local. 5 IN AAAA fd00:43::20"),
	positive("_dns._udp.web.default.svc.cluster.local.", miekg.TypeSRV,
		[]string{"_dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local."},
		"web.default.svc.cluster.local. 5 IN A 10.43.0.20", "web.default.svc.cluster.local. 5 IN AAAA fd00:43::20"),
	nxdomain("_http._udp.web.default.svc.cluster.local.", miekg.TypeSRV, domSOA),
	nodata("_tcp.web.default.svc.cluster.local.", miekg.TypeSRV, domSOA),
	nodata("_http._tcp.web.default.svc.cluster.local.", miekg.TypeA, domSOA),
	positive("web.default.svc.cluster.local.", miekg.TypeSRV, []string{
		"web.default.svc.cluster.local. 5 IN SRV 0 33 53 web.default.svc.cluster.local.",
		"web.default.svc.cluster.local. 5 IN SRV 0 33 80 web.default.svc.cluster.local.",
		"web.default.svc.cluster.local. 5 IN SRV 0 33 8080 web.default.svc.cluster.local.",
	}, "web.default.svc.cluster.local. 5 IN A 10.43.0.20", "web.default.svc.cluster.local. 5 IN AAAA fd00:43::20"),

	// Headless: endpoint addresses, per-endpoint SRV targets, endpoint names.
	positive("db.prod.svc.cluster.local.", miekg.TypeA, []string{
		"db.prod.svc.cluster.local. 5 IN A 10.42.1.5",
		"db.prod.svc.cluster.local. 5 IN A 10.42.2.6",
		"db.prod.svc.cluster.local. 5 IN A 10.42.3.7",
	}),
	nodata("db.prod.svc.cluster.local.", miekg.TypeAAAA, domSOA),
	positive("_pg._tcp.db.prod.svc.cluster.local.", miekg.TypeSRV, []string{
		"_pg._tcp.db.prod.svc.cluster.local. 5 IN SRV 0 33 5432 db-0.db.prod.svc.cluster.local.",
		"_pg._tcp.db.prod.svc.cluster.local. 5 IN SRV 0 33 5432 db-1.db.prod.svc.cluster.local.",
		"_pg._tcp.db.prod.svc.cluster.local. 5 IN SRV 0 33 5432 10-42-3-7.db.prod.svc.cluster.local.",
	},
		"db-0.db.prod.svc.cluster.local. 5 IN A 10.42.1.5",
		"db-1.db.prod.svc.cluster.local. 5 IN A 10.42.2.6",
		"10-42-3-7.db.prod.svc.cluster.local. 5 IN A 10.42.3.7"),
	positive("db-0.db.prod.svc.cluster.local.", miekg.TypeA, []string{"db-0.db.prod.svc.cluster.local. 5 IN A 10.42.1.5"}),
	positive("10-42-3-7.db.prod.svc.cluster.local.", miekg.TypeA, []string{"10-42-3-7.db.prod.svc.cluster.local. 5 IN A 10.42.3.7"}),
	nxdomain("db-9.db.prod.svc.cluster.local.", miekg.TypeA, domSOA),
	nxdomain("10-42-1-5.db.prod.svc.cluster.local.", miekg.TypeA, domSOA), // has a hostname: no dashed name

	// ExternalName: the CNAME only, not chased.
	positive("ext.default.svc.cluster.local.", miekg.TypeA, []string{"ext.default.svc.cluster.local. 5 IN CNAME example.com."}),
	positive("ext.default.svc.cluster.local.", miekg.TypeAAAA, []string{"ext.default.svc.cluster.local. 5 IN CNAME example.com."}),
	positive("ext.default.svc.cluster.local.", miekg.TypeCNAME, []string{"ext.default.svc.cluster.local. 5 IN CNAME example.com."}),
	positive("_https._tcp.ext.default.svc.cluster.local.", miekg.TypeSRV,
		[]string{"_https._tcp.ext.default.svc.cluster.local. 5 IN SRV 0 100 443 example.com."}),

	// Pods (verified: the IP must belong to a pod of that namespace).
	positive("10-42-1-9.default.pod.cluster.local.", miekg.TypeA, []string{"10-42-1-9.default.pod.cluster.local. 5 IN A 10.42.1.9"}),
	positive("fd00-42--9.default.pod.cluster.local.", miekg.TypeAAAA, []string{"fd00-42--9.default.pod.cluster.local. 5 IN AAAA fd00:42::9"}),
	positive("fd00-42-0-0-0-0-0-9.default.pod.cluster.local.", miekg.TypeAAAA, []string{"fd00-42-0-0-0-0-0-9.default.pod.cluster.local. 5 IN AAAA fd00:42::9"}),
	positive("10-42-2-6.prod.pod.cluster.local.", miekg.TypeA, []string{"10-42-2-6.prod.pod.cluster.local. 5 IN A 10.42.2.6"}),
	nodata("10-42-1-9.default.pod.cluster.local.", miekg.TypeAAAA, domSOA),
	nxdomain("10-42-1-9.prod.pod.cluster.local.", miekg.TypeA, domSOA),
	nxdomain("10-42-9-9.default.pod.cluster.local.", miekg.TypeA, domSOA),
	nodata("default.pod.cluster.local.", miekg.TypeA, domSOA),

	// Reverse lookups.
	positive("20.0.43.10.in-addr.arpa.", miekg.TypePTR, []string{"20.0.43.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."}),
	positive("0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa.", miekg.TypePTR,
		[]string{"0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa. 5 IN PTR web.default.svc.cluster.local."}),
	positive("5.1.42.10.in-addr.arpa.", miekg.TypePTR, []string{"5.1.42.10.in-addr.arpa. 5 IN PTR db-0.db.prod.svc.cluster.local."}),
	positive("7.3.42.10.in-addr.arpa.", miekg.TypePTR, []string{"7.3.42.10.in-addr.arpa. 5 IN PTR 10-42-3-7.db.prod.svc.cluster.local."}),
	positive("9.1.42.10.in-addr.arpa.", miekg.TypePTR, []string{"9.1.42.10.in-addr.arpa. 5 IN PTR 10-42-1-9.default.pod.cluster.local."}),
	nodata("20.0.43.10.in-addr.arpa.", miekg.TypeA, svcSOA),
	nxdomain("99.0.43.10.in-addr.arpa.", miekg.TypePTR, svcSOA),
	nxdomain("99.99.42.10.in-addr.arpa.", miekg.TypePTR, podSOA),
	nxdomain("x.20.0.43.10.in-addr.arpa.", miekg.TypePTR, svcSOA),
	nodata("0.43.10.in-addr.arpa.", miekg.TypePTR, svcSOA),
	positive("43.10.in-addr.arpa.", miekg.TypeSOA, []string{svcSOA}),
}

func TestZoneRecords(t *testing.T) {
	s := newTestServer(t, Config{}, testZoneConfig())
	for _, c := range zoneCases {
		t.Run(c.String(), func(t *testing.T) {
			m, _ := ask(t, s, c.q, c.qtype, withEDNS(4096, false))
			checkReply(t, m, c)
		})
	}
}

func checkReply(t *testing.T, m *miekg.Msg, c zoneCase) {
	t.Helper()
	if m.Rcode != c.rcode {
		t.Errorf("rcode %s, want %s", miekg.RcodeToString[m.Rcode], miekg.RcodeToString[c.rcode])
	}
	if !m.Authoritative {
		t.Error("AA bit not set")
	}
	if m.Truncated {
		t.Error("TC bit set")
	}
	if len(m.Question) != 1 || m.Question[0].Name != c.q || m.Question[0].Qtype != c.qtype {
		t.Errorf("question %v, want %s", m.Question, c)
	}
	if got := rrStrings(m.Answer); !sameStrings(got, c.answer) {
		t.Errorf("answer: %s\nwant: %s", fmtRRs(got), fmtRRs(c.answer))
	}
	if got := rrStrings(m.Ns); !sameStrings(got, c.ns) {
		t.Errorf("authority: %s\nwant: %s", fmtRRs(got), fmtRRs(c.ns))
	}
	if got := rrStrings(m.Extra); !sameStrings(got, c.extra) {
		t.Errorf("additional: %s\nwant: %s", fmtRRs(got), fmtRRs(c.extra))
	}
}

// TestZoneRecordsSlowPath builds every reply of the table record by record
// (as for a truncated or renamed answer) and checks it equals the packed
// fast-path reply, so the two paths cannot drift apart.
func TestZoneRecordsSlowPath(t *testing.T) {
	s := newTestServer(t, Config{}, testZoneConfig())
	z := s.Zone()
	for _, c := range zoneCases {
		name, _ := canonicalQName(c.q)
		e, _ := z.find(name)
		if e == nil {
			continue
		}
		ans := e.answerFor(c.qtype)
		p := ans.packed()
		if p.b == nil {
			t.Errorf("%s: answer was not packed", c)
			continue
		}
		m := new(miekg.Msg)
		m.SetQuestion(c.q, c.qtype)
		req := request{r: m, q: m.Question[0], limit: miekg.MaxMsgSize}
		var fast, slow recorder
		if !s.writeFast(&fast, &req, ans.rcode, ans.counts, p) {
			t.Errorf("%s: fast path refused a reply that fits", c)
			continue
		}
		s.reply(&slow, &req, ans, false)
		fm, sm := new(miekg.Msg), new(miekg.Msg)
		if err := fm.Unpack(fast.out[0]); err != nil {
			t.Fatalf("%s: fast reply: %v", c, err)
		}
		if slow.err != nil || len(slow.out) != 1 {
			t.Fatalf("%s: slow reply: %v", c, slow.err)
		}
		if err := sm.Unpack(slow.out[0]); err != nil {
			t.Fatalf("%s: slow reply: %v", c, err)
		}
		if fm.String() != sm.String() {
			t.Errorf("%s: fast and slow replies differ:\n%s\n---\n%s", c, fm, sm)
		}
	}
}

func TestCaseInsensitiveEcho(t *testing.T) {
	s := newTestServer(t, Config{}, testZoneConfig())
	q := "WEB.Default.SVC.cluster.LOCAL."
	m, _ := ask(t, s, q, miekg.TypeA)
	if m.Rcode != ok || len(m.Answer) != 1 {
		t.Fatalf("%s: %v", q, m)
	}
	if m.Question[0].Name != q || m.Answer[0].Header().Name != q {
		t.Errorf("question %q, answer owner %q: want both spelled as asked, %q", m.Question[0].Name, m.Answer[0].Header().Name, q)
	}
	m, _ = ask(t, s, "NOSUCH.default.svc.Cluster.Local.", miekg.TypeA)
	if m.Rcode != nxdom || m.Question[0].Name != "NOSUCH.default.svc.Cluster.Local." {
		t.Errorf("NXDOMAIN reply %v", m)
	}

	// A name with escapes (as a caller of ServeDNS may build it; the wire
	// has plain octets) is the same name.
	req := new(miekg.Msg)
	req.SetQuestion("\\087eb.default.svc.cluster.local.", miekg.TypeA)
	w := &recorder{}
	s.ServeDNS(w, req)
	if len(w.out) != 1 {
		t.Fatalf("%d replies", len(w.out))
	}
	reply := new(miekg.Msg)
	if err := reply.Unpack(w.out[0]); err != nil {
		t.Fatal(err)
	}
	if reply.Rcode != ok || len(reply.Answer) != 1 || reply.Answer[0].Header().Name != "Web.default.svc.cluster.local." {
		t.Errorf("escaped name: %v", reply)
	}
}

func TestCustomDomainAndTTL(t *testing.T) {
	s := newTestServer(t, Config{}, ZoneConfig{Domain: "Corp.Example", TTL: 30, Services: []Service{
		{Namespace: "a", Name: "b", ClusterIPs: addrs("10.43.1.1")},
	}})
	m, _ := ask(t, s, "b.a.svc.corp.example.", miekg.TypeA)
	if got := rrStrings(m.Answer); len(got) != 1 || got[0] != "b.a.svc.corp.example. 30 IN A 10.43.1.1" {
		t.Errorf("answer %v", got)
	}
	m, _ = ask(t, s, "b.a.svc.cluster.local.", miekg.TypeA)
	if m.Rcode != miekg.RcodeRefused {
		t.Errorf("cluster.local with another domain: %s, want REFUSED (forwarded, no upstreams)", miekg.RcodeToString[m.Rcode])
	}
	m, _ = ask(t, s, "nope.corp.example.", miekg.TypeA)
	if soa, okSOA := firstSOA(m.Ns); !okSOA || soa.Minttl != 30 || soa.Hdr.Name != "corp.example." {
		t.Errorf("negative answer SOA %v", m.Ns)
	}
}

func firstSOA(rrs []miekg.RR) (*miekg.SOA, bool) {
	s := findSOA(rrs)
	return s, s != nil
}

func TestReverseCIDRs(t *testing.T) {
	zc := ZoneConfig{
		ReverseCIDRs: []netip.Prefix{mustPrefix("10.96.0.0/12"), mustPrefix("fd00:43::/112")},
		Services:     []Service{{Namespace: "a", Name: "b", ClusterIPs: addrs("10.96.0.1", "fd00:43::1")}},
	}
	s := newTestServer(t, Config{}, zc)
	for _, c := range []struct {
		q     string
		rcode int
	}{
		{"1.0.96.10.in-addr.arpa.", ok},
		{"2.0.96.10.in-addr.arpa.", nxdom},               // inside 10.96.0.0/12
		{"2.0.111.10.in-addr.arpa.", nxdom},              // still inside
		{"2.0.112.10.in-addr.arpa.", miekg.RcodeRefused}, // outside: forwarded (no upstreams)
		{"1.43.10.in-addr.arpa.", miekg.RcodeRefused},    // the default CIDRs are replaced
		{"10.in-addr.arpa.", miekg.RcodeRefused},         // wider than the CIDR: not ours
		{"2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa.", nxdom},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa.", ok},
	} {
		m, _ := ask(t, s, c.q, miekg.TypePTR)
		if m.Rcode != c.rcode {
			t.Errorf("%s: %s, want %s", c.q, miekg.RcodeToString[m.Rcode], miekg.RcodeToString[c.rcode])
		}
	}
	// No reverse zones at all: unknown reverse names are forwarded.
	s = newTestServer(t, Config{}, ZoneConfig{ReverseCIDRs: []netip.Prefix{}})
	if m, _ := ask(t, s, "1.0.43.10.in-addr.arpa.", miekg.TypePTR); m.Rcode != miekg.RcodeRefused {
		t.Errorf("without reverse zones: %s, want REFUSED", miekg.RcodeToString[m.Rcode])
	}
}

func TestSRVWeights(t *testing.T) {
	var eps []Endpoint
	for i := 1; i <= 3; i++ {
		eps = append(eps, Endpoint{IP: mustAddr(fmt.Sprintf("10.42.0.%d", i)), Ports: []Port{{Name: "p", Port: uint16(9000 + i)}}})
	}
	s := newTestServer(t, Config{}, ZoneConfig{Services: []Service{{Namespace: "n", Name: "h", Headless: true,
		Ports: []Port{{Name: "p", Port: 80}}, Endpoints: eps}}})
	m, _ := ask(t, s, "_p._tcp.h.n.svc.cluster.local.", miekg.TypeSRV)
	want := []string{
		"_p._tcp.h.n.svc.cluster.local. 5 IN SRV 0 33 9001 10-42-0-1.h.n.svc.cluster.local.",
		"_p._tcp.h.n.svc.cluster.local. 5 IN SRV 0 33 9002 10-42-0-2.h.n.svc.cluster.local.",
		"_p._tcp.h.n.svc.cluster.local. 5 IN SRV 0 33 9003 10-42-0-3.h.n.svc.cluster.local.",
	}
	if got := rrStrings(m.Answer); !sameStrings(got, want) {
		t.Errorf("endpoint ports: %s\nwant %s", fmtRRs(got), fmtRRs(want))
	}
}

func TestZoneSwap(t *testing.T) {
	s, err := NewServer(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := ask(t, s, "a.b.svc.cluster.local.", miekg.TypeA); m.Rcode != miekg.RcodeServerFailure {
		t.Errorf("before any zone: %s, want SERVFAIL", miekg.RcodeToString[m.Rcode])
	}
	s.SetZone(NewZone(ZoneConfig{}))
	if m, _ := ask(t, s, "a.b.svc.cluster.local.", miekg.TypeA); m.Rcode != nxdom {
		t.Errorf("empty zone: %s, want NXDOMAIN", miekg.RcodeToString[m.Rcode])
	}
	s.SetZone(NewZone(ZoneConfig{Services: []Service{{Namespace: "b", Name: "a", ClusterIPs: addrs("10.43.0.5")}}}))
	if m, _ := ask(t, s, "a.b.svc.cluster.local.", miekg.TypeA); m.Rcode != ok || len(m.Answer) != 1 {
		t.Errorf("after the swap: %v", m)
	}
}
