package podnet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestSetPeersTransitions applies a table of peer sets in order, then in
// random orders with junk injected before every step, and checks that the
// rendered routes, VXLAN device, ARP and FDB entries always match the step.
// Finally it switches mode on the same host and checks the other mode's
// state replaces the first completely.
func TestSetPeersTransitions(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{ModeHostGW, ModeVXLAN} {
		t.Run(mode, func(t *testing.T) { testSetPeersTransitions(t, mode) })
	}
}

func testSetPeersTransitions(t *testing.T, mode string) {
	host := newTestNS(t, nsDir(t), "node")
	net3 := fmt.Sprintf("10.99.%d", rand.IntN(250)+1)
	// The node's LAN: lan0 (with the node address) and its peer lan1.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}, PeerName: "lan1"}
	if err := host.h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lan0", "lan1"} {
		l, _ := host.h.LinkByName(name)
		if name == "lan0" {
			a, _ := netlink.ParseAddr(net3 + ".1/24")
			if err := host.h.AddrAdd(l, a); err != nil {
				t.Fatal(err)
			}
		}
		if err := host.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	// A route that is not podnet's: it must survive everything.
	foreign := &netlink.Route{Dst: mustCIDR("10.50.0.0/16"), Gw: net.ParseIP(net3 + ".9"), Protocol: unix.RTPROT_STATIC}
	if err := host.h.RouteAdd(foreign); err != nil {
		t.Fatal(err)
	}

	n := newTestNetwork(t, host, "10.42.1.0/24", mode, net3+".1")
	ctx := context.Background()

	p := func(last int, cidr string) Peer { return Peer{NodeIP: fmt.Sprintf("%s.%d", net3, last), PodCIDR: cidr} }
	var (
		self = p(1, "10.42.1.0/24")
		b    = p(2, "10.42.2.0/24")
		c    = p(3, "10.42.3.0/24")
		bMov = p(4, "10.42.2.0/24") // b's node changed address
		d    = p(5, "10.42.4.0/24")
		bNew = p(2, "10.42.9.0/24") // b's node got another CIDR
	)
	steps := []struct {
		name    string
		peers   []Peer
		wantErr bool
		want    []Peer // the effective peer set
	}{
		{name: "none"},
		{name: "one", peers: []Peer{b}, want: []Peer{b}},
		{name: "two", peers: []Peer{c, b}, want: []Peer{b, c}},
		{name: "self listed", peers: []Peer{self, b, c}, want: []Peer{b, c}},
		{name: "node moved", peers: []Peer{bMov, c}, want: []Peer{bMov, c}},
		{name: "cidr changed", peers: []Peer{bNew, d}, want: []Peer{d, bNew}},
		{name: "bad peers skipped", wantErr: true, want: []Peer{b}, peers: []Peer{
			b,
			{NodeIP: "not-an-ip", PodCIDR: "10.42.5.0/24"},
			{NodeIP: net3 + ".6", PodCIDR: "10.42.2.128/25"}, // overlaps b
			{NodeIP: net3 + ".7", PodCIDR: "10.42.1.0/24"},   // claims our CIDR
			{NodeIP: net3 + ".8", PodCIDR: "10.42.6.1/24"},   // host bits
		}},
		{name: "none again"},
	}

	apply := func(i int) {
		t.Helper()
		st := steps[i]
		err := n.SetPeers(ctx, st.peers)
		if (err != nil) != st.wantErr {
			t.Fatalf("step %q: SetPeers error = %v, wantErr %v", st.name, err, st.wantErr)
		}
		want := renderWant(mode, net3, st.want)
		if diff := cmp.Diff(want, renderPeers(t, host.h)); diff != "" {
			t.Fatalf("step %q: host state (-want +got):\n%s", st.name, diff)
		}
	}

	for i := range steps {
		apply(i)
	}
	for round := range 3 {
		seed := rand.Uint64()
		order := rand.New(rand.NewPCG(seed, 0)).Perm(len(steps))
		t.Logf("round %d: seed %d, order %v", round, seed, order)
		for _, i := range order {
			injectJunk(t, host.h, net3)
			apply(i)
		}
	}
	if rs, err := host.h.RouteListFiltered(netlink.FAMILY_V4, foreign, netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL); err != nil || len(rs) != 1 {
		t.Errorf("foreign route 10.50.0.0/16 gone: %v %v", rs, err)
	}

	// Switch mode on the same host and state dir: the other mode's state
	// replaces this one's completely.
	other := ModeVXLAN
	if mode == ModeVXLAN {
		other = ModeHostGW
	}
	cfg := n.cfg
	n.Close()
	cfg.Mode, cfg.MTU = other, 0
	n2 := openTestNetwork(t, cfg.withDefaults())
	if err := n2.SetPeers(ctx, []Peer{b, c}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(renderWant(other, net3, []Peer{b, c}), renderPeers(t, host.h)); diff != "" {
		t.Errorf("after switching %s -> %s (-want +got):\n%s", mode, other, diff)
	}
}

// renderWant is the expected renderPeers output for an effective peer set.
func renderWant(mode, net3 string, peers []Peer) string {
	var lines []string
	if mode == ModeVXLAN {
		lines = append(lines, fmt.Sprintf("link shoal.1 vni 1 local %s.1 port 4789 learning false mtu 1450 mac 0a:58:0a:2a:01:00 addr 10.42.1.0/32 up", net3))
	}
	for _, p := range peers {
		cidr := mustCIDR(p.PodCIDR)
		vtep := cidr.IP.String()
		mac := macFor(cidr.IP).String()
		switch mode {
		case ModeHostGW:
			lines = append(lines, fmt.Sprintf("route %s via %s dev lan0", p.PodCIDR, p.NodeIP))
		case ModeVXLAN:
			lines = append(lines,
				fmt.Sprintf("route %s via %s dev shoal.1 onlink", p.PodCIDR, vtep),
				fmt.Sprintf("arp %s lladdr %s dev shoal.1", vtep, mac),
				fmt.Sprintf("fdb %s dst %s dev shoal.1", mac, p.NodeIP))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// injectJunk adds state SetPeers owns but no peer set wants: a podnet route
// to an unknown CIDR, a second-metric copy, and stale VXLAN ARP/FDB entries.
func injectJunk(t *testing.T, h *netlink.Handle, net3 string) {
	t.Helper()
	gw := net.ParseIP(net3 + ".9")
	for _, r := range []*netlink.Route{
		{Dst: mustCIDR("10.42.77.0/24"), Gw: gw, Protocol: RouteProtocol},
		{Dst: mustCIDR("10.42.3.0/24"), Gw: gw, Protocol: RouteProtocol, Priority: 50},
	} {
		if err := h.RouteReplace(r); err != nil {
			t.Fatalf("injecting route %s: %v", r.Dst, err)
		}
	}
	vx, err := h.LinkByName(VXLANDevice)
	if err != nil {
		return
	}
	idx := vx.Attrs().Index
	mac, _ := net.ParseMAC("0a:58:0a:2a:4d:00")
	if err := h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("10.42.77.0"), HardwareAddr: mac}); err != nil {
		t.Fatalf("injecting ARP: %v", err)
	}
	if err := h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
		IP: gw, HardwareAddr: mac}); err != nil {
		t.Fatalf("injecting FDB: %v", err)
	}
	// A second remote for a wanted MAC (10.42.2.0's) must go too.
	mac2, _ := net.ParseMAC("0a:58:0a:2a:02:00")
	if err := h.NeighAppend(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
		IP: gw, HardwareAddr: mac2}); err != nil {
		t.Fatalf("injecting FDB: %v", err)
	}
}

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}
