package consensus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// DefaultPort is the raft port when an address has none.
const DefaultPort = 7947

// MaxCommandSize is the largest command Propose accepts.
const MaxCommandSize = 8 << 20

// maxIDLen bounds node IDs; they travel in length-prefixed frames.
const maxIDLen = 255

// Config configures a Node. Zero durations and sizes mean "use the default"
// from DefaultConfig.
type Config struct {
	// ID is the stable node ID (a UUID string); it is the raft ServerID.
	ID string
	// DataDir holds wal/ (raft-wal log and stable store) and snapshots/.
	DataDir string
	// BindAddr is the "ip:port" to listen on. A missing port means DefaultPort;
	// port 0 picks a free port (then AdvertiseAddr must be empty).
	BindAddr string
	// AdvertiseAddr is the "ip:port" peers dial; it is the raft ServerAddress.
	// Empty means the address actually bound, which requires a specific IP in
	// BindAddr.
	AdvertiseAddr string
	// TLS carries the node certificate (Certificates or GetCertificate),
	// RootCAs (to verify peers we dial) and ClientCAs (to verify peers dialing
	// us; RootCAs when nil). Peer certificates must chain to the CA; host names
	// and IP SANs are not checked. Node certificates need both the server and
	// client auth extended key usages.
	TLS *tls.Config
	// Bootstrap a single-voter cluster with this node if DataDir holds no raft
	// state. It is ignored when state exists, so it is safe to pass on every start.
	Bootstrap bool
	// FSM is the replicated state machine.
	FSM FSM
	// Logger may be nil: warnings and errors then go to stderr.
	Logger hclog.Logger

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration

	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64

	// MaxBatch is the maximum number of commands per raft entry.
	MaxBatch int
	// HandshakeTimeout bounds the TLS handshake and the connection-kind byte
	// of every incoming connection.
	HandshakeTimeout time.Duration

	// walSegmentSize overrides raft-wal's segment size (tests only; 0 means
	// the default). raft-wal frees compacted entries only by whole segments.
	walSegmentSize int
}

// DefaultConfig returns LAN-tuned defaults. ID, DataDir, TLS and FSM must be
// set by the caller.
func DefaultConfig() Config {
	return Config{
		BindAddr: net.JoinHostPort("0.0.0.0", strconv.Itoa(DefaultPort)),
		// LAN timing: a leader that stopped answering is noticed within
		// 250–500 ms. Measured with `make bench` on a saturated 2-core
		// machine: no spurious elections under the write runs; leader
		// kill → next committed write p99 0.70 s (0.74–1.13 s with 300 ms)
		// before the leader probe, which finds a dead leader process in
		// ~60 ms (watchLeader; p50 62 ms, p99 0.41 s over 10 kills).
		HeartbeatTimeout: 250 * time.Millisecond,
		ElectionTimeout:  250 * time.Millisecond,
		// A leader steps down when it has not heard from a quorum for this
		// long. As long as raft allows (the heartbeat timeout): under a
		// burst of pod starts on the saturated 2-core bench machine (run
		// queue above 100, 10–25% steal) contact gaps of 200–270 ms came
		// by the dozen, and at 200 ms a leader stepped down mid-burst. At
		// 250 ms gaps of 250–310 ms still end a leadership there now and
		// then. It does not slow failover, which the followers' heartbeat
		// timeout decides.
		LeaderLeaseTimeout: 250 * time.Millisecond,
		// The idle tick that tells followers the commit index. The batcher
		// pushes it after every batch (batcher.nudge), heartbeats are
		// followed by a push when one is due (commitTransport), and read
		// indexes skip trailing barriers (lastCommandAtOrBelow), so this
		// only bounds how late a follower learns of a commit no push told
		// it. Each
		// tick is an AppendEntries to every follower: an idle 3-node
		// cluster's leader spent ~16% of a core here at 5ms, 6.2% at 25ms
		// and 3.8% at 250ms (the rest is heartbeats and gossip).
		CommitTimeout:     250 * time.Millisecond,
		SnapshotThreshold: 8192,
		SnapshotInterval:  2 * time.Minute,
		TrailingLogs:      10240,
		MaxBatch:          512,
		HandshakeTimeout:  5 * time.Second,
	}
}

// withDefaults returns a copy with zero fields filled from DefaultConfig and
// default ports added.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.BindAddr == "" {
		c.BindAddr = d.BindAddr
	}
	c.BindAddr = withDefaultPort(c.BindAddr)
	if c.AdvertiseAddr != "" {
		c.AdvertiseAddr = withDefaultPort(c.AdvertiseAddr)
	}
	orDefault(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	orDefault(&c.ElectionTimeout, d.ElectionTimeout)
	orDefault(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	orDefault(&c.CommitTimeout, d.CommitTimeout)
	orDefault(&c.SnapshotThreshold, d.SnapshotThreshold)
	orDefault(&c.SnapshotInterval, d.SnapshotInterval)
	orDefault(&c.TrailingLogs, d.TrailingLogs)
	orDefault(&c.MaxBatch, d.MaxBatch)
	orDefault(&c.HandshakeTimeout, d.HandshakeTimeout)
	return c
}

// orDefault sets *v to d when *v is the zero value.
func orDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// withDefaultPort appends DefaultPort to a bare host.
func withDefaultPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	if ip, err := netip.ParseAddr(addr); err == nil {
		return netip.AddrPortFrom(ip, DefaultPort).String()
	}
	return addr
}

// Validate reports every problem with the configuration (after defaults).
func (c *Config) Validate() error {
	d := c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	switch {
	case d.ID == "":
		bad("ID is required")
	case len(d.ID) > maxIDLen:
		bad("ID is longer than %d bytes", maxIDLen)
	}
	if d.DataDir == "" {
		bad("DataDir is required")
	}
	bind, err := parseAddrPort(d.BindAddr, true)
	if err != nil {
		bad("BindAddr: %v", err)
	}
	if d.AdvertiseAddr == "" {
		if err == nil && (bind.Addr().IsUnspecified() || !bind.Addr().IsValid()) {
			bad("AdvertiseAddr is required when BindAddr %q has no specific IP", d.BindAddr)
		}
	} else if err == nil && bind.Port() == 0 {
		bad("AdvertiseAddr must be empty when BindAddr picks a free port")
	} else {
		adv, err := parseAddrPort(d.AdvertiseAddr, false)
		switch {
		case err != nil:
			bad("AdvertiseAddr: %v", err)
		case adv.Addr().IsUnspecified():
			bad("AdvertiseAddr %q must be a specific IP", d.AdvertiseAddr)
		}
	}
	switch {
	case d.TLS == nil:
		bad("TLS is required")
	case len(d.TLS.Certificates) == 0 && d.TLS.GetCertificate == nil:
		bad("TLS needs a certificate (Certificates or GetCertificate)")
	case d.TLS.RootCAs == nil:
		bad("TLS.RootCAs is required to verify peers")
	}
	if d.FSM == nil {
		bad("FSM is required")
	}
	if d.MaxBatch < 1 {
		bad("MaxBatch must be positive")
	}
	if d.HandshakeTimeout < 0 {
		bad("HandshakeTimeout must not be negative")
	}
	if d.ID != "" {
		if err := raft.ValidateConfig(d.raftConfig(hclog.NewNullLogger())); err != nil {
			bad("raft: %v", err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("consensus: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// parseAddrPort parses an "ip:port"; host names are not accepted because
// peers are addressed by IP. An empty host is allowed when bind is set.
func parseAddrPort(s string, bind bool) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	if !bind && port == 0 {
		return netip.AddrPort{}, fmt.Errorf("port 0 in %q", s)
	}
	if host == "" && bind {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port)), nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address", host)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
}

// raftConfig translates c (with defaults applied) into a raft config.
func (c Config) raftConfig(logger hclog.Logger) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.ID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	// A removed server stays a passive follower so that it can be added back
	// without a restart. Pre-vote (on by default) keeps it from disrupting
	// the cluster.
	rc.ShutdownOnRemove = false
	rc.Logger = logger
	return rc
}
