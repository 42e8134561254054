package consensus

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestCommitTransport drives commit pushes against a peer that answers as a
// follower would: heartbeats pass unchanged; a push names an index the
// follower acknowledged and the leader committed, with that entry's term,
// once; Push asks for what the follower still has to acknowledge, which goes
// when it does; replication is not pipelined; a follower that stopped
// answering heartbeats gets nothing; nothing is pushed by a node that is not
// the leader.
func TestCommitTransport(t *testing.T) {
	addr1, t1 := raft.NewInmemTransport("")
	addr2, t2 := raft.NewInmemTransport("")
	t1.Connect(addr2, t2)
	defer t1.Close()
	defer t2.Close()

	var mu sync.Mutex
	commit, term, leader := uint64(0), uint64(3), true
	var skew time.Duration // added to the transport's clock
	durable := ^uint64(0)  // the leader's own disk holds entries up to this
	setCommit := func(c uint64) { mu.Lock(); commit = c; mu.Unlock() }
	ct := newCommitTransport(t1,
		func() (uint64, uint64, bool) { mu.Lock(); defer mu.Unlock(); return min(commit, durable), term, leader },
		func(index uint64) (uint64, bool) { return 2, index > 0 }, // every entry of term 2
		func(c uint64) uint64 { mu.Lock(); defer mu.Unlock(); return min(c, durable) })
	ct.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(skew) }

	got := make(chan raft.AppendEntriesRequest, 16)
	go func() {
		for rpc := range t2.Consumer() {
			req := rpc.Command.(*raft.AppendEntriesRequest)
			got <- *req
			rpc.Respond(&raft.AppendEntriesResponse{Term: 3, Success: true}, nil)
		}
	}()
	next := func(what string) raft.AppendEntriesRequest {
		t.Helper()
		select {
		case r := <-got:
			return r
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the peer saw no request", what)
		}
		panic("unreachable")
	}
	quiet := func(what string) {
		t.Helper()
		select {
		case r := <-got:
			t.Fatalf("%s: unexpected request %+v", what, r)
		case <-time.After(100 * time.Millisecond):
		}
	}
	pushOf := func(r raft.AppendEntriesRequest, index uint64) bool {
		return r.PrevLogEntry == index && r.PrevLogTerm == 2 && r.LeaderCommitIndex == index && len(r.Entries) == 0 && r.Term == 3
	}
	heartbeat := raft.AppendEntriesRequest{Term: 3, Leader: []byte(addr1)}
	beat := func() {
		t.Helper()
		var resp raft.AppendEntriesResponse
		if err := ct.AppendEntries("n2", addr2, &heartbeat, &resp); err != nil || !resp.Success {
			t.Fatalf("heartbeat: %v %+v", err, resp)
		}
		if r := next("heartbeat"); !isHeartbeat(&r) {
			t.Fatalf("heartbeat was changed: %+v", r)
		}
	}
	replicate := func(last, leaderCommit uint64) raft.AppendEntriesRequest {
		t.Helper()
		req := raft.AppendEntriesRequest{Term: 3, Leader: []byte(addr1), PrevLogEntry: last - 1, PrevLogTerm: 2,
			LeaderCommitIndex: leaderCommit, Entries: []*raft.Log{{Index: last, Term: 3}}}
		var resp raft.AppendEntriesResponse
		if err := ct.AppendEntries("n2", addr2, &req, &resp); err != nil || !resp.Success {
			t.Fatalf("replication: %v %+v", err, resp)
		}
		if req.LeaderCommitIndex != leaderCommit {
			t.Fatalf("raft's request was modified: %+v", req)
		}
		return next("replication")
	}

	// Nothing acknowledged: heartbeats only.
	setCommit(4)
	beat()
	quiet("nothing acknowledged")

	// Acknowledged up to 10 (told 4), committed 10: the next heartbeat is
	// followed by a push of 10, once.
	replicate(10, 4)
	setCommit(10)
	beat()
	if r := next("push after the heartbeat"); !pushOf(r, 10) {
		t.Fatalf("push = %+v, want index 10 with term 2", r)
	}
	beat()
	ct.Push()
	quiet("index 10 already told")
	if !isHeartbeat(&heartbeat) {
		t.Fatalf("raft's heartbeat request was modified: %+v", heartbeat)
	}

	// Committed 12 before this follower acknowledged it: Push waits for
	// the acknowledgement (whose AppendEntries carried commit 10).
	setCommit(12)
	ct.Push()
	quiet("12 not acknowledged yet")
	replicate(12, 10)
	if r := next("push on acknowledgement"); !pushOf(r, 12) {
		t.Fatalf("push = %+v, want index 12", r)
	}

	// Replication is not pipelined: raft falls back to AppendEntries,
	// whose answers the transport sees.
	if _, err := ct.AppendEntriesPipeline("n2", addr2); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: %v, want ErrPipelineReplicationNotSupported", err)
	}

	// A follower quiet for longer than pushQuiet is not pushed to.
	mu.Lock()
	skew = 2 * pushQuiet
	mu.Unlock()
	replicate(14, 13)
	setCommit(14)
	ct.Push()
	quiet("a quiet follower")
	mu.Lock()
	skew = 0
	mu.Unlock()
	beat()
	if r := next("push once the follower answers again"); !pushOf(r, 14) {
		t.Fatalf("push = %+v, want index 14", r)
	}

	// Followers are never told a commit index past the leader's own disk,
	// in replication or in pushes; once it is durable, the push follows.
	mu.Lock()
	durable = 15
	mu.Unlock()
	if r := replicate(17, 16); r.LeaderCommitIndex != 15 {
		t.Fatalf("replication told commit %d, want 15 (durable)", r.LeaderCommitIndex)
	}
	setCommit(17)
	ct.Push()
	quiet("15 told, nothing durable beyond")
	mu.Lock()
	durable = ^uint64(0)
	mu.Unlock()
	ct.Push()
	if r := next("push once durable"); !pushOf(r, 17) {
		t.Fatalf("push = %+v, want index 17", r)
	}

	// Not the leader: nothing is pushed.
	mu.Lock()
	leader = false
	mu.Unlock()
	replicate(18, 17)
	setCommit(18)
	ct.Push()
	beat()
	quiet("not the leader")
}

// TestStopHeartbeats: stopping waits for a heartbeat raft is handling, and
// later heartbeats are answered without reaching raft.
func TestStopHeartbeats(t *testing.T) {
	_, tr := raft.NewInmemTransport("")
	defer tr.Close()
	ct := newCommitTransport(tr, func() (uint64, uint64, bool) { return 0, 0, false },
		func(uint64) (uint64, bool) { return 0, false }, func(c uint64) uint64 { return c })
	entered, release := make(chan struct{}), make(chan struct{})
	var calls int
	ct.SetHeartbeatHandler(func(rpc raft.RPC) {
		calls++
		close(entered)
		<-release
		rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
	})
	hb := func() raft.RPCResponse {
		resp := make(chan raft.RPCResponse, 1)
		ct.heartbeat(raft.RPC{Command: &raft.AppendEntriesRequest{Term: 1}, RespChan: resp})
		return <-resp
	}
	first := make(chan raft.RPCResponse, 1)
	go func() { first <- hb() }()
	<-entered
	stopped := make(chan struct{})
	go func() { ct.stopHeartbeats(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stopHeartbeats returned while raft was handling a heartbeat")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-stopped
	if r := <-first; r.Error != nil {
		t.Fatalf("the heartbeat under way failed: %v", r.Error)
	}
	if r := hb(); !errors.Is(r.Error, raft.ErrRaftShutdown) {
		t.Fatalf("heartbeat after stop: %v, want ErrRaftShutdown", r.Error)
	}
	if calls != 1 {
		t.Fatalf("raft's handler ran %d times, want 1", calls)
	}
}
