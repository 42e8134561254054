package netproxy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// referenceDiff is the obvious, slow diff of two flat views: what an
// incremental transaction must do. The state computes the same thing
// incrementally.
func referenceDiff(old, cur *ruleset) change {
	var c change
	c.DelServiceIPs, c.AddServiceIPs = refElemMap(old.ServiceIPs, cur.ServiceIPs, cmpIPPort)
	c.DelNodePorts, c.AddNodePorts = refElemMap(old.NodePorts, cur.NodePorts, cmpProtoPort)
	c.DelNoEPIPs, c.AddNoEPIPs = refElemMap(old.NoEPIPs, cur.NoEPIPs, cmpIPPort)
	c.DelNoEPPorts, c.AddNoEPPorts = refElemMap(old.NoEPPorts, cur.NoEPPorts, cmpProtoPort)
	c.DelNodeIPs, c.AddNodeIPs = refMap(old.NodeIPs, cur.NodeIPs, netip.Addr.Compare)
	c.DelHairpin, c.AddHairpin = refMap(old.Hairpin, cur.Hairpin, netip.Addr.Compare)
	c.DelSets, c.AddSets = refMap(old.Affinity, cur.Affinity, strings.Compare)
	flush := map[string]bool{}
	for name, rules := range cur.Chains {
		prev, ok := old.Chains[name]
		switch {
		case !ok:
			c.AddChains = append(c.AddChains, name)
		case !slices.Equal(prev, rules):
			flush[name] = true
		}
	}
	for name := range old.Chains {
		if _, ok := cur.Chains[name]; !ok {
			c.DelChains = append(c.DelChains, name)
		}
	}
	for _, set := range c.DelSets { // surviving users of a dropped set are refilled
		h := strings.TrimPrefix(set, "aff-")
		for _, name := range []string{"svc-" + h, "ext-" + h} {
			_, inOld := old.Chains[name]
			_, inCur := cur.Chains[name]
			if inOld && inCur {
				flush[name] = true
			}
		}
	}
	for name := range flush {
		c.FlushChains = append(c.FlushChains, name)
	}
	slices.Sort(c.AddChains)
	slices.Sort(c.DelChains)
	slices.Sort(c.FlushChains)
	c.CIDR = old.CIDR != cur.CIDR
	return c
}

// refElemMap is refMap for map elements: deletions carry the old value,
// additions the new one.
func refElemMap[K comparable](old, cur map[K]string, cmpKey func(a, b K) int) (del, add []elemRef[K]) {
	dk, ak := refMap(old, cur, cmpKey)
	for _, k := range dk {
		del = append(del, elemRef[K]{k, old[k]})
	}
	for _, k := range ak {
		add = append(add, elemRef[K]{k, cur[k]})
	}
	return del, add
}

func refMap[K comparable, V comparable](old, cur map[K]V, cmpKey func(a, b K) int) (del, add []K) {
	for k, v := range old {
		if nv, ok := cur[k]; !ok || nv != v {
			del = append(del, k)
		}
	}
	for k, v := range cur {
		if ov, ok := old[k]; !ok || ov != v {
			add = append(add, k)
		}
	}
	slices.SortFunc(del, cmpKey)
	slices.SortFunc(add, cmpKey)
	return del, add
}

// mutate changes cfg at random the ways a cluster changes.
func mutate(r *rand.Rand, cfg *Config) string {
	if len(cfg.Services) == 0 || r.IntN(10) == 0 {
		i := r.IntN(1000)
		s := Service{Namespace: "ns", Name: fmt.Sprintf("new-%d", i), ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 43, 9, byte(i)})},
			Ports: []Port{{Name: "p", Protocol: TCP, Port: 80, Endpoints: []Endpoint{ep("10.42.9.1", 80)}}}}
		cfg.Services = append(cfg.Services, s)
		return "add service " + s.Name
	}
	i := r.IntN(len(cfg.Services))
	s := &cfg.Services[i]
	p := &s.Ports[r.IntN(len(s.Ports))]
	switch r.IntN(13) {
	case 0:
		cfg.Services = slices.Delete(cfg.Services, i, i+1)
		return "delete service"
	case 1:
		p.Endpoints = append(p.Endpoints, Endpoint{IP: netip.AddrFrom4([4]byte{10, 42, byte(r.IntN(4)), byte(r.IntN(250))}), Port: 8080, Local: r.IntN(2) == 0})
		return "add endpoint"
	case 2:
		if len(p.Endpoints) > 0 {
			p.Endpoints = slices.Delete(slices.Clone(p.Endpoints), 0, 1)
		}
		return "remove endpoint"
	case 3:
		p.Endpoints = nil
		return "no endpoints"
	case 4:
		s.Strategy = []Strategy{RoundRobin, Random, Weighted, LeastConn, ""}[r.IntN(5)]
		return "strategy"
	case 5:
		s.AffinityTimeout = time.Duration(r.IntN(3)) * time.Hour
		return "affinity"
	case 6:
		s.ExternalLocal = !s.ExternalLocal
		return "traffic policy"
	case 7:
		p.NodePort = uint16(30000 + r.IntN(3)) // collisions on purpose
		return "node port"
	case 8:
		s.ExternalIPs = []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 1, byte(100 + r.IntN(3))})}
		return "external IP"
	case 9:
		s.ClusterIPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 43, 0, byte(r.IntN(4))})} // collisions on purpose
		return "cluster IP"
	case 10:
		cfg.NodeIPs = []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 1, byte(10 + r.IntN(3))})}
		return "node IPs"
	case 11:
		switch p.Protocol {
		case TCP:
			p.Protocol = UDP
		case UDP:
			p.Protocol = SCTP
		default:
			p.Protocol = TCP
		}
		return "protocol"
	default:
		if len(p.Endpoints) > 0 {
			p.Endpoints = slices.Clone(p.Endpoints)
			p.Endpoints[0].Weight = r.IntN(4)
		}
		return "weight"
	}
}

func baseConfig() Config {
	cfg := genConfig(6, 3)
	cfg.Services[1].Ports[0].NodePort = 30001
	cfg.Services[2].AffinityTimeout = time.Hour
	cfg.Services[3].ExternalLocal = true
	cfg.Services[3].ExternalIPs = []netip.Addr{a4("192.168.1.100")}
	cfg.Services[3].Ports[0].Endpoints[1].Local = true
	cfg.Services[4].Ports[0].Endpoints = nil
	cfg.Services[5].Ports = append(cfg.Services[5].Ports, Port{Protocol: UDP, Port: 53, Endpoints: []Endpoint{ep("10.42.0.53", 53)}})
	return cfg
}

// TestIncrementalMatchesReference applies random changes one after
// another: each incremental change must equal the reference diff of the
// flat views, and the state must equal a fresh rendering of the same
// Config (the path does not matter).
func TestIncrementalMatchesReference(t *testing.T) {
	lc := func(string, leastConnPort) uint16 { return 40000 }
	for seed := uint64(1); seed <= 20; seed++ {
		r := rand.New(rand.NewPCG(seed, 0))
		cfg := cloneConfig(baseConfig())
		st := newState()
		st.update(cfg, lc)
		prev := st.view()
		for step := 0; step < 60; step++ {
			what := mutate(r, &cfg)
			cfg = cloneConfig(cfg)
			c, _ := st.update(cfg, lc)
			cur := st.view()
			want := referenceDiff(prev, cur)
			got := *c
			got.UDP = nil
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Fatalf("seed %d step %d (%s): incremental change differs from the reference (-want +got):\n%s", seed, step, what, diff)
			}
			fresh, _ := render(cfg, lc)
			if diff := cmp.Diff(describe(fresh), describe(cur)); diff != "" {
				t.Fatalf("seed %d step %d (%s): state differs from a fresh rendering (-fresh +state):\n%s", seed, step, what, diff)
			}
			prev = cur
		}
	}
}

func TestUnchangedConfigIsNoChange(t *testing.T) {
	cfg := baseConfig()
	st := newState()
	st.update(cfg, nil)
	c, _ := st.update(cloneConfig(cfg), nil)
	if !c.empty() {
		t.Fatalf("second update of the same config changed: %+v", c)
	}
}

func TestAffinityTimeoutChangeRecreatesSet(t *testing.T) {
	s := webService(ep("10.42.0.2", 8080))
	s.AffinityTimeout = time.Hour
	st := newState()
	st.update(Config{Services: []Service{s}}, nil)
	s.AffinityTimeout = 2 * time.Hour
	c, _ := st.update(Config{Services: []Service{s}}, nil)
	want := &change{DelSets: []string{"aff-" + web}, AddSets: []string{"aff-" + web}, FlushChains: []string{"svc-" + web}}
	c.UDP = nil
	if diff := cmp.Diff(want, c); diff != "" {
		t.Fatalf("change (-want +got):\n%s", diff)
	}
}

func TestUDPStaleConntrackSelection(t *testing.T) {
	dns := func(eps ...Endpoint) Config {
		return Config{NodeIPs: []netip.Addr{a4("192.168.1.10")}, Services: []Service{{Namespace: "kube-system", Name: "dns",
			ClusterIPs: []netip.Addr{a4("10.43.0.10")}, Ports: []Port{{Protocol: UDP, Port: 53, NodePort: 30053, Endpoints: eps}}}}}
	}
	st := newState()
	c, _ := st.update(dns(), nil)
	if !c.UDP.empty() {
		t.Fatalf("no endpoints yet, but flush %+v", c.UDP)
	}
	c, _ = st.update(dns(ep("10.42.0.2", 53), ep("10.42.0.3", 53)), nil)
	f := c.UDP
	if _, ok := f.noNAT[netip.MustParseAddrPort("10.43.0.10:53")]; !ok || len(f.noNATPort) != 1 {
		t.Fatalf("0 → 2 endpoints: want the un-NAT'ed entries to the service flushed, got %+v", f)
	}
	c, _ = st.update(dns(ep("10.42.0.3", 53)), nil)
	f = c.UDP
	key := [2]netip.AddrPort{netip.MustParseAddrPort("10.43.0.10:53"), netip.MustParseAddrPort("10.42.0.2:53")}
	if _, ok := f.gone[key]; !ok || len(f.gone) != 1 || len(f.noNAT) != 0 {
		t.Fatalf("removed endpoint: want %v flushed, got %+v", key, f)
	}

	// The filter itself: what it matches.
	flow := func(dst, target string) *flowT { return &flowT{dst: dst, target: target} }
	for _, c := range []struct {
		f    *flowT
		want bool
	}{
		{flow("10.43.0.10:53", "10.42.0.2:53"), true},      // DNAT'ed to the removed endpoint
		{flow("10.43.0.10:53", "10.42.0.3:53"), false},     // the endpoint that stays
		{flow("192.168.1.10:30053", "10.42.0.2:53"), true}, // via the node port
		{flow("10.43.0.99:53", "10.42.0.2:53"), false},     // another service
	} {
		if got := f.MatchConntrackFlow(c.f.conntrack()); got != c.want {
			t.Errorf("flow to %s DNAT'ed to %s: match %v, want %v", c.f.dst, c.f.target, got, c.want)
		}
	}
}

// TestConntrackFlushLeavesSCTP: SCTP ports are not UDP to the conntrack
// cleanup (SCTP associations end, as TCP connections do): an SCTP port
// changing selects nothing, and an SCTP entry with the address and port of
// a UDP entry that is flushed stays.
func TestConntrackFlushLeavesSCTP(t *testing.T) {
	svc := func(proto Protocol, eps ...Endpoint) Service {
		return Service{Namespace: "kube-system", Name: "sig-" + strings.ToLower(string(proto)), ClusterIPs: []netip.Addr{a4("10.43.0.10")},
			Ports: []Port{{Protocol: proto, Port: 53, NodePort: 30053, Endpoints: eps}}}
	}
	cfg := func(udp, sctp []Endpoint) Config {
		return Config{NodeIPs: []netip.Addr{a4("192.168.1.10")}, Services: []Service{svc(UDP, udp...), svc(SCTP, sctp...)}}
	}
	two := []Endpoint{ep("10.42.0.2", 53), ep("10.42.0.3", 53)}
	st := newState()
	st.update(cfg(two, nil), nil)
	if c, _ := st.update(cfg(two, two), nil); !c.UDP.empty() {
		t.Fatalf("the SCTP port got endpoints: flush %+v, want nothing", c.UDP)
	}
	if c, _ := st.update(cfg(two, two[1:]), nil); !c.UDP.empty() {
		t.Fatalf("the SCTP port lost an endpoint: flush %+v, want nothing", c.UDP)
	}
	c, _ := st.update(cfg(two[1:], two[1:]), nil)
	for _, f := range []struct {
		flow *flowT
		want bool
	}{
		{&flowT{dst: "10.43.0.10:53", target: "10.42.0.2:53"}, true},
		{&flowT{dst: "10.43.0.10:53", target: "10.42.0.2:53", proto: unix.IPPROTO_SCTP}, false},
		{&flowT{dst: "192.168.1.10:30053", target: "10.42.0.2:53", proto: unix.IPPROTO_SCTP}, false},
	} {
		if got := c.UDP.MatchConntrackFlow(f.flow.conntrack()); got != f.want {
			t.Errorf("protocol %d flow to %s DNAT'ed to %s: match %v, want %v", f.flow.proto, f.flow.dst, f.flow.target, got, f.want)
		}
	}
}
