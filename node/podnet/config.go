package podnet

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
)

// Pod network modes.
const (
	ModeHostGW = "host-gw" // routes to other nodes' pod CIDRs via their node IPs (nodes on one L2)
	ModeVXLAN  = "vxlan"   // flannel-style VXLAN device with static FDB/ARP entries
)

// Fixed names and numbers of the host objects podnet owns.
const (
	DefaultBridge      = "shoal0"
	DefaultClusterCIDR = "10.42.0.0/16"
	VXLANDevice        = "shoal.1" // VNI 1
	VXLANID            = 1
	VXLANPort          = 4789
	// RouteProtocol marks the routes SetPeers owns (rtm_protocol); routes
	// with any other protocol are never touched.
	RouteProtocol = 0x73 // 's'
	// NFTable is the nftables table (family ip) holding the masquerade
	// rule. It is replaced as a whole; no other table is ever touched.
	NFTable = "shoal_podnet"
	// PodInterface is the name of the pod side of the veth pair.
	PodInterface = "eth0"
	// hostVethPrefix starts the name of every host-side veth podnet creates.
	hostVethPrefix = "shv"
)

// Config describes one node's pod network. The zero value of each optional
// field means its default; DefaultConfig fills them in explicitly.
type Config struct {
	// HostNS is the path of the node's network namespace, where all host
	// programming happens; "" means the namespace of the calling process.
	HostNS string
	// Bridge is the node bridge pods are attached to; default "shoal0".
	Bridge string
	// PodCIDR is this node's pod range, e.g. 10.42.3.0/24. The bridge gets
	// the first host address (.1), the pods' gateway; pods get the rest.
	PodCIDR string
	// ClusterCIDR is the pod range of the whole cluster. Pod traffic to
	// anything outside it is masqueraded. "" disables masquerading (and
	// removes podnet's nftables table).
	ClusterCIDR string
	// MTU of the bridge, veths and the VXLAN device: default 1500 in
	// host-gw mode and 1450 in vxlan mode.
	MTU int
	// StateDir holds the address allocations (podnet.json) and the lock.
	StateDir string
	// NetNSDir is where Setup creates pod namespaces when it is given no
	// path. The Network owns this directory: GC removes namespaces in it
	// that belong to no pod. Default StateDir/netns.
	NetNSDir string
	// Mode is ModeHostGW (default) or ModeVXLAN.
	Mode string
	// ServiceCIDR, when set, is routed through the bridge (see
	// serviceRoute), so the node itself reaches service addresses.
	ServiceCIDR string
	// ExtraAddrs are addresses (CIDR notation) also kept on the bridge,
	// such as the cluster DNS address as a /32: local to the node, and
	// reached by pods through their gateway.
	ExtraAddrs []string
	// NodeIP is this node's address on the node network. Required in vxlan
	// mode (the VTEP source); in host-gw mode it lets SetPeers skip self.
	NodeIP string
}

// DefaultConfig returns a Config with every default filled in. PodCIDR and
// StateDir must still be set.
func DefaultConfig() Config {
	return Config{
		Bridge:      DefaultBridge,
		ClusterCIDR: DefaultClusterCIDR,
		MTU:         0, // the mode's default: 1500 host-gw, 1450 vxlan
		Mode:        ModeHostGW,
	}
}

// withDefaults returns a copy of c with empty optional fields defaulted.
func (c Config) withDefaults() Config {
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if c.Mode == "" {
		c.Mode = ModeHostGW
	}
	if c.MTU == 0 {
		c.MTU = 1500
		if c.Mode == ModeVXLAN {
			c.MTU = 1450
		}
	}
	if c.NetNSDir == "" && c.StateDir != "" {
		c.NetNSDir = filepath.Join(c.StateDir, "netns")
	}
	return c
}

// Validate reports the first problem with c (after defaults are applied).
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Bridge == "" || len(c.Bridge) > 15 {
		return fmt.Errorf("podnet: bridge name %q must be 1-15 bytes", c.Bridge)
	}
	if c.Mode != ModeHostGW && c.Mode != ModeVXLAN {
		return fmt.Errorf("podnet: mode %q: want %q or %q", c.Mode, ModeHostGW, ModeVXLAN)
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return fmt.Errorf("podnet: MTU %d out of range", c.MTU)
	}
	pod, err := parseCIDR4(c.PodCIDR)
	if err != nil {
		return fmt.Errorf("podnet: PodCIDR: %w", err)
	}
	if ones, _ := pod.Mask.Size(); ones > 30 {
		return fmt.Errorf("podnet: PodCIDR %s is too small (need at least a /30)", c.PodCIDR)
	}
	if c.ClusterCIDR != "" {
		cl, err := parseCIDR4(c.ClusterCIDR)
		if err != nil {
			return fmt.Errorf("podnet: ClusterCIDR: %w", err)
		}
		if !cidrContains(cl, pod) {
			return fmt.Errorf("podnet: PodCIDR %s is not inside ClusterCIDR %s", pod, cl)
		}
	}
	if c.NodeIP != "" {
		if ip := net.ParseIP(c.NodeIP).To4(); ip == nil {
			return fmt.Errorf("podnet: NodeIP %q is not an IPv4 address", c.NodeIP)
		}
	} else if c.Mode == ModeVXLAN {
		return errors.New("podnet: vxlan mode needs NodeIP")
	}
	if c.StateDir == "" {
		return errors.New("podnet: StateDir is required")
	}
	if !filepath.IsAbs(c.NetNSDir) {
		return fmt.Errorf("podnet: NetNSDir %q must be absolute", c.NetNSDir)
	}
	return nil
}

// parseCIDR4 parses an IPv4 prefix in canonical form (no host bits set).
func parseCIDR4(s string) (*net.IPNet, error) {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, err
	}
	if ip.To4() == nil {
		return nil, fmt.Errorf("%s is not IPv4", s)
	}
	if !ip.Equal(n.IP) {
		return nil, fmt.Errorf("%s has host bits set (want %s)", s, n)
	}
	n.IP = n.IP.To4()
	return n, nil
}

// cidrContains reports whether inner lies entirely inside outer.
func cidrContains(outer, inner *net.IPNet) bool {
	oo, _ := outer.Mask.Size()
	io, _ := inner.Mask.Size()
	return io >= oo && outer.Contains(inner.IP)
}

// cidrOverlap reports whether a and b share any address.
func cidrOverlap(a, b *net.IPNet) bool {
	return a.Contains(b.IP) || b.Contains(a.IP)
}
