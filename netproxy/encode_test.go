package netproxy

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
)

// allRuleShapes renders configurations that produce every kind of
// service-chain rule.
func allRuleShapes(t *testing.T) []rule {
	t.Helper()
	var cfgs []Config
	for _, s := range []Strategy{RoundRobin, Random, Weighted, LeastConn} {
		svc := webService(Endpoint{IP: a4("10.42.0.2"), Port: 8080, Weight: 3, Local: true}, ep("10.42.0.3", 80), ep("10.42.0.4", 65535))
		svc.Strategy = s
		svc.AffinityTimeout = 90 * time.Second
		svc.Ports[0].NodePort = 30080
		svc.ExternalIPs = []netip.Addr{a4("192.168.1.100")}
		for _, local := range []bool{false, true} {
			svc.ExternalLocal = local
			for _, c := range []netip.Prefix{cidr, netip.MustParsePrefix("10.40.0.0/13"), {}} {
				cfgs = append(cfgs, cloneConfig(Config{ClusterCIDR: c, Services: []Service{svc}}))
				remote := cloneConfig(Config{ClusterCIDR: c, Services: []Service{svc}})
				remote.Services[0].Ports[0].Endpoints[0].Local = false // Local policy drops
				cfgs = append(cfgs, remote)
			}
		}
	}
	seen := map[string]bool{}
	var rules []rule
	for _, cfg := range cfgs {
		rs, _ := render(cfg, func(string, leastConnPort) uint16 { return 41234 })
		for _, chain := range rs.Chains {
			for _, r := range chain {
				if k := r.String(); !seen[k] {
					seen[k] = true
					rules = append(rules, r)
				}
			}
		}
	}
	return rules
}

// TestEncodeRuleMatchesLibrary: the direct encoder produces exactly the
// bytes google/nftables builds for the same rule.
func TestEncodeRuleMatchesLibrary(t *testing.T) {
	rules := allRuleShapes(t)
	if len(rules) < 18 {
		t.Fatalf("only %d rule shapes", len(rules))
	}
	s := newSchema("shoal_svc").shard(0)
	for _, r := range rules {
		b := newBatchBuilder()
		b.AddRule(&nftables.Rule{Table: s.table, Chain: s.chain("svc-X"), Exprs: ruleExprs(r), UserData: comment(r.Comment)})
		lib, err := b.take()
		if err != nil || len(lib) != 1 {
			t.Fatalf("library: %v (%d messages)", err, len(lib))
		}
		got := encodeRule(nil, "shoal_svc_00", "svc-X", r)
		if !bytes.Equal(lib[0].Data, got) {
			t.Errorf("rule %q:\nlibrary % x\ndirect  % x", r, lib[0].Data, got)
		}
		if lib[0].Header.Type != msgNewRule || lib[0].Header.Flags != ruleFlags {
			t.Errorf("rule header: library %v/%v, direct %v/%v", lib[0].Header.Type, lib[0].Header.Flags, msgNewRule, ruleFlags)
		}
	}
	b := newBatchBuilder()
	b.AddChain(s.chain("svc-X"))
	lib, _ := b.take()
	if got := encodeChain(nil, "shoal_svc_00", "svc-X"); !bytes.Equal(lib[0].Data, got) || lib[0].Header.Flags != chainFlags {
		t.Errorf("chain:\nlibrary % x\ndirect  % x", lib[0].Data, got)
	}
}

// TestElementChunks: element lists stay under the 16-bit attribute limit.
func TestElementChunks(t *testing.T) {
	cfg := genConfig(5000, 1)
	rs := mustRender(t, cfg)
	tx := newTxn()
	s := newSchema("shoal_svc").shard(0)
	if err := addElems(tx.nft, s.serviceIPs, refElems(rs.asChange().AddServiceIPs, ipPortElem, false)); err != nil {
		t.Fatal(err)
	}
	msgs, err := tx.batch()
	if err != nil {
		t.Fatal(err)
	}
	msgs = msgs[1 : len(msgs)-1]
	if len(msgs) < 5 {
		t.Fatalf("5000 elements in %d messages: not chunked", len(msgs))
	}
	for i, m := range msgs {
		if len(m.Data) > 65000 {
			t.Errorf("message %d carries %d bytes: the element list attribute overflows", i, len(m.Data))
		}
	}
}
