package consensus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

const (
	walDirName        = "wal"
	snapshotsRetained = 2
	logCacheSize      = 512
	transportMaxPool  = 3
	transportTimeout  = 10 * time.Second
	barrierTimeout    = 5 * time.Second
)

// Node is one raft member. Create it with New and stop it with Shutdown.
type Node struct {
	cfg       Config
	logger    hclog.Logger
	advertise string

	meta    *metadb.BoltMetaDB
	wal     *wal.WAL
	logs    raft.LogStore // raft's LogCache over disk
	disk    *leaderLog    // the WAL, written in the background on the leader
	fsm     *fsmAdapter
	stream  *streamLayer
	trans   *raft.NetworkTransport
	commits *commitTransport // trans as raft uses it
	rpc     *rpcClient
	fwd     *forwarder
	raft    *raft.Raft
	batcher *batcher

	observer     *raft.Observer
	observations chan raft.Observation

	// leadership holds the latest leader-ready state (buffered 1). Only the
	// monitorLeadership goroutine writes it while the node runs.
	leadership chan bool
	published  bool // last value published; owned by monitorLeadership
	// readyTerm is the term in which this node, as leader, has applied its
	// whole log (barrier done); 0 when not a ready leader.
	readyTerm atomic.Uint64
	// leaderChange is notified when the known leader or readiness changes.
	leaderChange notifier

	servingMu sync.Mutex
	serving   map[*serverConn]struct{} // guarded by servingMu; nil once shutting down

	ctx    context.Context // cancelled by Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup // node goroutines, including batch finishers

	// probes and probeElections count the leader probe's dials and the
	// elections it started.
	probes         atomic.Uint64
	probeElections atomic.Uint64
	// fwdBatches and fwdCommands count the forward batches served as
	// leader and the commands in them.
	fwdBatches, fwdCommands atomic.Uint64

	closed       atomic.Bool
	shutdownOnce sync.Once
	shutdownErr  error
}

// Server is a member of the raft configuration.
type Server struct {
	ID      string
	Address string
	Voter   bool
}

// Stats describes a node's raft state.
type Stats struct {
	ID          string `json:"id"`
	Address     string `json:"address"`
	State       string `json:"state"` // Follower, Candidate, Leader or Shutdown
	Term        uint64 `json:"term"`
	LastIndex   uint64 `json:"lastIndex"`
	CommitIndex uint64 `json:"commitIndex"`
	// AppliedIndex is what the local FSM reflects (see Node.AppliedIndex).
	AppliedIndex uint64 `json:"appliedIndex"`
	// LastContact is the time since the leader was last heard from: 0 on the
	// leader, negative if never.
	LastContact time.Duration `json:"lastContact"`
	// NumPeers counts the other voters; 0 if this node is not a voter.
	NumPeers   int    `json:"numPeers"`
	Voter      bool   `json:"voter"`
	LeaderID   string `json:"leaderID"`
	LeaderAddr string `json:"leaderAddr"`
	// ProposedEntries and ProposedCommands count the raft entries this node
	// created as leader and the commands packed into them.
	ProposedEntries  uint64 `json:"proposedEntries"`
	ProposedCommands uint64 `json:"proposedCommands"`
	// Nudges counts the times the leader pushed its commit index to the
	// followers after a batch (see batcher.nudge).
	Nudges uint64 `json:"nudges"`
	// ForwardBatches and ForwardedCommands count the forward batches this
	// node received from followers as leader and the commands in them (see
	// forwarder).
	ForwardBatches    uint64 `json:"forwardBatches"`
	ForwardedCommands uint64 `json:"forwardedCommands"`
	// Probes counts the times this node, not hearing from the leader,
	// dialled its raft port; ProbeElections the elections it started
	// because the port refused the connection (see watchLeader).
	Probes         uint64 `json:"probes"`
	ProbeElections uint64 `json:"probeElections"`
}

// New opens the raft state in cfg.DataDir, starts listening on cfg.BindAddr
// and starts raft. With cfg.Bootstrap it bootstraps a single-voter cluster,
// unless raft state already exists.
func New(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.New(&hclog.LoggerOptions{Name: "consensus", Level: hclog.Warn, Output: os.Stderr})
	}
	n := &Node{
		cfg:        cfg,
		logger:     logger,
		leadership: make(chan bool, 1),
		serving:    make(map[*serverConn]struct{}),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())

	// undo releases what was opened so far if New fails.
	var undo []func()
	started := false
	defer func() {
		if !started {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			n.cancel()
		}
	}()

	walDir := filepath.Join(cfg.DataDir, walDirName)
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("consensus: creating %s: %w", walDir, err)
	}
	var err error
	n.meta, n.wal, err = openWAL(walDir, logger.Named("wal"), cfg.walSegmentSize)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = closeWAL(n.wal, n.meta) })
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, snapshotsRetained, logger.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("consensus: opening snapshot store: %w", err)
	}
	existing, err := raft.HasExistingState(n.wal, n.wal, snaps)
	if err != nil {
		return nil, fmt.Errorf("consensus: inspecting raft state: %w", err)
	}
	var raftPtr atomic.Pointer[raft.Raft] // replication may start before NewRaft returns
	n.disk = newLeaderLog(n.wal, func() bool {
		r := raftPtr.Load()
		return r != nil && r.State() == raft.Leader
	})
	undo = append(undo, n.disk.close)
	if n.logs, err = raft.NewLogCache(logCacheSize, n.disk); err != nil {
		return nil, fmt.Errorf("consensus: %w", err)
	}

	ln, err := net.Listen("tcp", cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("consensus: listening: %w", err)
	}
	adv, err := advertiseAddr(cfg.AdvertiseAddr, ln.Addr())
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	n.advertise = adv.String()
	n.stream = newStreamLayer(ln, adv, cfg.TLS, cfg.HandshakeTimeout, logger.Named("stream"), n.serveRPC)
	undo = append(undo, func() { _ = n.stream.Close(); n.stream.wait() })
	n.rpc = newRPCClient(n.stream)
	n.fwd = newForwarder(n.ctx, n.rpc)
	undo = append(undo, n.rpc.close)
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  n.stream,
		MaxPool: transportMaxPool,
		Timeout: transportTimeout,
		Logger:  logger.Named("transport"),
	})
	undo = append(undo, func() { _ = n.trans.Close() })

	// raft may apply entries (replaying its log) before the batcher exists.
	var batcherPtr atomic.Pointer[batcher]
	n.fsm = newFSMAdapter(cfg.FSM, logger.Named("fsm"), n.disk.waitDurable, func(logs []*raft.Log) {
		if b := batcherPtr.Load(); b != nil {
			b.committing(logs)
		}
	})
	n.commits = newCommitTransport(n.trans, func() (uint64, uint64, bool) {
		r := raftPtr.Load()
		if r == nil || r.State() != raft.Leader {
			return 0, 0, false
		}
		return r.CommitIndex(), r.CurrentTerm(), true
	}, n.termOf, n.disk.capCommit)
	n.raft, err = raft.NewRaft(cfg.raftConfig(logger.Named("raft")), n.fsm, n.logs, n.wal, snaps, n.commits)
	if err != nil {
		return nil, fmt.Errorf("consensus: starting raft: %w", err)
	}
	raftPtr.Store(n.raft)
	undo = append(undo, func() { _ = n.raft.Shutdown().Error(); n.commits.stopHeartbeats() })
	if cfg.Bootstrap && !existing {
		boot := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: raft.ServerID(cfg.ID), Address: raft.ServerAddress(n.advertise),
		}}}
		if err := n.raft.BootstrapCluster(boot).Error(); err != nil {
			return nil, fmt.Errorf("consensus: bootstrapping: %w", err)
		}
	}

	n.batcher = newBatcher(n.raft, n.commits.Push, cfg.MaxBatch, logger.Named("batch"))
	batcherPtr.Store(n.batcher)
	n.observations = make(chan raft.Observation, 16)
	n.observer = raft.NewObserver(n.observations, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.observer)
	n.wg.Go(func() { n.batcher.run(n.ctx, &n.wg) })
	n.wg.Go(n.monitorLeadership)
	n.wg.Go(n.watchObservations)
	n.wg.Go(n.watchLeader)
	n.stream.start()
	started = true
	return n, nil
}

// termOf returns the term of the entry at index in the local log.
func (n *Node) termOf(index uint64) (uint64, bool) {
	var l raft.Log
	if err := n.logs.GetLog(index, &l); err != nil {
		return 0, false
	}
	return l.Term, true
}

// advertiseAddr resolves the address peers dial.
func advertiseAddr(configured string, bound net.Addr) (*net.TCPAddr, error) {
	if configured == "" {
		ta, ok := bound.(*net.TCPAddr)
		if !ok || ta.IP.IsUnspecified() {
			return nil, fmt.Errorf("consensus: cannot derive an advertise address from %s", bound)
		}
		return ta, nil
	}
	ta, err := net.ResolveTCPAddr("tcp", configured)
	if err != nil {
		return nil, fmt.Errorf("consensus: advertise address: %w", err)
	}
	return ta, nil
}

// Shutdown stops raft, closes every connection and the log, and waits for all
// goroutines. It is idempotent. In-flight Propose calls return errors
// matching ErrUnavailable (or ErrUnknownOutcome for entries already in raft).
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() {
		n.closed.Store(true)
		// Tell peers forwarding to us which requests we never read, so they
		// can retry those elsewhere instead of reporting an unknown outcome.
		n.goAwayAll()
		n.cancel()
		n.raft.DeregisterObserver(n.observer)
		err := n.raft.Shutdown().Error() // also closes the transport and listener
		n.commits.stopHeartbeats()
		n.disk.close()
		n.trans.CloseStreams()
		_ = n.stream.Close()
		n.rpc.close()
		n.wg.Wait()
		n.stream.wait()
		if n.published {
			n.publishLeadership(false)
		}
		n.readyTerm.Store(0)
		n.shutdownErr = errors.Join(err, closeWAL(n.wal, n.meta))
	})
	return n.shutdownErr
}

// IsLeader reports whether this node is the raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's ID and address; both are empty while
// no leader is known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// Addr returns the advertised address (the raft ServerAddress).
func (n *Node) Addr() string { return n.advertise }

// LeadershipChanges delivers true when this node has become leader and
// applied every earlier entry (so leader-only work may start), and false when
// it stops being leader. The channel is buffered 1 and holds only the latest
// value: two trues in a row mean leadership was lost and regained. A false is
// sent on Shutdown if the last value was true. The channel is never closed.
func (n *Node) LeadershipChanges() <-chan bool { return n.leadership }

// publishLeadership replaces the value in the leadership channel.
func (n *Node) publishLeadership(v bool) {
	select {
	case <-n.leadership:
	default:
	}
	select {
	case n.leadership <- v:
	default:
	}
	n.published = v
}

// monitorLeadership turns raft's leadership signal into leader readiness.
func (n *Node) monitorLeadership() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case isLeader := <-n.raft.LeaderCh():
			if isLeader {
				n.establishLeadership()
			} else {
				n.readyTerm.Store(0)
				if n.published {
					n.publishLeadership(false)
				}
				n.leaderChange.notify()
			}
		}
	}
}

// establishLeadership waits until the new leader has applied its whole log,
// so its commit index is valid for reads and its FSM is current.
func (n *Node) establishLeadership() {
	var bo backoff
	for n.raft.State() == raft.Leader {
		term := n.raft.CurrentTerm()
		err := awaitFuture(n.ctx.Done(), n.raft.Barrier(barrierTimeout))
		if errors.Is(err, ErrShutdown) {
			return
		}
		if err == nil && n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term {
			n.readyTerm.Store(term)
			n.publishLeadership(true)
			n.leaderChange.notify()
			return
		}
		if err != nil {
			n.logger.Warn("leader barrier failed", "error", err)
		}
		select {
		case <-time.After(bo.delay()):
		case <-n.ctx.Done():
			return
		}
	}
}

func (n *Node) watchObservations() {
	for {
		select {
		case <-n.observations:
			n.leaderChange.notify()
		case <-n.ctx.Done():
			return
		}
	}
}

// AppliedIndex returns the highest index the local FSM reflects: every entry
// at or below it that carries commands has been applied.
func (n *Node) AppliedIndex() uint64 {
	n.skipNonCommands()
	return n.fsm.applied.Load()
}

// maxSkipScan bounds the log entries skipNonCommands inspects.
const maxSkipScan = 64

// skipNonCommands advances the applied index over entries that never reach
// the FSM (no-ops, barriers), which raft has already dispatched. Without it a
// read index pointing at a new leader's no-op would not be reached until the
// next command.
func (n *Node) skipNonCommands() {
	applied := n.fsm.applied.Load()
	dispatched := n.raft.AppliedIndex()
	if dispatched <= applied || dispatched-applied > maxSkipScan {
		return
	}
	var l raft.Log
	for i := applied + 1; i <= dispatched; i++ {
		if err := n.logs.GetLog(i, &l); err != nil {
			return
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return // the FSM goroutine will advance past it
		}
	}
	n.fsm.advance(dispatched)
}

// appliedPoll is how often WaitApplied re-checks for skippable entries.
const appliedPoll = 5 * time.Millisecond

// WaitApplied blocks until AppliedIndex() >= index or ctx ends.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	var tick *time.Ticker
	for {
		changed := n.fsm.changed.wait()
		if n.AppliedIndex() >= index {
			return nil
		}
		if tick == nil {
			tick = time.NewTicker(appliedPoll)
			defer tick.Stop()
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting for index %d (applied %d): %w", index, n.fsm.applied.Load(), ctx.Err())
		case <-n.ctx.Done():
			return ErrShutdown
		}
	}
}

// Snapshot makes raft take a snapshot now and compact its log.
func (n *Node) Snapshot() error {
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("consensus: snapshot: %w", err)
	}
	return nil
}

// Stats returns this node's raft state.
func (n *Node) Stats() Stats {
	state := n.raft.State()
	addr, id := n.raft.LeaderWithID()
	st := Stats{
		ID:               n.cfg.ID,
		Address:          n.advertise,
		State:            state.String(),
		Term:             n.raft.CurrentTerm(),
		LastIndex:        n.raft.LastIndex(),
		CommitIndex:      n.raft.CommitIndex(),
		AppliedIndex:     n.AppliedIndex(),
		LeaderID:         string(id),
		LeaderAddr:       string(addr),
		ProposedEntries:  n.batcher.entries.Load(),
		ProposedCommands: n.batcher.commands.Load(),
		Nudges:           n.batcher.nudges.Load(),
		Probes:           n.probes.Load(),
		ProbeElections:   n.probeElections.Load(),
	}
	st.ForwardBatches, st.ForwardedCommands = n.fwdBatches.Load(), n.fwdCommands.Load()
	switch last := n.raft.LastContact(); {
	case state == raft.Leader:
	case last.IsZero():
		st.LastContact = -1
	default:
		st.LastContact = time.Since(last)
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage != raft.Voter {
				continue
			}
			if string(s.ID) == n.cfg.ID {
				st.Voter = true
			} else {
				st.NumPeers++
			}
		}
		if !st.Voter {
			st.NumPeers = 0
		}
	}
	return st
}
