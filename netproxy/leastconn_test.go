package netproxy

import (
	"net/netip"
	"testing"
	"time"
)

func TestLeastConnPick(t *testing.T) {
	eps := []netip.AddrPort{netip.MustParseAddrPort("10.42.0.2:80"), netip.MustParseAddrPort("10.42.0.3:80"), netip.MustParseAddrPort("10.42.0.4:80")}
	p := &balancer{}
	p.update(leastConnPort{Endpoints: eps})
	client := a4("10.42.0.10")

	// Ties go round robin.
	var order []netip.AddrPort
	var held []*lcBackend
	for i := 0; i < 3; i++ {
		b := p.pick(client, nil)
		order = append(order, b.addr)
		held = append(held, b)
	}
	if order[0] != eps[0] || order[1] != eps[1] || order[2] != eps[2] {
		t.Fatalf("ties picked %v, want round robin %v", order, eps)
	}
	// The endpoint with the fewest active connections wins.
	p.release(held[1])
	if b := p.pick(client, nil); b.addr != eps[1] {
		t.Fatalf("picked %s, want the idle %s", b.addr, eps[1])
	}
	// Failed endpoints are skipped; none left means nil.
	if b := p.pick(client, map[netip.AddrPort]bool{eps[0]: true, eps[1]: true}); b.addr != eps[2] {
		t.Fatalf("picked %s past failures, want %s", b.addr, eps[2])
	}
	if b := p.pick(client, map[netip.AddrPort]bool{eps[0]: true, eps[1]: true, eps[2]: true}); b != nil {
		t.Fatalf("picked %s with every endpoint failed", b.addr)
	}
	// Updates keep the counts of endpoints that stay.
	p.update(leastConnPort{Endpoints: eps[1:]})
	got := p.activeCounts()
	if len(got) != 2 || got[eps[1]] != 1 || got[eps[2]] != 2 {
		t.Fatalf("counts after the update: %v", got)
	}
}

func TestLeastConnAffinity(t *testing.T) {
	eps := []netip.AddrPort{netip.MustParseAddrPort("10.42.0.2:80"), netip.MustParseAddrPort("10.42.0.3:80")}
	p := &balancer{}
	p.update(leastConnPort{Endpoints: eps, Affinity: time.Hour})
	a, b := a4("10.42.0.10"), a4("10.42.0.11")
	first := p.pick(a, nil).addr
	for i := 0; i < 5; i++ {
		if got := p.pick(a, nil).addr; got != first {
			t.Fatalf("client moved from %s to %s despite affinity", first, got)
		}
	}
	if got := p.pick(b, nil).addr; got == first {
		t.Errorf("another client got the busier endpoint %s", got)
	}
}
