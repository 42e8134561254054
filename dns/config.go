package dns

import "net/netip"

// Defaults for ZoneConfig.
const (
	// DefaultDomain is the cluster domain.
	DefaultDomain = "cluster.local"
	// DefaultTTL is the TTL of cluster answers, as the CoreDNS kubernetes
	// plugin's default.
	DefaultTTL uint32 = 5
)

// DefaultReverseCIDRs are the reverse zones the server is authoritative for
// when ZoneConfig.ReverseCIDRs is nil: Shoal's service and pod CIDRs.
var DefaultReverseCIDRs = []netip.Prefix{
	netip.MustParsePrefix("10.43.0.0/16"),
	netip.MustParsePrefix("10.42.0.0/16"),
}

// ZoneConfig is everything a Zone is built from. The glue that fills it
// decides which addresses are published (ready endpoints, or all of them for
// publishNotReadyAddresses); NewZone does no filtering of its own beyond
// dropping names that are not valid DNS labels.
type ZoneConfig struct {
	// Domain is the cluster domain ("cluster.local" when empty).
	Domain string
	// TTL of every answer and the SOA minimum (DefaultTTL when 0).
	TTL uint32
	// Services to publish.
	Services []Service
	// Pods to publish under a-b-c-d.ns.pod.<domain> (verified mode: only IPs
	// of pods that exist in that namespace resolve) and for reverse lookups.
	Pods []Pod
	// Namespaces that exist: ns.svc.<domain> and ns.pod.<domain> answer
	// NODATA instead of NXDOMAIN for them even without services or pods.
	Namespaces []string
	// ReverseCIDRs are the address ranges whose reverse names the server
	// answers itself: unknown addresses in them are NXDOMAIN, not forwarded.
	// nil means DefaultReverseCIDRs; an empty non-nil slice means none.
	ReverseCIDRs []netip.Prefix
	// NameserverIPs are the addresses of ns.dns.<domain>, the name server
	// the SOA and NS records of the zone name (the cluster DNS IP). Optional.
	NameserverIPs []netip.Addr
	// Serial is the SOA serial (the current Unix time when 0).
	Serial uint32
}

// Service is one Kubernetes Service, as DNS sees it.
type Service struct {
	Namespace, Name string
	// ClusterIPs of the service, one per family; empty for headless.
	ClusterIPs []netip.Addr
	// Headless is clusterIP: None: the name resolves to the endpoints.
	Headless bool
	// ExternalName makes the service a CNAME to this name (type ExternalName).
	ExternalName string
	// Ports of the service; named ports get SRV records.
	Ports []Port
	// Endpoints are the addresses to publish for a headless service.
	Endpoints []Endpoint
}

// Port is a service or endpoint port.
type Port struct {
	// Name of the port; only named ports have _name._proto SRV records.
	Name string
	// Protocol is "TCP" (the default when empty), "UDP" or "SCTP".
	Protocol string
	// Port number.
	Port uint16
}

// Endpoint is one address behind a headless service.
type Endpoint struct {
	IP netip.Addr
	// Hostname is the pod's hostname when it is published under the service
	// (a StatefulSet pod, or hostname + subdomain = the service name); when
	// empty the endpoint's name is its dashed IP (10-42-1-5).
	Hostname string
	// Ports of this endpoint for SRV records; empty means Service.Ports.
	Ports []Port
}

// Pod is one pod's addresses.
type Pod struct {
	Namespace string
	IPs       []netip.Addr
}
