package consensus

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// pushQuiet is how long after its last answered heartbeat a follower still
// gets pushes: one that stopped answering (down, cut off, or no longer in
// the configuration, which raft stops sending to) is not dialled for them.
const pushQuiet = time.Second

// commitTransport lets the leader tell followers its commit index without
// appending an entry.
//
// hashicorp/raft tells a follower that entries committed only with the next
// AppendEntries that replicates (the next entry, or an idle tick every
// CommitTimeout); its heartbeats carry no commit index. Every replica acts on
// what it applies (a follower that forwarded a write waits for its own
// replica; services, DNS and pods follow the replica), so after a batch with
// nothing behind it the leader has to spread the commit index itself. A
// barrier entry did that at the price of a round of fsyncs on every node.
//
// Instead the transport sends a commit push: an AppendEntries without
// entries whose PrevLogEntry and LeaderCommitIndex are an index the follower
// acknowledged and the leader committed, and PrevLogTerm that entry's term.
// The follower finds the entry, so it commits and applies up to it exactly
// as after a replicating AppendEntries (Log Matching: same index and term,
// same prefix). A push is due when a follower has not been sent the commit
// index it could apply. Push (after a batch with nothing behind it, see
// batcher.nudge) sends the due pushes, and asks for the ones that followers
// still have to acknowledge entries for: those go when the acknowledgement
// arrives. Every successful heartbeat sends a due push too. Each push runs in
// its own goroutine, at most one per follower at a time, and only to
// followers that answer heartbeats.
//
// Heartbeats themselves pass unchanged and keep the transport's fast path, so
// a follower busy with its disk still answers them at once (hashicorp/raft
// #282); a push goes through the follower's raft loop, ordered with its other
// AppendEntries. The transport learns what each follower acknowledged from
// the answers to raft's AppendEntries, and what a heartbeat to it looks like
// (term, leader) from raft's own heartbeats.
//
// Replication is not pipelined. The pipeline's answers reach raft on a
// channel the transport cannot look into without a goroutine in between;
// that shifted raft's timing enough to expose a data race in hashicorp/raft
// (updateLastAppended reads the peer unlocked while a configuration change
// replaces it), and pushing what was only sent, not acknowledged, overtook
// the entries and had followers refuse pushes by the dozen a second under
// load. Without the pipeline raft sends each follower everything new in one
// AppendEntries at a time, and the batcher already packs many commands into
// each entry.
type commitTransport struct {
	fullTransport
	// leader returns the local commit index and term while this node is
	// the leader; ok is false otherwise. committed caps the index.
	leader func() (commit, term uint64, ok bool)
	// termOf returns the term of the entry at index in the local log.
	termOf func(index uint64) (uint64, bool)
	// capCommit lowers a commit index to what the leader's own disk holds
	// (see leaderLog); followers are never told more.
	capCommit func(commit uint64) uint64
	now       func() time.Time

	mu    sync.Mutex
	peers map[raft.ServerID]*commitPeer // guarded by mu

	// hb is raft's heartbeat handler, which NetworkTransport calls on the
	// connection's goroutine, outside raft's own; nil once stopped.
	hbMu sync.RWMutex
	hb   func(raft.RPC) // guarded by hbMu
}

// commitPeer is what the transport knows of one follower.
type commitPeer struct {
	target  raft.ServerAddress
	header  *raft.AppendEntriesRequest // a heartbeat to it (nil before the first)
	beat    time.Time                  // when it last answered a heartbeat
	term    uint64                     // the term of matched
	matched uint64                     // highest index it acknowledged in term
	told    uint64                     // highest commit index sent to it
	want    uint64                     // commit index Push asked to send it
	pushing bool                       // a push is in flight
}

// fullTransport is what raft looks for in a transport (raft.NetworkTransport
// has it all).
type fullTransport interface {
	raft.Transport
	raft.WithClose
	raft.WithPreVote
}

func newCommitTransport(t fullTransport, leader func() (uint64, uint64, bool), termOf func(uint64) (uint64, bool), capCommit func(uint64) uint64) *commitTransport {
	return &commitTransport{fullTransport: t, leader: leader, termOf: termOf, capCommit: capCommit, now: time.Now, peers: make(map[raft.ServerID]*commitPeer)}
}

// isHeartbeat reports whether args is one of raft's heartbeats (see
// raft.NetworkTransport's fast path).
func isHeartbeat(args *raft.AppendEntriesRequest) bool {
	return args.Term != 0 && len(args.Entries) == 0 && args.PrevLogEntry == 0 &&
		args.PrevLogTerm == 0 && args.LeaderCommitIndex == 0
}

// lastIndex is the index up to which a successful args shows the follower's
// log equal to the leader's.
func lastIndex(args *raft.AppendEntriesRequest) uint64 {
	if n := len(args.Entries); n > 0 {
		return args.Entries[n-1].Index
	}
	return args.PrevLogEntry
}

func (t *commitTransport) peer(id raft.ServerID, target raft.ServerAddress) *commitPeer {
	p := t.peers[id]
	if p == nil {
		p = &commitPeer{}
		t.peers[id] = p
	}
	p.target = target
	return p
}

// AppendEntries sends args and learns from the answer.
func (t *commitTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	hb := isHeartbeat(args)
	if hb {
		// raft reuses its heartbeat request: keep a copy.
		h := *args
		t.mu.Lock()
		t.peer(id, target).header = &h
		t.mu.Unlock()
	} else if c := t.capCommit(args.LeaderCommitIndex); c != args.LeaderCommitIndex {
		capped := *args // raft keeps its own
		capped.LeaderCommitIndex = c
		args = &capped
	}
	err := t.fullTransport.AppendEntries(id, target, args, resp)
	if err != nil || !resp.Success {
		return err
	}
	if hb {
		t.mu.Lock()
		t.peer(id, target).beat = t.now()
		t.mu.Unlock()
		t.pushTo(id)
	} else {
		t.acked(id, target, args)
	}
	return nil
}

// SetHeartbeatHandler implements raft.Transport: raft's handler runs
// through heartbeat, so that stopHeartbeats can wait for the ones under way.
func (t *commitTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	t.hbMu.Lock()
	t.hb = cb
	t.hbMu.Unlock()
	t.fullTransport.SetHeartbeatHandler(t.heartbeat)
}

func (t *commitTransport) heartbeat(rpc raft.RPC) {
	t.hbMu.RLock()
	defer t.hbMu.RUnlock()
	if t.hb == nil {
		rpc.Respond(nil, raft.ErrRaftShutdown)
		return
	}
	t.hb(rpc)
}

// stopHeartbeats waits for the heartbeats raft is handling and answers later
// ones itself. NetworkTransport hands heartbeats to raft on the connection's
// goroutine, which raft's Shutdown does not wait for: one that passed raft's
// shutdown check could still store a new term after the node closed its
// stores, and raft panics on that error.
func (t *commitTransport) stopHeartbeats() {
	t.hbMu.Lock()
	t.hb = nil
	t.hbMu.Unlock()
}

// AppendEntriesPipeline refuses: raft then replicates with AppendEntries,
// whose answers the transport sees (see commitTransport).
func (t *commitTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// acked records that id's log equals the leader's up to lastIndex(args) and
// that it was told args' commit index, and sends a push Push asked for that
// the follower can now apply.
func (t *commitTransport) acked(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest) {
	t.mu.Lock()
	p := t.peer(id, target)
	switch {
	case args.Term < p.term:
		t.mu.Unlock()
		return // a late answer from an earlier leadership
	case args.Term > p.term:
		p.term, p.matched = args.Term, 0
	}
	p.matched = max(p.matched, lastIndex(args))
	p.told = max(p.told, min(args.LeaderCommitIndex, lastIndex(args)))
	wanted := p.want > p.told
	t.mu.Unlock()
	if wanted {
		t.pushTo(id)
	}
}

// committed returns the commit index followers may be told (see capCommit)
// and the term while this node is the leader.
func (t *commitTransport) committed() (commit, term uint64, ok bool) {
	commit, term, ok = t.leader()
	return t.capCommit(commit), term, ok
}

// Push sends every follower the commit index it can apply and was not sent;
// a follower that has not acknowledged the committed entries yet gets it
// when it does.
func (t *commitTransport) Push() {
	commit, _, ok := t.committed()
	if !ok {
		return
	}
	t.mu.Lock()
	ids := make([]raft.ServerID, 0, len(t.peers))
	for id, p := range t.peers {
		p.want = max(p.want, commit)
		ids = append(ids, id)
	}
	t.mu.Unlock()
	for _, id := range ids {
		t.pushTo(id)
	}
}

// pushTo starts a push to id if one is due.
func (t *commitTransport) pushTo(id raft.ServerID) {
	commit, term, ok := t.committed()
	if !ok {
		return
	}
	t.mu.Lock()
	p := t.peers[id]
	if p == nil || p.pushing || p.header == nil || p.header.Term != term || p.term != term || t.now().Sub(p.beat) > pushQuiet {
		t.mu.Unlock()
		return
	}
	index := min(commit, p.matched)
	if index <= p.told {
		t.mu.Unlock()
		return
	}
	p.pushing = true
	req := *p.header
	target := p.target
	t.mu.Unlock()

	go func() {
		ok := false
		if prevTerm, found := t.termOf(index); found {
			req.PrevLogEntry, req.PrevLogTerm, req.LeaderCommitIndex = index, prevTerm, index
			var resp raft.AppendEntriesResponse
			err := t.fullTransport.AppendEntries(id, target, &req, &resp)
			ok = err == nil && resp.Success
		}
		t.mu.Lock()
		p.pushing = false
		if ok {
			p.told = max(p.told, index)
		}
		again := ok && p.want > p.told && p.matched > index
		t.mu.Unlock()
		if again {
			t.pushTo(id) // acknowledged more while this push was out
		}
	}()
}
