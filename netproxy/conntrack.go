package netproxy

import (
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// udpFlush selects the UDP conntrack entries that would keep sending
// datagrams the wrong way after a change (UDP has no connection end for
// conntrack to notice):
//   - entries DNAT'ed to an endpoint that left its service port;
//   - entries to a service address that were not DNAT'ed at all, recorded
//     while the service had no endpoints (or did not exist yet): they would
//     bypass the new endpoints until they time out;
//   - entries redirected to a least-conn proxy that the port no longer
//     uses, and, when a port starts using a proxy, every NAT'ed entry that
//     goes elsewhere: a flow keeps the path it started on, so the next
//     datagram must find the new one.
//
// Only UDP entries match: TCP and SCTP connections end, and conntrack sees
// them end.
//
// It implements netlink.CustomConntrackFilter with map lookups, so one dump
// of the table serves any number of services.
type udpFlush struct {
	noNAT         map[netip.AddrPort]struct{}    // service address:port, un-NAT'ed entries
	noNATPort     map[uint16]struct{}            // node ports, un-NAT'ed entries to a node IP
	nodeIPs       map[netip.Addr]struct{}        // where node ports are answered
	gone          map[[2]netip.AddrPort]struct{} // service address:port → removed endpoint
	gonePort      map[nodePortEP]struct{}        // node port → removed endpoint
	goneProxy     map[netip.AddrPort]uint16      // service address:port → old proxy port
	goneProxyPort map[[2]uint16]struct{}         // node port, old proxy port
	onlyProxy     map[netip.AddrPort]uint16      // service address:port → the proxy port entries must use
	onlyProxyPort map[uint16]uint16              // node port → the proxy port entries must use
}

type nodePortEP struct {
	port uint16
	ep   netip.AddrPort
}

func (f *udpFlush) empty() bool {
	return len(f.noNAT)+len(f.noNATPort)+len(f.gone)+len(f.gonePort)+len(f.goneProxy)+len(f.goneProxyPort)+
		len(f.onlyProxy)+len(f.onlyProxyPort) == 0
}

func newUDPFlush() *udpFlush {
	return &udpFlush{
		noNAT: map[netip.AddrPort]struct{}{}, noNATPort: map[uint16]struct{}{}, nodeIPs: map[netip.Addr]struct{}{},
		gone: map[[2]netip.AddrPort]struct{}{}, gonePort: map[nodePortEP]struct{}{},
		goneProxy: map[netip.AddrPort]uint16{}, goneProxyPort: map[[2]uint16]struct{}{},
		onlyProxy: map[netip.AddrPort]uint16{}, onlyProxyPort: map[uint16]uint16{},
	}
}

// compare records what a port's change (old or cur may be nil) leaves stale.
func (f *udpFlush) compare(old, cur *portOut) {
	var o, n *udpPort
	if old != nil {
		o = old.UDP
	}
	if cur != nil {
		n = cur.UDP
	}
	if n != nil && len(n.Endpoints) > 0 && (o == nil || len(o.Endpoints) == 0) {
		for _, ip := range n.IPs {
			f.noNAT[netip.AddrPortFrom(ip, n.Port)] = struct{}{}
		}
		if n.NodePort != 0 {
			f.noNATPort[n.NodePort] = struct{}{}
		}
	}
	if o != nil {
		var keep []netip.AddrPort
		if n != nil {
			keep = n.Endpoints
		}
		f.addGone(o, keep)
		if o.Proxy != 0 && (n == nil || n.Proxy != o.Proxy) {
			f.addGoneProxy(o)
		}
	}
	if n != nil && n.Proxy != 0 && (o == nil || o.Proxy != n.Proxy) {
		// A port that starts using its proxy (or a new Proxy's, after a
		// restart) loses every flow that goes elsewhere: DNAT'ed by the
		// chains it had (they would bypass the proxy), or redirected to
		// a proxy of an earlier process (a closed socket; a client that
		// keeps sending would keep such an entry alive for ever).
		f.viaProxyOnly(n)
	}
}

// merge adds g's selections to f (flushes pending from a failed Set).
func (f *udpFlush) merge(g *udpFlush) {
	for k := range g.noNAT {
		f.noNAT[k] = struct{}{}
	}
	for k := range g.noNATPort {
		f.noNATPort[k] = struct{}{}
	}
	for k := range g.gone {
		f.gone[k] = struct{}{}
	}
	for k := range g.gonePort {
		f.gonePort[k] = struct{}{}
	}
	for k, v := range g.goneProxy {
		f.goneProxy[k] = v
	}
	for k := range g.goneProxyPort {
		f.goneProxyPort[k] = struct{}{}
	}
	for k, v := range g.onlyProxy {
		f.onlyProxy[k] = v
	}
	for k, v := range g.onlyProxyPort {
		f.onlyProxyPort[k] = v
	}
	f.nodeIPs = g.nodeIPs
}

// addGone records o's endpoints that are not in keep.
func (f *udpFlush) addGone(o *udpPort, keep []netip.AddrPort) {
	for _, ep := range o.Endpoints {
		if slices.Contains(keep, ep) {
			continue
		}
		for _, ip := range o.IPs {
			f.gone[[2]netip.AddrPort{netip.AddrPortFrom(ip, o.Port), ep}] = struct{}{}
		}
		if o.NodePort != 0 {
			f.gonePort[nodePortEP{o.NodePort, ep}] = struct{}{}
		}
	}
}

// addGoneProxy records the entries redirected to o's proxy. The redirect
// target is a local address of the node (the receiving interface's, or
// 127.0.0.1), so only its port is known.
func (f *udpFlush) addGoneProxy(o *udpPort) {
	for _, ip := range o.IPs {
		f.goneProxy[netip.AddrPortFrom(ip, o.Port)] = o.Proxy
	}
	if o.NodePort != 0 {
		f.goneProxyPort[[2]uint16{o.NodePort, o.Proxy}] = struct{}{}
	}
}

// viaProxyOnly records that n's NAT'ed entries must go to its proxy.
func (f *udpFlush) viaProxyOnly(n *udpPort) {
	for _, ip := range n.IPs {
		f.onlyProxy[netip.AddrPortFrom(ip, n.Port)] = n.Proxy
	}
	if n.NodePort != 0 {
		f.onlyProxyPort[n.NodePort] = n.Proxy
	}
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f *udpFlush) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	dst := addrPort(flow.Forward.DstIP, flow.Forward.DstPort)
	target := addrPort(flow.Reverse.SrcIP, flow.Reverse.SrcPort) // the DNAT target
	if target == dst {
		if _, ok := f.noNAT[dst]; ok {
			return true
		}
		if _, ok := f.noNATPort[dst.Port()]; ok {
			_, node := f.nodeIPs[dst.Addr()]
			return node
		}
		return false
	}
	if _, ok := f.gone[[2]netip.AddrPort{dst, target}]; ok {
		return true
	}
	if port, ok := f.goneProxy[dst]; ok && port == target.Port() {
		return true
	}
	if port, ok := f.onlyProxy[dst]; ok && port != target.Port() {
		return true
	}
	if _, ok := f.gonePort[nodePortEP{dst.Port(), target}]; ok {
		_, node := f.nodeIPs[dst.Addr()]
		return node
	}
	if _, ok := f.goneProxyPort[[2]uint16{dst.Port(), target.Port()}]; ok {
		_, node := f.nodeIPs[dst.Addr()]
		return node
	}
	if port, ok := f.onlyProxyPort[dst.Port()]; ok && port != target.Port() {
		_, node := f.nodeIPs[dst.Addr()]
		return node
	}
	return false
}
