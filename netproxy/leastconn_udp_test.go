package netproxy

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPktinfoDst(t *testing.T) {
	oob := unix.PktInfo4(&unix.Inet4Pktinfo{Ifindex: 3, Spec_dst: [4]byte{10, 42, 0, 1}, Addr: [4]byte{10, 43, 0, 22}})
	other := unix.UnixRights(0) // a control message of another kind first
	got, ok := pktinfoDst(append(other, oob...))
	if !ok || got != a4("10.43.0.22") {
		t.Fatalf("pktinfoDst = %v, %v; want the header's destination 10.43.0.22", got, ok)
	}
	if _, ok := pktinfoDst(other); ok {
		t.Error("found a destination without IP_PKTINFO")
	}
	if _, ok := pktinfoDst(oob[:5]); ok {
		t.Error("found a destination in a truncated message")
	}
}

// TestUDPEvictLogIsSpaced: a flood of sessions ended at the bound logs a
// line at once, then at most one per evictLogEvery, with the count since
// the last one.
func TestUDPEvictLogIsSpaced(t *testing.T) {
	p := &udpProxy{}
	if _, log := p.noteEvicted(false); log {
		t.Fatal("logged without an eviction")
	}
	if n, log := p.noteEvicted(true); !log || n != 1 {
		t.Fatalf("first eviction: log %v, count %d; want a line for 1", log, n)
	}
	for i := 0; i < 5; i++ {
		if _, log := p.noteEvicted(true); log {
			t.Fatalf("eviction %d logged again within %s", i+2, evictLogEvery)
		}
	}
	p.evictLog = p.evictLog.Add(-evictLogEvery)
	if n, log := p.noteEvicted(true); !log || n != 6 {
		t.Fatalf("after %s: log %v, count %d; want a line for 6", evictLogEvery, log, n)
	}
}

// TestUDPLeastConnConntrackSelection: a UDP port starting or stopping to
// use its proxy (a new Proxy's first Set included: the redirects of an
// earlier process's proxies lead to closed sockets) flushes the entries of
// the old path; endpoint changes under the proxy flush nothing redirected.
func TestUDPLeastConnConntrackSelection(t *testing.T) {
	eps := []Endpoint{ep("10.42.0.2", 53), ep("10.42.0.3", 53)}
	cfg := func(s Strategy, eps ...Endpoint) Config {
		return Config{NodeIPs: []netip.Addr{a4("192.168.1.10")}, Services: []Service{{Namespace: "kube-system", Name: "dns",
			Strategy: s, ClusterIPs: []netip.Addr{a4("10.43.0.10")}, Ports: []Port{{Protocol: UDP, Port: 53, NodePort: 30053, Endpoints: eps}}}}}
	}
	proxy := func(string, leastConnPort) uint16 { return 40000 }
	toEP := &flowT{dst: "10.43.0.10:53", target: "10.42.0.2:53"}
	toProxy := &flowT{dst: "10.43.0.10:53", target: "10.42.0.1:40000"}
	nodeToProxy := &flowT{dst: "192.168.1.10:30053", target: "192.168.1.10:40000"}
	other := &flowT{dst: "10.43.0.10:53", target: "10.42.0.1:40001"}
	check := func(step string, f *udpFlush, want map[*flowT]bool) {
		t.Helper()
		for fl, w := range want {
			if got := f.MatchConntrackFlow(fl.conntrack()); got != w {
				t.Errorf("%s: flow to %s via %s: match %v, want %v", step, fl.dst, fl.target, got, w)
			}
		}
	}
	st := newState()
	c, _ := st.update(cfg(LeastConn, eps...), proxy)
	check("a new Proxy's first Set", c.UDP, map[*flowT]bool{toProxy: false, nodeToProxy: false, other: true, toEP: true,
		{dst: "192.168.1.10:30053", target: "192.168.1.10:40001"}: true, {dst: "10.43.0.99:53", target: "10.42.0.1:40001"}: false})
	st = newState()
	st.update(cfg(RoundRobin, eps...), proxy)
	c, _ = st.update(cfg(LeastConn, eps...), proxy)
	check("round robin → least-conn", c.UDP, map[*flowT]bool{toEP: true, toProxy: false, other: true})
	c, _ = st.update(cfg(LeastConn, eps[1:]...), proxy)
	check("an endpoint leaves the proxy", c.UDP, map[*flowT]bool{toProxy: false, nodeToProxy: false})
	c, _ = st.update(cfg(RoundRobin, eps[1:]...), proxy)
	check("least-conn → round robin", c.UDP, map[*flowT]bool{toProxy: true, nodeToProxy: true, other: false,
		{dst: "10.43.0.10:53", target: "10.42.0.3:53"}: false})
}

// udpProxyEnv is a UDP proxy in a namespace of its own, served by UDP echo
// servers on loopback addresses: the proxy alone, without nftables.
type udpProxyEnv struct {
	ns   *testNS
	p    *udpProxy
	logs *syncBuffer
	addr string // the proxy's socket
	// goroutines is how many goroutines ran before the proxy started.
	goroutines int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newUDPProxyEnv starts the proxy with echo servers as endpoints (and
// sinks, which never answer).
func newUDPProxyEnv(t *testing.T, limits udpLimits, echo []netip.AddrPort, sinks ...netip.AddrPort) *udpProxyEnv {
	t.Helper()
	ns := newTestNS(t)
	for _, ep := range echo {
		udpEcho(t, ns, ep.String())
	}
	for _, ep := range sinks {
		var pc net.PacketConn
		if err := inNS(ns, func() (err error) { pc, err = net.ListenPacket("udp4", ep.String()); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
	}
	nsfd, err := openNetNS(ns.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(nsfd) })
	dials, err := newSocketMaker(nsfd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dials.close)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	goroutines := runtime.NumGoroutine()
	eps := append(slices.Clone(echo), sinks...)
	p, err := startUDPLeastConn(nsfd, dials, leastConnPort{Name: "test/udp:53/udp", Protocol: UDP, Endpoints: eps}, limits, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	return &udpProxyEnv{ns: ns, p: p, logs: logs, addr: fmt.Sprintf("127.0.0.1:%d", p.port), goroutines: goroutines}
}

// session opens a client socket (a new source port) and asks once: the
// endpoint that answered.
func (e *udpProxyEnv) session(t *testing.T) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	c := udpSocket(t, e.ns, e.addr)
	return c, e.ask(t, c)
}

func (e *udpProxyEnv) ask(t *testing.T, c *net.UDPConn) netip.AddrPort {
	t.Helper()
	r, err := ask(c)
	if err != nil {
		t.Fatalf("asking through the proxy from %s: %v", c.LocalAddr(), err)
	}
	ap, err := netip.ParseAddrPort(r.server)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// waitFor polls cond (ioTimeout at most: a safety net, not an assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUDPLeastConnSessions: one session per client address:port, new
// sessions to the endpoint with the fewest, sessions
// of removed endpoints ended, idle sessions expired, and nothing left
// running after stop.
func TestUDPLeastConnSessions(t *testing.T) {
	requireRoot(t)
	e1, e2 := netip.MustParseAddrPort("127.0.0.2:5301"), netip.MustParseAddrPort("127.0.0.3:5302")
	// The idle timeout leaves the steps before the expiry a wide margin
	// on a loaded machine.
	env := newUDPProxyEnv(t, udpLimits{idle: time.Second}, []netip.AddrPort{e1, e2})
	p := env.p

	c1, first := env.session(t)
	for i := 0; i < 3; i++ {
		if got := env.ask(t, c1); got != first {
			t.Fatalf("one client address:port moved from %s to %s", first, got)
		}
	}
	if n := p.sessionCount(); n != 1 {
		t.Fatalf("one client, %d sessions", n)
	}
	_, second := env.session(t)
	if second == first {
		t.Fatalf("the second session went to the busy %s (active %v)", first, p.activeCounts())
	}
	c3, third := env.session(t) // a tie: round robin goes on
	if third != first {
		t.Errorf("third session went to %s, want %s (ties in round robin)", third, first)
	}
	if got := p.activeCounts(); got[e1]+got[e2] != 3 || got[first] != 2 {
		t.Fatalf("active sessions %v, want 2 on %s and 1 on %s", got, first, second)
	}

	// The endpoint with two sessions leaves: they end, and their clients'
	// next datagrams open sessions to the one that stays.
	p.update(leastConnPort{Name: "test/udp:53/udp", Protocol: UDP, Endpoints: []netip.AddrPort{second}})
	if n := p.sessionCount(); n != 1 {
		t.Fatalf("after the update, %d sessions, want the one on %s", n, second)
	}
	for _, c := range []*net.UDPConn{c1, c3} {
		if got := env.ask(t, c); got != second {
			t.Fatalf("after the update, a client was answered by %s, want %s", got, second)
		}
	}
	if got := p.activeCounts(); len(got) != 1 || got[second] != 3 {
		t.Fatalf("active sessions after the update %v, want 3 on %s", got, second)
	}

	// Quiet clients' sessions expire and free the endpoint.
	waitFor(t, "idle sessions to expire", func() bool { return p.sessionCount() == 0 })
	if got := p.activeCounts(); got[second] != 0 {
		t.Fatalf("active sessions after expiry %v, want none", got)
	}
	if got := env.ask(t, c1); got != second {
		t.Fatalf("after expiry, answered by %s", got)
	}

	p.stop()
	waitFor(t, "the proxy's goroutines to end", func() bool { return runtime.NumGoroutine() <= env.goroutines })
	if _, err := ask(c1); err == nil {
		t.Error("the proxy answered after stop")
	}
}

// TestUDPLeastConnBound: over the session bound, a new client ends the
// least recently active session (freeing its endpoint) instead of being
// refused.
func TestUDPLeastConnBound(t *testing.T) {
	requireRoot(t)
	e1 := netip.MustParseAddrPort("127.0.0.2:5301")
	env := newUDPProxyEnv(t, udpLimits{idle: time.Hour, maxSessions: 2}, []netip.AddrPort{e1})
	p := env.p
	c1, _ := env.session(t)
	c2, _ := env.session(t)
	env.ask(t, c1) // c2 is now the least recently active
	c3, _ := env.session(t)
	if n := p.sessionCount(); n != 2 {
		t.Fatalf("%d sessions over a bound of 2", n)
	}
	p.mu.Lock()
	have := func(c *net.UDPConn) bool { return p.sessions[c.LocalAddr().(*net.UDPAddr).AddrPort()] != nil }
	kept1, kept2, kept3 := have(c1), have(c2), have(c3)
	p.mu.Unlock()
	if !kept1 || kept2 || !kept3 {
		t.Fatalf("sessions kept: c1 %v, c2 %v, c3 %v; want c2's ended", kept1, kept2, kept3)
	}
	if got := p.activeCounts(); got[e1] != 2 {
		t.Fatalf("active sessions %v, want 2", got)
	}
	if !strings.Contains(env.logs.String(), "at the session bound") {
		t.Fatalf("no log line about the bound:\n%s", env.logs.String())
	}
	// The ended client's next datagram opens a session again (ending c1's,
	// now the oldest).
	env.ask(t, c2)
	if n := p.sessionCount(); n != 2 {
		t.Fatalf("%d sessions over a bound of 2", n)
	}
}

// TestUDPLeastConnForwardAllocs: forwarding a datagram on an open session
// allocates nothing (the serving goroutine handles every datagram of the
// port).
func TestUDPLeastConnForwardAllocs(t *testing.T) {
	requireRoot(t)
	// A sink: no reply allocates on the other side while this measures.
	env := newUDPProxyEnv(t, udpLimits{idle: time.Hour, maxSessions: 8}, nil, netip.MustParseAddrPort("127.0.0.2:5301"))
	client := netip.MustParseAddrPort("127.0.0.1:40000")
	oob := unix.PktInfo4(&unix.Inet4Pktinfo{Addr: [4]byte{127, 0, 0, 1}})
	payload := []byte("?")
	env.p.forward(payload, oob, client) // opens the session
	if n := env.p.sessionCount(); n != 1 {
		t.Fatalf("%d sessions after the first datagram", n)
	}
	allocs := testing.AllocsPerRun(200, func() { env.p.forward(payload, oob, client) })
	if allocs > 0 {
		t.Errorf("forwarding a datagram allocates %.1f times", allocs)
	}
}

// BenchmarkUDPLeastConnRoundTrip is one datagram through an open session
// and its reply back (client, proxy and a reflecting endpoint in one
// namespace, over loopback); allocs/op counts all three.
func BenchmarkUDPLeastConnRoundTrip(b *testing.B) {
	requireRoot(b)
	ns := newTestNS(b)
	ep := netip.MustParseAddrPort("127.0.0.2:5301")
	var refl *net.UDPConn
	if err := inNS(ns, func() (err error) { refl, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ep)); return err }); err != nil {
		b.Fatal(err)
	}
	defer refl.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := refl.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = refl.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	nsfd, err := openNetNS(ns.path)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(nsfd)
	dials, err := newSocketMaker(nsfd)
	if err != nil {
		b.Fatal(err)
	}
	defer dials.close()
	p, err := startUDPLeastConn(nsfd, dials, leastConnPort{Name: "bench", Protocol: UDP, Endpoints: []netip.AddrPort{ep}},
		udpLimits{idle: time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer p.stop()
	var c *net.UDPConn
	proxyAddr := netip.AddrPortFrom(a4("127.0.0.1"), p.port)
	if err := inNS(ns, func() (err error) { c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(proxyAddr)); return err }); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg, buf := make([]byte, 512), make([]byte, 2048)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}
