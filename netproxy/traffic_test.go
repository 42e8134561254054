package netproxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// The traffic tests share one topology (node, client pod, three backend
// pods, a LAN client) and one Proxy; every subtest programs its own
// services on its own addresses, so they also exercise incremental
// updates of a table that keeps the others' services.

var backends = []string{"10.42.0.2", "10.42.0.3", "10.42.0.4"}

func backendEPs(local bool) []Endpoint {
	var eps []Endpoint
	for _, b := range backends {
		eps = append(eps, Endpoint{IP: a4(b), Port: echoTCP, Local: local})
	}
	return eps
}

type trafficEnv struct {
	tp  *topology
	p   *Proxy
	cfg Config
}

// add programs a service next to the ones already there.
func (e *trafficEnv) add(t *testing.T, s Service) {
	t.Helper()
	e.cfg.Services = append(e.cfg.Services, s)
	mustSet(t, e.p, e.cfg)
}

// replace reprograms the service with s's namespace and name.
func (e *trafficEnv) replace(t *testing.T, s Service) {
	t.Helper()
	i := slices.IndexFunc(e.cfg.Services, func(x Service) bool { return x.Namespace == s.Namespace && x.Name == s.Name })
	e.cfg.Services[i] = s
	mustSet(t, e.p, cloneConfig(e.cfg))
}

func tcpService(name, ip string, eps []Endpoint) Service {
	return Service{Namespace: "traffic", Name: name, ClusterIPs: []netip.Addr{a4(ip)},
		Ports: []Port{{Name: "echo", Protocol: TCP, Port: 80, Endpoints: eps}}}
}

func TestTraffic(t *testing.T) {
	requireRoot(t)
	tp := newTopology(t, backends...)
	env := &trafficEnv{tp: tp, p: newTestProxy(t, tp.node),
		cfg: Config{ClusterCIDR: cidr, NodeIPs: []netip.Addr{tp.nodeIP}}}
	mustSet(t, env.p, env.cfg)
	client := tp.client()

	t.Run("round robin: N×k connections, k per endpoint", func(t *testing.T) {
		env.add(t, tcpService("rr", "10.43.0.10", backendEPs(false)))
		counts := map[string]int{}
		for i := 0; i < 3*20; i++ {
			r := mustGet(t, client, "10.43.0.10:80")
			counts[r.server]++
			if r.peer != a4("10.42.0.10") {
				t.Fatalf("pod-to-service traffic was masqueraded: backend saw %s", r.peer)
			}
		}
		for _, b := range backends {
			if counts[b] != 20 {
				t.Errorf("round robin: %v, want 20 each", counts)
				break
			}
		}
	})

	t.Run("weighted: exact proportions", func(t *testing.T) {
		eps := backendEPs(false)
		eps[0].Weight, eps[1].Weight, eps[2].Weight = 3, 1, 2
		s := tcpService("weighted", "10.43.0.11", eps)
		s.Strategy = Weighted
		env.add(t, s)
		counts := map[string]int{}
		for i := 0; i < 60; i++ {
			counts[mustGet(t, client, "10.43.0.11:80").server]++
		}
		want := map[string]int{backends[0]: 30, backends[1]: 10, backends[2]: 20}
		if fmt.Sprint(counts) != fmt.Sprint(want) {
			t.Errorf("weighted 3:1:2 over 60 connections: %v, want %v", counts, want)
		}
	})

	t.Run("random: every endpoint gets a fair share", func(t *testing.T) {
		s := tcpService("random", "10.43.0.12", backendEPs(false))
		s.Strategy = Random
		env.add(t, s)
		counts := map[string]int{}
		for i := 0; i < 300; i++ {
			counts[mustGet(t, client, "10.43.0.12:80").server]++
		}
		for _, b := range backends {
			if counts[b] < 30 { // p ≈ 1e-9 for a fair die
				t.Errorf("random over 300 connections: %v, want each ≥ 30", counts)
				break
			}
		}
	})

	t.Run("least connections: new connections avoid busy endpoints", func(t *testing.T) {
		s := tcpService("lc", "10.43.0.13", backendEPs(false))
		s.Strategy = LeastConn
		env.add(t, s)
		lp := env.p.lc["svc-"+identOf(&s, &s.Ports[0]).hash()]
		if lp == nil {
			t.Fatal("no least-conn proxy was started")
		}
		// Two long-lived connections take two endpoints.
		busy := map[string]bool{}
		for i := 0; i < 2; i++ {
			c, err := dial(client, "10.43.0.13:80")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r, err := readReply(c)
			if err != nil {
				t.Fatal(err)
			}
			if r.peer != a4(bridgeIP) {
				t.Errorf("proxied connection came from %s, want the node's %s", r.peer, bridgeIP)
			}
			busy[r.server] = true
		}
		if len(busy) != 2 {
			t.Fatalf("two connections to idle endpoints went to %v", busy)
		}
		for i := 0; i < 10; i++ {
			r := mustGet(t, client, "10.43.0.13:80")
			if busy[r.server] {
				t.Fatalf("connection %d went to busy %s (active: %v)", i, r.server, lp.activeCounts())
			}
			waitIdle(t, lp, netip.AddrPortFrom(a4(r.server), echoTCP))
		}
		// Endpoints are updated live: the proxy follows.
		s.Ports[0].Endpoints = backendEPs(false)[:1]
		env.replace(t, s)
		if env.p.lc["svc-"+identOf(&s, &s.Ports[0]).hash()] != lp {
			t.Fatal("the proxy was replaced instead of updated")
		}
		for i := 0; i < 3; i++ {
			if r := mustGet(t, client, "10.43.0.13:80"); r.server != backends[0] {
				t.Fatalf("after the update, a connection went to %s", r.server)
			}
		}
	})

	t.Run("node port from the LAN, Cluster policy: masqueraded", func(t *testing.T) {
		s := tcpService("np", "10.43.0.14", backendEPs(false))
		s.Ports[0].NodePort = 30080
		env.add(t, s)
		seen := map[string]bool{}
		for i := 0; i < 6; i++ {
			r := mustGet(t, tp.lan, "192.168.50.1:30080")
			seen[r.server] = true
			if r.peer == tp.lanIP {
				t.Fatalf("Cluster policy kept the client address %s (no masquerade)", r.peer)
			}
		}
		if len(seen) != 3 {
			t.Errorf("node port reached %v, want all three endpoints", seen)
		}
		if _, err := get(tp.lan, "192.168.50.1:30099"); err == nil {
			t.Error("a port that is no node port answered")
		}
	})

	t.Run("external traffic policy Local: client address kept, local endpoints only", func(t *testing.T) {
		eps := backendEPs(true)
		eps[2].Local = false
		s := tcpService("local", "10.43.0.15", eps)
		s.Ports[0].NodePort = 30081
		s.ExternalIPs = []netip.Addr{a4("192.168.50.100")}
		s.ExternalLocal = true
		env.add(t, s)
		tp.lan.run(t, "ip", "route", "add", "192.168.50.100/32", "via", tp.nodeIP.String())
		for _, addr := range []string{"192.168.50.1:30081", "192.168.50.100:80"} {
			for i := 0; i < 6; i++ {
				r := mustGet(t, tp.lan, addr)
				if r.peer != tp.lanIP {
					t.Fatalf("%s: backend saw %s, want the client's %s", addr, r.peer, tp.lanIP)
				}
				if r.server == backends[2] {
					t.Fatalf("%s: reached %s, which is not local", addr, r.server)
				}
			}
		}
		// Pods get the Cluster behaviour: all endpoints.
		seen := map[string]bool{}
		for i := 0; i < 6; i++ {
			seen[mustGet(t, client, "192.168.50.100:80").server] = true
		}
		if len(seen) != 3 {
			t.Errorf("pod to external IP reached %v, want all endpoints", seen)
		}
	})

	t.Run("internal traffic policy Local: ClusterIP to local endpoints only, NodePort to all", func(t *testing.T) {
		eps := backendEPs(true)
		eps[2].Local = false
		s := tcpService("itp", "10.43.0.18", eps)
		s.Ports[0].NodePort = 30083
		s.InternalLocal = true
		env.add(t, s)
		for _, from := range []*testNS{client, tp.node} {
			for i := 0; i < 6; i++ {
				if r := mustGet(t, from, "10.43.0.18:80"); r.server == backends[2] {
					t.Fatalf("ClusterIP reached %s, which is not local", r.server)
				}
			}
		}
		// External traffic keeps the Cluster policy: every endpoint.
		seen := map[string]bool{}
		for i := 0; i < 6; i++ {
			seen[mustGet(t, tp.lan, "192.168.50.1:30083").server] = true
		}
		if len(seen) != 3 {
			t.Errorf("node port reached %v, want all three endpoints", seen)
		}
		// No local endpoint: ClusterIP traffic is dropped (not refused),
		// the node port still answers from the remote endpoint.
		s.Ports[0].Endpoints = eps[2:]
		env.replace(t, s)
		err := inNS(client, func() error {
			c, err := net.DialTimeout("tcp4", "10.43.0.18:80", 500*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("ClusterIP without a local endpoint: %v; want the connection dropped (a dial timeout)", err)
		}
		if r := mustGet(t, tp.lan, "192.168.50.1:30083"); r.server != backends[2] {
			t.Errorf("node port reached %s, want %s", r.server, backends[2])
		}
	})

	t.Run("no endpoints: refused at once", func(t *testing.T) {
		s := tcpService("none", "10.43.0.16", nil)
		s.Ports = append(s.Ports, Port{Name: "udp", Protocol: UDP, Port: 53})
		s.Ports[0].NodePort = 30082
		env.add(t, s)
		if _, err := get(client, "10.43.0.16:80"); !isRefused(err) {
			t.Errorf("TCP to a service without endpoints: %v, want connection refused", err)
		}
		if _, err := get(tp.lan, "192.168.50.1:30082"); !isRefused(err) {
			t.Errorf("node port without endpoints: %v, want connection refused", err)
		}
		if _, err := get(tp.node, "10.43.0.16:80"); !isRefused(err) {
			t.Errorf("from the node itself: %v, want connection refused", err)
		}
		if _, err := ask(udpSocket(t, client, "10.43.0.16:53")); !isRefused(err) {
			t.Errorf("UDP to a service without endpoints: %v, want ICMP port unreachable (connection refused)", err)
		}
	})

	t.Run("hairpin: a pod reaches itself through its service", func(t *testing.T) {
		s := tcpService("hairpin", "10.43.0.17", []Endpoint{{IP: a4(backends[0]), Port: echoTCP, Local: true}})
		env.add(t, s)
		r := mustGet(t, tp.pods[backends[0]], "10.43.0.17:80")
		if r.server != backends[0] || r.peer != a4(bridgeIP) {
			t.Errorf("hairpin: %+v, want served by itself, seen from the node's %s", r, bridgeIP)
		}
	})

	t.Run("session affinity: a client sticks to its endpoint", func(t *testing.T) {
		s := tcpService("affinity", "10.43.0.18", backendEPs(false))
		s.AffinityTimeout = time.Hour
		s.Ports[0].NodePort = 30083
		env.add(t, s)
		first := mustGet(t, client, "10.43.0.18:80").server
		for i := 0; i < 9; i++ {
			if r := mustGet(t, client, "10.43.0.18:80"); r.server != first {
				t.Fatalf("connection %d of the same client went to %s, first to %s", i+2, r.server, first)
			}
		}
		other := mustGet(t, tp.lan, "192.168.50.1:30083").server
		if other == first {
			t.Errorf("a second client was given the first client's endpoint %s: round robin did not move on", other)
		}
		for i := 0; i < 5; i++ {
			if r := mustGet(t, tp.lan, "192.168.50.1:30083"); r.server != other {
				t.Fatalf("the second client moved from %s to %s", other, r.server)
			}
		}
	})

	t.Run("from the node itself", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 3; i++ {
			seen[mustGet(t, tp.node, "10.43.0.10:80").server] = true
		}
		if len(seen) != 3 {
			t.Errorf("node-local connections reached %v, want all three endpoints", seen)
		}
	})

	t.Run("UDP: stale conntrack entries are deleted", func(t *testing.T) {
		udp := func(eps ...string) Service {
			s := Service{Namespace: "traffic", Name: "udp", ClusterIPs: []netip.Addr{a4("10.43.0.19")}}
			p := Port{Protocol: UDP, Port: 53}
			for _, e := range eps {
				p.Endpoints = append(p.Endpoints, Endpoint{IP: a4(e), Port: echoUDP})
			}
			s.Ports = []Port{p}
			return s
		}
		// A datagram before the service exists is routed past the node
		// (its default route) and leaves a conntrack entry without NAT.
		sock := udpSocket(t, client, "10.43.0.19:53")
		if _, err := sock.Write([]byte("?")); err != nil {
			t.Fatal(err)
		}
		waitConntrack(t, tp.node, netip.MustParseAddrPort("10.43.0.19:53"))
		// The service appears: that entry must go, or the flow would
		// bypass the endpoints until it times out.
		env.add(t, udp(backends[0], backends[1]))
		r, err := ask(sock)
		if err != nil {
			t.Fatalf("after the service appeared, the same socket got %v", err)
		}
		for i := 0; i < 3; i++ {
			if again, err := ask(sock); err != nil || again.server != r.server {
				t.Fatalf("one UDP flow moved between endpoints: %+v then %+v (%v)", r, again, err)
			}
		}
		// Remove the endpoint the flow uses (its server keeps running):
		// the next datagram must reach the other one.
		rest := backends[0]
		if r.server == backends[0] {
			rest = backends[1]
		}
		env.replace(t, udp(rest))
		if after, err := ask(sock); err != nil || after.server != rest {
			t.Fatalf("after removing %s: %+v, %v; want an answer from %s", r.server, after, err, rest)
		}
	})

	// The subtests above cross tables: dispatch in one shard, masquerade
	// (by the mark set there) in the base table, rejects in another.
	t.Run("the services span several shard tables", func(t *testing.T) {
		used := map[int]bool{}
		for _, s := range env.cfg.Services {
			for _, p := range s.Ports {
				used[shardOfHash(identOf(&s, &p).hash(), testShards)] = true
			}
		}
		if len(used) < 3 {
			t.Errorf("the traffic services use shards %v of %d: rename them so they spread", used, testShards)
		}
	})
}

// waitConntrack waits until the namespace's conntrack table has a UDP
// entry to dst.
func waitConntrack(t *testing.T, ns *testNS, dst netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !udpFlows(t, ns)[dst] {
		if time.Now().After(deadline) {
			t.Fatalf("no conntrack entry to %s appeared", dst)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitIdle waits until the proxy has released a connection to ep (the
// client closed it; the proxy notices asynchronously).
func waitIdle(t *testing.T, lp *lcProxy, ep netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for lp.activeCounts()[ep] != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy never released its connection to %s", ep)
		}
		time.Sleep(time.Millisecond)
	}
}
