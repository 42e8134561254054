package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/shoal-dev/shoal/dns"
	"github.com/shoal-dev/shoal/netproxy"
	"github.com/shoal-dev/shoal/node/apiserver"
	"github.com/shoal-dev/shoal/node/services"
)

// dnsListenAddr is where every node answers cluster DNS: the cluster DNS
// address, kept on the pod bridge (podnet ExtraAddrs) so it is local to the
// node and reached by pods through their gateway.
var dnsListenAddr = netip.AddrPortFrom(apiserver.DefaultDNSIP, 53)

// dnsUpstreams resolves the configured forwarders: the flag's list, or the
// nameservers of /etc/resolv.conf (never our own address).
func (n *Node) dnsUpstreams() []string {
	if n.cfg.DNSUpstreams != nil {
		out := make([]string, 0, len(n.cfg.DNSUpstreams))
		for _, u := range n.cfg.DNSUpstreams {
			if a, err := netip.ParseAddr(u); err == nil {
				u = net.JoinHostPort(a.String(), "53")
			}
			out = append(out, u)
		}
		return out
	}
	ups, err := dns.UpstreamsFromResolvConf("/etc/resolv.conf", apiserver.DefaultDNSIP)
	if err != nil {
		n.log.Warn("cluster DNS: no upstream servers from /etc/resolv.conf; names outside the cluster are refused", "err", err)
	}
	return ups
}

// startDNS starts this node's cluster DNS server: `shoal dns-server`, a
// child process of the agent (dns.Child).
func (n *Node) startDNS() (*dns.Child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the shoal executable: %w", err)
	}
	return dns.StartChild(dns.ChildConfig{
		Path:       exe,
		Args:       []string{"dns-server"},
		Env:        []string{"GOMAXPROCS=1"},
		Addrs:      []string{dnsListenAddr.String()},
		Upstreams:  n.dnsUpstreams(),
		UDPSockets: 1,
		Log:        n.log,
	})
}

// runServices runs this node's service dataplane (nftables) and cluster DNS
// from the local replica until ctx ends. The nftables rules stay in the
// kernel when the agent stops, so services keep working across a restart.
func (n *Node) runServices(ctx context.Context) {
	// The DNS address is exempt from conntrack: no per-packet lookup for
	// the busiest UDP service of the node.
	proxy, err := netproxy.New(netproxy.Options{Log: n.log, NoTrack: []netip.AddrPort{dnsListenAddr}})
	if err != nil {
		n.log.Error("service proxy unavailable: services are not load-balanced on this node", "err", err)
	} else {
		defer proxy.Close()
	}
	// The DNS server runs in a child process with a Go runtime of its own
	// (GOMAXPROCS=1, one UDP socket): it shares the node's cores with the
	// pods that query it, and inside the agent the runtime's idle Ps spun
	// and moved its one reader between threads (dnsperf -c 32 -T 2 -q 500
	// in the namespace of a 1-node cluster, 2 cores: 56–69k QPS in the
	// agent, 66–82k in the child). It inherits the agent's network
	// namespace and dies with the agent.
	srv, err := n.startDNS()
	if err != nil {
		n.log.Error("cluster DNS unavailable on this node", "err", err)
	} else {
		n.dnsSrv.Store(srv)
		defer func() { n.dnsSrv.Store(nil); srv.Close() }()
	}
	_, cluster, _ := net.ParseCIDR(n.cfg.PodCIDR)
	cidr, _ := netip.ParsePrefix(cluster.String())
	cfg := services.Config{
		Store: n.store, NodeName: n.id.NodeName, ClusterCIDR: cidr, Domain: n.cfg.ClusterDomain, Log: n.log,
		OnSync: func(d time.Duration, services int) {
			n.metrics.serviceSync.Observe(d.Seconds())
			n.metrics.services.Set(float64(services))
		},
	}
	if proxy != nil {
		cfg.Proxy = proxy
	}
	if srv != nil {
		cfg.DNS = srv
	}
	services.New(cfg).Run(ctx)
}
