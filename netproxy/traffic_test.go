package netproxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

	t.Run("least connections, UDP: new sessions avoid a busy endpoint, idle sessions free theirs", func(t *testing.T) {
		// Sessions end after this much quiet; the busy client sends ten
		// times as often (a margin for a loaded machine, not a timing
		// assertion).
		const idle = time.Second
		env.p.udp.idle = idle
		var eps []Endpoint
		for _, b := range backends {
			eps = append(eps, Endpoint{IP: a4(b), Port: echoUDP})
		}
		s := Service{Namespace: "traffic", Name: "lc-udp", ClusterIPs: []netip.Addr{a4("10.43.0.22")}, Strategy: LeastConn,
			Ports: []Port{{Protocol: UDP, Port: 53, Endpoints: eps}}}
		env.add(t, s)
		chain := "svc-" + identOf(&s, &s.Ports[0]).hash()
		lp := env.p.lc[chain]
		if lp == nil {
			t.Fatal("no least-conn UDP proxy was started")
		}
		const svc = "10.43.0.22:53"
		busy := udpSocket(t, client, svc) // connected: it takes replies from svc only
		r, err := ask(busy)
		if err != nil {
			t.Fatal(err)
		}
		if r.peer != a4(bridgeIP) {
			t.Errorf("proxied datagram came from %s, want the node's %s", r.peer, bridgeIP)
		}
		held := r.server
		heldEP := netip.AddrPortFrom(a4(held), echoUDP)
		// The busy client keeps its session alive.
		stop, done := make(chan struct{}), make(chan error, 1)
		var once sync.Once
		stopBusy := func() { once.Do(func() { close(stop) }) }
		defer stopBusy()
		go func() {
			tick := time.NewTicker(idle / 10)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					done <- nil
					return
				case <-tick.C:
				}
				if r, err := ask(busy); err != nil || r.server != held {
					done <- fmt.Errorf("the busy session moved from %s: %+v, %v", held, r, err)
					return
				}
			}
		}()
		newSession := func() reply {
			t.Helper()
			r, err := ask(udpSocket(t, client, svc))
			if err != nil {
				t.Fatal(err)
			}
			if r.server == held {
				t.Fatalf("a new session went to the busy %s (active: %v)", held, lp.activeCounts())
			}
			return r
		}
		seen := map[string]bool{newSession().server: true, newSession().server: true}
		if len(seen) != 2 {
			t.Errorf("two new sessions went to %v, want the two idle endpoints", seen)
		}
		// Quiet sessions expire and free their endpoints; the next new
		// session still avoids the busy one.
		for b := range seen {
			waitIdle(t, lp, netip.AddrPortFrom(a4(b), echoUDP))
		}
		newSession()
		if n := lp.activeCounts()[heldEP]; n != 1 {
			t.Errorf("the busy endpoint has %d active sessions, want 1", n)
		}

		// Replies come from the service address, seen on an unconnected
		// socket, and reach the node's own clients too (redirected to
		// 127.0.0.1).
		var pc *net.UDPConn
		if err := inNS(client, func() (err error) { pc, err = net.ListenUDP("udp4", nil); return err }); err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if _, err := pc.WriteToUDPAddrPort([]byte("?"), netip.MustParseAddrPort(svc)); err != nil {
			t.Fatal(err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(ioTimeout))
		buf := make([]byte, 256)
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if from != netip.MustParseAddrPort(svc) {
			t.Errorf("a reply came from %s, want the service address %s (%q)", from, svc, buf[:n])
		}
		if _, err := ask(udpSocket(t, tp.node, svc)); err != nil {
			t.Errorf("from the node itself: %v", err)
		}

		// The busy endpoint leaves: its session ends, and the busy
		// client's next datagram opens one to another endpoint.
		stopBusy()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		s.Ports[0].Endpoints = slices.DeleteFunc(slices.Clone(eps), func(e Endpoint) bool { return e.IP == heldEP.Addr() })
		env.replace(t, s)
		if env.p.lc[chain] != lp {
			t.Fatal("the proxy was replaced instead of updated")
		}
		if r, err := ask(busy); err != nil || r.server == held {
			t.Fatalf("after %s left, the busy client got %+v, %v", held, r, err)
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
		s := tcpService("affinity", "10.43.0.23", backendEPs(false))
		s.AffinityTimeout = time.Hour
		s.Ports[0].NodePort = 30084
		env.add(t, s)
		first := mustGet(t, client, "10.43.0.23:80").server
		for i := 0; i < 9; i++ {
			if r := mustGet(t, client, "10.43.0.23:80"); r.server != first {
				t.Fatalf("connection %d of the same client went to %s, first to %s", i+2, r.server, first)
			}
		}
		other := mustGet(t, tp.lan, "192.168.50.1:30084").server
		if other == first {
			t.Errorf("a second client was given the first client's endpoint %s: round robin did not move on", other)
		}
		for i := 0; i < 5; i++ {
			if r := mustGet(t, tp.lan, "192.168.50.1:30084"); r.server != other {
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

	t.Run("SCTP: INITs DNAT'ed round robin, masqueraded from the LAN, rejected without endpoints", func(t *testing.T) {
		const epPort = 9999
		s := Service{Namespace: "traffic", Name: "sctp", ClusterIPs: []netip.Addr{a4("10.43.0.20")},
			Ports: []Port{
				// TCP on the same port number, to another endpoint.
				{Name: "echo", Protocol: TCP, Port: 9, Endpoints: backendEPs(false)[2:]},
				{Name: "assoc", Protocol: SCTP, Port: 9, NodePort: 30090, Endpoints: []Endpoint{
					{IP: a4(backends[0]), Port: epPort}, {IP: a4(backends[1]), Port: epPort}}},
			}}
		env.add(t, s)
		env.add(t, Service{Namespace: "traffic", Name: "sctp-none", ClusterIPs: []netip.Addr{a4("10.43.0.21")},
			Ports: []Port{{Protocol: SCTP, Port: 9}}})
		rx := []int{rawSocket(t, tp.pods[backends[0]], unix.IPPROTO_SCTP), rawSocket(t, tp.pods[backends[1]], unix.IPPROTO_SCTP)}

		svc := netip.MustParseAddrPort("10.43.0.20:9")
		reached := map[int]bool{}
		for i, sport := range []uint16{40001, 40002} {
			tag := uint32(0x5c790000 + i)
			sendSCTPInit(t, client, sport, svc, tag)
			which, seen := recvSCTP(t, rx...)
			reached[which] = true
			want := sctpSeen{src: netip.AddrPortFrom(a4("10.42.0.10"), sport),
				dst: netip.AddrPortFrom(a4(backends[which]), epPort), tag: tag, chunk: 1, checksumOK: true}
			if seen != want {
				t.Fatalf("INIT %d arrived as %+v, want %+v (DNAT'ed, not masqueraded, checksum fixed)", i+1, seen, want)
			}
		}
		if len(reached) != 2 {
			t.Errorf("two INITs from two source ports reached backends %v, want both (round robin)", reached)
		}
		if r := mustGet(t, client, "10.43.0.20:9"); r.server != backends[2] {
			t.Errorf("TCP to the SCTP service's port number reached %s, want the TCP endpoint %s", r.server, backends[2])
		}

		sendSCTPInit(t, tp.lan, 40003, netip.AddrPortFrom(tp.nodeIP, 30090), 0x5c790003)
		which, seen := recvSCTP(t, rx...)
		if seen.dst != netip.AddrPortFrom(a4(backends[which]), epPort) || !seen.checksumOK {
			t.Errorf("INIT to the node port arrived as %+v", seen)
		}
		if seen.src.Addr() == tp.lanIP {
			t.Errorf("INIT to the node port kept the LAN client's address %s (Cluster policy masquerades)", seen.src)
		}

		icmp := rawSocket(t, client, unix.IPPROTO_ICMP)
		none := netip.MustParseAddrPort("10.43.0.21:9")
		sendSCTPInit(t, client, 40004, none, 0x5c790004)
		if sport := recvPortUnreachable(t, icmp, none); sport != 40004 {
			t.Errorf("the port unreachable quotes source port %d, want 40004", sport)
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
func waitIdle(t *testing.T, lp leastConnProxy, ep netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for lp.activeCounts()[ep] != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy never released its connection to %s", ep)
		}
		time.Sleep(time.Millisecond)
	}
}
