package netproxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestShardCount(t *testing.T) {
	for _, c := range []struct{ ports, perShard, want int }{
		{0, 1000, 1},
		{1000, 1000, 1},
		{1001, 1000, 2},
		{10000, 1000, 16},
		{16000, 1000, 16},
		{16001, 1000, 32},
		{1 << 30, 1000, maxShards},
		{9, 2, 8},
	} {
		if got := shardCount(c.ports, c.perShard); got != c.want {
			t.Errorf("shardCount(%d, %d) = %d, want %d", c.ports, c.perShard, got, c.want)
		}
	}
}

// TestShardOfHashSpreads: service ports spread evenly over the shards, and
// a port's shard depends only on its identity.
func TestShardOfHashSpreads(t *testing.T) {
	const n, ports = 16, 16000
	counts := make([]int, n)
	for i := 0; i < ports; i++ {
		id := identOf(&Service{Namespace: "ns", Name: fmt.Sprintf("svc-%d", i)}, &Port{Name: "http", Protocol: TCP})
		h := id.hash()
		s := shardOfHash(h, n)
		counts[s]++
		if shardOf("svc-"+h, n) != s || shardOf("ext-"+h, n) != s || shardOf("aff-"+h, n) != s {
			t.Fatalf("the chains and set of %s are not in one shard", id)
		}
	}
	for i, c := range counts {
		// 1,000 expected per shard; ±20% is > 6 standard deviations.
		if c < 800 || c > 1200 {
			t.Errorf("shard %d holds %d of %d ports: %v", i, c, ports, counts)
			break
		}
	}
	if got := shardOfHash(web, 16); got != shardOfHash(web, 16) || shardOfHash(web, 1) != 0 {
		t.Error("shardOfHash is not a function of the hash")
	}
}

func TestShardTableNames(t *testing.T) {
	if got := shardTableName("shoal_svc", 7); got != "shoal_svc_07" {
		t.Errorf("shard 7 is %q", got)
	}
	for name, want := range map[string]bool{
		"shoal_svc_00": true, "shoal_svc_63": true, "shoal_svc_123": true,
		"shoal_svc": false, "shoal_svc_1": false, "shoal_svc_x1": false, "shoal_svc_01x": false,
		"shoal_svcx_01": false, "other_01": false, "shoal_svc__01": false,
	} {
		if got := isShardTableName("shoal_svc", name); got != want {
			t.Errorf("isShardTableName(shoal_svc, %q) = %v, want %v", name, got, want)
		}
	}
}

// TestSplitChangePlacesByOwner: every element, chain and set of a full
// change lands in exactly one shard, the shard of the service port it
// names; node IPs go everywhere; the no-endpoint elements go to no shard
// (the base table has them).
func TestSplitChangePlacesByOwner(t *testing.T) {
	cfg := baseConfig()
	cfg.Services = append(cfg.Services, genConfig(40, 2).Services...)
	for i := 0; i < 40; i += 3 {
		cfg.Services[6+i].Name += "-empty"
		cfg.Services[6+i].Ports[0].Endpoints = nil
		cfg.Services[6+i].Ports[0].NodePort = uint16(30100 + i)
	}
	rs := mustRender(t, cfg)
	full := rs.asChange()
	const n = 4
	parts := splitChange(full, n)
	var merged change
	used := 0
	for i, p := range parts {
		if p == nil {
			t.Fatalf("shard %d is empty: node IPs go to every shard", i)
		}
		if !slices.Equal(p.AddNodeIPs, full.AddNodeIPs) {
			t.Errorf("shard %d node IPs %v, want %v", i, p.AddNodeIPs, full.AddNodeIPs)
		}
		if len(p.AddChains) > 0 {
			used++
		}
		if len(p.AddNoEPIPs)+len(p.AddNoEPPorts) > 0 {
			t.Errorf("shard %d has no-endpoint elements %v %v: they belong in the base table", i, p.AddNoEPIPs, p.AddNoEPPorts)
		}
		for _, r := range p.AddServiceIPs {
			if shardOf(r.Ref, n) != i {
				t.Errorf("%s (%s) placed in shard %d", r.Key, r.Ref, i)
			}
		}
		for _, r := range p.AddNodePorts {
			if shardOf(r.Ref, n) != i {
				t.Errorf("node port %s (%s) placed in shard %d", r.Key, r.Ref, i)
			}
		}
		for _, name := range append(slices.Clone(p.AddChains), p.AddSets...) {
			if shardOf(name, n) != i {
				t.Errorf("%s placed in shard %d", name, i)
			}
		}
		merged.AddServiceIPs = append(merged.AddServiceIPs, p.AddServiceIPs...)
		merged.AddNodePorts = append(merged.AddNodePorts, p.AddNodePorts...)
		merged.AddChains = append(merged.AddChains, p.AddChains...)
		merged.AddSets = append(merged.AddSets, p.AddSets...)
	}
	if len(full.AddNoEPIPs) == 0 || len(full.AddNoEPPorts) == 0 {
		t.Errorf("the configuration has no service without endpoints: %d addresses, %d node ports", len(full.AddNoEPIPs), len(full.AddNoEPPorts))
	}
	if used < 2 {
		t.Fatalf("the chains use %d of %d shards", used, n)
	}
	for what, l := range map[string][2]int{
		"service-ips":       {len(merged.AddServiceIPs), len(full.AddServiceIPs)},
		"service-nodeports": {len(merged.AddNodePorts), len(full.AddNodePorts)},
		"chains":            {len(merged.AddChains), len(full.AddChains)},
		"sets":              {len(merged.AddSets), len(full.AddSets)},
	} {
		if l[0] != l[1] || l[1] == 0 {
			t.Errorf("%s: %d placed of %d", what, l[0], l[1])
		}
	}
}

// mapKeys lists the elements of map m of one table in ns with their
// verdicts ("key : goto chain").
func mapKeys(t *testing.T, ns *testNS, table, m string) []string {
	t.Helper()
	var out []string
	in := false
	for _, l := range strings.Split(listTable(t, ns, table), "\n") {
		switch {
		case l == "\tmap "+m+" {":
			in = true
		case in && l == "\t}":
			return out
		case in && strings.Contains(l, " : goto "):
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// TestOneChangeTouchesOneShard: at 4 shards, every service address is in
// exactly one table's maps (the shard of its chain; the base table for
// those without endpoints), and one endpoint change rewrites exactly one
// shard table, leaving the others as they were.
func TestOneChangeTouchesOneShard(t *testing.T) {
	requireRoot(t)
	ns := newTestNS(t)
	p := newTestProxy(t, ns)
	cfg := genConfig(40, 3)
	for i := 0; i < 40; i += 5 {
		cfg.Services[i].Ports[0].Endpoints = nil
	}
	mustSet(t, p, cfg)
	tables := proxyTables(t, ns)
	if want := []string{"shoal_svc", "shoal_svc_00", "shoal_svc_01", "shoal_svc_02", "shoal_svc_03"}; !slices.Equal(tables, want) {
		t.Fatalf("tables %v, want %v", tables, want)
	}
	seen := map[string]string{} // service address → table
	see := func(table, m string, check func(key, target string)) {
		for _, e := range mapKeys(t, ns, table, m) {
			key, target, _ := strings.Cut(e, " : goto ")
			if prev, dup := seen[key]; dup {
				t.Errorf("%s is in %s and in %s", key, prev, table)
			}
			seen[key] = table
			check(key, target)
		}
	}
	for i := 0; i < testShards; i++ {
		table := shardTableName(DefaultTable, i)
		see(table, mapServiceIPs, func(key, target string) {
			if shardOf(target, testShards) != i {
				t.Errorf("%s goes to %s, which belongs in shard %d, from %s", key, target, shardOf(target, testShards), table)
			}
		})
		if m := mapKeys(t, ns, table, mapNoEPServices); len(m) > 0 {
			t.Errorf("shard table %s has no-endpoint elements %v", table, m)
		}
	}
	see(DefaultTable, mapNoEPServices, func(key, target string) {
		if target != chainReject {
			t.Errorf("%s, without endpoints, goes to %s", key, target)
		}
	})
	if len(seen) != 40 {
		t.Errorf("%d service addresses programmed, want 40: %v", len(seen), seen)
	}

	before := map[string]string{}
	for _, name := range tables {
		before[name] = listTable(t, ns, name)
	}
	svc := &cfg.Services[7]
	svc.Ports[0].Endpoints[1].IP = a4("10.41.0.1")
	mustSet(t, p, cfg)
	if st := p.LastStats(); st.Full || st.Messages == 0 || p.touched != 1 {
		t.Fatalf("one endpoint change: %+v, %d shard tables touched; want one incremental transaction to one table", st, p.touched)
	}
	changed := shardTableName(DefaultTable, shardOfHash(identOf(svc, &svc.Ports[0]).hash(), testShards))
	for _, name := range tables {
		after := listTable(t, ns, name)
		switch {
		case name == changed && after == before[name]:
			t.Errorf("table %s, which holds the service, did not change", name)
		case name != changed && after != before[name]:
			t.Errorf("table %s changed, but only %s holds the service", name, changed)
		}
	}
	if !strings.Contains(before[changed], "dnat to 10.42.0.22:8080") || !strings.Contains(listTable(t, ns, changed), "dnat to 10.41.0.1:8080") {
		t.Errorf("the endpoint was not replaced in %s", changed)
	}
}

// TestShardsFollowServiceCount: the shard count grows with the services
// (a full resync over twice as many tables), never shrinks on an
// incremental update, and a full resync with fewer services deletes the
// tables it no longer needs.
func TestShardsFollowServiceCount(t *testing.T) {
	requireRoot(t)
	ns := newTestNS(t)
	p, err := New(Options{NetNS: ns.path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	p.perShard = 2
	step := func(services int, wantFull bool, wantShards int) {
		t.Helper()
		cfg := genConfig(services, 1)
		mustSet(t, p, cfg)
		if got := p.LastStats().Full; got != wantFull {
			t.Errorf("%d services: full resync %v, want %v", services, got, wantFull)
		}
		want := []string{DefaultTable}
		for i := 0; i < wantShards; i++ {
			want = append(want, shardTableName(DefaultTable, i))
		}
		if got := proxyTables(t, ns); !slices.Equal(got, want) {
			t.Fatalf("%d services: tables %v, want %v", services, got, want)
		}
		var elems []string
		for _, name := range want[1:] {
			elems = append(elems, mapKeys(t, ns, name, mapServiceIPs)...)
		}
		slices.Sort(elems)
		var wantElems []string
		for _, s := range cfg.Services {
			wantElems = append(wantElems, fmt.Sprintf("%s . tcp . 80 : goto svc-%s", s.ClusterIPs[0], identOf(&s, &s.Ports[0]).hash()))
		}
		slices.Sort(wantElems)
		if !slices.Equal(elems, wantElems) {
			t.Errorf("%d services: service-ips elements\n%s\nwant\n%s", services, strings.Join(elems, "\n"), strings.Join(wantElems, "\n"))
		}
	}
	step(1, true, 1)
	step(2, false, 1)
	step(3, true, 2)
	step(9, true, 8)
	step(4, false, 8)
	p.Resync()
	step(1, true, 1)
}

// TestNodePortsInEveryShard: node IPs are copied to every shard (node
// ports are looked up there), and a change of them reaches all shards.
func TestNodePortsInEveryShard(t *testing.T) {
	requireRoot(t)
	ns := newTestNS(t)
	p := newTestProxy(t, ns)
	cfg := genConfig(8, 1)
	mustSet(t, p, cfg)
	cfg.NodeIPs = []netip.Addr{a4("192.168.1.11")}
	mustSet(t, p, cfg)
	if p.touched != testShards {
		t.Errorf("a node IP change touched %d shard tables, want %d", p.touched, testShards)
	}
	for i := 0; i < testShards; i++ {
		l := listTable(t, ns, shardTableName(DefaultTable, i))
		if !strings.Contains(l, "192.168.1.11") || strings.Contains(l, "192.168.1.10") {
			t.Errorf("shard %d does not hold the new node IPs only:\n%s", i, l)
		}
	}
}
