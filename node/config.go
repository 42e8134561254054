// Package node wires a Shoal node together: identity and trust (node/pki),
// raft (consensus) over the replicated store (node/state), gossip membership,
// the Kubernetes API (node/apiserver) and the leader's duties.
//
// Only cmd/shoal imports this package. Leaves (consensus, gossip, netproxy,
// dns, node/podnet, node/container) never import it: node translates its
// configuration and cluster objects into their small config types.
package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// Default ports and paths (DESIGN §8).
const (
	DefaultAPIPort    = 6443
	DefaultGossipPort = 7946
	DefaultRaftPort   = 7947
	DefaultDataDir    = "/var/lib/shoal"
	DefaultVoters     = 3
	// DefaultPodCIDR is split into one /24 per node.
	DefaultPodCIDR = "10.42.0.0/16"
	// DefaultSysmonTimerSlack lets the runtime's monitor thread wake at
	// most about once a millisecond while the agent alternates between
	// idle and busy (see node/sysmon and the README's decisions: 100
	// clients through the leader 14,332–14,838 writes/s against
	// 11,868–13,505/s with the kernel's 50 µs, alternated fresh clusters).
	DefaultSysmonTimerSlack = time.Millisecond
)

// Config configures a node. DefaultConfig is usable once DataDir and
// AdvertiseAddr are set. Config is not modified after New.
type Config struct {
	DataDir       string
	NodeName      string // default: the host name
	AdvertiseAddr string // IP other nodes and clients use
	BindAddr      string // IP to listen on (default AdvertiseAddr)
	APIPort       int
	GossipPort    int
	RaftPort      int
	Join          string // "host[:port]" of any member, first start only
	Token         string // join token, with Join
	// Voters is the target number of raft voters (3; 5 once five nodes are
	// healthy). An explicit value other than 3 is used as is.
	Voters int
	// DeadVoterGrace is how long gossip must report a voter dead before the
	// leader replaces it with a healthy non-voter.
	DeadVoterGrace time.Duration
	PodCIDR        string
	Logger         *slog.Logger
	// ProposeTimeout bounds a write that cannot reach a quorum (→ 503).
	ProposeTimeout time.Duration
	// SnapshotThreshold and SnapshotInterval tune raft snapshots (0 = the
	// consensus defaults); tests lower them to exercise snapshots.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// CommitTimeout is how often an idle leader tells followers its commit
	// index (0 = the consensus default).
	CommitTimeout time.Duration
	// ContainerdSocket is an existing containerd to use; "" starts a private
	// daemon under the data dir (when containerd is installed).
	ContainerdSocket string
	// HeartbeatTimeout is raft's failure detector (0 = the consensus
	// default); election and lease timeouts follow it.
	HeartbeatTimeout time.Duration
	// SysmonTimerSlack is the timer slack of the Go runtime's monitor
	// thread (see node/sysmon); 0 leaves the kernel's default.
	SysmonTimerSlack time.Duration
	// PodNetwork is how pods on different nodes reach each other:
	// "host-gw" (routes via the node addresses; nodes on one L2) or
	// "vxlan".
	PodNetwork string
	// CrashLoopBackoff is the first restart back-off of a crashing
	// container (doubling up to 5 minutes); 0 = Kubernetes' 10 s.
	CrashLoopBackoff time.Duration
	// PullFromRegistries lets nodes pull images from their registries
	// when no peer has them.
	PullFromRegistries bool
	// DefaultTolerationSeconds is how long new pods tolerate their node
	// being unreachable or not ready before they are evicted (and
	// replaced elsewhere by their controllers).
	DefaultTolerationSeconds int64
	// DNSUpstreams are the servers (ip or ip:port) cluster DNS forwards
	// other names to: nil means the nameservers of /etc/resolv.conf, an
	// empty non-nil list means none (such names are refused).
	DNSUpstreams []string
	// ClusterDomain is the DNS domain of services and pods.
	ClusterDomain string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		DataDir:                  DefaultDataDir,
		NodeName:                 host,
		APIPort:                  DefaultAPIPort,
		GossipPort:               DefaultGossipPort,
		RaftPort:                 DefaultRaftPort,
		Voters:                   DefaultVoters,
		DeadVoterGrace:           10 * time.Second,
		PodCIDR:                  DefaultPodCIDR,
		ProposeTimeout:           5 * time.Second,
		PodNetwork:               "host-gw",
		PullFromRegistries:       true,
		DefaultTolerationSeconds: 2,
		ClusterDomain:            "cluster.local",
		SysmonTimerSlack:         DefaultSysmonTimerSlack,
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	if net.ParseIP(c.AdvertiseAddr) == nil {
		errs = append(errs, fmt.Errorf("--advertise-addr %q is not an IP address", c.AdvertiseAddr))
	}
	if c.BindAddr != "" && net.ParseIP(c.BindAddr) == nil {
		errs = append(errs, fmt.Errorf("--bind-addr %q is not an IP address", c.BindAddr))
	}
	for name, p := range map[string]int{"api": c.APIPort, "gossip": c.GossipPort, "raft": c.RaftPort} {
		if p <= 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s port %d out of range", name, p))
		}
	}
	if (c.Join == "") != (c.Token == "") {
		errs = append(errs, errors.New("--join and --token go together"))
	}
	if c.Voters < 1 {
		errs = append(errs, fmt.Errorf("--voters must be at least 1, got %d", c.Voters))
	}
	if _, _, err := net.ParseCIDR(c.PodCIDR); err != nil {
		errs = append(errs, fmt.Errorf("pod CIDR: %w", err))
	}
	if c.PodNetwork != "host-gw" && c.PodNetwork != "vxlan" {
		errs = append(errs, fmt.Errorf("--pod-network must be host-gw or vxlan, not %q", c.PodNetwork))
	}
	for _, u := range c.DNSUpstreams {
		if _, err := netip.ParseAddr(u); err != nil {
			if _, err := netip.ParseAddrPort(u); err != nil {
				errs = append(errs, fmt.Errorf("--dns-upstream %q is not an IP address or IP:port", u))
			}
		}
	}
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required (no host name)"))
	}
	return errors.Join(errs...)
}

func (c *Config) bindIP() string {
	if c.BindAddr != "" {
		return c.BindAddr
	}
	return c.AdvertiseAddr
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
