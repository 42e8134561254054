package consensus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSingleNodePropose(t *testing.T) {
	n := startNode(t, "solo", t.TempDir(), "", true)
	select {
	case v := <-n.LeadershipChanges():
		if !v {
			t.Fatal("LeadershipChanges delivered false first")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no leadership signal")
	}
	if !n.IsLeader() {
		t.Fatal("bootstrapped single node is not leader")
	}

	idx := mustPropose(t, n, "a")
	if idx == 0 {
		t.Fatal("index 0")
	}
	if got := n.fsm.snapshotRecords(); !slices.Contains(got, record{idx, "a"}) {
		t.Fatalf("FSM records %v lack {%d a}", got, idx)
	}
	if n.AppliedIndex() < idx {
		t.Fatalf("AppliedIndex %d < %d", n.AppliedIndex(), idx)
	}
	idx2 := mustPropose(t, n, "b")
	if idx2 <= idx {
		t.Fatalf("second index %d not after %d", idx2, idx)
	}

	ctx := ctxTimeout(t, 10*time.Second)
	ri, err := n.ReadIndex(ctx)
	if err != nil || ri < idx2 {
		t.Fatalf("ReadIndex = %d, %v; want >= %d", ri, err, idx2)
	}
	if err := n.WaitApplied(ctx, ri); err != nil {
		t.Fatal(err)
	}

	st := n.Stats()
	if st.State != "Leader" || st.LeaderID != "solo" || !st.Voter || st.NumPeers != 0 || st.LastContact != 0 {
		t.Fatalf("unexpected stats %+v", st)
	}
	srv, err := n.Servers()
	if err != nil || len(srv) != 1 || srv[0] != (Server{ID: "solo", Address: n.Addr(), Voter: true}) {
		t.Fatalf("Servers() = %v, %v", srv, err)
	}

	if _, _, err := n.Propose(ctx, make([]byte, MaxCommandSize+1)); !errors.Is(err, ErrCommandTooLarge) {
		t.Fatalf("oversized command: %v", err)
	}
}

func TestClusterForwardingBatchingAndReads(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := waitLeader(t, nodes...)
	fs := followersOf(leader, nodes)
	f := fs[0]
	ctx := ctxTimeout(t, 30*time.Second)

	fwd := mustPropose(t, f, "via-follower")
	direct := mustPropose(t, leader, "via-leader")
	if direct <= fwd {
		t.Fatalf("leader write %d not after forwarded write %d", direct, fwd)
	}

	// Linearizable read through a follower sees both writes.
	ri, err := f.ReadIndex(ctx)
	if err != nil || ri < direct {
		t.Fatalf("follower ReadIndex = %d, %v; want >= %d", ri, err, direct)
	}
	if err := f.WaitApplied(ctx, ri); err != nil {
		t.Fatal(err)
	}
	if recs := f.fsm.snapshotRecords(); !slices.Contains(recs, record{direct, "via-leader"}) {
		t.Fatalf("follower FSM lacks the leader's write after WaitApplied: %v", recs)
	}
	if li, err := leader.ReadIndex(ctx); err != nil || li < direct {
		t.Fatalf("leader ReadIndex = %d, %v", li, err)
	}

	// 100 concurrent proposals through one follower.
	before := leader.Stats()
	const count = 100
	type answer struct {
		cmd   string
		index uint64
	}
	answers := make([]answer, count)
	var wg sync.WaitGroup
	errs := make(chan error, count)
	for i := range count {
		wg.Go(func() {
			cmd := fmt.Sprintf("c%03d", i)
			idx, resp, err := f.Propose(ctx, []byte(cmd))
			switch {
			case err != nil:
				errs <- fmt.Errorf("%s: %w", cmd, err)
			case string(resp) != "ok:"+cmd:
				errs <- fmt.Errorf("%s: response %q", cmd, resp)
			}
			answers[i] = answer{cmd, idx}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	after := leader.Stats()
	entries := after.ProposedEntries - before.ProposedEntries
	commands := after.ProposedCommands - before.ProposedCommands
	t.Logf("100 concurrent proposals via a follower: %d commands in %d raft entries", commands, entries)
	if commands != count {
		t.Fatalf("leader batched %d commands, want %d", commands, count)
	}
	if entries >= count {
		t.Fatalf("no batching: %d entries for %d commands", entries, count)
	}

	// Every answer names the entry the leader's FSM applied the command at;
	// entries' indexes increase in log order and commands share an entry's index.
	recs := leader.fsm.snapshotRecords()
	at := make(map[string]uint64)
	for i, r := range recs {
		if i > 0 && r.Index < recs[i-1].Index {
			t.Fatalf("FSM applied index %d after %d", r.Index, recs[i-1].Index)
		}
		if _, dup := at[r.Cmd]; dup {
			t.Fatalf("command %s applied twice", r.Cmd)
		}
		at[r.Cmd] = r.Index
	}
	distinct := make(map[uint64]bool)
	for _, a := range answers {
		if got, ok := at[a.cmd]; !ok || got != a.index {
			t.Fatalf("%s answered index %d, FSM applied it at %d (present %v)", a.cmd, a.index, got, ok)
		}
		distinct[a.index] = true
	}
	if len(distinct) != int(entries) {
		t.Fatalf("%d distinct indexes, %d entries", len(distinct), entries)
	}

	waitConverged(t, leader.fsm.snapshotRecords(), nodes...)

	// Stats over the stream layer.
	st, err := leader.FetchStats(ctx, f.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != f.id || st.State != "Follower" || st.LeaderID != leader.id || !st.Voter || st.NumPeers != 2 {
		t.Fatalf("FetchStats(follower) = %+v", st)
	}
	srv, err := leader.Servers()
	if err != nil || len(srv) != 3 {
		t.Fatalf("Servers() = %v, %v", srv, err)
	}
	for _, s := range srv {
		if !s.Voter {
			t.Fatalf("%s is not a voter", s.ID)
		}
	}
}

func TestLeaderFailover(t *testing.T) {
	nodes := newCluster(t, 3)
	old := waitLeader(t, nodes...)
	survivors := followersOf(old, nodes)
	// Forwarding first leaves a pooled connection to the old leader behind;
	// its shutdown must not turn the next write into an unknown outcome.
	mustPropose(t, survivors[0], "before")

	start := time.Now()
	if err := old.Shutdown(); err != nil {
		t.Fatal(err)
	}
	idx := mustPropose(t, survivors[0], "after")
	t.Logf("leader shutdown → next committed write through a survivor: %v", time.Since(start))

	leader := waitLeader(t, survivors...)
	if leader == old {
		t.Fatal("old leader still leads")
	}
	mustPropose(t, survivors[1], "after-2")
	waitConverged(t, leader.fsm.snapshotRecords(), survivors...)
	if recs := leader.fsm.snapshotRecords(); !slices.Contains(recs, record{idx, "after"}) {
		t.Fatalf("new leader lacks write at %d: %v", idx, recs)
	}
}

func TestRestartCatchUpAndSnapshots(t *testing.T) {
	lowSnap := func(c *Config) {
		c.SnapshotThreshold = 16
		c.TrailingLogs = 4
		c.walSegmentSize = 2048 // so that compaction really drops entries
	}
	nodes := newCluster(t, 3, lowSnap)
	leader := waitLeader(t, nodes...)
	victim := followersOf(leader, nodes)[0]

	for i := range 10 {
		mustPropose(t, leader, fmt.Sprintf("early-%d", i))
	}
	waitConverged(t, leader.fsm.snapshotRecords(), nodes...)
	if err := victim.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := victim.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if got := victim.fsm.restoreCount(); got != 0 {
		t.Fatalf("victim restored %d snapshots before restart", got)
	}
	if has, err := HasExistingState(victim.dir); err != nil || !has {
		t.Fatalf("HasExistingState(victim) = %v, %v", has, err)
	}

	for i := range 40 {
		mustPropose(t, leader, fmt.Sprintf("late-%d", i))
	}
	if err := leader.Snapshot(); err != nil {
		t.Fatal(err)
	}
	term := leader.Stats().Term

	// Bootstrap=true on a data dir with state must not start a new cluster.
	back := victim.restart(t, true, lowSnap)
	waitConverged(t, leader.fsm.snapshotRecords(), back)
	if got := back.fsm.restoreCount(); got < 2 {
		t.Fatalf("restored %d snapshots, want its own at start plus the leader's", got)
	}
	if id, _ := back.Leader(); id != leader.id {
		t.Fatalf("restarted node follows %q, want %q", id, leader.id)
	}
	if st := back.Stats(); st.Term < term || st.NumPeers != 2 {
		t.Fatalf("restarted node stats %+v (leader term %d)", st, term)
	}
	mustPropose(t, back, "from-restarted")
	waitConverged(t, leader.fsm.snapshotRecords(), back, leader)
}

func TestCutOffFollowerIsUnavailable(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := waitLeader(t, nodes...)
	fs := followersOf(leader, nodes)
	f := fs[0]
	for _, n := range []*testNode{leader, fs[1]} {
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}

	const budget = 1500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	_, _, err := f.Propose(ctx, []byte("lost"))
	elapsed := time.Since(start)
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("Propose on cut-off follower: %v; want ErrUnavailable with a certain outcome", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v does not wrap the context error", err)
	}
	if elapsed > budget+500*time.Millisecond {
		t.Fatalf("Propose returned after %v, deadline was %v", elapsed, budget)
	}
	t.Logf("cut-off follower: %v after %v", err, elapsed)

	ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	if _, err := f.ReadIndex(ctx2); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("ReadIndex on cut-off follower: %v", err)
	}
	if recs := f.fsm.snapshotRecords(); slices.ContainsFunc(recs, func(r record) bool { return r.Cmd == "lost" }) {
		t.Fatal("command applied without quorum")
	}
}

func TestMembership(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := waitLeader(t, nodes...)
	fs := followersOf(leader, nodes)
	a, b := fs[0], fs[1]

	err := a.AddVoter("x", "127.0.0.1:1")
	var nle *NotLeaderError
	if !errors.Is(err, ErrNotLeader) || !errors.As(err, &nle) || nle.LeaderID != leader.id || nle.LeaderAddr != leader.Addr() {
		t.Fatalf("AddVoter on follower: %v", err)
	}

	servers := func() map[string]Server {
		srv, err := leader.Servers()
		if err != nil {
			t.Fatal(err)
		}
		m := make(map[string]Server)
		for _, s := range srv {
			m[s.ID] = s
		}
		return m
	}
	if err := leader.DemoteVoter(b.id); err != nil {
		t.Fatal(err)
	}
	if s := servers()[b.id]; s.Voter {
		t.Fatalf("%s still a voter after DemoteVoter", b.id)
	}
	if err := leader.DemoteVoter(b.id); err != nil {
		t.Fatalf("demoting a non-voter again: %v", err)
	}
	if err := leader.AddVoter(b.id, b.Addr()); err != nil {
		t.Fatal(err)
	}
	if s := servers()[b.id]; !s.Voter {
		t.Fatalf("%s not promoted", b.id)
	}

	if err := leader.RemoveServer(b.id); err != nil {
		t.Fatal(err)
	}
	if _, ok := servers()[b.id]; ok {
		t.Fatalf("%s still present after RemoveServer", b.id)
	}
	if err := leader.RemoveServer(b.id); err != nil {
		t.Fatalf("removing an absent server: %v", err)
	}
	idx := mustPropose(t, leader, "while-removed")

	// The removed node stays up and can be added back.
	join(t, []*testNode{leader, a}, b)
	if err := b.WaitApplied(ctxTimeout(t, 10*time.Second), idx); err != nil {
		t.Fatal(err)
	}
	mustPropose(t, b, "after-rejoin")
	waitConverged(t, leader.fsm.snapshotRecords(), nodes...)

	// Same ID, new address: the address is updated, suffrage kept. A node
	// gets a new address when it restarts elsewhere, so a is down first:
	// hashicorp/raft replaces a peer's address while that peer's
	// replication goroutine reads it unlocked (updateLastAppended after a
	// successful AppendEntries; hashicorp/raft#471, #682), a data race the
	// detector reports when the peer is up and acknowledging.
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := leader.AddNonvoter(a.id, "127.0.0.1:9"); err != nil {
		t.Fatal(err)
	}
	if s := servers()[a.id]; !s.Voter || s.Address != "127.0.0.1:9" {
		t.Fatalf("after address update: %+v", s)
	}
	if err := leader.AddVoter(a.id, a.Addr()); err != nil {
		t.Fatal(err)
	}
	if s := servers()[a.id]; s.Address != a.Addr() {
		t.Fatalf("address not restored: %+v", s)
	}
}

func TestUnknownEntryTypesThroughRaft(t *testing.T) {
	n := startNode(t, "solo", t.TempDir(), "", true)
	waitLeader(t, n)
	mustPropose(t, n, "first")
	before := len(n.fsm.snapshotRecords())

	f := n.raft.Apply([]byte{entryIgnoreFlag | 0x05, 1, 2, 3}, time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	if resp := f.Response(); resp != nil {
		t.Fatalf("ignorable entry answered %v", resp)
	}

	f = n.raft.Apply([]byte{0x05, 1, 2, 3}, time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	if err, _ := f.Response().(error); !errors.Is(err, ErrUnknownEntryType) {
		t.Fatalf("unknown entry answered %v", f.Response())
	}
	if got := len(n.fsm.snapshotRecords()); got != before {
		t.Fatalf("FSM saw %d new commands from foreign entries", got-before)
	}
	mustPropose(t, n, "still-works")
}

func TestShutdownLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	nodes := newCluster(t, 3)
	leader := waitLeader(t, nodes...)
	for i, f := range followersOf(leader, nodes) {
		mustPropose(t, f, fmt.Sprintf("fwd-%d", i))
		if _, err := f.ReadIndex(ctxTimeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
		if err := n.Shutdown(); err != nil {
			t.Fatalf("second Shutdown: %v", err)
		}
	}
	if _, _, err := nodes[0].Propose(context.Background(), []byte("x")); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Propose after Shutdown: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines remain (baseline %d):\n%s", runtime.NumGoroutine(), base, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHasExistingStateAndDirLock(t *testing.T) {
	dir := t.TempDir()
	if has, err := HasExistingState(dir); err != nil || has {
		t.Fatalf("empty dir: %v, %v", has, err)
	}
	// A node that never joined leaves an empty log behind: no state.
	joiner := startNode(t, "joiner", dir, "", false)
	if _, err := HasExistingState(dir); !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("HasExistingState while running: %v", err)
	}
	if _, err := New(testConfig(t, "joiner", dir, "127.0.0.1:0", false, &testFSM{})); !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second New on the same dir: %v", err)
	}
	if err := joiner.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if has, err := HasExistingState(dir); err != nil || has {
		t.Fatalf("never-joined dir: %v, %v", has, err)
	}

	boot := startNode(t, "boot", dir, "", true)
	waitLeader(t, boot)
	if err := boot.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if has, err := HasExistingState(dir); err != nil || !has {
		t.Fatalf("bootstrapped dir: %v, %v", has, err)
	}
}

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		return testConfig(t, "id", t.TempDir(), "127.0.0.1:0", false, &testFSM{})
	}
	cases := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"valid", func(*Config) {}, ""},
		{"zero durations take defaults", func(c *Config) {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout, c.CommitTimeout, c.MaxBatch = 0, 0, 0, 0, 0
		}, ""},
		{"bare IP gets the default port", func(c *Config) { c.BindAddr = "127.0.0.1" }, ""},
		{"no ID", func(c *Config) { c.ID = "" }, "ID is required"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir"},
		{"no TLS", func(c *Config) { c.TLS = nil }, "TLS is required"},
		{"no roots", func(c *Config) { c.TLS.RootCAs = nil }, "RootCAs"},
		{"no FSM", func(c *Config) { c.FSM = nil }, "FSM"},
		{"host name bind", func(c *Config) { c.BindAddr = "localhost:7947" }, "not an IP"},
		{"unspecified bind needs advertise", func(c *Config) { c.BindAddr = "0.0.0.0:7947" }, "AdvertiseAddr is required"},
		{"unspecified advertise", func(c *Config) {
			c.BindAddr, c.AdvertiseAddr = "0.0.0.0:7947", "0.0.0.0:7947"
		}, "specific IP"},
		{"wildcard bind with advertise", func(c *Config) {
			c.BindAddr, c.AdvertiseAddr = "0.0.0.0:7947", "10.0.0.1:7947"
		}, ""},
		{"free port with fixed advertise", func(c *Config) { c.AdvertiseAddr = "127.0.0.1:7947" }, "must be empty"},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = time.Second }, "LeaderLeaseTimeout"},
		{"negative batch", func(c *Config) { c.MaxBatch = -1 }, "MaxBatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
	if c := DefaultConfig().withDefaults(); c.BindAddr != "0.0.0.0:7947" || c.MaxBatch != 512 {
		t.Fatalf("defaults: %+v", c)
	}
}

// TestFailoverLatency measures leader loss → next committed write through a
// survivor over many runs. It is opt-in (SHOAL_FAILOVER_RUNS=N).
func TestFailoverLatency(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("SHOAL_FAILOVER_RUNS"))
	if runs <= 0 {
		t.Skip("set SHOAL_FAILOVER_RUNS=N to measure failover latency")
	}
	nodes := newCluster(t, 3)
	var lat []time.Duration
	for i := range runs {
		leader := waitLeader(t, nodes...)
		mustPropose(t, leader, fmt.Sprintf("pre-%d", i))
		waitConverged(t, leader.fsm.snapshotRecords(), nodes...)
		survivor := followersOf(leader, nodes)[i%2]
		start := time.Now()
		if err := leader.Shutdown(); err != nil {
			t.Fatal(err)
		}
		mustPropose(t, survivor, fmt.Sprintf("post-%d", i))
		lat = append(lat, time.Since(start))
		nodes[slices.Index(nodes, leader)] = leader.restart(t, false)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("failover over %d runs: p50 %v  p90 %v  p99 %v  max %v", runs, pct(0.5), pct(0.9), pct(0.99), lat[len(lat)-1])
}

// TestWritesReachFollowerReplicas: with an idle tick far longer than the
// test's patience, writes still reach the followers' replicas at once. A
// write forwarded by a follower reaches that follower's replica (the leader
// nudges the commit index after batches with forwarded commands), and the
// leader's own writes reach every follower soon after they stop, the last
// one included (the deferred nudge). The nudge adds nothing to the log: it
// sends commit pushes (commitTransport).
func TestWritesReachFollowerReplicas(t *testing.T) {
	nodes := newCluster(t, 3, func(c *Config) { c.CommitTimeout = 30 * time.Second })
	leader := waitLeader(t, nodes...)
	followers := followersOf(leader, nodes)
	for _, tc := range []struct {
		name     string
		via      *testNode
		writes   int
		appliers []*testNode
	}{
		{"forwarded by a follower", followers[0], 3, followers[:1]},
		{"through the leader", leader, 20, followers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := leader.Stats().Nudges
			var idx uint64
			for i := 0; i < tc.writes; i++ {
				idx = mustPropose(t, tc.via, fmt.Sprintf("%s-%d", tc.name, i))
				if i < tc.writes-1 && tc.via == leader {
					continue // the leader's writes are checked after the last one
				}
				for _, f := range tc.appliers {
					if err := f.WaitApplied(ctxTimeout(t, 5*time.Second), idx); err != nil {
						t.Fatalf("%s did not apply write %d: %v (nudges %d)", f.id, idx, err, leader.Stats().Nudges)
					}
				}
			}
			// A heartbeat may have carried the commit first (it sends due
			// pushes too); the deferred nudge still goes out.
			waitFor(t, 5*time.Second, "a nudge", func() bool { return leader.Stats().Nudges > before })
			if last := leader.raft.LastIndex(); last != idx {
				t.Errorf("the log ends at %d after the last write at %d: the nudge appended entries", last, idx)
			}
		})
	}
}

// TestForwardedCommitPushedEarly: with nothing queued behind a write a
// follower forwarded, the leader pushes the commit index when the entry
// commits, before its own FSM applies it, so the follower's replica applies
// the write while the leader's is still busy with it.
func TestForwardedCommitPushedEarly(t *testing.T) {
	var leaderID atomic.Pointer[string]
	release := make(chan struct{})
	nodes := newCluster(t, 3, func(c *Config) {
		c.CommitTimeout = 30 * time.Second
		id := c.ID
		c.FSM = &gateFSM{FSM: c.FSM, before: func(cmd []byte) {
			if l := leaderID.Load(); string(cmd) == "held" && l != nil && *l == id {
				<-release
			}
		}}
	})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the nodes shut down
	leader := waitLeader(t, nodes...)
	leaderID.Store(&leader.id)
	f := followersOf(leader, nodes)[0]
	held := func(n *testNode) bool {
		return slices.ContainsFunc(n.fsm.snapshotRecords(), func(r record) bool { return r.Cmd == "held" })
	}
	before := leader.Stats().Nudges
	done := make(chan error, 1)
	go func() {
		_, _, err := f.Propose(ctxTimeout(t, 15*time.Second), []byte("held"))
		done <- err
	}()
	// Heartbeats also send due pushes, every tenth to fifth of the
	// heartbeat timeout, so the follower applying is not enough: the nudge
	// count shows the leader pushed while its own FSM held the write.
	waitFor(t, 5*time.Second, "the leader to push the commit while its FSM holds the write", func() bool { return leader.Stats().Nudges > before })
	waitFor(t, 5*time.Second, "the forwarding follower to apply the write while the leader's FSM holds it", func() bool { return held(f) })
	if held(leader) {
		t.Fatal("the leader applied the held write")
	}
	once.Do(func() { close(release) })
	if err := <-done; err != nil {
		t.Fatalf("Propose: %v", err)
	}
}

// TestReadIndexSkipsTrailingBarriers: when the log ends in a barrier (a
// new leader's, or any other), followers learn that it committed only from
// the idle tick. A follower's consistent read must not wait for that tick:
// the read index steps back to the last command, which the follower already
// applied.
func TestReadIndexSkipsTrailingBarriers(t *testing.T) {
	nodes := newCluster(t, 3, func(c *Config) { c.CommitTimeout = 30 * time.Second })
	leader := waitLeader(t, nodes...)
	f := followersOf(leader, nodes)[0]
	idx := mustPropose(t, leader, "before-read")
	if err := f.WaitApplied(ctxTimeout(t, 5*time.Second), idx); err != nil {
		t.Fatalf("follower did not apply %d: %v", idx, err)
	}
	if err := leader.raft.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatalf("barrier: %v", err)
	}
	if ci := leader.raft.CommitIndex(); ci <= idx {
		t.Fatalf("barrier applied but commit index %d <= %d", ci, idx)
	}
	for _, n := range []*testNode{leader, f} {
		ri, err := n.ReadIndex(ctxTimeout(t, 5*time.Second))
		if err != nil {
			t.Fatalf("ReadIndex on %s: %v", n.id, err)
		}
		if ri != idx {
			t.Errorf("ReadIndex on %s = %d, want the last command %d (commit index %d)", n.id, ri, idx, leader.raft.CommitIndex())
		}
		if err := n.WaitApplied(ctxTimeout(t, 5*time.Second), ri); err != nil {
			t.Fatalf("WaitApplied(%d) on %s: %v", ri, n.id, err)
		}
	}
}
