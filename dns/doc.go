// Package dns is Shoal's cluster DNS server: the records Kubernetes DNS
// (the CoreDNS kubernetes plugin) serves for Services and Pods, answered
// from an immutable, precomputed Zone that the caller swaps atomically, and
// a forwarder with a cache for every other name.
//
// The package is a leaf: it knows nothing about Kubernetes objects. A glue
// package translates Services, EndpointSlices and Pods into a ZoneConfig;
// NewZone turns that into an answer index (one map lookup per query, the
// answer bytes packed in advance), and Server.SetZone publishes it.
//
// Records served for the cluster domain (default cluster.local):
//
//	svc.ns.svc.<domain>                  A/AAAA: ClusterIPs, or the endpoint IPs of a headless service;
//	                                     CNAME for an ExternalName service
//	_port._proto.svc.ns.svc.<domain>     SRV for named ports (targets the service, or each endpoint when headless)
//	svc.ns.svc.<domain>                  SRV for every port
//	hostname.svc.ns.svc.<domain>         A/AAAA for headless endpoints (hostname, or the dashed IP 10-42-1-5)
//	a-b-c-d.ns.pod.<domain>              A/AAAA for pods that exist with that IP in that namespace
//	<domain>                             SOA and NS (ns.dns.<domain>)
//	*.in-addr.arpa, *.ip6.arpa           PTR for ClusterIPs, headless endpoints and pods
//
// Names that exist with other types, and empty non-terminals (ns.svc.<domain>
// when the namespace has services, svc.<domain>, _tcp.svc.ns.svc.<domain>)
// answer NODATA; other names under the domain or under the reverse zones of
// ZoneConfig.ReverseCIDRs answer NXDOMAIN. Negative answers carry the zone's
// SOA (minimum TTL = the answer TTL).
//
// Names outside the zone, and reverse names outside ZoneConfig.ReverseCIDRs,
// are forwarded to Config.Upstreams (UDP, TCP when truncated, the next
// upstream on failure) through a cache; without upstreams they are REFUSED.
//
// Serving: UDP sockets on a specific address run a loop that answers the
// common query straight from the packet bytes and the zone's packed answers
// (no unpacking, no allocation, no goroutine); anything else is unpacked and
// served by ServeDNS on a goroutine of its own, as are TCP connections and
// sockets on a wildcard address (through miekg/dns's server).
//
// A node runs its server in a child process of the agent, with a Go runtime
// of its own: Child (agent side) starts it, restarts it when it dies, has
// the kernel kill it when the agent dies (Pdeathsig), and sends it each
// ZoneConfig (gob on its stdin); RunChild (the child's body) builds and
// serves the zones and reports its Stats on stdout.
package dns
