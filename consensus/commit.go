package consensus

import (
	"sync"

	"github.com/hashicorp/raft"
)

// commitTransport lets heartbeats carry the leader's commit index.
//
// hashicorp/raft tells a follower that entries committed only with the next
// AppendEntries that replicates (the next entry, or an idle tick every
// CommitTimeout); its heartbeats carry no commit index. Every replica acts on
// what it applies (a follower that forwarded a write waits for its own
// replica; services, DNS and pods follow the replica), so after a batch with
// nothing behind it the leader has to spread the commit index itself. A
// barrier entry did that at the price of a round of fsyncs on every node.
// Instead, when the leader has a commit index a follower has not been sent,
// the next heartbeat to that follower becomes a consistency-checked
// AppendEntries without entries: PrevLogEntry and LeaderCommitIndex are the
// commit index, PrevLogTerm the term of that entry. A follower whose log holds
// that entry commits and applies up to it, exactly as after a replicating
// AppendEntries (Log Matching: same index and term, same prefix). One that
// lacks it answers Success=false with the leader's term, which for a
// heartbeat still means it follows this leader, so the answer raft sees is
// Success=true; the follower learns the index later from replication.
// Node.pushCommit makes raft send heartbeats at once (VerifyLeader).
//
// Plain heartbeats (nothing new to tell) stay on the transport's fast path;
// ones carrying an index go through the follower's raft loop, ordered with
// its other AppendEntries.
type commitTransport struct {
	fullTransport
	// commit returns the local commit index and the term of its entry; ok
	// is false when there is none or the entry cannot be read.
	commit func() (index, term uint64, ok bool)

	mu   sync.Mutex
	told map[raft.ServerID]uint64 // highest commit index sent to each peer
}

// fullTransport is what raft looks for in a transport (raft.NetworkTransport
// has it all).
type fullTransport interface {
	raft.Transport
	raft.WithClose
	raft.WithPreVote
}

func newCommitTransport(t fullTransport, commit func() (uint64, uint64, bool)) *commitTransport {
	return &commitTransport{fullTransport: t, commit: commit, told: make(map[raft.ServerID]uint64)}
}

// isHeartbeat reports whether args is one of raft's heartbeats (see
// raft.NetworkTransport's fast path).
func isHeartbeat(args *raft.AppendEntriesRequest) bool {
	return args.Term != 0 && len(args.Entries) == 0 && args.PrevLogEntry == 0 &&
		args.PrevLogTerm == 0 && args.LeaderCommitIndex == 0
}

// AppendEntries sends args, turning a heartbeat into a commit push when id
// has not been told the commit index.
func (t *commitTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if !isHeartbeat(args) {
		err := t.fullTransport.AppendEntries(id, target, args, resp)
		if err == nil && resp.Success {
			t.sent(id, args.LeaderCommitIndex)
		}
		return err
	}
	index, term, ok := t.commit()
	if !ok || index <= t.toldTo(id) {
		return t.fullTransport.AppendEntries(id, target, args, resp)
	}
	// raft reuses its heartbeat request: send a copy.
	push := *args
	push.PrevLogEntry, push.PrevLogTerm, push.LeaderCommitIndex = index, term, index
	if err := t.fullTransport.AppendEntries(id, target, &push, resp); err != nil {
		return err
	}
	switch {
	case resp.Success:
		t.sent(id, index)
	case resp.Term == args.Term:
		resp.Success = true // a follower of this leader without the entry yet
	}
	return nil
}

// AppendEntriesPipeline wraps the pipeline so the commit indexes it sends
// are remembered.
func (t *commitTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.fullTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return &commitPipeline{AppendPipeline: p, t: t, id: id}, nil
}

func (t *commitTransport) toldTo(id raft.ServerID) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.told[id]
}

func (t *commitTransport) sent(id raft.ServerID, index uint64) {
	if index == 0 {
		return
	}
	t.mu.Lock()
	if index > t.told[id] {
		t.told[id] = index
	}
	t.mu.Unlock()
}

// commitPipeline records the commit index of every pipelined AppendEntries
// when it is sent. Should the request fail, raft leaves pipelining and
// replicates again, with the commit index.
type commitPipeline struct {
	raft.AppendPipeline
	t  *commitTransport
	id raft.ServerID
}

func (p *commitPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	f, err := p.AppendPipeline.AppendEntries(args, resp)
	if err == nil {
		p.t.sent(p.id, args.LeaderCommitIndex)
	}
	return f, err
}
