package dns

import (
	"testing"

	miekg "github.com/miekg/dns"
)

// FuzzServeDNS feeds arbitrary messages to ServeDNS over a zone with a few
// services: it must never panic, every reply must pack and unpack, carry
// the query's ID, and fit the client's UDP limit. The same bytes go to the
// UDP fast path, whose answers must equal ServeDNS's.
func FuzzServeDNS(f *testing.F) {
	s := newTestServer(f, Config{}, testZoneConfig())
	for _, c := range zoneCases {
		for _, edns := range []bool{false, true} {
			m := new(miekg.Msg)
			m.SetQuestion(c.q, c.qtype)
			if edns {
				m.SetEdns0(1232, true)
			}
			if b, err := m.Pack(); err == nil {
				f.Add(b)
			}
		}
	}
	for _, q := range []string{bigName, "example.com.", "WEB.default.svc.CLUSTER.local.", "fd00-42-0-0-0-0-0-9.default.pod.cluster.local."} {
		m := new(miekg.Msg)
		m.SetQuestion(q, miekg.TypeANY)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 12))

	f.Fuzz(func(t *testing.T, data []byte) {
		// The UDP fast path must agree with ServeDNS on what it answers.
		if fast, general, handled := fastAndGeneral(t, s, data); handled && fast != nil {
			if general == nil || fast.String() != general.String() {
				t.Fatalf("fast path\n%v\nServeDNS\n%v", fast, general)
			}
		}
		req := new(miekg.Msg)
		if req.Unpack(data) != nil {
			return
		}
		limit := miekg.MinMsgSize
		var opts int
		for _, rr := range req.Extra {
			if o, ok := rr.(*miekg.OPT); ok {
				opts++
				limit = max(miekg.MinMsgSize, int(o.UDPSize()))
			}
		}
		if opts > 1 {
			limit = miekg.MinMsgSize
		}
		for _, tcp := range []bool{false, true} {
			w := &recorder{tcp: tcp}
			s.ServeDNS(w, req)
			if w.err != nil {
				t.Fatalf("reply does not pack: %v\nquery: %v", w.err, req)
			}
			if len(w.out) > 1 {
				t.Fatalf("%d replies", len(w.out))
			}
			for _, b := range w.out {
				reply := new(miekg.Msg)
				if err := reply.Unpack(b); err != nil {
					t.Fatalf("reply does not unpack: %v\nquery: %v", err, req)
				}
				if reply.Id != req.Id || !reply.Response {
					t.Fatalf("reply id %d response %v to query %d", reply.Id, reply.Response, req.Id)
				}
				if !tcp && len(b) > limit {
					t.Fatalf("UDP reply of %d bytes over the limit %d\nquery: %v", len(b), limit, req)
				}
			}
			if req.Response && len(w.out) != 0 {
				t.Fatal("answered a response")
			}
		}
	})
}
