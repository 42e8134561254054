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
// has acknowledged and the leader has committed, and PrevLogTerm that entry's
// term. The follower finds the entry in its log, so it commits and applies up
// to it exactly as after a replicating AppendEntries (Log Matching: same
// index and term, same prefix). A push is due when a follower has not been
// sent the commit index it could apply. Push (after a batch with nothing
// behind it, see batcher.nudge) sends the due pushes, and asks for the ones
// that followers still have to acknowledge entries for: those go when the
// acknowledgement arrives. Every successful heartbeat sends a due push too.
// Each push runs in its own goroutine, at most one per follower at a time.
//
// Heartbeats themselves pass unchanged and keep the transport's fast path, so
// a follower busy with its disk still answers them at once (hashicorp/raft
// #282); a push goes through the follower's raft loop, ordered with its other
// AppendEntries. The transport learns what each follower acknowledged from
// the answers to replication, pipelined or not, and what a heartbeat to it
// looks like (term, leader) from raft's own heartbeats.
type commitTransport struct {
	fullTransport
	// leader returns the local commit index and term while this node is
	// the leader; ok is false otherwise.
	leader func() (commit, term uint64, ok bool)
	// termOf returns the term of the entry at index in the local log.
	termOf func(index uint64) (uint64, bool)
	now    func() time.Time

	mu    sync.Mutex
	peers map[raft.ServerID]*commitPeer // guarded by mu
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

func newCommitTransport(t fullTransport, leader func() (uint64, uint64, bool), termOf func(uint64) (uint64, bool)) *commitTransport {
	return &commitTransport{fullTransport: t, leader: leader, termOf: termOf, now: time.Now, peers: make(map[raft.ServerID]*commitPeer)}
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

// AppendEntriesPipeline wraps the pipeline so the answers it gets are seen.
func (t *commitTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.fullTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	cp := &commitPipeline{AppendPipeline: p, t: t, id: id, target: target,
		out: make(chan raft.AppendFuture, pipelineDepth), stop: make(chan struct{})}
	go cp.relay()
	return cp, nil
}

// acked records that id's log equals the leader's up to lastIndex(args),
// and sends a push Push asked for that the follower can now apply.
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

// Push sends every follower the commit index it can apply and was not sent;
// a follower that has not acknowledged the committed entries yet gets it
// when it does.
func (t *commitTransport) Push() {
	commit, _, ok := t.leader()
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
	commit, term, ok := t.leader()
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
		sent := false
		if prevTerm, ok := t.termOf(index); ok {
			req.PrevLogEntry, req.PrevLogTerm, req.LeaderCommitIndex = index, prevTerm, index
			var resp raft.AppendEntriesResponse
			err := t.fullTransport.AppendEntries(id, target, &req, &resp)
			sent = err == nil && resp.Success
		}
		t.mu.Lock()
		p.pushing = false
		if sent {
			p.told = max(p.told, index)
		}
		again := sent && p.want > p.told && p.matched > index
		t.mu.Unlock()
		if again {
			t.pushTo(id) // acknowledged more while this push was out
		}
	}()
}

// pipelineDepth is the consumer buffer of raft.NetworkTransport's pipeline.
const pipelineDepth = 128

// commitPipeline passes the pipeline's answers on to raft after noting what
// the follower acknowledged.
type commitPipeline struct {
	raft.AppendPipeline
	t      *commitTransport
	id     raft.ServerID
	target raft.ServerAddress
	out    chan raft.AppendFuture
	stop   chan struct{}
	once   sync.Once
}

func (p *commitPipeline) relay() {
	in := p.AppendPipeline.Consumer()
	for {
		select {
		case f := <-in:
			if f.Error() == nil && f.Response().Success {
				p.t.acked(p.id, p.target, f.Request())
			}
			select {
			case p.out <- f:
			case <-p.stop:
				return
			}
		case <-p.stop:
			return
		}
	}
}

func (p *commitPipeline) Consumer() <-chan raft.AppendFuture { return p.out }

func (p *commitPipeline) Close() error {
	p.once.Do(func() { close(p.stop) })
	return p.AppendPipeline.Close()
}
