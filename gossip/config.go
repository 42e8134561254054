package gossip

import (
	"errors"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is the gossip port (TCP and UDP) used when a Config or a seed
// address does not name one.
const DefaultPort = 7946

// KeySize is the only accepted length of Config.SecretKey (AES-256).
const KeySize = 32

// MetaMaxSize is the largest node meta a member may carry: memberlist's
// limit less the one-byte header this package adds (see meta.go).
const MetaMaxSize = memberlist.MetaMaxSize - metaHeaderSize

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("invalid gossip config")

// Config configures one gossip member. DefaultConfig returns a usable value;
// the caller then sets Name, SecretKey and, usually, the addresses. New copies
// what it needs: the Config is not retained or mutated.
type Config struct {
	// Name is the node's stable identity (Shoal uses the node UUID, never an
	// address). It is the memberlist node name: a member that restarts with
	// the same Name is the same member, wherever it now lives.
	Name string

	// BindAddr is the IP to listen on (TCP and UDP).
	BindAddr string
	// BindPort is the port to listen on (TCP and UDP). 0 lets the kernel
	// choose a free port (tests); Local().Port reports the one chosen.
	BindPort int
	// AdvertiseAddr is the IP other members use to reach this one. Empty
	// means BindAddr, or a private address of the host when BindAddr is
	// unspecified (0.0.0.0).
	AdvertiseAddr string
	// AdvertisePort is the port other members use to reach this one. 0
	// means the bound port.
	AdvertisePort int

	// SecretKey is the cluster gossip key, KeySize bytes. Gossip is always
	// encrypted and authenticated; members with another key cannot join or
	// be heard.
	SecretKey []byte

	// Meta is this node's initial meta (at most MetaMaxSize bytes). It is
	// opaque to this package. Change it later with Gossip.UpdateMeta.
	Meta []byte

	// Logger receives memberlist's and this package's log lines, one
	// "[LEVEL] ..." line per call. nil discards everything (memberlist is
	// chatty). "[DEBUG]" lines are dropped unless LogDebug is set.
	Logger   *log.Logger
	LogDebug bool

	// Failure detection, tuned for a LAN (memberlist.DefaultLANConfig made
	// tighter). A failed member is suspected after one probe round in which
	// neither direct, indirect nor TCP pings were answered, and declared dead
	// SuspicionMult*ProbeInterval later (scaled by log10 of the cluster size
	// above 10 members, and stretched when peers cannot confirm the
	// suspicion), unless it refutes first.
	ProbeInterval time.Duration
	// ProbeTimeout is how long to wait for a direct ping's ack before asking
	// other members to probe indirectly. It must be below ProbeInterval.
	ProbeTimeout  time.Duration
	SuspicionMult int
	// GossipInterval is how often queued broadcasts (joins, meta updates,
	// suspicions) are sent to a few random members.
	GossipInterval time.Duration
	// PushPullInterval is how often the full member list is exchanged with a
	// random member over TCP; it heals anything gossip missed.
	PushPullInterval time.Duration
	// DeadNodeReclaimTime is how long after a member is declared dead another
	// address may claim its Name. Keep it short so a node restarting on a
	// new address rejoins at once. 0 means only after memberlist forgets the
	// dead member (about 15 s), or after a graceful leave.
	DeadNodeReclaimTime time.Duration
	// TCPTimeout bounds one TCP exchange (join, push/pull).
	TCPTimeout time.Duration
	// BroadcastTimeout bounds how long UpdateMeta waits for its broadcast to
	// be sent.
	BroadcastTimeout time.Duration
}

// DefaultConfig returns a Config with LAN timing that reports a crashed member
// dead within about 2-3 s in a small cluster, binding 0.0.0.0:DefaultPort.
// Name and SecretKey must still be set.
func DefaultConfig() Config {
	return Config{
		BindAddr: "0.0.0.0",
		BindPort: DefaultPort,

		ProbeInterval:       400 * time.Millisecond,
		ProbeTimeout:        200 * time.Millisecond,
		SuspicionMult:       4,
		GossipInterval:      100 * time.Millisecond,
		PushPullInterval:    10 * time.Second,
		DeadNodeReclaimTime: time.Second,
		TCPTimeout:          5 * time.Second,
		BroadcastTimeout:    5 * time.Second,
	}
}

// Validate reports every problem with c, each wrapped in ErrInvalidConfig.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...)))
	}
	if c.Name == "" {
		bad("Name is empty")
	}
	if net.ParseIP(c.BindAddr) == nil {
		bad("BindAddr %q is not an IP address", c.BindAddr)
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		bad("AdvertiseAddr %q is not an IP address", c.AdvertiseAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		bad("BindPort %d out of range", c.BindPort)
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		bad("AdvertisePort %d out of range", c.AdvertisePort)
	}
	if len(c.SecretKey) != KeySize {
		bad("SecretKey is %d bytes, want %d", len(c.SecretKey), KeySize)
	}
	if len(c.Meta) > MetaMaxSize {
		bad("Meta is %d bytes, limit %d", len(c.Meta), MetaMaxSize)
	}
	if c.ProbeInterval <= 0 {
		bad("ProbeInterval must be positive")
	}
	if c.ProbeTimeout <= 0 || c.ProbeTimeout >= c.ProbeInterval {
		bad("ProbeTimeout %v must be positive and below ProbeInterval %v", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.SuspicionMult < 1 {
		bad("SuspicionMult must be at least 1")
	}
	if c.GossipInterval <= 0 {
		bad("GossipInterval must be positive")
	}
	if c.PushPullInterval <= 0 {
		bad("PushPullInterval must be positive")
	}
	if c.DeadNodeReclaimTime < 0 {
		bad("DeadNodeReclaimTime must not be negative")
	}
	if c.TCPTimeout <= 0 {
		bad("TCPTimeout must be positive")
	}
	if c.BroadcastTimeout <= 0 {
		bad("BroadcastTimeout must be positive")
	}
	return errors.Join(errs...)
}

// suspicionMaxTimeoutMult caps how far a suspicion timeout is stretched when
// too few peers confirm it (memberlist's default is 6).
const suspicionMaxTimeoutMult = 4

// gossipToTheDeadTime is how long memberlist keeps gossiping to, and
// remembering, a dead member. This package remembers dead members itself
// (Members), so it only matters to memberlist.
const gossipToTheDeadTime = 15 * time.Second

// memberlistConfig translates c (already validated) into a memberlist config
// wired to g's delegates.
func (c *Config) memberlistConfig(g *Gossip) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.Name
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.AdvertiseAddr
	mc.AdvertisePort = c.AdvertisePort
	if mc.AdvertisePort == 0 {
		// With BindPort 0 memberlist replaces this with the chosen port.
		mc.AdvertisePort = c.BindPort
	}

	mc.SecretKey = append([]byte(nil), c.SecretKey...)
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true

	mc.ProbeInterval = c.ProbeInterval
	mc.ProbeTimeout = c.ProbeTimeout
	mc.SuspicionMult = c.SuspicionMult
	mc.SuspicionMaxTimeoutMult = suspicionMaxTimeoutMult
	mc.GossipInterval = c.GossipInterval
	mc.GossipToTheDeadTime = gossipToTheDeadTime
	mc.PushPullInterval = c.PushPullInterval
	mc.DeadNodeReclaimTime = c.DeadNodeReclaimTime
	mc.TCPTimeout = c.TCPTimeout

	mc.Delegate = (*delegate)(g)
	mc.Events = (*delegate)(g)
	mc.Conflict = (*delegate)(g)
	mc.Logger = g.logger
	mc.LogOutput = nil
	return mc
}
