package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
)

// TestPodToPod runs two nodes (namespaces on a veth "LAN"), two pods on each,
// and checks every pod reaches every other by pod IP with its own source
// address, in both modes; traffic leaving the cluster CIDR is masqueraded.
func TestPodToPod(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{ModeHostGW, ModeVXLAN} {
		t.Run(mode, func(t *testing.T) {
			l := newLAN(t)
			nA := newTestNetwork(t, l.a, "10.42.1.0/24", mode, l.ipA)
			nB := newTestNetwork(t, l.b, "10.42.2.0/24", mode, l.ipB)
			peers := []Peer{{NodeIP: l.ipA, PodCIDR: "10.42.1.0/24"}, {NodeIP: l.ipB, PodCIDR: "10.42.2.0/24"}}
			ctx := context.Background()
			for _, n := range []*Network{nA, nB} {
				if err := n.SetPeers(ctx, peers); err != nil {
					t.Fatalf("SetPeers: %v", err)
				}
			}
			wantMTU := 1500
			if mode == ModeVXLAN {
				wantMTU = 1450
			}
			type pod struct {
				name string
				pn   PodNet
			}
			var pods []pod
			for _, x := range []struct {
				n    *Network
				name string
			}{{nA, "a1"}, {nA, "a2"}, {nB, "b1"}, {nB, "b2"}} {
				pn := mustSetup(t, x.n, x.name)
				pods = append(pods, pod{x.name, pn})
				serveEcho(t, pn.NetNSPath, pn.IP.String()+":8080", x.name)
				// The pod's eth0 carries the mode's MTU.
				if err := inNS(pn.NetNSPath, func() error {
					ifc, err := net.InterfaceByName(PodInterface)
					if err != nil {
						return err
					}
					if ifc.MTU != wantMTU {
						return fmt.Errorf("%s MTU %d, want %d", PodInterface, ifc.MTU, wantMTU)
					}
					return nil
				}); err != nil {
					t.Errorf("pod %s: %v", x.name, err)
				}
			}
			if pods[0].pn.IP.String() != "10.42.1.2" || pods[2].pn.IP.String() != "10.42.2.2" {
				t.Errorf("first pod IPs = %s, %s; want 10.42.1.2, 10.42.2.2", pods[0].pn.IP, pods[2].pn.IP)
			}
			for _, from := range pods {
				for _, to := range pods {
					if from.name == to.name {
						continue
					}
					size := 64
					if from.name[0] != to.name[0] {
						size = 256 << 10 // across nodes: full-size segments must fit the MTU
					}
					got, err := dialEcho(from.pn.NetNSPath, to.pn.IP.String()+":8080", size, 3*time.Second)
					if err != nil {
						t.Errorf("%s -> %s (%s): %v", from.name, to.name, to.pn.IP, err)
						continue
					}
					if want := to.name + " " + from.pn.IP.String(); got != want {
						t.Errorf("%s -> %s: server saw %q, want %q (pod traffic must keep its source)", from.name, to.name, got, want)
					}
				}
			}

			// Leaving the cluster CIDR: a server on node B's own address sees
			// node A's address, not the pod's.
			serveEcho(t, l.b.path, l.ipB+":9090", "nodeB")
			got, err := dialEcho(pods[0].pn.NetNSPath, l.ipB+":9090", 16, 3*time.Second)
			if err != nil {
				t.Fatalf("a1 -> node B: %v", err)
			}
			if want := "nodeB " + l.ipA; got != want {
				t.Errorf("a1 -> node B: server saw %q, want %q (masqueraded)", got, want)
			}

			// Without peers, other nodes' pods are unreachable again.
			if err := nA.SetPeers(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := dialEcho(pods[0].pn.NetNSPath, pods[2].pn.IP.String()+":8080", 1, 500*time.Millisecond); err == nil {
				t.Errorf("a1 -> b1 still works after SetPeers(nil)")
			}
		})
	}
}

// TestSetupIdempotentAndRepairs checks that Setup changes nothing the second
// time and rebuilds whatever was removed behind its back.
func TestSetupIdempotentAndRepairs(t *testing.T) {
	requireRoot(t)
	host := newTestNS(t, nsDir(t), "node")
	n := newTestNetwork(t, host, "10.42.5.0/24", ModeHostGW, "")
	ctx := context.Background()

	pn := mustSetup(t, n, "p1")
	links := renderLinks(t, host.h)
	want := "lo device mtu 65536\nshoal0 bridge mtu 1500\n" + pn.HostVeth + " veth mtu 1500 master shoal0"
	if links != want {
		t.Errorf("host links:\n%s\nwant:\n%s", links, want)
	}
	port := 8080
	reachable := func(what string) {
		t.Helper()
		port++ // a fresh server each time: the namespace may be old or new
		addr := fmt.Sprintf("%s:%d", pn.IP, port)
		serveEcho(t, pn.NetNSPath, addr, "p1")
		got, err := dialEcho(host.path, addr, 1, 2*time.Second)
		if err != nil || got != "p1 "+pn.Gateway.String() {
			t.Errorf("%s: host -> pod: %q, %v", what, got, err)
		}
	}
	reachable("first setup")

	again := mustSetup(t, n, "p1")
	if diff := cmp.Diff(pn, again); diff != "" {
		t.Errorf("second Setup differs (-first +second):\n%s", diff)
	}
	if got := renderLinks(t, host.h); got != links {
		t.Errorf("second Setup changed host links:\n%s", got)
	}

	// The host veth disappears: Setup puts it back with the same address.
	if err := n.deleteLink(pn.HostVeth); err != nil {
		t.Fatal(err)
	}
	if got := mustSetup(t, n, "p1"); !got.IP.Equal(pn.IP) {
		t.Errorf("after veth loss IP = %s, want %s", got.IP, pn.IP)
	}
	if got := renderLinks(t, host.h); got != links {
		t.Errorf("after repair host links:\n%s\nwant:\n%s", got, links)
	}

	// The namespace disappears: Setup makes a new one.
	if err := removeNetNS(pn.NetNSPath); err != nil {
		t.Fatal(err)
	}
	if got := mustSetup(t, n, "p1"); !got.IP.Equal(pn.IP) {
		t.Errorf("after namespace loss IP = %s, want %s", got.IP, pn.IP)
	}
	reachable("after namespace loss")

	// The bridge disappears: Setup rebuilds it and re-attaches the veth.
	if err := n.deleteLink(n.cfg.Bridge); err != nil {
		t.Fatal(err)
	}
	mustSetup(t, n, "p1")
	if got := renderLinks(t, host.h); got != links {
		t.Errorf("after bridge loss host links:\n%s\nwant:\n%s", got, links)
	}
	// ... and SetPeers, the periodic repair point, re-attaches every pod.
	if err := n.deleteLink(n.cfg.Bridge); err != nil {
		t.Fatal(err)
	}
	if err := n.SetPeers(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := renderLinks(t, host.h); got != links {
		t.Errorf("after bridge loss and SetPeers host links:\n%s\nwant:\n%s", got, links)
	}
	reachable("after bridge loss")
	var fwd []byte
	if err := inNetNS(host.fd, func() (err error) {
		fwd, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	}); err != nil || strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("ip_forward in the host namespace = %q, %v; want 1", fwd, err)
	}

	for range 2 {
		if err := n.Teardown(ctx, "p1"); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	}
	if err := n.Teardown(ctx, "never-existed"); err != nil {
		t.Errorf("Teardown of unknown pod: %v", err)
	}
	if got := renderLinks(t, host.h); got != "lo device mtu 65536\nshoal0 bridge mtu 1500" {
		t.Errorf("after Teardown host links:\n%s", got)
	}
	if _, err := os.Stat(pn.NetNSPath); !os.IsNotExist(err) {
		t.Errorf("namespace file after Teardown: %v", err)
	}
	if a := n.Allocated(); len(a) != 0 {
		t.Errorf("Allocated after Teardown = %v", a)
	}
}

// TestAllocationsSurviveRestart reopens the StateDir with a new Network.
func TestAllocationsSurviveRestart(t *testing.T) {
	requireRoot(t)
	host := newTestNS(t, nsDir(t), "node")
	n := newTestNetwork(t, host, "10.42.6.0/24", ModeHostGW, "")
	p1, p2 := mustSetup(t, n, "p1"), mustSetup(t, n, "p2")
	before := n.Allocated()

	if _, err := New(n.cfg); !errors.Is(err, ErrStateDirInUse) {
		t.Fatalf("second New on a held StateDir: %v, want ErrStateDirInUse", err)
	}
	links := renderLinks(t, host.h)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Setup(context.Background(), "p3", ""); !errors.Is(err, ErrClosed) {
		t.Errorf("Setup after Close: %v, want ErrClosed", err)
	}

	n2 := openTestNetwork(t, n.cfg)
	if diff := cmp.Diff(before, n2.Allocated()); diff != "" {
		t.Errorf("allocations after restart (-before +after):\n%s", diff)
	}
	if got := mustSetup(t, n2, "p1"); !got.IP.Equal(p1.IP) || got.HostVeth != p1.HostVeth {
		t.Errorf("p1 after restart = %+v, want %+v", got, p1)
	}
	if got := renderLinks(t, host.h); got != links {
		t.Errorf("re-adopting p1 changed host links:\n%s\nwant:\n%s", got, links)
	}
	p3 := mustSetup(t, n2, "p3")
	if p3.IP.Equal(p1.IP) || p3.IP.Equal(p2.IP) {
		t.Errorf("p3 got %s, already held by p1 %s / p2 %s", p3.IP, p1.IP, p2.IP)
	}
}

// TestCyclesLeakNothing runs 200 Setup/Teardown cycles from four workers and
// checks no address is ever live twice and no IP, veth or namespace leaks.
func TestCyclesLeakNothing(t *testing.T) {
	requireRoot(t)
	host := newTestNS(t, nsDir(t), "node")
	n := newTestNetwork(t, host, "10.42.7.0/24", ModeHostGW, "")
	mustSetup(t, n, "resident") // one pod stays throughout
	links := renderLinks(t, host.h)
	mounts := nsMountsUnder(n.cfg.NetNSDir)
	files, _ := os.ReadDir(n.cfg.NetNSDir)
	fds := openFDs(t)
	ctx := context.Background()

	const workers, perWorker = 4, 50
	var (
		mu        sync.Mutex
		live      = map[string]string{} // IP → pod
		setupDur  time.Duration
		tearDur   time.Duration
		wg        sync.WaitGroup
		errs      = make(chan error, workers)
		startedAt = time.Now()
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				id := fmt.Sprintf("pod-%d-%d", w, i)
				t0 := time.Now()
				pn, err := n.Setup(ctx, id, "")
				d := time.Since(t0)
				if err != nil {
					errs <- fmt.Errorf("Setup(%s): %w", id, err)
					return
				}
				mu.Lock()
				setupDur += d
				if other, dup := live[pn.IP.String()]; dup {
					mu.Unlock()
					errs <- fmt.Errorf("%s handed to %s while %s holds it", pn.IP, id, other)
					return
				}
				live[pn.IP.String()] = id
				mu.Unlock()

				mu.Lock()
				delete(live, pn.IP.String())
				mu.Unlock()
				t0 = time.Now()
				if err := n.Teardown(ctx, id); err != nil {
					errs <- fmt.Errorf("Teardown(%s): %w", id, err)
					return
				}
				mu.Lock()
				tearDur += time.Since(t0)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := workers * perWorker
	t.Logf("%d cycles in %v: Setup mean %v, Teardown mean %v (4 concurrent workers)",
		total, time.Since(startedAt).Round(time.Millisecond), setupDur/time.Duration(total), tearDur/time.Duration(total))

	if got := renderLinks(t, host.h); got != links {
		t.Errorf("links after cycles:\n%s\nwant:\n%s", got, links)
	}
	if got := nsMountsUnder(n.cfg.NetNSDir); !cmp.Equal(got, mounts) {
		t.Errorf("namespace mounts after cycles: %v, want %v", got, mounts)
	}
	if got, _ := os.ReadDir(n.cfg.NetNSDir); len(got) != len(files) {
		t.Errorf("namespace files after cycles: %d, want %d", len(got), len(files))
	}
	if got := openFDs(t); got != fds {
		t.Errorf("open file descriptors: %d after cycles, %d before", got, fds)
	}
	if a := n.Allocated(); len(a) != 1 || a["resident"] == nil {
		t.Errorf("Allocated after cycles = %v, want only resident", a)
	}
	// The persisted table agrees.
	a, err := openIPAM(n.cfg.StateDir, n.podNet)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.pods) != 1 {
		t.Errorf("persisted pods after cycles: %v", a.ids())
	}
}

// TestExhaustion fills a /28 and checks the next Setup fails clearly and
// leaves nothing behind.
func TestExhaustion(t *testing.T) {
	requireRoot(t)
	host := newTestNS(t, nsDir(t), "node")
	n := newTestNetwork(t, host, "10.42.8.0/28", ModeHostGW, "")
	ctx := context.Background()
	seen := map[string]bool{}
	for i := range 13 { // .2 ... .14
		pn := mustSetup(t, n, fmt.Sprintf("p%d", i))
		if seen[pn.IP.String()] {
			t.Fatalf("%s handed out twice", pn.IP)
		}
		seen[pn.IP.String()] = true
	}
	links := renderLinks(t, host.h)
	_, err := n.Setup(ctx, "one-too-many", "")
	if !errors.Is(err, ErrNoFreeIP) {
		t.Fatalf("Setup on a full CIDR: %v, want ErrNoFreeIP", err)
	}
	if !strings.Contains(err.Error(), "10.42.8.0/28") || !strings.Contains(err.Error(), "one-too-many") {
		t.Errorf("error %q should name the pod and the CIDR", err)
	}
	t.Logf("exhaustion error: %v", err)
	if _, err := os.Stat(n.DefaultNetNSPath("one-too-many")); !os.IsNotExist(err) {
		t.Errorf("failed Setup left a namespace: %v", err)
	}
	if got := renderLinks(t, host.h); got != links {
		t.Errorf("failed Setup changed links:\n%s", got)
	}
	freed := n.Allocated()["p4"]
	if err := n.Teardown(ctx, "p4"); err != nil {
		t.Fatal(err)
	}
	if got := mustSetup(t, n, "one-too-many"); !got.IP.Equal(freed) {
		t.Errorf("after freeing %s, got %s", freed, got.IP)
	}
}

// TestGC collects pods not kept, orphan veths and orphan namespaces.
func TestGC(t *testing.T) {
	requireRoot(t)
	host := newTestNS(t, nsDir(t), "node")
	n := newTestNetwork(t, host, "10.42.9.0/24", ModeHostGW, "")
	ctx := context.Background()
	keep := mustSetup(t, n, "keep")
	for _, id := range []string{"gone1", "gone2"} {
		mustSetup(t, n, id)
	}
	// Orphans: a podnet-named veth and a namespace file no record owns.
	orphan := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostVethPrefix + "orphan00000"}, PeerName: "orphanpeer"}
	if err := host.h.LinkAdd(orphan); err != nil {
		t.Fatal(err)
	}
	orphanNS := n.DefaultNetNSPath("orphan")
	if err := createNetNS(orphanNS); err != nil {
		t.Fatal(err)
	}
	// Another link that is not podnet's stays.
	other := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "other0"}, PeerName: "other1"}
	if err := host.h.LinkAdd(other); err != nil {
		t.Fatal(err)
	}

	if err := n.GC(ctx, map[string]bool{"keep": true}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	want := "lo device mtu 65536\nother0 veth mtu 1500\nother1 veth mtu 1500\nshoal0 bridge mtu 1500\n" +
		keep.HostVeth + " veth mtu 1500 master shoal0"
	if got := renderLinks(t, host.h); got != want {
		t.Errorf("links after GC:\n%s\nwant:\n%s", got, want)
	}
	if got := nsMountsUnder(n.cfg.NetNSDir); !cmp.Equal(got, []string{keep.NetNSPath}) {
		t.Errorf("namespaces after GC: %v, want only %s", got, keep.NetNSPath)
	}
	if a := n.Allocated(); len(a) != 1 || !a["keep"].Equal(keep.IP) {
		t.Errorf("Allocated after GC = %v", a)
	}
	serveEcho(t, keep.NetNSPath, keep.IP.String()+":8080", "keep")
	if _, err := dialEcho(host.path, keep.IP.String()+":8080", 1, 2*time.Second); err != nil {
		t.Errorf("kept pod unreachable after GC: %v", err)
	}
}

// TestMasqueradeTable checks podnet's nftables table: exactly one rule,
// rewritten not duplicated, other tables untouched, removed when disabled.
func TestMasqueradeTable(t *testing.T) {
	requireRoot(t)
	nft, err := findNFT()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	host := newTestNS(t, nsDir(t), "node")
	if _, err := execIn(host.fd, nft, "add table ip other; add chain ip other c; add rule ip other c counter"); err != nil {
		t.Fatal(err)
	}
	n := newTestNetwork(t, host, "10.42.10.0/24", ModeHostGW, "")
	for range 2 {
		if err := n.SetPeers(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	out, err := execIn(host.fd, nft, "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(out, "masquerade"); c != 1 {
		t.Errorf("%d masquerade rules, want 1:\n%s", c, out)
	}
	if !strings.Contains(out, "ip saddr 10.42.10.0/24 ip daddr != 10.42.0.0/16 masquerade") || !strings.Contains(out, "table ip other") {
		t.Errorf("ruleset:\n%s", out)
	}
	cfg := n.cfg
	n.Close()
	cfg.ClusterCIDR = ""
	openTestNetwork(t, cfg)
	out, err = execIn(host.fd, nft, "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, NFTable) || !strings.Contains(out, "table ip other") {
		t.Errorf("with masquerade disabled:\n%s", out)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestServiceRouteHairpinExtraAddrs: the service range is routed through
// the bridge from the gateway address, the extra addresses sit on the
// bridge, and pod ports are in hairpin mode.
func TestServiceRouteHairpinExtraAddrs(t *testing.T) {
	requireRoot(t)
	ns := newTestNS(t, nsDir(t), "node")
	cfg := DefaultConfig()
	cfg.HostNS = ns.path
	cfg.PodCIDR = "10.42.7.0/24"
	cfg.StateDir = nsDir(t)
	cfg.ServiceCIDR = "10.43.0.0/16"
	cfg.ExtraAddrs = []string{"10.43.0.10/32"}
	n := openTestNetwork(t, cfg)
	if err := n.SetPeers(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	pn := mustSetup(t, n, "p1")
	br, err := ns.h.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := ns.h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.IPNet.String())
	}
	if !slices.Contains(got, "10.42.7.1/24") || !slices.Contains(got, "10.43.0.10/32") || len(got) != 2 {
		t.Fatalf("bridge addresses %v", got)
	}
	routes, err := ns.h.RouteGet(net.ParseIP("10.43.5.6"))
	if err != nil || len(routes) != 1 || routes[0].LinkIndex != br.Attrs().Index || !routes[0].Src.Equal(net.ParseIP("10.42.7.1")) {
		t.Fatalf("route to a service address: %+v %v", routes, err)
	}
	links, err := ns.h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	ports := 0
	for _, l := range links {
		if l.Attrs().MasterIndex != br.Attrs().Index {
			continue
		}
		ports++
		pi, err := ns.h.LinkGetProtinfo(l)
		if err != nil || !pi.Hairpin {
			t.Errorf("%s: hairpin %v (%v)", l.Attrs().Name, pi.Hairpin, err)
		}
	}
	if ports != 1 {
		t.Fatalf("%d bridge ports for pod %s, want 1", ports, pn.IP)
	}
}
