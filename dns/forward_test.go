package dns

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

// fakeUpstream is an in-process DNS server on 127.0.0.1 (UDP and TCP on one
// port) standing in for a real upstream; it counts the queries it gets.
type fakeUpstream struct {
	addr     string
	mu       sync.Mutex
	queries  map[string]int // "name type udp|tcp" → count
	lastDO   bool
	servers  []*miekg.Server
	handlerQ chan string
}

func (u *fakeUpstream) count(key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.queries[key]
}

func startUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{queries: make(map[string]int)}
	udp, tcp, err := listenOnce(netip.MustParseAddrPort("127.0.0.1:0"), 1)
	if err != nil {
		t.Fatal(err)
	}
	u.addr = tcp.Addr().String()
	h := miekg.HandlerFunc(u.serve)
	u.servers = []*miekg.Server{{PacketConn: udp[0], Handler: h}, {Listener: tcp, Handler: h}}
	for _, srv := range u.servers {
		ready := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(ready) }
		go srv.ActivateAndServe()
		<-ready
	}
	t.Cleanup(func() {
		for _, srv := range u.servers {
			srv.Shutdown()
		}
	})
	return u
}

func (u *fakeUpstream) serve(w miekg.ResponseWriter, r *miekg.Msg) {
	q := r.Question[0]
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	u.mu.Lock()
	u.queries[q.Name+" "+miekg.TypeToString[q.Qtype]+" "+proto]++
	if opt := r.IsEdns0(); opt != nil {
		u.lastDO = opt.Do()
	}
	u.mu.Unlock()

	m := new(miekg.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	a := func(name string, ttl uint32, ip string) miekg.RR {
		return &miekg.A{Hdr: miekg.RR_Header{Name: name, Rrtype: miekg.TypeA, Class: miekg.ClassINET, Ttl: ttl}, A: net.ParseIP(ip)}
	}
	soa := func(ttl, minttl uint32) miekg.RR {
		return &miekg.SOA{Hdr: miekg.RR_Header{Name: "example.", Rrtype: miekg.TypeSOA, Class: miekg.ClassINET, Ttl: ttl},
			Ns: "ns.example.", Mbox: "h.example.", Serial: 1, Refresh: 1, Retry: 1, Expire: 1, Minttl: minttl}
	}
	switch miekg.CanonicalName(q.Name) {
	case "example.com.":
		m.Answer = []miekg.RR{a(q.Name, 300, "192.0.2.1")}
	case "short.example.":
		m.Answer = []miekg.RR{a(q.Name, 3, "192.0.2.3")}
	case "big.example.":
		for i := 1; i <= 100; i++ {
			m.Answer = append(m.Answer, a(q.Name, 60, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}).String()))
		}
	case "nx.example.":
		m.Rcode = miekg.RcodeNameError
		m.Ns = []miekg.RR{soa(120, 20)}
	case "nosoa.example.":
		m.Rcode = miekg.RcodeNameError
	case "nodata.example.":
		m.Ns = []miekg.RR{soa(10, 60)}
	case "fail.example.":
		m.Rcode = miekg.RcodeServerFailure
	case "spoof.example.":
		m.Question[0].Name = "other.example."
		m.Answer = []miekg.RR{a("other.example.", 60, "192.0.2.66")}
	case "hang.example.":
		if u.handlerQ != nil {
			u.handlerQ <- q.Name
		}
		return // no answer
	default:
		m.Rcode = miekg.RcodeNameError
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), opt.Do())
	}
	if !tcp {
		size := miekg.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// deadUpstream returns an address on 127.0.0.1 where nothing listens.
func deadUpstream(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// blackhole returns a UDP socket on 127.0.0.1 that receives queries and
// never answers.
func blackhole(t *testing.T) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fakeClock is a settable clock for cache expiry.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newForwardingServer(t *testing.T, upstreams ...string) (*Server, *fakeClock) {
	t.Helper()
	s := newTestServer(t, Config{Upstreams: upstreams}, testZoneConfig())
	clk := &fakeClock{}
	clk.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s.now = clk.now
	return s, clk
}

func TestForwardAndCache(t *testing.T) {
	up := startUpstream(t)
	s, clk := newForwardingServer(t, up.addr)

	m, _ := ask(t, s, "example.com.", miekg.TypeA)
	if m.Rcode != ok || len(m.Answer) != 1 || m.Answer[0].(*miekg.A).A.String() != "192.0.2.1" {
		t.Fatalf("forwarded answer: %v", m)
	}
	if !m.RecursionAvailable || m.Authoritative {
		t.Errorf("RA=%v AA=%v, want RA and not AA for a forwarded answer", m.RecursionAvailable, m.Authoritative)
	}
	if ttl := m.Answer[0].Header().Ttl; ttl != 30 {
		t.Errorf("TTL %d, want 300 capped at 30", ttl)
	}
	if n := up.count("example.com. A udp"); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1", n)
	}

	// Cache hits, any spelling; the TTL counts down.
	clk.advance(10 * time.Second)
	m, _ = ask(t, s, "EXAMPLE.com.", miekg.TypeA)
	if m.Rcode != ok || len(m.Answer) != 1 || m.Question[0].Name != "EXAMPLE.com." {
		t.Fatalf("cached answer: %v", m)
	}
	if ttl := m.Answer[0].Header().Ttl; ttl != 20 {
		t.Errorf("cached TTL %d after 10s, want 20", ttl)
	}
	if n := up.count("example.com. A udp") + up.count("EXAMPLE.com. A udp"); n != 1 {
		t.Errorf("upstream saw %d queries, want 1 (the second from the cache)", n)
	}
	if st := s.Stats(); st.CacheHits != 1 || st.Forwarded != 1 {
		t.Errorf("stats %+v, want 1 forwarded, 1 cache hit", st)
	}

	// Another type or the DO bit are other cache entries.
	ask(t, s, "example.com.", miekg.TypeA, withEDNS(1232, true))
	if n := up.count("example.com. A udp"); n != 2 {
		t.Errorf("DO query: upstream saw %d queries, want 2", n)
	}
	up.mu.Lock()
	lastDO := up.lastDO
	up.mu.Unlock()
	if !lastDO {
		t.Error("DO bit not forwarded")
	}

	// Expired after the capped TTL.
	clk.advance(21 * time.Second)
	ask(t, s, "example.com.", miekg.TypeA)
	if n := up.count("example.com. A udp"); n != 3 {
		t.Errorf("after expiry: upstream saw %d queries, want 3", n)
	}

	// A short TTL is kept as is.
	m, _ = ask(t, s, "short.example.", miekg.TypeA)
	if ttl := m.Answer[0].Header().Ttl; ttl != 3 {
		t.Errorf("short TTL %d, want 3", ttl)
	}
	clk.advance(3 * time.Second)
	ask(t, s, "short.example.", miekg.TypeA)
	if n := up.count("short.example. A udp"); n != 2 {
		t.Errorf("short TTL expired: upstream saw %d queries, want 2", n)
	}
}

func TestForwardNegativeCaching(t *testing.T) {
	up := startUpstream(t)
	s, clk := newForwardingServer(t, up.addr)
	for _, c := range []struct {
		name       string
		rcode      int
		cachedFor  time.Duration // 0: not cached
		wantSOATTL uint32
	}{
		{"nx.example.", nxdom, 20 * time.Second, 20},      // min(SOA TTL 120, minimum 20)
		{"nodata.example.", ok, 10 * time.Second, 10},     // min(SOA TTL 10, minimum 60)
		{"nosoa.example.", nxdom, 0, 0},                   // no SOA: not cached (RFC 2308)
		{"fail.example.", miekg.RcodeServerFailure, 0, 0}, // upstream failure: never cached
	} {
		t.Run(c.name, func(t *testing.T) {
			m, _ := ask(t, s, c.name, miekg.TypeA)
			if m.Rcode != c.rcode {
				t.Fatalf("rcode %s, want %s", miekg.RcodeToString[m.Rcode], miekg.RcodeToString[c.rcode])
			}
			if c.wantSOATTL > 0 {
				if soa, found := firstSOA(m.Ns); !found || soa.Hdr.Ttl != c.wantSOATTL {
					t.Errorf("authority %v, want the SOA with TTL %d", m.Ns, c.wantSOATTL)
				}
			}
			ask(t, s, c.name, miekg.TypeA)
			want := 1
			if c.cachedFor == 0 {
				want = 2
			}
			if n := up.count(c.name + " A udp"); n != want {
				t.Errorf("upstream saw %d queries, want %d", n, want)
			}
			if c.cachedFor > 0 {
				clk.advance(c.cachedFor)
				ask(t, s, c.name, miekg.TypeA)
				if n := up.count(c.name + " A udp"); n != 2 {
					t.Errorf("after %s: upstream saw %d queries, want 2", c.cachedFor, n)
				}
			}
		})
	}
}

func TestForwardTruncatedRetriesTCP(t *testing.T) {
	up := startUpstream(t)
	s, _ := newForwardingServer(t, up.addr)
	m, _ := ask(t, s, "big.example.", miekg.TypeA, overTCP())
	if len(m.Answer) != 100 || m.Truncated {
		t.Errorf("%d answers, TC=%v: want all 100", len(m.Answer), m.Truncated)
	}
	if up.count("big.example. A udp") != 1 || up.count("big.example. A tcp") != 1 {
		t.Errorf("upstream saw udp %d, tcp %d: want one of each", up.count("big.example. A udp"), up.count("big.example. A tcp"))
	}
	// A UDP client without EDNS gets a truncated answer from the cache.
	m, size := ask(t, s, "big.example.", miekg.TypeA)
	if !m.Truncated || size > 512 {
		t.Errorf("UDP client: TC=%v, %d bytes", m.Truncated, size)
	}
}

func TestForwardFailures(t *testing.T) {
	up := startUpstream(t)
	dead := deadUpstream(t)

	s, _ := newForwardingServer(t, dead, up.addr)
	if m, _ := ask(t, s, "example.com.", miekg.TypeA); m.Rcode != ok || len(m.Answer) != 1 {
		t.Errorf("dead first upstream: %v, want the second upstream's answer", m)
	}

	s, _ = newForwardingServer(t, dead)
	if m, _ := ask(t, s, "example.com.", miekg.TypeA); m.Rcode != miekg.RcodeServerFailure {
		t.Errorf("all upstreams down: %s, want SERVFAIL", miekg.RcodeToString[m.Rcode])
	}
	if st := s.Stats(); st.UpstreamFailures != 1 {
		t.Errorf("stats %+v, want 1 upstream failure", st)
	}

	s, _ = newForwardingServer(t, up.addr)
	if m, _ := ask(t, s, "spoof.example.", miekg.TypeA); m.Rcode != miekg.RcodeServerFailure || len(m.Answer) != 0 {
		t.Errorf("answer to another question: %v, want SERVFAIL", m)
	}

	hole := blackhole(t)
	s, err := NewServer(Config{Upstreams: []string{hole.LocalAddr().String()}, UpstreamTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.SetZone(NewZone(ZoneConfig{}))
	if m, _ := ask(t, s, "example.com.", miekg.TypeA); m.Rcode != miekg.RcodeServerFailure {
		t.Errorf("upstream never answers: %s, want SERVFAIL", miekg.RcodeToString[m.Rcode])
	}

	s = newTestServer(t, Config{}, testZoneConfig())
	for _, q := range []string{"example.com.", "1.1.168.192.in-addr.arpa."} {
		if m, _ := ask(t, s, q, miekg.TypeA); m.Rcode != miekg.RcodeRefused || m.RecursionAvailable {
			t.Errorf("%s without upstreams: %s RA=%v, want REFUSED without RA", q, miekg.RcodeToString[m.Rcode], m.RecursionAvailable)
		}
	}
}

// TestCloseAbortsUpstreamQueries checks that Close does not wait for an
// upstream that never answers.
func TestCloseAbortsUpstreamQueries(t *testing.T) {
	hole := blackhole(t)
	s, err := NewServer(Config{Addrs: []string{"127.0.0.1:0"}, Upstreams: []string{hole.LocalAddr().String()}, UpstreamTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s.SetZone(NewZone(ZoneConfig{}))
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan *miekg.Msg, 1)
	go func() {
		m := new(miekg.Msg)
		m.SetQuestion("example.com.", miekg.TypeA)
		c := &miekg.Client{Net: "udp", Timeout: time.Minute} // only a safety net
		r, _, err := c.Exchange(m, s.Addrs()[0].String())
		if err != nil {
			t.Errorf("in-flight query: %v", err)
		}
		done <- r
	}()
	buf := make([]byte, 512)
	if _, _, err := hole.ReadFrom(buf); err != nil { // the query reached the upstream
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r != nil && r.Rcode != miekg.RcodeServerFailure {
		t.Errorf("in-flight query: %v, want SERVFAIL", r)
	}
}

func TestCacheLRU(t *testing.T) {
	c := newCache(2)
	now := time.Unix(1000, 0)
	v := &cached{stored: now, ttl: 10}
	k := func(n string) cacheKey { return cacheKey{name: n, qtype: miekg.TypeA, qclass: miekg.ClassINET} }
	c.put(k("a"), v)
	c.put(k("b"), v)
	if _, _, hit := c.get(k("a"), now); !hit { // a is now the most recent
		t.Fatal("a missing")
	}
	c.put(k("c"), v) // evicts b
	if _, _, hit := c.get(k("b"), now); hit {
		t.Error("b not evicted")
	}
	for _, n := range []string{"a", "c"} {
		if _, _, hit := c.get(k(n), now); !hit {
			t.Errorf("%s evicted", n)
		}
	}
	if _, ttl, hit := c.get(k("a"), now.Add(4*time.Second)); !hit || ttl != 6 {
		t.Errorf("after 4s: hit=%v ttl=%d, want 6", hit, ttl)
	}
	if _, _, hit := c.get(k("a"), now.Add(10*time.Second)); hit {
		t.Error("expired entry served")
	}
	if c.len() != 1 {
		t.Errorf("%d entries, want 1 after the expired one was dropped", c.len())
	}
	c.put(k("z"), &cached{stored: now}) // TTL 0: not cacheable
	if _, _, hit := c.get(k("z"), now); hit {
		t.Error("TTL 0 answer cached")
	}
}
