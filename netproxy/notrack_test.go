package netproxy

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// udpEcho answers every datagram on addr (in ns) with "<addr> <peer>".
func udpEcho(t *testing.T, ns *testNS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := inNS(ns, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			_, peer, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(addr+" "+peer.String()+"\n"), peer)
		}
	}()
}

// udpFlows lists the UDP conntrack entries of ns by destination.
func udpFlows(t *testing.T, ns *testNS) map[netip.AddrPort]bool {
	t.Helper()
	fd, err := openNetNS(ns.path)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	h, err := vnl.NewHandleAt(netns.NsHandle(fd), unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	flows, err := h.ConntrackTableList(vnl.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.AddrPort]bool{}
	for _, f := range flows {
		if f.Forward.Protocol == unix.IPPROTO_UDP {
			out[addrPort(f.Forward.DstIP, f.Forward.DstPort)] = true
		}
	}
	return out
}

// Options.NoTrack: queries to the node's DNS address, from a pod and from
// the node itself, and their answers leave no conntrack entry, while other
// UDP traffic still does; services are untouched.
func TestNoTrack(t *testing.T) {
	requireRoot(t)
	tp := newTopology(t, backends...)
	tp.node.run(t, "ip", "addr", "add", "10.43.0.10/32", "dev", "br0")
	dnsAddr := netip.MustParseAddrPort("10.43.0.10:53")
	p, err := New(Options{NetNS: tp.node.path, NoTrack: []netip.AddrPort{dnsAddr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	p.fixedShards = testShards
	cfg := Config{ClusterCIDR: cidr, NodeIPs: []netip.Addr{tp.nodeIP}}
	udpSvc := Service{Namespace: "nt", Name: "udp", ClusterIPs: []netip.Addr{a4("10.43.0.20")},
		Ports: []Port{{Protocol: UDP, Port: 53, Endpoints: []Endpoint{{IP: a4(backends[0]), Port: echoUDP}}}}}
	cfg.Services = append(cfg.Services, udpSvc)
	mustSet(t, p, cfg)

	listing := listTable(t, tp.node, DefaultTable)
	for _, want := range []string{"ip daddr 10.43.0.10 udp dport 53 notrack", "ip saddr 10.43.0.10 udp sport 53 notrack"} {
		if !strings.Contains(listing, want) {
			t.Fatalf("the base table lacks %q:\n%s", want, listing)
		}
	}

	udpEcho(t, tp.node, dnsAddr.String())
	udpEcho(t, tp.node, bridgeIP+":5300")
	for _, from := range []*testNS{tp.client(), tp.node} {
		if r, err := ask(udpSocket(t, from, dnsAddr.String())); err != nil || r.server != dnsAddr.String() {
			t.Fatalf("from %s: DNS address answered %+v, %v", from.name, r, err)
		}
	}
	if r, err := ask(udpSocket(t, tp.client(), bridgeIP+":5300")); err != nil || r.server != bridgeIP+":5300" {
		t.Fatalf("tracked port answered %+v, %v", r, err)
	}
	if r, err := ask(udpSocket(t, tp.client(), "10.43.0.20:53")); err != nil || r.server != backends[0] {
		t.Fatalf("UDP service answered %+v, %v", r, err)
	}
	deadline := time.Now().Add(ioTimeout)
	for {
		flows := udpFlows(t, tp.node)
		if flows[dnsAddr] {
			t.Fatalf("a conntrack entry to %s exists: %v", dnsAddr, flows)
		}
		if flows[netip.MustParseAddrPort(bridgeIP+":5300")] {
			break // conntrack is on for the rest
		}
		if time.Now().After(deadline) {
			t.Fatalf("no conntrack entry for the tracked port: %v", flows)
		}
		time.Sleep(time.Millisecond)
	}
}
