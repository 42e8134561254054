package netproxy

import (
	"context"
	"log/slog"
	"net/netip"
	"time"
)

// Protocol is a service port's transport protocol: "TCP", "UDP" or "SCTP"
// (Kubernetes' spelling). Ports with any other protocol are skipped (logged
// once), without an error.
type Protocol string

// The protocols netproxy programs.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// supported reports whether netproxy programs ports of protocol p.
func (p Protocol) supported() bool { return p == TCP || p == UDP || p == SCTP }

// Strategy is how a service port spreads new connections over its endpoints.
type Strategy string

// The load-balancing strategies.
const (
	// RoundRobin gives N×k new connections exactly k to every endpoint.
	RoundRobin Strategy = "round-robin"
	// Random picks an endpoint uniformly at random per new connection.
	Random Strategy = "random"
	// Weighted is round robin in proportion to Endpoint.Weight.
	Weighted Strategy = "weighted"
	// LeastConn sends each new TCP connection to the endpoint with the fewest
	// active connections, and each new UDP session (a client address:port,
	// active until it has been quiet for 30 s) to the endpoint with the
	// fewest active sessions, through userspace proxies. SCTP ports and
	// externalTrafficPolicy Local traffic fall back to round robin.
	LeastConn Strategy = "least-conn"
)

// Config is the whole desired dataplane of one node.
type Config struct {
	// ClusterCIDR is the pod range of the cluster (10.42.0.0/16): traffic
	// to a ClusterIP from outside it is masqueraded. Zero: nothing is.
	ClusterCIDR netip.Prefix
	// NodeIPs are this node's addresses: NodePorts are answered on them
	// (not on 127.0.0.1). IPv6 addresses are skipped.
	NodeIPs  []netip.Addr
	Services []Service
}

// Service is one Kubernetes Service as the dataplane needs it.
type Service struct {
	Namespace, Name string
	// ClusterIPs: IPv4 only for now (IPv6 is skipped silently); empty means
	// only NodePorts and external IPs are programmed.
	ClusterIPs []netip.Addr
	// ExternalIPs are answered like the ClusterIP on the service port, with
	// the externalTrafficPolicy (LoadBalancer ingress = node IPs).
	ExternalIPs []netip.Addr
	// Strategy: "" means RoundRobin.
	Strategy Strategy
	// AffinityTimeout > 0 is sessionAffinity ClientIP: the same client IP
	// reaches the same endpoint while it keeps connecting within the timeout.
	AffinityTimeout time.Duration
	// ExternalLocal is externalTrafficPolicy Local for NodePort and external
	// traffic: only this node's endpoints, client IP preserved.
	ExternalLocal bool
	// InternalLocal is internalTrafficPolicy Local for ClusterIP traffic:
	// only this node's endpoints, dropped when it has none. NodePort and
	// external traffic follow ExternalLocal.
	InternalLocal bool
	Ports         []Port
}

// Port is one port of a Service with the endpoints that serve it.
type Port struct {
	Name     string
	Protocol Protocol
	Port     uint16
	NodePort uint16 // 0 = none
	// Endpoints are the endpoints to use (readiness already filtered);
	// their order is the rotation order.
	Endpoints []Endpoint
}

// Endpoint is one backend of a service port.
type Endpoint struct {
	IP   netip.Addr
	Port uint16
	// Local means the endpoint runs on this node (hairpin masquerade,
	// externalTrafficPolicy Local).
	Local bool
	// Weight is the endpoint's share for Weighted: ≥ 1 (0 counts as 1).
	Weight int
}

// Options configure a Proxy.
type Options struct {
	// NetNS is the path of the network namespace to program ("" = the
	// caller's).
	NetNS string
	// Table is the nftables table (family ip) netproxy owns entirely;
	// default "shoal_svc". No other table is ever touched.
	Table string
	// Log receives what was skipped and what was done; nil discards.
	Log *slog.Logger
	// NoTrack lists local UDP services (address and port) whose traffic
	// skips connection tracking, queries and answers alike, as Kubernetes'
	// NodeLocal DNSCache does for its address: the node's DNS answers
	// without a conntrack lookup per packet (and without the UDP conntrack
	// races). They must not be Service addresses: untracked packets are
	// not translated.
	NoTrack []netip.AddrPort
}

// DefaultTable is the nftables table used when Options.Table is empty.
const DefaultTable = "shoal_svc"

// Dataplane is what the node's glue drives: Proxy implements it, and so does
// Fake for unit tests.
type Dataplane interface {
	Set(ctx context.Context, cfg Config) error
}
