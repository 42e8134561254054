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
//     bypass the new endpoints until they time out.
//
// It implements netlink.CustomConntrackFilter with map lookups, so one dump
// of the table serves any number of services.
type udpFlush struct {
	noNAT     map[netip.AddrPort]struct{}    // service address:port, un-NAT'ed entries
	noNATPort map[uint16]struct{}            // node ports, un-NAT'ed entries to a node IP
	nodeIPs   map[netip.Addr]struct{}        // where node ports are answered
	gone      map[[2]netip.AddrPort]struct{} // service address:port → removed endpoint
	gonePort  map[nodePortEP]struct{}        // node port → removed endpoint
}

type nodePortEP struct {
	port uint16
	ep   netip.AddrPort
}

func (f *udpFlush) empty() bool {
	return len(f.noNAT)+len(f.noNATPort)+len(f.gone)+len(f.gonePort) == 0
}

func newUDPFlush() *udpFlush {
	return &udpFlush{
		noNAT: map[netip.AddrPort]struct{}{}, noNATPort: map[uint16]struct{}{}, nodeIPs: map[netip.Addr]struct{}{},
		gone: map[[2]netip.AddrPort]struct{}{}, gonePort: map[nodePortEP]struct{}{},
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
	if _, ok := f.gonePort[nodePortEP{dst.Port(), target}]; ok {
		_, node := f.nodeIPs[dst.Addr()]
		return node
	}
	return false
}
