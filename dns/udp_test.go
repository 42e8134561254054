package dns

import (
	"strings"
	"testing"

	miekg "github.com/miekg/dns"
)

// fastAndGeneral answers one raw query on the UDP fast path and through
// ServeDNS. handled reports whether the fast path took it.
func fastAndGeneral(t testing.TB, s *Server, pkt []byte) (fast, general *miekg.Msg, handled bool) {
	t.Helper()
	out := make([]byte, batchReplySize)
	reply, handled := s.answerPacket(pkt, out)
	req := new(miekg.Msg)
	unpackErr := req.Unpack(pkt)
	if handled && reply == nil {
		if unpackErr == nil && !req.Response {
			t.Fatalf("fast path dropped a query: %v", req)
		}
		return nil, nil, true
	}
	if handled {
		fast = new(miekg.Msg)
		if err := fast.Unpack(reply); err != nil {
			t.Fatalf("fast reply does not unpack: %v", err)
		}
		if unpackErr != nil {
			t.Fatalf("fast path answered a packet miekg cannot unpack (%v): %v", unpackErr, fast)
		}
	}
	if unpackErr != nil {
		return fast, nil, handled
	}
	w := &recorder{}
	s.ServeDNS(w, req)
	if w.err != nil {
		t.Fatalf("general reply does not pack: %v", w.err)
	}
	if len(w.out) == 1 {
		general = new(miekg.Msg)
		if err := general.Unpack(w.out[0]); err != nil {
			t.Fatalf("general reply does not unpack: %v", err)
		}
	}
	return fast, general, handled
}

func packQuery(t testing.TB, name string, qtype uint16, edns bool) []byte {
	t.Helper()
	m := new(miekg.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(4096, true)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFastPathMatchesServeDNS checks that every reply of the UDP fast path
// equals the reply ServeDNS gives to the same packet.
func TestFastPathMatchesServeDNS(t *testing.T) {
	s := newTestServer(t, Config{}, testZoneConfig())
	var handled, total int
	for _, c := range zoneCases {
		for _, name := range []string{c.q, strings.ToUpper(c.q)} {
			for _, edns := range []bool{false, true} {
				fast, general, ok := fastAndGeneral(t, s, packQuery(t, name, c.qtype, edns))
				total++
				if !ok {
					continue
				}
				handled++
				if general == nil || fast.String() != general.String() {
					t.Errorf("%s %s edns=%v: fast path\n%v\nServeDNS\n%v", name, miekg.TypeToString[c.qtype], edns, fast, general)
				}
			}
		}
	}
	// Everything in the table is a plain name of the zone except the
	// reverse NXDOMAINs and the pod alias, which take the general path.
	if handled < total-6*4 {
		t.Errorf("fast path took %d of %d queries", handled, total)
	}
	for _, q := range []string{"web.default.svc.cluster.local.", "WEB.default.svc.cluster.local.", "nosuch.default.svc.cluster.local.",
		"_http._tcp.web.default.svc.cluster.local."} {
		if _, _, ok := fastAndGeneral(t, s, packQuery(t, q, miekg.TypeA, false)); !ok {
			t.Errorf("%s: not on the fast path", q)
		}
	}
}

func TestFastPathDeclines(t *testing.T) {
	s := newTestServer(t, Config{}, testZoneConfig())
	web := "web.default.svc.cluster.local."
	for _, c := range []struct {
		name  string
		build func(m *miekg.Msg)
	}{
		{"truncation needed", func(m *miekg.Msg) { m.Question[0].Name = bigName }},
		{"outside the zone", func(m *miekg.Msg) { m.Question[0].Name = "example.com." }},
		{"pod alias", func(m *miekg.Msg) { m.Question[0].Name = "fd00-42-0-0-0-0-0-9.default.pod.cluster.local." }},
		{"reverse NXDOMAIN", func(m *miekg.Msg) { m.Question[0].Name = "99.0.43.10.in-addr.arpa." }},
		{"escaped octet", func(m *miekg.Msg) { m.Question[0].Name = "w\\.eb.default.svc.cluster.local." }},
		{"EDNS version 1", func(m *miekg.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }},
		{"two OPT", func(m *miekg.Msg) { m.SetEdns0(1232, false); m.SetEdns0(1232, false) }},
		{"opcode NOTIFY", func(m *miekg.Msg) { m.Opcode = miekg.OpcodeNotify }},
		{"AXFR", func(m *miekg.Msg) { m.Question[0].Qtype = miekg.TypeAXFR }},
		{"class CHAOS", func(m *miekg.Msg) { m.Question[0].Qclass = miekg.ClassCHAOS }},
		{"answer section", func(m *miekg.Msg) {
			m.Answer = []miekg.RR{&miekg.A{Hdr: miekg.RR_Header{Name: web, Rrtype: miekg.TypeA, Class: 1}}}
		}},
	} {
		m := new(miekg.Msg)
		m.SetQuestion(web, miekg.TypeA)
		c.build(m)
		pkt, err := m.Pack()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if _, _, ok := fastAndGeneral(t, s, pkt); ok {
			t.Errorf("%s: answered on the fast path", c.name)
		}
	}
	// A response is dropped; so are short and garbage packets (left to the
	// general path, which drops what it cannot read).
	m := new(miekg.Msg)
	m.SetQuestion(web, miekg.TypeA)
	m.Response = true
	pkt, _ := m.Pack()
	if reply, ok := s.answerPacket(pkt, make([]byte, batchReplySize)); !ok || reply != nil {
		t.Error("a response was not dropped")
	}
	for _, pkt := range [][]byte{nil, {1, 2, 3}, make([]byte, 12), append(packQuery(t, web, miekg.TypeA, false), 0)} {
		if _, ok := s.answerPacket(pkt, make([]byte, batchReplySize)); ok {
			t.Errorf("%x: answered on the fast path", pkt)
		}
	}
}

func TestServePacketFormErr(t *testing.T) {
	s := newTestServer(t, Config{}, testZoneConfig())
	pkt := packQuery(t, "web.default.svc.cluster.local.", miekg.TypeA, false)
	w := &recorder{}
	s.servePacket(w, pkt[:16]) // question name cut short
	if len(w.out) != 1 {
		t.Fatalf("%d replies to a malformed query", len(w.out))
	}
	reply := new(miekg.Msg)
	if err := reply.Unpack(w.out[0]); err != nil || reply.Rcode != miekg.RcodeFormatError || reply.Id != uint16(pkt[0])<<8|uint16(pkt[1]) {
		t.Errorf("reply %v (%v), want FORMERR with the query's id", reply, err)
	}
	w = &recorder{}
	s.servePacket(w, []byte{1, 2, 3})
	if len(w.out) != 0 {
		t.Error("answered a packet shorter than a header")
	}
	w = &recorder{}
	s.servePacket(w, pkt)
	if len(w.out) != 1 {
		t.Error("no answer to a good query")
	}
}
