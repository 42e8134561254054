package netproxy

import (
	"testing"
)

// Go-side cost of the dataplane at 10,000 services × 5 endpoints (the
// kernel's share is measured by e2e/bench).

// BenchmarkRender10k renders a whole Config from scratch (a cold start).
func BenchmarkRender10k(b *testing.B) {
	cfg := genConfig(10000, 5)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		render(cfg, nil)
	}
}

// BenchmarkUpdateOneChange10k is a Set's Go work when one endpoint of one
// service changed: compare every service with the last Set, re-render the
// changed one, compute the change.
func BenchmarkUpdateOneChange10k(b *testing.B) {
	cfg := genConfig(10000, 5)
	s := newState()
	s.update(cfg, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cfg.Services[5000].Ports[0].Endpoints[i%5].Port++
		c, _ := s.update(cfg, nil)
		if len(c.FlushChains) != 1 {
			b.Fatalf("change %+v", c)
		}
	}
}

// BenchmarkEncodeFull10k builds the full-resync transaction for 10,000
// services (what a cold start sends).
func BenchmarkEncodeFull10k(b *testing.B) {
	cfg := genConfig(10000, 5)
	rs, _ := render(cfg, nil)
	s := newSchema(DefaultTable)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := newTxn()
		if err := s.buildFull(t, rs, shardCount(len(rs.Chains), portsPerShard), nil); err != nil {
			b.Fatal(err)
		}
		if _, err := t.batch(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeOneChange10k builds the incremental transaction for one
// changed service.
func BenchmarkEncodeOneChange10k(b *testing.B) {
	cfg := genConfig(10000, 5)
	st := newState()
	st.update(cfg, nil)
	cfg.Services[5000].Ports[0].Endpoints[0].Port++
	c, _ := st.update(cfg, nil)
	s := newSchema(DefaultTable)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := newTxn()
		if _, err := s.buildIncremental(t, st, c, shardCount(len(st.ports), portsPerShard)); err != nil {
			b.Fatal(err)
		}
		if _, err := t.batch(); err != nil {
			b.Fatal(err)
		}
	}
}
