package consensus

import (
	"errors"
	"net"
	"slices"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// Leader probe: a follower that stops hearing from the leader asks the
// leader's host whether anything still listens on its raft port.
//
// raft notices a dead leader only through timeouts: each follower waits for
// its own randomised heartbeat timeout (250–500 ms here), and a voter that
// still knows a leader refuses to vote (and to pre-vote), so the first
// follower to time out is often refused and tries again an election timeout
// later. Measured here: leader kill -9 → next committed write p50 0.78 s, p99
// 1.04 s over 10 kills.
//
// Most leaders that stop are processes that died (a crash, kill -9, the OOM
// killer, a restart), and the leader's host then refuses connections to the
// raft port at once. A refusal is proof: a live leader, however slow or
// stopped, has its listener (the kernel completes the handshake for it), and
// a cut-off or powered-off host does not answer at all, which leaves raft's
// timeouts in charge. On a refusal the follower starts an election at once
// through raft's own leadership-transfer path (a TimeoutNow request to
// itself): its vote requests say so, and the other voters vote although they
// still know the dead leader. Safety is raft's (votes still go only to
// candidates whose log is up to date); the probe only decides when.
//
// To avoid split votes, only the first of the remaining voters (by ID)
// starts at once; the n-th waits n × the rank delay and starts if no new
// leader appeared meanwhile: the first may be down too, or behind in its log
// and refused (see awaitBetterRanked).
const (
	probeTick = 20 * time.Millisecond
	probeDial = 100 * time.Millisecond
	// probeRankDelay is the least time between the campaigns of two
	// consecutive ranks (see Config.probeRankDelay).
	probeRankDelay = 100 * time.Millisecond
	// probeBackoff is how long a follower waits before it probes again
	// after it started an election.
	probeBackoff = 500 * time.Millisecond
	// probeRelisten is how soon a follower probes a silent leader again that
	// was still listening. A process killed with a large heap keeps its
	// listener while the kernel frees its memory (exit_mm runs before its
	// files close: ~0.1–0.5 s for a leader holding a few hundred thousand
	// objects), and the kernel completes handshakes for it meanwhile; with
	// a long back-off the probe missed the refusal that followed and raft's
	// own timeouts elected the next leader (kill → write p99 0.9–1.3 s).
	probeRelisten = 50 * time.Millisecond
)

// probeSilence is how long a follower must not have heard from the leader
// before it probes: several heartbeat intervals (raft sends one every tenth
// of the heartbeat timeout).
func (c Config) probeSilence() time.Duration { return c.HeartbeatTimeout / 4 }

// probeRankDelay is how long each rank waits after the one before it. The
// voters notice the silence at different times: raft sends each follower
// its heartbeats on a timer of its own (every tenth to fifth of the
// heartbeat timeout), so their last contacts differ by up to a fifth of it,
// and each probes on its own tick. A delay shorter than that spread let a
// later rank campaign before an earlier one noticed anything, and their
// votes split (seen with 1.5 s timeouts: two campaigns 7 ms apart, a third
// voter elected 300 ms later). With the default timeouts it stays 100 ms.
func (c Config) probeRankDelay() time.Duration {
	return max(probeRankDelay, c.HeartbeatTimeout/5+2*probeTick)
}

// watchLeader runs the leader probe until the node shuts down.
func (n *Node) watchLeader() {
	tick := time.NewTicker(probeTick)
	defer tick.Stop()
	var quietUntil time.Time // no probe before this
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		if time.Now().Before(quietUntil) {
			continue
		}
		leader, rank, ok := n.leaderSilent()
		if !ok {
			continue
		}
		term := n.raft.CurrentTerm()
		n.probes.Add(1)
		if !refuses(leader.Address) {
			quietUntil = time.Now().Add(probeRelisten)
			continue
		}
		quietUntil = time.Now().Add(probeBackoff)
		if rank > 0 && !n.awaitBetterRanked(leader.ID, term, rank) {
			continue
		}
		n.logger.Warn("leader's raft port refuses connections; starting an election", "leader", leader.ID, "address", leader.Address)
		if err := n.campaign(); err != nil {
			n.logger.Warn("could not start an election", "error", err)
			continue
		}
		n.probeElections.Add(1)
	}
}

// awaitBetterRanked gives the voters ranked before this one their turn
// (rank × the rank delay) and reports whether this one should campaign now:
// no new leader appeared. A vote request that raised the term means another
// voter campaigns; its first heartbeat comes within milliseconds if it won,
// so after one more delay without a leader this voter campaigns too: the
// other may have been refused, its log behind the rest.
func (n *Node) awaitBetterRanked(dead raft.ServerID, term uint64, rank int) bool {
	delay := n.cfg.probeRankDelay()
	wait := time.Duration(rank) * delay
	for extra := false; ; extra = true {
		select {
		case <-n.ctx.Done():
			return false
		case <-time.After(wait):
		}
		if n.raft.State() != raft.Follower {
			return false // raft's own timeout made it a candidate, or it won
		}
		if _, id := n.raft.LeaderWithID(); id != "" && id != dead {
			return false
		}
		if n.raft.CurrentTerm() == term || extra {
			return true
		}
		wait = delay
	}
}

// leaderSilent returns the leader this voter has not heard from for
// probeSilence, and this node's rank among the other voters; ok is false
// when there is nothing to probe.
func (n *Node) leaderSilent() (leader raft.Server, rank int, ok bool) {
	if n.raft.State() != raft.Follower {
		return leader, 0, false
	}
	last := n.raft.LastContact()
	if last.IsZero() || time.Since(last) < n.cfg.probeSilence() {
		return leader, 0, false
	}
	addr, id := n.raft.LeaderWithID()
	if addr == "" || string(id) == n.cfg.ID {
		return leader, 0, false // raft's own timeout already cleared it
	}
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return leader, 0, false
	}
	var others []string
	self := false
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != id {
			others = append(others, string(s.ID))
			self = self || string(s.ID) == n.cfg.ID
		}
	}
	if !self {
		return leader, 0, false // only voters campaign
	}
	slices.Sort(others)
	return raft.Server{ID: id, Address: addr}, slices.Index(others, n.cfg.ID), true
}

// refuses reports whether a TCP connection to addr is refused (no listener).
func refuses(addr raft.ServerAddress) bool {
	c, err := net.DialTimeout("tcp", string(addr), probeDial)
	if err == nil {
		_ = c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// campaign makes this follower a candidate now, the way a leader hands over
// leadership: a TimeoutNow request through the transport to itself.
func (n *Node) campaign() error {
	if n.raft.State() != raft.Follower {
		return nil // raft moved on by itself; a leader must not depose itself
	}
	self := raft.ServerAddress(n.advertise)
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersionMax,
		ID:              []byte(n.cfg.ID),
		Addr:            n.trans.EncodePeer(raft.ServerID(n.cfg.ID), self),
	}}
	var resp raft.TimeoutNowResponse
	return n.trans.TimeoutNow(raft.ServerID(n.cfg.ID), self, req, &resp)
}
