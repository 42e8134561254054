package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Peer is another node of the pod network.
type Peer struct {
	NodeIP  string // the node's address on the node network
	PodCIDR string // the node's pod range
}

type peer struct {
	nodeIP net.IP
	cidr   *net.IPNet
}

// SetPeers makes the host's routes to other nodes' pod CIDRs exactly match
// peers, converging from any prior state (including the other mode's):
//
//   - host-gw: a route "PodCIDR via NodeIP" per peer; no VXLAN device.
//   - vxlan: device shoal.1 (VNI 1, UDP 4789, no learning, MAC and address
//     derived from this node's PodCIDR), and per peer a route
//     "PodCIDR via <peer VTEP> dev shoal.1 onlink", a permanent ARP entry for
//     the peer VTEP and an FDB entry sending its MAC to NodeIP.
//
// Routes podnet owns carry RouteProtocol; those not wanted are removed, and
// no other route is touched. The entry for this node (its PodCIDR or NodeIP)
// is skipped. Invalid or conflicting peers are skipped and reported; the
// others are still programmed. SetPeers also re-converges the node-level
// objects (ip_forward, bridge, masquerade), so calling it periodically
// repairs them. The error, if any, joins every failure.
func (n *Network) SetPeers(ctx context.Context, peers []Peer) error {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if err := n.checkOpen(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("podnet: set peers: %w", err)
	}
	want, errs := n.parsePeers(peers)
	if err := n.ensureNode(); err != nil {
		errs = append(errs, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("podnet: set peers: %w", errors.Join(append(errs, err)...))
	}
	switch n.cfg.Mode {
	case ModeVXLAN:
		errs = append(errs, n.syncVXLAN(want)...)
	default:
		errs = append(errs, n.syncHostGW(want)...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("podnet: set peers: %w", errors.Join(errs...))
	}
	return nil
}

// parsePeers validates peers, drops self, and sorts the rest by CIDR. A peer
// is rejected if it is malformed or its CIDR overlaps this node's or an
// earlier (in sorted order) peer's.
func (n *Network) parsePeers(in []Peer) ([]peer, []error) {
	var (
		out  []peer
		errs []error
	)
	for _, p := range in {
		cidr, err := parseCIDR4(p.PodCIDR)
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %s: pod CIDR: %w", p.NodeIP, err))
			continue
		}
		ip := net.ParseIP(p.NodeIP).To4()
		if ip == nil {
			errs = append(errs, fmt.Errorf("peer with pod CIDR %s: node IP %q is not IPv4", p.PodCIDR, p.NodeIP))
			continue
		}
		if cidr.String() == n.podNet.String() || (n.nodeIP != nil && ip.Equal(n.nodeIP)) {
			if cidr.String() != n.podNet.String() || (n.nodeIP != nil && !ip.Equal(n.nodeIP)) {
				errs = append(errs, fmt.Errorf("peer %s %s conflicts with this node (%s %s)", ip, cidr, n.nodeIP, n.podNet))
			}
			continue
		}
		if cidrOverlap(cidr, n.podNet) {
			errs = append(errs, fmt.Errorf("peer %s: pod CIDR %s overlaps this node's %s", ip, cidr, n.podNet))
			continue
		}
		out = append(out, peer{nodeIP: ip, cidr: cidr})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := ip4ToU32(out[i].cidr.IP), ip4ToU32(out[j].cidr.IP)
		if a != b {
			return a < b
		}
		ai, _ := out[i].cidr.Mask.Size()
		bi, _ := out[j].cidr.Mask.Size()
		if ai != bi {
			return ai < bi
		}
		return ip4ToU32(out[i].nodeIP) < ip4ToU32(out[j].nodeIP)
	})
	var kept []peer
	for _, p := range out {
		ok := true
		for _, k := range kept {
			if cidrOverlap(p.cidr, k.cidr) {
				errs = append(errs, fmt.Errorf("peer %s: pod CIDR %s overlaps peer %s's %s", p.nodeIP, p.cidr, k.nodeIP, k.cidr))
				ok = false
				break
			}
		}
		if ok {
			kept = append(kept, p)
		}
	}
	return kept, errs
}

// vtepIP is a node's VXLAN endpoint address: its pod CIDR's network address.
func vtepIP(cidr *net.IPNet) net.IP { return cidr.IP.To4() }

func (n *Network) syncHostGW(peers []peer) []error {
	var errs []error
	// Converging from vxlan mode: the device goes, and its routes with it.
	if err := n.deleteLink(VXLANDevice); err != nil {
		errs = append(errs, err)
	}
	want := make([]netlink.Route, 0, len(peers))
	for _, p := range peers {
		want = append(want, netlink.Route{Dst: p.cidr, Gw: p.nodeIP})
	}
	return append(errs, n.syncRoutes(want, "host-gw needs every node on a directly connected network; use vxlan otherwise")...)
}

func (n *Network) syncVXLAN(peers []peer) []error {
	vx, err := n.ensureVXLAN()
	if err != nil {
		// Without the device nothing below can work; still drop stale
		// routes so traffic is not sent somewhere wrong.
		return append([]error{err}, n.syncRoutes(nil, "")...)
	}
	idx := vx.Attrs().Index
	var (
		routes []netlink.Route
		arp    = map[string]net.HardwareAddr{} // VTEP IP → MAC
		fdb    = map[string]net.IP{}           // MAC → node IP
	)
	for _, p := range peers {
		vtep := vtepIP(p.cidr)
		mac := macFor(vtep)
		routes = append(routes, netlink.Route{Dst: p.cidr, Gw: vtep, LinkIndex: idx, Flags: int(netlink.FLAG_ONLINK)})
		arp[vtep.String()] = mac
		fdb[mac.String()] = p.nodeIP
	}
	var errs []error
	// Neighbours before routes, so a new route never resolves to nothing.
	errs = append(errs, n.syncARP(idx, arp)...)
	errs = append(errs, n.syncFDB(idx, fdb)...)
	errs = append(errs, n.syncRoutes(routes, "")...)
	return errs
}

// ensureVXLAN converges the VXLAN device, recreating it if its immutable
// parameters (VNI, source, port, learning) differ.
func (n *Network) ensureVXLAN() (netlink.Link, error) {
	vtep := vtepIP(n.podNet)
	mac := macFor(vtep)
	l, err := lookupLink(n.host, VXLANDevice)
	if err != nil {
		return nil, err
	}
	if l != nil {
		v, ok := l.(*netlink.Vxlan)
		if !ok || v.VxlanId != VXLANID || !v.SrcAddr.Equal(n.nodeIP) || v.Port != VXLANPort || v.Learning || v.VtepDevIndex != 0 {
			if err := delLink(n.host, l); err != nil {
				return nil, fmt.Errorf("replacing %s: %w", VXLANDevice, err)
			}
			l = nil
		}
	}
	if l == nil {
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: VXLANDevice, MTU: n.cfg.MTU, HardwareAddr: mac},
			VxlanId:   VXLANID,
			SrcAddr:   n.nodeIP,
			Port:      VXLANPort,
			Learning:  false,
		}
		if err := n.host.LinkAdd(vx); err != nil {
			return nil, fmt.Errorf("creating %s: %w", VXLANDevice, err)
		}
		if l, err = n.host.LinkByName(VXLANDevice); err != nil {
			return nil, fmt.Errorf("%s: %w", VXLANDevice, err)
		}
	}
	if l.Attrs().HardwareAddr.String() != mac.String() {
		if err := n.host.LinkSetHardwareAddr(l, mac); err != nil {
			return nil, fmt.Errorf("%s MAC: %w", VXLANDevice, err)
		}
	}
	if err := syncAddrs(n.host, l, []*net.IPNet{{IP: vtep, Mask: net.CIDRMask(32, 32)}}); err != nil {
		return nil, fmt.Errorf("%s: %w", VXLANDevice, err)
	}
	if err := setMTUAndUp(n.host, l, n.cfg.MTU); err != nil {
		return nil, err
	}
	return l, nil
}

// serviceRoute is the route of the service range through the bridge (nil
// without ServiceCIDR). Service addresses exist only as DNAT rules, and the
// kernel routes a packet the node itself sends before its output hook
// rewrites the address: without a route, a node with no default route could
// not reach a ClusterIP. Its source is the pods' gateway, an address every
// pod can answer.
func (n *Network) serviceRoute() (*netlink.Route, error) {
	if n.cfg.ServiceCIDR == "" {
		return nil, nil
	}
	_, dst, err := net.ParseCIDR(n.cfg.ServiceCIDR)
	if err != nil {
		return nil, fmt.Errorf("service CIDR: %w", err)
	}
	br, err := lookupLink(n.host, n.cfg.Bridge)
	if err != nil || br == nil {
		return nil, fmt.Errorf("service route: bridge %s: %v", n.cfg.Bridge, err)
	}
	return &netlink.Route{Dst: dst, LinkIndex: br.Attrs().Index, Scope: netlink.SCOPE_LINK, Src: n.gateway}, nil
}

// ownRoutes lists the main-table IPv4 routes carrying RouteProtocol.
func (n *Network) ownRoutes() ([]netlink.Route, error) {
	filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	return retryDump(func() ([]netlink.Route, error) {
		return n.host.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	})
}

// syncRoutes makes podnet's routes exactly want (Dst, Gw and, if set,
// LinkIndex and Flags are honoured). hint is appended to "unreachable"
// failures.
func (n *Network) syncRoutes(want []netlink.Route, hint string) []error {
	svc, err := n.serviceRoute()
	if err != nil {
		return []error{err}
	}
	if svc != nil {
		want = append(want, *svc)
	}
	have, err := n.ownRoutes()
	if err != nil {
		return []error{fmt.Errorf("listing routes: %w", err)}
	}
	haveBy := map[string][]netlink.Route{}
	for _, r := range have {
		if r.Dst == nil {
			haveBy["default"] = append(haveBy["default"], r)
			continue
		}
		haveBy[r.Dst.String()] = append(haveBy[r.Dst.String()], r)
	}
	var errs []error
	for _, w := range want {
		key := w.Dst.String()
		hs := haveBy[key]
		delete(haveBy, key)
		if len(hs) == 1 && routeMatches(hs[0], w) {
			continue
		}
		r := w
		r.Protocol = RouteProtocol
		r.Table = unix.RT_TABLE_MAIN
		if err := n.host.RouteReplace(&r); err != nil {
			err = fmt.Errorf("route %s via %s: %w", w.Dst, w.Gw, err)
			if hint != "" && errors.Is(err, unix.ENETUNREACH) {
				err = fmt.Errorf("%w (%s)", err, hint)
			}
			errs = append(errs, err)
		}
		// RouteReplace replaced the metric-0 route; others are stale.
		for _, h := range hs {
			if h.Priority != 0 || h.Tos != 0 {
				if err := n.host.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("removing stale route %s: %w", h.Dst, err))
				}
			}
		}
	}
	for _, hs := range haveBy {
		for _, h := range hs {
			if err := n.host.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("removing stale route %s: %w", h.Dst, err))
			}
		}
	}
	return errs
}

func routeMatches(have, want netlink.Route) bool {
	const onlink = int(netlink.FLAG_ONLINK)
	return have.Gw.Equal(want.Gw) && (want.Src == nil || have.Src.Equal(want.Src)) &&
		(want.LinkIndex == 0 || have.LinkIndex == want.LinkIndex) &&
		have.Flags&onlink == want.Flags&onlink &&
		have.Priority == 0 && have.Tos == 0 && have.Type == unix.RTN_UNICAST
}

// syncARP leaves exactly want (IP → MAC) as the permanent IPv4 neighbours of
// the VXLAN device. Dynamic entries are the kernel's business.
func (n *Network) syncARP(idx int, want map[string]net.HardwareAddr) []error {
	have, err := retryDump(func() ([]netlink.Neigh, error) { return n.host.NeighList(idx, netlink.FAMILY_V4) })
	if err != nil {
		return []error{fmt.Errorf("listing %s neighbours: %w", VXLANDevice, err)}
	}
	var errs []error
	done := map[string]bool{}
	for _, h := range have {
		if h.LinkIndex != idx || h.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		key := h.IP.String()
		if mac, ok := want[key]; ok && h.HardwareAddr.String() == mac.String() {
			done[key] = true
			continue
		}
		if err := n.host.NeighDel(&h); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing stale neighbour %s: %w", h.IP, err))
		}
	}
	for ip, mac := range want {
		if done[ip] {
			continue
		}
		nb := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: net.ParseIP(ip), HardwareAddr: mac}
		if err := n.host.NeighSet(nb); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s lladdr %s: %w", ip, mac, err))
		}
	}
	return errs
}

// syncFDB leaves exactly want (MAC → node IP) as the FDB of the VXLAN device.
func (n *Network) syncFDB(idx int, want map[string]net.IP) []error {
	have, err := retryDump(func() ([]netlink.Neigh, error) { return n.host.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return []error{fmt.Errorf("listing %s FDB: %w", VXLANDevice, err)}
	}
	var errs []error
	done := map[string]bool{}
	for _, h := range have {
		if h.LinkIndex != idx {
			continue
		}
		key := h.HardwareAddr.String()
		if ip, ok := want[key]; ok && !done[key] && h.IP.Equal(ip) && h.State&netlink.NUD_PERMANENT != 0 {
			done[key] = true
			continue
		}
		del := netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, IP: h.IP, HardwareAddr: h.HardwareAddr}
		if err := n.host.NeighDel(&del); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing stale FDB entry %s: %w", h.HardwareAddr, err))
		}
	}
	for mac, ip := range want {
		if done[mac] {
			continue
		}
		hw, _ := net.ParseMAC(mac)
		fe := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: ip, HardwareAddr: hw}
		if err := n.host.NeighSet(fe); err != nil {
			errs = append(errs, fmt.Errorf("FDB entry %s dst %s: %w", mac, ip, err))
		}
	}
	return errs
}
