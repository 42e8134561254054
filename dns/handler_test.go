package dns

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	miekg "github.com/miekg/dns"
)

const bigName = "big.default.svc.cluster.local."

func TestEDNS(t *testing.T) {
	s := newTestServer(t, Config{}, testZoneConfig())

	m, _ := ask(t, s, "web.default.svc.cluster.local.", miekg.TypeA)
	if m.IsEdns0() != nil {
		t.Error("OPT record in the reply to a query without EDNS")
	}
	for _, do := range []bool{false, true} {
		m, _ = ask(t, s, "web.default.svc.cluster.local.", miekg.TypeA, withEDNS(1400, do))
		opt := m.IsEdns0()
		if opt == nil {
			t.Fatal("no OPT record in the reply to an EDNS query")
		}
		if opt.UDPSize() != ednsUDPSize || opt.Version() != 0 || opt.Do() != do {
			t.Errorf("OPT %v: want size %d, version 0, DO %v", opt, ednsUDPSize, do)
		}
	}
	// Negative answers carry the OPT too.
	m, _ = ask(t, s, "nosuch.cluster.local.", miekg.TypeA, withEDNS(1400, true))
	if m.IsEdns0() == nil || m.Rcode != nxdom {
		t.Errorf("NXDOMAIN with EDNS: %v", m)
	}
}

func TestTruncation(t *testing.T) {
	s := newTestServer(t, Config{}, testZoneConfig())
	for _, c := range []struct {
		name  string
		opts  []qopt
		limit int
		full  bool
	}{
		{"UDP without EDNS", nil, 512, false},
		{"UDP, EDNS 1232", []qopt{withEDNS(1232, false)}, 1232, false},
		{"UDP, EDNS below 512 counts as 512", []qopt{withEDNS(100, false)}, 512, false},
		{"UDP, EDNS 4096", []qopt{withEDNS(4096, false)}, 4096, true},
		{"TCP", []qopt{overTCP()}, miekg.MaxMsgSize, true},
		{"TCP with EDNS 512", []qopt{overTCP(), withEDNS(512, false)}, miekg.MaxMsgSize, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, size := ask(t, s, bigName, miekg.TypeA, c.opts...)
			if size > c.limit {
				t.Errorf("reply of %d bytes over the limit %d", size, c.limit)
			}
			if c.full {
				if m.Truncated || len(m.Answer) != 100 {
					t.Errorf("TC=%v with %d answers, want the full 100", m.Truncated, len(m.Answer))
				}
				return
			}
			if !m.Truncated {
				t.Errorf("TC not set, %d answers", len(m.Answer))
			}
			if len(m.Answer) >= 100 {
				t.Errorf("%d answers in a truncated reply", len(m.Answer))
			}
			for _, rr := range m.Answer {
				if rr.Header().Name != bigName {
					t.Errorf("answer owner %q", rr.Header().Name)
				}
			}
		})
	}
}

// TestTruncatedAdditional checks that leaving out only additional records
// does not set TC: the answer is complete.
func TestTruncatedAdditional(t *testing.T) {
	var eps []Endpoint
	for i := 0; i < 8; i++ {
		eps = append(eps, Endpoint{IP: mustAddr(fmt.Sprintf("fd00:42::%x", i+1))})
	}
	s := newTestServer(t, Config{}, ZoneConfig{Services: []Service{{Namespace: "n", Name: "h", Headless: true,
		Ports: []Port{{Name: "p", Port: 80}}, Endpoints: eps}}})
	// 8 SRV records fit in 512 bytes, their 8 AAAA records do not.
	m, size := ask(t, s, "_p._tcp.h.n.svc.cluster.local.", miekg.TypeSRV)
	if size > 512 {
		t.Fatalf("%d bytes", size)
	}
	if len(m.Answer) != 8 || len(m.Extra) >= 8 {
		t.Fatalf("%d answers, %d additional: want all 8 answers and fewer additional records", len(m.Answer), len(m.Extra))
	}
	if m.Truncated {
		t.Error("TC set though only additional records were left out")
	}
	// Over TCP everything fits.
	m, _ = ask(t, s, "_p._tcp.h.n.svc.cluster.local.", miekg.TypeSRV, overTCP())
	if len(m.Answer) != 8 || len(m.Extra) != 8 || m.Truncated {
		t.Errorf("TCP: %d answers, %d additional, TC=%v", len(m.Answer), len(m.Extra), m.Truncated)
	}
}

func TestMalformedAndUnsupported(t *testing.T) {
	s := newTestServer(t, Config{}, testZoneConfig())
	web := "web.default.svc.cluster.local."
	cases := []struct {
		name  string
		build func(m *miekg.Msg)
		rcode int
	}{
		{"opcode NOTIFY", func(m *miekg.Msg) { m.Opcode = miekg.OpcodeNotify }, miekg.RcodeNotImplemented},
		{"opcode UPDATE", func(m *miekg.Msg) { m.Opcode = miekg.OpcodeUpdate }, miekg.RcodeNotImplemented},
		{"opcode STATUS", func(m *miekg.Msg) { m.Opcode = miekg.OpcodeStatus }, miekg.RcodeNotImplemented},
		{"no question", func(m *miekg.Msg) { m.Question = nil }, miekg.RcodeFormatError},
		{"two questions", func(m *miekg.Msg) { m.Question = append(m.Question, m.Question[0]) }, miekg.RcodeFormatError},
		{"two OPT records", func(m *miekg.Msg) { m.SetEdns0(1232, false); m.SetEdns0(1232, false) }, miekg.RcodeFormatError},
		{"EDNS version 1", func(m *miekg.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().SetVersion(1)
		}, miekg.RcodeBadVers},
		{"AXFR", func(m *miekg.Msg) { m.Question[0].Qtype = miekg.TypeAXFR }, miekg.RcodeRefused},
		{"IXFR", func(m *miekg.Msg) { m.Question[0].Qtype = miekg.TypeIXFR }, miekg.RcodeRefused},
		{"qtype OPT", func(m *miekg.Msg) { m.Question[0].Qtype = miekg.TypeOPT }, miekg.RcodeFormatError},
		{"class CHAOS", func(m *miekg.Msg) { m.Question[0].Qclass = miekg.ClassCHAOS }, miekg.RcodeRefused},
		{"class ANY", func(m *miekg.Msg) { m.Question[0].Qclass = miekg.ClassANY }, miekg.RcodeSuccess},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := new(miekg.Msg)
			m.SetQuestion(web, miekg.TypeA)
			c.build(m)
			reply, _ := exchangeRecorder(t, s, m, &recorder{})
			if reply.Rcode != c.rcode {
				t.Errorf("rcode %s, want %s", miekg.RcodeToString[reply.Rcode], miekg.RcodeToString[c.rcode])
			}
			if !reply.Response {
				t.Error("QR bit not set")
			}
			if c.rcode == miekg.RcodeBadVers && reply.IsEdns0() == nil {
				t.Error("BADVERS without an OPT record")
			}
		})
	}

	// A response is never answered.
	m := new(miekg.Msg)
	m.SetQuestion(web, miekg.TypeA)
	m.Response = true
	w := &recorder{}
	s.ServeDNS(w, m)
	if len(w.out) != 0 {
		t.Errorf("answered a response: %d replies", len(w.out))
	}
}

func TestHeaderBits(t *testing.T) {
	s := newTestServer(t, Config{}, testZoneConfig())
	m := new(miekg.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", miekg.TypeA)
	m.RecursionDesired, m.CheckingDisabled = true, true
	reply, _ := exchangeRecorder(t, s, m, &recorder{})
	if !reply.RecursionDesired || !reply.CheckingDisabled || !reply.Authoritative || reply.RecursionAvailable {
		t.Errorf("RD=%v CD=%v AA=%v RA=%v, want RD, CD, AA copied/set and RA clear without upstreams",
			reply.RecursionDesired, reply.CheckingDisabled, reply.Authoritative, reply.RecursionAvailable)
	}
	m.RecursionDesired, m.CheckingDisabled = false, false
	reply, _ = exchangeRecorder(t, s, m, &recorder{})
	if reply.RecursionDesired || reply.CheckingDisabled {
		t.Errorf("RD=%v CD=%v, want both clear as in the query", reply.RecursionDesired, reply.CheckingDisabled)
	}
}

func TestPackPlainName(t *testing.T) {
	long := strings.Repeat("a", 63)
	tooLong := strings.Repeat("a", 64)
	for _, name := range []string{
		".", "a.", "web.default.svc.cluster.local.", "WEB.Default.svc.", "_http._tcp.x.", long + ".b.",
		"a..b.", tooLong + ".", "noroot", "", "a\\.b.", "\\065.", "..",
		strings.Repeat(long+".", 3) + strings.Repeat("b", 61) + ".", // 255 octets
		strings.Repeat(long+".", 4),                                 // 257 octets
	} {
		var got, want [300]byte
		off, ok := packPlainName(name, got[:], 0)
		wantOff, err := miekg.PackDomainName(name, want[:], 0, nil, false)
		if !ok {
			if _, valid := miekg.IsDomainName(name); err == nil && valid && len(name) <= 254 && miekg.IsFqdn(name) && !strings.Contains(name, "\\") {
				t.Errorf("%q: refused a plain name", name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: packed %x, miekg refuses it: %v", name, got[:off], err)
			continue
		}
		if !bytes.Equal(got[:off], want[:wantOff]) {
			t.Errorf("%q: %x, want %x", name, got[:off], want[:wantOff])
		}
	}
}
