package node

import (
	"context"
	"net"
	"net/netip"
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
	// One UDP socket: the node's DNS shares its cores with the pods that
	// query it, and a second reader goroutine only fought them for the CPU
	// (measured with dnsperf on 2 cores: 53k QPS with one, 35–43k with two,
	// in a 3-node cluster on the same machine).
	srv, err := dns.NewServer(dns.Config{Addrs: []string{dnsListenAddr.String()}, UDPSockets: 1, Upstreams: n.dnsUpstreams(), Log: n.log})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		n.log.Error("cluster DNS unavailable on this node", "err", err)
		srv = nil
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
