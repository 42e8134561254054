package dns

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	miekg "github.com/miekg/dns"
)

// recorder is a miekg.ResponseWriter that keeps what is written.
type recorder struct {
	tcp bool
	out [][]byte
	err error // a WriteMsg that failed to pack
}

func (w *recorder) LocalAddr() net.Addr {
	if w.tcp {
		return &net.TCPAddr{IP: net.IPv4(10, 43, 0, 10), Port: 53}
	}
	return &net.UDPAddr{IP: net.IPv4(10, 43, 0, 10), Port: 53}
}

func (w *recorder) RemoteAddr() net.Addr {
	if w.tcp {
		return &net.TCPAddr{IP: net.IPv4(10, 42, 0, 7), Port: 40000}
	}
	return &net.UDPAddr{IP: net.IPv4(10, 42, 0, 7), Port: 40000}
}

func (w *recorder) WriteMsg(m *miekg.Msg) error {
	b, err := m.Pack()
	if err != nil {
		w.err = err
		return err
	}
	w.out = append(w.out, b)
	return nil
}

func (w *recorder) Write(b []byte) (int, error) {
	w.out = append(w.out, bytes.Clone(b))
	return len(b), nil
}

func (w *recorder) Close() error        { return nil }
func (w *recorder) TsigStatus() error   { return nil }
func (w *recorder) TsigTimersOnly(bool) {}
func (w *recorder) Hijack()             {}

// discard is a ResponseWriter for benchmarks.
type discard struct{ recorder }

var discardAddr = &net.UDPAddr{IP: net.IPv4(10, 43, 0, 10), Port: 53}

func (w *discard) LocalAddr() net.Addr { return discardAddr }

func (w *discard) WriteMsg(m *miekg.Msg) error { _, err := m.Pack(); return err }
func (w *discard) Write(b []byte) (int, error) { return len(b), nil }

// query options.
type qopt func(m *miekg.Msg, w *recorder)

func withEDNS(size uint16, do bool) qopt {
	return func(m *miekg.Msg, _ *recorder) { m.SetEdns0(size, do) }
}

func overTCP() qopt { return func(_ *miekg.Msg, w *recorder) { w.tcp = true } }

// ask sends one query through the wire format (pack, unpack) to ServeDNS
// and returns the unpacked reply and its size; it fails the test on a
// missing or unpackable reply.
func ask(t testing.TB, s *Server, name string, qtype uint16, opts ...qopt) (*miekg.Msg, int) {
	t.Helper()
	m := new(miekg.Msg)
	m.SetQuestion(name, qtype)
	w := &recorder{}
	for _, o := range opts {
		o(m, w)
	}
	return exchangeRecorder(t, s, m, w)
}

func exchangeRecorder(t testing.TB, s *Server, m *miekg.Msg, w *recorder) (*miekg.Msg, int) {
	t.Helper()
	wire, err := m.Pack()
	if err != nil {
		t.Fatalf("packing query: %v", err)
	}
	req := new(miekg.Msg)
	if err := req.Unpack(wire); err != nil {
		t.Fatalf("unpacking query: %v", err)
	}
	s.ServeDNS(w, req)
	if w.err != nil {
		t.Fatalf("%s %s: reply does not pack: %v", name(m), miekg.TypeToString[qtype(m)], w.err)
	}
	if len(w.out) != 1 {
		t.Fatalf("%s %s: %d replies, want 1", name(m), miekg.TypeToString[qtype(m)], len(w.out))
	}
	reply := new(miekg.Msg)
	if err := reply.Unpack(w.out[0]); err != nil {
		t.Fatalf("%s: reply does not unpack: %v", name(m), err)
	}
	if reply.Id != m.Id {
		t.Fatalf("reply id %d, want %d", reply.Id, m.Id)
	}
	return reply, len(w.out[0])
}

func name(m *miekg.Msg) string {
	if len(m.Question) == 0 {
		return "(no question)"
	}
	return m.Question[0].Name
}

func qtype(m *miekg.Msg) uint16 {
	if len(m.Question) == 0 {
		return 0
	}
	return m.Question[0].Qtype
}

// rrStrings renders records one per string, fields separated by spaces,
// without the OPT pseudo-record.
func rrStrings(rrs []miekg.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == miekg.TypeOPT {
			continue
		}
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	return out
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, mustAddr(s))
	}
	return out
}

// testZoneConfig is the zone most tests use.
func testZoneConfig() ZoneConfig {
	var big []Endpoint
	for i := 0; i < 100; i++ {
		big = append(big, Endpoint{IP: netip.AddrFrom4([4]byte{10, 42, 100, byte(i + 1)})})
	}
	return ZoneConfig{
		Serial:        42,
		NameserverIPs: addrs("10.43.0.10"),
		Namespaces:    []string{"default", "prod", "empty"},
		Services: []Service{
			{Namespace: "default", Name: "web", ClusterIPs: addrs("10.43.0.20", "fd00:43::20"), Ports: []Port{
				{Name: "http", Protocol: "TCP", Port: 80},
				{Name: "dns", Protocol: "UDP", Port: 53},
				{Protocol: "TCP", Port: 8080},
			}},
			{Namespace: "default", Name: "v4only", ClusterIPs: addrs("10.43.0.21"), Ports: []Port{{Port: 443}}},
			{Namespace: "prod", Name: "db", Headless: true, Ports: []Port{{Name: "pg", Protocol: "TCP", Port: 5432}}, Endpoints: []Endpoint{
				{IP: mustAddr("10.42.1.5"), Hostname: "db-0"},
				{IP: mustAddr("10.42.2.6"), Hostname: "db-1"},
				{IP: mustAddr("10.42.3.7")},
			}},
			{Namespace: "default", Name: "big", Headless: true, Endpoints: big},
			{Namespace: "default", Name: "ext", ExternalName: "Example.COM", Ports: []Port{{Name: "https", Port: 443}}},
			{Namespace: "default", Name: "pending"}, // ClusterIP not allocated yet
			{Namespace: "bad_ns", Name: "skipped", ClusterIPs: addrs("10.43.0.99")},
		},
		Pods: []Pod{
			{Namespace: "default", IPs: addrs("10.42.1.9", "fd00:42::9")},
			{Namespace: "prod", IPs: addrs("10.42.1.5")},
			{Namespace: "prod", IPs: addrs("10.42.2.6")},
			{Namespace: "prod", IPs: addrs("10.42.2.6")}, // duplicate: one record
		},
	}
}

func newTestServer(t testing.TB, cfg Config, zc ZoneConfig) *Server {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.SetZone(NewZone(zc))
	t.Cleanup(func() { s.Close() })
	return s
}

// sameStrings reports whether a and b hold the same strings, in any order.
func sameStrings(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func fmtRRs(rrs []string) string {
	if len(rrs) == 0 {
		return "(none)"
	}
	return fmt.Sprintf("\n\t%s", strings.Join(rrs, "\n\t"))
}
