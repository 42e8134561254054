package netproxy

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden rulesets under testdata/")

// goldenConfigs are the configurations whose rulesets are pinned in
// testdata/<name>.nft. Together they use every feature.
func goldenConfigs() map[string]Config {
	web := Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{a4("10.43.0.10"), a4("fd00::10")},
		Ports: []Port{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080,
			Endpoints: []Endpoint{localEP("10.42.0.2", 8080), ep("10.42.1.3", 8080), ep("10.42.1.4", 8080)}}}}
	dns := Service{Namespace: "kube-system", Name: "dns", ClusterIPs: []netip.Addr{a4("10.43.0.53")}, Strategy: Random,
		AffinityTimeout: time.Hour, Ports: []Port{
			{Name: "dns", Protocol: UDP, Port: 53, Endpoints: []Endpoint{localEP("10.42.0.5", 53), ep("10.42.1.5", 53)}},
			{Name: "dns-tcp", Protocol: TCP, Port: 53, Endpoints: []Endpoint{localEP("10.42.0.5", 53), ep("10.42.1.5", 53)}},
		}}
	lb := Service{Namespace: "shop", Name: "front", ClusterIPs: []netip.Addr{a4("10.43.1.1")},
		ExternalIPs: []netip.Addr{a4("192.168.1.10"), a4("192.168.1.200")}, ExternalLocal: true,
		Ports: []Port{{Name: "https", Protocol: TCP, Port: 443, NodePort: 30443,
			Endpoints: []Endpoint{localEP("10.42.0.7", 8443), ep("10.42.1.7", 8443)}}}}
	weighted := Service{Namespace: "shop", Name: "canary", ClusterIPs: []netip.Addr{a4("10.43.1.2")}, Strategy: Weighted,
		Ports: []Port{{Protocol: TCP, Port: 8080, Endpoints: []Endpoint{
			{IP: a4("10.42.1.8"), Port: 80, Weight: 9}, {IP: a4("10.42.1.9"), Port: 80, Weight: 1}}}}}
	empty := Service{Namespace: "shop", Name: "empty", ClusterIPs: []netip.Addr{a4("10.43.1.3")},
		Ports: []Port{{Protocol: TCP, Port: 80, NodePort: 30081}, {Name: "q", Protocol: UDP, Port: 5000}}}
	lc := Service{Namespace: "shop", Name: "lc", ClusterIPs: []netip.Addr{a4("10.43.1.4")}, Strategy: LeastConn,
		Ports: []Port{
			{Protocol: TCP, Port: 80, Endpoints: []Endpoint{ep("10.42.1.10", 80), ep("10.42.1.11", 80)}},
			{Protocol: UDP, Port: 80, Endpoints: []Endpoint{ep("10.42.1.10", 80), ep("10.42.1.11", 80)}},
		}}
	// TCP and SCTP on one port number and one node port: separate keys.
	sctp := Service{Namespace: "shop", Name: "sctp", ClusterIPs: []netip.Addr{a4("10.43.1.5")}, AffinityTimeout: time.Minute,
		Ports: []Port{
			{Name: "tcp", Protocol: TCP, Port: 9, NodePort: 30009, Endpoints: []Endpoint{ep("10.42.1.12", 9)}},
			{Name: "sctp", Protocol: SCTP, Port: 9, NodePort: 30009, Endpoints: []Endpoint{localEP("10.42.0.13", 9), ep("10.42.1.13", 9)}},
		}}
	agent := Service{Namespace: "logs", Name: "agent", ClusterIPs: []netip.Addr{a4("10.43.3.1")}, InternalLocal: true,
		AffinityTimeout: time.Minute, Ports: []Port{{Protocol: TCP, Port: 24224, NodePort: 30224,
			Endpoints: []Endpoint{localEP("10.42.0.40", 24224), ep("10.42.1.40", 24224), localEP("10.42.0.41", 24224)}}}}

	a := Config{ClusterCIDR: cidr, NodeIPs: []netip.Addr{a4("192.168.1.10")},
		Services: []Service{web, dns, lb, weighted, empty, lc, sctp, agent}}

	b := cloneConfig(a)
	b.NodeIPs = []netip.Addr{a4("192.168.1.11"), a4("192.168.1.10")}
	b.Services[0].Ports[0].Endpoints = b.Services[0].Ports[0].Endpoints[1:]  // web loses its local endpoint
	b.Services[1].AffinityTimeout = 0                                        // dns drops affinity
	b.Services[2].ExternalLocal = false                                      // front: Cluster policy
	b.Services[4].Ports[0].Endpoints = []Endpoint{localEP("10.42.0.20", 80)} // empty gets an endpoint
	b.Services[5].Strategy = RoundRobin                                      // lc: no proxy any more
	b.Services[6].Ports[1].Endpoints = nil                                   // sctp: SCTP rejects, TCP on 9 stays
	b.Services[7].Ports[0].Endpoints = []Endpoint{ep("10.42.1.40", 24224)}   // agent: no local endpoint, ClusterIP drops
	b.Services = slices.Delete(b.Services, 3, 4)                             // canary gone
	b.Services = append(b.Services, Service{Namespace: "new", Name: "svc", ClusterIPs: []netip.Addr{a4("10.43.2.1")},
		AffinityTimeout: 10 * time.Minute, Ports: []Port{{Protocol: TCP, Port: 80, Endpoints: []Endpoint{ep("10.42.1.30", 80)}}}})

	c := cloneConfig(b)
	c.ClusterCIDR = netip.MustParsePrefix("10.40.0.0/13")
	c.Services[1].AffinityTimeout = 2 * time.Hour // dns: affinity back, another timeout
	c.Services[2].ExternalLocal = true
	c.Services[2].Ports[0].Endpoints = []Endpoint{ep("10.42.1.7", 8443)} // Local with no local endpoint: drop
	c.Services[3].Ports[0].Endpoints = nil                               // back to reject
	c.Services[6].InternalLocal = false                                  // agent: Cluster policy, the int chain goes
	c.Services = slices.Delete(c.Services, 5, 6)                         // sctp gone
	c.Services = slices.Delete(c.Services, 6, 7)                         // new/svc gone

	return map[string]Config{"a": a, "b": b, "c": c, "empty": {}}
}

var redirectPort = regexp.MustCompile(`redirect to :\d+`)

// normalizeListing makes `nft list table` output comparable: blocks (sets,
// maps, chains) sorted by kind and name, set elements sorted one per line
// (the kernel lists chains in creation order and elements in hash order),
// least-conn proxy ports replaced.
func normalizeListing(s string) string {
	s = redirectPort.ReplaceAllString(s, "redirect to :PORT")
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) < 2 {
		return s
	}
	head, body := lines[0], lines[1:len(lines)-1]
	var blocks [][]string
	var cur []string
	for i := 0; i < len(body); i++ {
		l := body[i]
		if strings.TrimSpace(l) == "" {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(l), "elements = {") {
			text := strings.TrimSpace(l)
			for !strings.HasSuffix(text, "}") && i+1 < len(body) {
				i++
				text += " " + strings.TrimSpace(body[i])
			}
			text = strings.TrimSuffix(strings.TrimPrefix(text, "elements = {"), "}")
			elems := strings.Split(text, ",")
			for j := range elems {
				elems[j] = strings.TrimSpace(elems[j])
			}
			slices.Sort(elems)
			cur = append(cur, "\t\telements = {")
			for _, e := range elems {
				cur = append(cur, "\t\t\t"+e)
			}
			cur = append(cur, "\t\t}")
			continue
		}
		cur = append(cur, l)
		if l == "\t}" {
			blocks = append(blocks, cur)
			cur = nil
		}
	}
	rank := func(b []string) string {
		kind := strings.Fields(b[0])[0]
		if kind != "chain" {
			kind = "set"
		}
		return kind + " " + strings.Fields(b[0])[1]
	}
	slices.SortFunc(blocks, func(x, y []string) int { return strings.Compare(rank(x), rank(y)) })
	out := []string{head}
	for _, b := range blocks {
		out = append(out, b...)
	}
	return strings.Join(append(out, "}"), "\n") + "\n"
}

func listTable(t *testing.T, ns *testNS, table string) string {
	t.Helper()
	return normalizeListing(ns.run(t, "nft", "list", "table", "ip", table))
}

// proxyTables returns the names of the tables netproxy owns in ns (base
// and shards), sorted.
func proxyTables(t *testing.T, ns *testNS) []string {
	t.Helper()
	var names []string
	for _, l := range strings.Split(ns.run(t, "nft", "list", "tables", "ip"), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "table" && f[1] == "ip" && (f[2] == DefaultTable || isShardTableName(DefaultTable, f[2])) {
			names = append(names, f[2])
		}
	}
	slices.Sort(names)
	return names
}

// listTables lists every table netproxy owns in ns, normalized, in name
// order.
func listTables(t *testing.T, ns *testNS) string {
	t.Helper()
	var b strings.Builder
	for _, name := range proxyTables(t, ns) {
		b.WriteString(listTable(t, ns, name))
	}
	return b.String()
}

func goldenPath(name string) string { return filepath.Join("testdata", name+".nft") }

func checkGolden(t *testing.T, ns *testNS, name, when string) {
	t.Helper()
	got := listTables(t, ns)
	if *update {
		if err := os.WriteFile(goldenPath(name), []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(goldenPath(name))
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Fatalf("%s: ruleset differs from %s (-want +got):\n%s", when, goldenPath(name), diff)
	}
}

// testShards is the shard count of the golden and traffic tests: small
// configurations get one shard in production; four spread their services
// over several tables.
const testShards = 4

// newTestProxy is a Proxy for ns with testShards shard tables.
func newTestProxy(t *testing.T, ns *testNS) *Proxy {
	t.Helper()
	p, err := New(Options{NetNS: ns.path})
	if err != nil {
		t.Fatal(err)
	}
	p.fixedShards = testShards
	t.Cleanup(func() { p.Close() })
	return p
}

func mustSet(t *testing.T, p *Proxy, cfg Config) {
	t.Helper()
	if err := p.Set(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
}

// TestGoldenFullResync: each configuration applied to a fresh namespace.
func TestGoldenFullResync(t *testing.T) {
	requireRoot(t)
	for name, cfg := range goldenConfigs() {
		t.Run(name, func(t *testing.T) {
			ns := newTestNS(t)
			p := newTestProxy(t, ns)
			mustSet(t, p, cfg)
			if !p.LastStats().Full {
				t.Error("the first Set was not a full resync")
			}
			checkGolden(t, ns, name, "full resync")
		})
	}
}

// TestGoldenIncremental: the configurations applied one after another, in
// order and in random orders: every incremental result equals the full
// resync's golden ruleset.
func TestGoldenIncremental(t *testing.T) {
	requireRoot(t)
	if *update {
		t.Skip("-update rewrites from the full resyncs")
	}
	cfgs := goldenConfigs()
	names := []string{"a", "b", "c", "empty"}
	orders := [][]string{{"a", "b", "c", "empty", "a", "c", "b", "a"}}
	for seed := uint64(1); seed <= 3; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		var o []string
		for i := 0; i < 8; i++ {
			o = append(o, names[r.IntN(len(names))])
		}
		orders = append(orders, o)
	}
	for _, order := range orders {
		t.Run(strings.Join(order, "-"), func(t *testing.T) {
			ns := newTestNS(t)
			p := newTestProxy(t, ns)
			for i, name := range order {
				mustSet(t, p, cfgs[name])
				// Only a change of the cluster CIDR (the services chain
				// marks with it) needs a full resync.
				wantFull := i == 0 || cfgs[order[i-1]].ClusterCIDR != cfgs[name].ClusterCIDR
				if got := p.LastStats().Full; got != wantFull {
					t.Errorf("step %d (%s): full resync %v, want %v", i, name, got, wantFull)
				}
				checkGolden(t, ns, name, fmt.Sprintf("step %d (%s after %s)", i, name, strings.Join(order[:i], ",")))
			}
		})
	}
}

// TestGoldenDirtyStart: stale tables from an earlier run (junk chains,
// sets, rules; shard tables of another shard count) are replaced or
// deleted, and other tables, even with similar names, are left alone.
func TestGoldenDirtyStart(t *testing.T) {
	requireRoot(t)
	ns := newTestNS(t)
	junk := `	set junk { type ipv4_addr; elements = { 1.2.3.4 } }
	map service-ips { type ipv4_addr : verdict; }
	chain svc-OLDOLDOLD0 { ip daddr 1.2.3.4 drop; }
	chain services { jump svc-OLDOLDOLD0; }
	chain nat-prerouting { type nat hook prerouting priority dstnat; jump services; }
`
	var stale strings.Builder
	for _, name := range []string{"shoal_svc", "shoal_svc_01", "shoal_svc_09", "shoal_svc_123"} {
		fmt.Fprintf(&stale, "table ip %s {\n%s}\n", name, junk)
	}
	others := []string{"ip other", "ip shoal_svc_x", "ip shoal_svcx", "ip shoal_svc_1", "ip shoal_svc_01x", "inet shoal_svc_02"}
	for _, name := range others {
		fmt.Fprintf(&stale, "table %s {\n\tchain input { type filter hook input priority 0; tcp dport 22 accept; }\n}\n", name)
	}
	f := filepath.Join(t.TempDir(), "stale.nft")
	if err := os.WriteFile(f, []byte(stale.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.run(t, "nft", "-f", f)
	before := map[string]string{}
	for _, name := range others {
		before[name] = ns.run(t, append([]string{"nft", "list", "table"}, strings.Fields(name)...)...)
	}

	p := newTestProxy(t, ns)
	mustSet(t, p, goldenConfigs()["a"])
	checkGolden(t, ns, "a", "over stale tables")
	for _, name := range others {
		if got := ns.run(t, append([]string{"nft", "list", "table"}, strings.Fields(name)...)...); got != before[name] {
			t.Errorf("table %s changed:\n%s\nwas:\n%s", name, got, before[name])
		}
	}
}

// TestConvergesAfterHandChanges: an incremental update that fails (the
// tables were deleted by hand) returns the error, and the next Set
// rebuilds everything; Resync undoes rules added by hand.
func TestConvergesAfterHandChanges(t *testing.T) {
	requireRoot(t)
	cfgs := goldenConfigs()
	ns := newTestNS(t)
	p := newTestProxy(t, ns)
	mustSet(t, p, cfgs["a"])
	for _, name := range proxyTables(t, ns) {
		ns.run(t, "nft", "delete", "table", "ip", name)
	}
	err := p.Set(context.Background(), cfgs["b"])
	if err == nil {
		t.Fatal("incremental update of deleted tables succeeded")
	}
	if !strings.Contains(err.Error(), "incremental") {
		t.Errorf("error does not say what failed: %v", err)
	}
	mustSet(t, p, cfgs["b"])
	if !p.LastStats().Full {
		t.Error("the Set after a failure was not a full resync")
	}
	checkGolden(t, ns, "b", "after a failed incremental update")

	for _, name := range proxyTables(t, ns) {
		if name != DefaultTable {
			ns.run(t, "nft", "add", "rule", "ip", name, "services", "ip", "daddr", "1.2.3.4", "drop")
		}
	}
	ns.run(t, "nft", "add", "rule", "ip", DefaultTable, "nat-postrouting", "ip", "daddr", "1.2.3.4", "drop")
	p.Resync()
	mustSet(t, p, cfgs["b"])
	checkGolden(t, ns, "b", "after Resync over rules added by hand")
}

// TestCloseLeavesRulesRemoveDeletes: Close keeps the kernel's rules (a
// restarted agent keeps serving); Remove deletes every table netproxy
// owns, whatever shard count built them; twice is fine.
func TestCloseLeavesRulesRemoveDeletes(t *testing.T) {
	requireRoot(t)
	ns := newTestNS(t)
	p, err := New(Options{NetNS: ns.path})
	if err != nil {
		t.Fatal(err)
	}
	p.fixedShards = testShards
	mustSet(t, p, goldenConfigs()["a"])
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Set(context.Background(), Config{}); err != ErrClosed {
		t.Errorf("Set after Close: %v, want ErrClosed", err)
	}
	checkGolden(t, ns, "a", "after Close")

	ns.run(t, "nft", "add", "table", "ip", "other")
	p2, err := New(Options{NetNS: ns.path}) // sized for no services: one shard
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p2.Close() })
	for i := 0; i < 2; i++ {
		if err := p2.Remove(); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
	}
	if left := proxyTables(t, ns); len(left) > 0 {
		t.Fatalf("tables still there after Remove: %v", left)
	}
	if _, err := ns.try("nft", "list", "table", "ip", "other"); err != nil {
		t.Errorf("Remove deleted another table: %v", err)
	}
}
