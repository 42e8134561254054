package consensus

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestRefuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := raft.ServerAddress(ln.Addr().String())
	if refuses(addr) {
		t.Fatal("a listening port was reported as refusing")
	}
	_ = ln.Close()
	if !refuses(addr) {
		t.Fatal("a closed port was not reported as refusing")
	}
}

// slowTimeouts gives raft 1.5 s timeouts: a leader elected sooner after the
// old one stopped was elected through the probe.
func slowTimeouts(c *Config) {
	c.HeartbeatTimeout = 1500 * time.Millisecond
	c.ElectionTimeout = 1500 * time.Millisecond
	c.LeaderLeaseTimeout = 1500 * time.Millisecond
}

// probeCluster starts size nodes with slowTimeouts and commits one entry
// that every follower then holds: the first in rank can win an election
// alone, so the outcome a test asserts is determined.
func probeCluster(t *testing.T, size int) (nodes []*testNode, leader *testNode) {
	t.Helper()
	nodes = newCluster(t, size, slowTimeouts)
	leader = waitLeader(t, nodes...)
	mustPropose(t, leader, "before")
	waitConverged(t, leader.fsm.snapshotRecords(), nodes...)
	return nodes, leader
}

// TestLeaderProbe stops the leader of three nodes whose raft timeouts are
// long (1.5 s): the survivors' probe finds its port closed and one of them
// campaigns at once, through raft's leadership-transfer path, which the
// other honours although it still knows the old leader.
func TestLeaderProbe(t *testing.T) {
	nodes, leader := probeCluster(t, 3)
	survivors := followersOf(leader, nodes)
	for _, n := range survivors {
		if got := n.Stats().ProbeElections; got != 0 {
			t.Fatalf("%s started %d elections while the leader was up", n.id, got)
		}
	}

	stopped := time.Now()
	if err := leader.Shutdown(); err != nil {
		t.Fatal(err)
	}
	next := waitLeader(t, survivors...)
	took := time.Since(stopped)
	if got := next.Stats().ProbeElections; got == 0 {
		t.Fatalf("new leader %s after %v was not elected through the probe", next.id, took)
	}
	other := followersOf(next, survivors)[0]
	if got := other.Stats().ProbeElections; got != 0 {
		t.Fatalf("%s also campaigned (%d): the lower rank should have won alone", other.id, got)
	}
	t.Logf("new leader %s after %v", next.id, took)
	mustPropose(t, next, "after")
	waitConverged(t, next.fsm.snapshotRecords(), survivors...)
}

// TestLeaderProbeRanks stops the leader of five nodes together with the
// voter ranked first to replace it: the next in rank campaigns after its
// delay, and the others stay out of its way.
func TestLeaderProbeRanks(t *testing.T) {
	nodes, leader := probeCluster(t, 5)
	rest := followersOf(leader, nodes)
	slices.SortFunc(rest, func(a, b *testNode) int { return strings.Compare(a.id, b.id) })
	first, survivors := rest[0], rest[1:]

	for _, n := range []*testNode{leader, first} {
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	next := waitLeader(t, survivors...)
	if next != survivors[0] {
		t.Fatalf("%s leads; want %s, the first in rank still up", next.id, survivors[0].id)
	}
	for _, n := range survivors {
		got := n.Stats().ProbeElections
		if want := uint64(0); n == next {
			if got == 0 {
				t.Fatalf("%s leads without a probe election", n.id)
			}
		} else if got != want {
			t.Fatalf("%s campaigned too (%d probe elections)", n.id, got)
		}
	}
	mustPropose(t, next, "after")
}

// TestLeaderProbeDyingListener stops the leader but keeps a listener on its
// raft address for a while, accepting nothing: what a process killed with a
// large heap looks like while the kernel frees its memory before it closes
// its files. The survivors keep probing the silent leader and campaign soon
// after the port starts refusing, instead of backing off until raft's own
// timeouts elect someone.
func TestLeaderProbeDyingListener(t *testing.T) {
	nodes, leader := probeCluster(t, 3)
	survivors := followersOf(leader, nodes)
	addr := leader.Addr()
	if err := leader.Shutdown(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr) // the kernel completes handshakes; nobody accepts
	if err != nil {
		t.Fatal(err)
	}
	const open = 700 * time.Millisecond
	time.Sleep(open)
	var probes uint64
	for _, n := range survivors {
		st := n.Stats()
		if st.ProbeElections != 0 {
			t.Fatalf("%s campaigned while the leader's port still listened", n.id)
		}
		probes += st.Probes
	}
	// The probes start after 375 ms of silence (a quarter of the 1.5 s
	// heartbeat timeout) and repeat every probeRelisten while the port
	// listens: ~6 per survivor in the window; one each with a long back-off.
	if probes < 4 {
		t.Fatalf("survivors probed the listening leader %d times in %v; want them to keep probing", probes, open)
	}
	_ = ln.Close()
	next := waitLeader(t, survivors...)
	if got := next.Stats().ProbeElections; got == 0 {
		t.Fatalf("new leader %s was not elected through the probe", next.id)
	}
	mustPropose(t, next, "after")
}

// TestProbeRankDelay: the ranks stay further apart than the spread of the
// voters' last contacts (heartbeats every tenth to fifth of the heartbeat
// timeout), and 100 ms apart at the default timeouts.
func TestProbeRankDelay(t *testing.T) {
	for _, tc := range []struct{ heartbeat, want time.Duration }{
		{DefaultConfig().HeartbeatTimeout, 100 * time.Millisecond},
		{300 * time.Millisecond, 100 * time.Millisecond},
		{1500 * time.Millisecond, 340 * time.Millisecond},
	} {
		got := Config{HeartbeatTimeout: tc.heartbeat}.probeRankDelay()
		if got != tc.want {
			t.Errorf("heartbeat timeout %v: rank delay %v, want %v", tc.heartbeat, got, tc.want)
		}
		if got <= tc.heartbeat/5 {
			t.Errorf("heartbeat timeout %v: rank delay %v within the heartbeat spread %v", tc.heartbeat, got, tc.heartbeat/5)
		}
	}
}
