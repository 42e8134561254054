package localcluster

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Ports the agent listens on (DESIGN.md §8).
const (
	APIPort    = 6443
	GossipPort = 7946
	RaftPort   = 7947
)

// Fixed interface names: they never depend on the cluster name, so they stay
// within the kernel's 15-character limit whatever the cluster is called.
const (
	bridgeName = "br0"  // in the lan namespace
	nodeIface  = "eth0" // in each node namespace
	bridgeHost = 254    // the bridge's host number in the subnet
)

const (
	defaultName         = "shoal"
	defaultReadyTimeout = 3 * time.Minute
	// StopGrace is how long Down waits after SIGTERM before SIGKILL.
	StopGrace = 10 * time.Second
)

// nameRE keeps namespace names ("<name>-lan", "<name>-n12") short and safe
// as file names under /run/netns.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,10}$`)

// Config describes a local cluster. The zero value of every field but Dir and
// Nodes has a usable default; Up does not modify the Config it is given.
type Config struct {
	// Name of the cluster, default "shoal": 1–11 characters of [a-z0-9-].
	// Namespaces are "<Name>-lan" and "<Name>-n1" … "<Name>-nN".
	Name string
	// Dir holds the cluster's state: nI/data (node I's data dir),
	// nI/agent.log, cluster.json and kubeconfig. Required. It must not
	// exist, be empty, or hold a cluster that is down. Keep it short: agents
	// put unix sockets below it (108-byte limit).
	Dir string
	// Nodes is the number of nodes, at least 1.
	Nodes int
	// Binary is the shoal binary; default os.Executable().
	Binary string
	// Subnet is an IPv4 /24 used only inside the cluster's namespaces. The
	// lan bridge gets .254 and node I gets .I. Default 10.213.K.0/24 with K
	// derived from Name.
	Subnet string
	// AgentArgs are appended to every `shoal agent` command line.
	AgentArgs []string
	// ReadyTimeout bounds each wait for readiness (node 1; then all joiners).
	// Default 3 minutes.
	ReadyTimeout time.Duration
	// Stdout receives progress messages; nil discards them.
	Stdout io.Writer
}

// DefaultSubnet returns the subnet a cluster called name uses by default:
// 10.213.K.0/24 with K a hash of name. The subnets of two clusters never meet
// (each lives in its own namespaces), so a collision is harmless; distinct
// subnets only make logs easier to tell apart.
func DefaultSubnet(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	return fmt.Sprintf("10.213.%d.0/24", h.Sum32()%256)
}

// withDefaults returns a copy of cfg with defaults filled in, validated.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Name == "" {
		cfg.Name = defaultName
	}
	if !nameRE.MatchString(cfg.Name) {
		return cfg, fmt.Errorf("cluster name %q: want 1-11 characters of [a-z0-9-], starting with a letter or digit", cfg.Name)
	}
	if cfg.Dir == "" {
		return cfg, errors.New("cluster dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return cfg, fmt.Errorf("cluster dir: %w", err)
	}
	cfg.Dir = dir
	if cfg.Nodes < 1 || cfg.Nodes > 250 {
		return cfg, fmt.Errorf("nodes = %d: want 1..250", cfg.Nodes)
	}
	if cfg.Binary == "" {
		if cfg.Binary, err = os.Executable(); err != nil {
			return cfg, fmt.Errorf("finding the shoal binary: %w", err)
		}
	}
	if cfg.Binary, err = filepath.Abs(cfg.Binary); err != nil {
		return cfg, fmt.Errorf("shoal binary: %w", err)
	}
	if fi, err := os.Stat(cfg.Binary); err != nil {
		return cfg, fmt.Errorf("shoal binary: %w", err)
	} else if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return cfg, fmt.Errorf("shoal binary %s is not an executable file", cfg.Binary)
	}
	if cfg.Subnet == "" {
		cfg.Subnet = DefaultSubnet(cfg.Name)
	}
	if _, err := parseSubnet(cfg.Subnet); err != nil {
		return cfg, err
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = defaultReadyTimeout
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	cfg.AgentArgs = append([]string(nil), cfg.AgentArgs...)
	return cfg, nil
}

// parseSubnet accepts an IPv4 /24 in canonical form.
func parseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, fmt.Errorf("subnet %q: %w", s, err)
	}
	if !p.Addr().Is4() || p.Bits() != 24 || p.Masked() != p {
		return p, fmt.Errorf("subnet %q: want an IPv4 /24 such as 10.213.7.0/24", s)
	}
	return p, nil
}

// hostAddr returns host number h (1..254) of the /24 subnet.
func hostAddr(subnet netip.Prefix, h int) netip.Addr {
	b := subnet.Addr().As4()
	b[3] = byte(h)
	return netip.AddrFrom4(b)
}
