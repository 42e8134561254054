package dns

import (
	"fmt"
	"net/netip"
	"testing"

	miekg "github.com/miekg/dns"
)

// benchZoneConfig has n ClusterIP services in 10 namespaces, each with two
// named ports, and a headless service with 3 endpoints per namespace.
func benchZoneConfig(n int) ZoneConfig {
	var zc ZoneConfig
	for i := 0; i < n; i++ {
		zc.Services = append(zc.Services, Service{
			Namespace:  fmt.Sprintf("ns-%d", i%10),
			Name:       fmt.Sprintf("svc-%d", i),
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 43, byte(i >> 8), byte(i)})},
			Ports:      []Port{{Name: "http", Port: 80}, {Name: "metrics", Port: 9090}},
		})
	}
	for ns := 0; ns < 10; ns++ {
		var eps []Endpoint
		for j := 0; j < 3; j++ {
			eps = append(eps, Endpoint{IP: netip.AddrFrom4([4]byte{10, 42, byte(ns), byte(j + 1)}), Hostname: fmt.Sprintf("db-%d", j)})
		}
		zc.Services = append(zc.Services, Service{Namespace: fmt.Sprintf("ns-%d", ns), Name: "db", Headless: true,
			Ports: []Port{{Name: "pg", Port: 5432}}, Endpoints: eps})
	}
	return zc
}

func BenchmarkServeDNS(b *testing.B) {
	zc := benchZoneConfig(1000)
	zc.Services = append(zc.Services, testZoneConfig().Services...)
	s := newTestServer(b, Config{}, zc)
	for _, c := range []struct {
		name  string
		q     string
		qtype uint16
		edns  bool
	}{
		{"A", "svc-500.ns-0.svc.cluster.local.", miekg.TypeA, false},
		{"A/EDNS", "svc-500.ns-0.svc.cluster.local.", miekg.TypeA, true},
		{"A/mixed-case", "SVC-500.ns-0.svc.cluster.local.", miekg.TypeA, false},
		{"NXDOMAIN", "google.com.ns-0.svc.cluster.local.", miekg.TypeA, false},
		{"NODATA", "svc-500.ns-0.svc.cluster.local.", miekg.TypeAAAA, false},
		{"SRV/headless", "_pg._tcp.db.ns-3.svc.cluster.local.", miekg.TypeSRV, false},
		{"PTR", "1.2.43.10.in-addr.arpa.", miekg.TypePTR, false},
		{"A/truncated-100", bigName, miekg.TypeA, false},
		{"REFUSED/external", "example.com.", miekg.TypeA, false},
	} {
		m := new(miekg.Msg)
		m.SetQuestion(c.q, c.qtype)
		if c.edns {
			m.SetEdns0(1232, false)
		}
		wire, _ := m.Pack()
		req := new(miekg.Msg)
		if err := req.Unpack(wire); err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			w := &discard{}
			b.ReportAllocs()
			for b.Loop() {
				s.ServeDNS(w, req)
			}
		})
	}
	// What the server does per UDP query besides the handler: unpack.
	m := new(miekg.Msg)
	m.SetQuestion("svc-500.ns-0.svc.cluster.local.", miekg.TypeA)
	wire, _ := m.Pack()
	b.Run("unpack+A", func(b *testing.B) {
		w := &discard{}
		b.ReportAllocs()
		for b.Loop() {
			req := new(miekg.Msg)
			if err := req.Unpack(wire); err != nil {
				b.Fatal(err)
			}
			s.ServeDNS(w, req)
		}
	})
}

func BenchmarkNewZone(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		zc := benchZoneConfig(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NewZone(zc)
			}
		})
	}
}

// BenchmarkAnswerPacket is the UDP fast loop's work per query between the
// system calls: raw query bytes in, reply bytes out.
func BenchmarkAnswerPacket(b *testing.B) {
	s := newTestServer(b, Config{}, benchZoneConfig(1000))
	out := make([]byte, batchReplySize)
	for _, c := range []struct {
		name  string
		q     string
		qtype uint16
		edns  bool
	}{
		{"A", "svc-500.ns-0.svc.cluster.local.", miekg.TypeA, false},
		{"A/EDNS", "svc-500.ns-0.svc.cluster.local.", miekg.TypeA, true},
		{"NXDOMAIN", "google.com.ns-0.svc.cluster.local.", miekg.TypeA, false},
	} {
		pkt := packQuery(b, c.q, c.qtype, c.edns)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := s.answerPacket(pkt, out); !ok {
					b.Fatal("not on the fast path")
				}
			}
		})
	}
}
