package consensus

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestCommitTransport drives the heartbeat rewriting against a peer that
// answers as a follower would: heartbeats carry the commit index, with the
// consistency check, once per new index; a follower without the entry still
// counts as following; a newer term is passed on.
func TestCommitTransport(t *testing.T) {
	addr1, t1 := raft.NewInmemTransport("")
	addr2, t2 := raft.NewInmemTransport("")
	t1.Connect(addr2, t2)
	defer t1.Close()
	defer t2.Close()

	var commit struct{ index, term uint64 }
	ct := newCommitTransport(t1, func() (uint64, uint64, bool) { return commit.index, commit.term, commit.index > 0 })

	type answer struct {
		success bool
		term    uint64
	}
	answers := make(chan answer, 1)
	got := make(chan raft.AppendEntriesRequest, 1)
	go func() {
		for rpc := range t2.Consumer() {
			req := rpc.Command.(*raft.AppendEntriesRequest)
			got <- *req
			a := <-answers
			rpc.Respond(&raft.AppendEntriesResponse{Term: a.term, Success: a.success}, nil)
		}
	}()

	heartbeat := raft.AppendEntriesRequest{Term: 3, Leader: []byte(addr1)}
	send := func(req *raft.AppendEntriesRequest, a answer) (raft.AppendEntriesRequest, raft.AppendEntriesResponse) {
		t.Helper()
		answers <- a
		var resp raft.AppendEntriesResponse
		if err := ct.AppendEntries("n2", addr2, req, &resp); err != nil {
			t.Fatalf("AppendEntries: %v", err)
		}
		select {
		case r := <-got:
			return r, resp
		case <-time.After(5 * time.Second):
			t.Fatal("the peer saw no request")
		}
		panic("unreachable")
	}
	pushed := func(r raft.AppendEntriesRequest, index, term uint64) bool {
		return r.PrevLogEntry == index && r.PrevLogTerm == term && r.LeaderCommitIndex == index && len(r.Entries) == 0
	}

	// Nothing committed: a plain heartbeat.
	if r, _ := send(&heartbeat, answer{true, 3}); !isHeartbeat(&r) {
		t.Fatalf("heartbeat with nothing committed was changed: %+v", r)
	}

	// A new commit index rides the next heartbeat, checked against its term.
	commit.index, commit.term = 41, 2
	r, resp := send(&heartbeat, answer{true, 3})
	if !pushed(r, 41, 2) || !resp.Success {
		t.Fatalf("push of 41: request %+v, response %+v", r, resp)
	}
	if !isHeartbeat(&heartbeat) {
		t.Fatalf("raft's heartbeat request was modified: %+v", heartbeat)
	}
	// Told once: the next heartbeat is plain again.
	if r, _ := send(&heartbeat, answer{true, 3}); !isHeartbeat(&r) {
		t.Fatalf("index already told was sent again: %+v", r)
	}

	// A follower lacking the entry rejects the check with the leader's term:
	// it follows this leader, so raft sees success; it is told again later.
	commit.index, commit.term = 50, 3
	r, resp = send(&heartbeat, answer{false, 3})
	if !pushed(r, 50, 3) || !resp.Success {
		t.Fatalf("push to a lagging follower: request %+v, response %+v (want success reported)", r, resp)
	}
	if r, resp = send(&heartbeat, answer{true, 3}); !pushed(r, 50, 3) || !resp.Success {
		t.Fatalf("lagging follower not told again: request %+v, response %+v", r, resp)
	}

	// A newer term is not hidden.
	commit.index = 60
	if r, resp = send(&heartbeat, answer{false, 4}); !pushed(r, 60, 3) || resp.Success || resp.Term != 4 {
		t.Fatalf("newer term: request %+v, response %+v (want failure with term 4)", r, resp)
	}

	// Replication that carried an index counts as telling it.
	commit.index = 70
	app := raft.AppendEntriesRequest{Term: 3, Leader: []byte(addr1), PrevLogEntry: 69, PrevLogTerm: 3,
		LeaderCommitIndex: 70, Entries: []*raft.Log{{Index: 70, Term: 3}}}
	if _, resp = send(&app, answer{true, 3}); !resp.Success {
		t.Fatalf("replication: %+v", resp)
	}
	if r, _ := send(&heartbeat, answer{true, 3}); !isHeartbeat(&r) {
		t.Fatalf("index told by replication was pushed again: %+v", r)
	}
}
