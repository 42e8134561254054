package netproxy

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Helpers shared by the unit tests.

var (
	a4   = netip.MustParseAddr
	cidr = netip.MustParsePrefix("10.42.0.0/16")
)

func ep(ip string, port uint16) Endpoint { return Endpoint{IP: a4(ip), Port: port} }

func localEP(ip string, port uint16) Endpoint { return Endpoint{IP: a4(ip), Port: port, Local: true} }

// genConfig is n services with eps endpoints each (10.43.x.y ClusterIPs,
// 10.42.x.y endpoints), as the benchmarks use.
func genConfig(n, eps int) Config {
	cfg := Config{ClusterCIDR: cidr, NodeIPs: []netip.Addr{a4("192.168.1.10")}}
	for i := 0; i < n; i++ {
		s := Service{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i),
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 43, byte(i >> 8), byte(i)})}}
		p := Port{Name: "http", Protocol: TCP, Port: 80}
		for e := 0; e < eps; e++ {
			j := i*eps + e
			p.Endpoints = append(p.Endpoints, Endpoint{IP: netip.AddrFrom4([4]byte{10, 42, byte(j >> 8), byte(j)}), Port: 8080})
		}
		s.Ports = []Port{p}
		cfg.Services = append(cfg.Services, s)
	}
	return cfg
}

// chainText renders a chain's rules one per line.
func chainText(rules []rule) string {
	var b strings.Builder
	for _, r := range rules {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// describe renders a ruleset as sorted text lines: chains by name, then
// every element, for readable comparisons.
func describe(rs *ruleset) string {
	var lines []string
	names := make([]string, 0, len(rs.Chains))
	for n := range rs.Chains {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		lines = append(lines, "chain "+n+":")
		for _, r := range rs.Chains[n] {
			lines = append(lines, "  "+r.String())
		}
	}
	var elems []string
	for k, v := range rs.ServiceIPs {
		elems = append(elems, "service-ips "+k.String()+" : goto "+v)
	}
	for k, v := range rs.NodePorts {
		elems = append(elems, "service-nodeports "+k.String()+" : goto "+v)
	}
	for k, owner := range rs.NoEPIPs {
		elems = append(elems, "no-endpoint-services "+k.String()+" (owner "+owner+")")
	}
	for k, owner := range rs.NoEPPorts {
		elems = append(elems, "no-endpoint-nodeports "+k.String()+" (owner "+owner+")")
	}
	for ip := range rs.NodeIPs {
		elems = append(elems, "node-ips "+ip.String())
	}
	for ip := range rs.Hairpin {
		elems = append(elems, "hairpin "+ip.String()+" . "+ip.String())
	}
	for n, t := range rs.Affinity {
		elems = append(elems, fmt.Sprintf("set %s timeout %s", n, t))
	}
	slices.Sort(elems)
	return strings.Join(append(lines, elems...), "\n") + "\n"
}

func mustRender(t testing.TB, cfg Config) *ruleset {
	t.Helper()
	rs, _ := render(cfg, nil)
	return rs
}

// flowT describes a conntrack entry: original destination and the address
// it was DNAT'ed to, UDP unless proto says otherwise.
type flowT struct {
	dst, target string
	proto       uint8
}

func (f *flowT) conntrack() *vnl.ConntrackFlow {
	d, t := netip.MustParseAddrPort(f.dst), netip.MustParseAddrPort(f.target)
	proto := f.proto
	if proto == 0 {
		proto = unix.IPPROTO_UDP
	}
	fl := &vnl.ConntrackFlow{FamilyType: unix.AF_INET}
	fl.Forward = vnl.IPTuple{Protocol: proto, SrcIP: net.IPv4(10, 42, 0, 9), SrcPort: 40000,
		DstIP: net.IP(d.Addr().AsSlice()), DstPort: d.Port()}
	fl.Reverse = vnl.IPTuple{Protocol: proto, SrcIP: net.IP(t.Addr().AsSlice()), SrcPort: t.Port(),
		DstIP: net.IPv4(10, 42, 0, 9), DstPort: 40000}
	return fl
}
