package dns

import (
	"strings"
	"testing"

	miekg "github.com/miekg/dns"
)

func TestNewServerValidates(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"host name as address", Config{Addrs: []string{"localhost:53"}}, "listen address"},
		{"address without port", Config{Addrs: []string{"10.43.0.10"}}, "listen address"},
		{"too many sockets", Config{UDPSockets: 1000}, "UDPSockets"},
		{"negative sockets", Config{UDPSockets: -1}, "UDPSockets"},
		{"upstream without port", Config{Upstreams: []string{"192.0.2.1"}}, "upstream"},
		{"upstream port 0", Config{Upstreams: []string{"192.0.2.1:0"}}, "upstream"},
		{"negative timeout", Config{UpstreamTimeout: -1}, "UpstreamTimeout"},
		{"tiny cache TTL", Config{CacheMaxTTL: 1}, "CacheMaxTTL"},
	} {
		if _, err := NewServer(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %s", c.name, err, c.want)
		}
	}
	s, err := NewServer(Config{Addrs: []string{"10.43.0.10:53", "[fd00:43::a]:53"}, Upstreams: []string{"[2001:db8::1]:53"}})
	if err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	if s.cfg.UDPSockets != DefaultUDPSockets || s.cache == nil || s.cache.max != DefaultCacheSize {
		t.Errorf("defaults not applied: %+v", s.cfg)
	}
	if s, _ := NewServer(Config{Upstreams: []string{"192.0.2.1:53"}, CacheSize: -1}); s.cache != nil {
		t.Error("negative CacheSize left a cache")
	}
	if err := (&Server{}).Close(); err != nil {
		t.Errorf("Close of a server never started: %v", err)
	}
	if s, _ := NewServer(Config{}); s.Start() == nil {
		t.Error("Start without addresses succeeded")
	}
}

// TestServeSockets runs the server on 127.0.0.1 (a free port) and queries
// it over UDP and TCP: the truncated UDP answer is complete over TCP.
func TestServeSockets(t *testing.T) {
	s := newTestServer(t, Config{Addrs: []string{"127.0.0.1:0"}, UDPSockets: 3}, testZoneConfig())
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		t.Error("second Start succeeded")
	}
	bound := s.Addrs()
	if len(bound) != 1 || bound[0].Port() == 0 || bound[0].Addr().String() != "127.0.0.1" {
		t.Fatalf("Addrs %v", bound)
	}
	queryServer(t, bound[0].String())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// queryServer checks a running server with the test zone at addr.
func queryServer(t *testing.T, addr string) {
	t.Helper()
	udp, tcp := &miekg.Client{Net: "udp"}, &miekg.Client{Net: "tcp"}
	m := new(miekg.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", miekg.TypeA)
	for _, c := range []*miekg.Client{udp, tcp} {
		r, _, err := c.Exchange(m, addr)
		if err != nil {
			t.Fatalf("%s: %v", c.Net, err)
		}
		if got := rrStrings(r.Answer); len(got) != 1 || got[0] != "web.default.svc.cluster.local. 5 IN A 10.43.0.20" {
			t.Errorf("%s: answer %v", c.Net, got)
		}
	}
	m.SetQuestion(bigName, miekg.TypeA)
	r, _, err := udp.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated || len(r.Answer) >= 100 {
		t.Errorf("UDP: TC=%v with %d answers, want a truncated answer", r.Truncated, len(r.Answer))
	}
	r, _, err = tcp.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated || len(r.Answer) != 100 {
		t.Errorf("TCP: TC=%v with %d answers, want all 100", r.Truncated, len(r.Answer))
	}
	// A name outside the zone takes the general path: REFUSED without
	// upstreams.
	m.SetQuestion("example.com.", miekg.TypeA)
	if r, _, err = udp.Exchange(m, addr); err != nil || r.Rcode != miekg.RcodeRefused {
		t.Errorf("UDP example.com: %v, %v; want REFUSED", r, err)
	}
}
