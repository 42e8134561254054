package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestForwardBatchCodec(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	batch := []*fwdCall{
		{ctx: ctx, cmd: []byte("one")},
		{ctx: context.Background(), cmd: []byte{}},
		{ctx: ctx, cmd: bytes.Repeat([]byte{7}, 300)},
	}
	got, err := decodeForwardBatch(encodeForwardBatch(batch, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(batch) {
		t.Fatalf("%d commands, want %d", len(got), len(batch))
	}
	for i, c := range got {
		if !bytes.Equal(c.cmd, batch[i].cmd) {
			t.Errorf("command %d = %q, want %q", i, c.cmd, batch[i].cmd)
		}
	}
	if b := got[0].budget; b < 2900 || b > 3000 {
		t.Errorf("budget %d ms, want about 3000", b)
	}
	if got[1].budget != 0 {
		t.Errorf("command without deadline has budget %d", got[1].budget)
	}

	answers := [][]byte{{statusOK, 1}, {statusFailed}, {}}
	dec, err := decodeForwardAnswers(encodeForwardAnswers(answers)[1:], 3)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(dec, answers, bytes.Equal) {
		t.Errorf("answers %q, want %q", dec, answers)
	}

	for _, bad := range [][]byte{
		nil,
		{0},                 // no commands
		{1, 0},              // truncated
		{1, 0, 5, 'a'},      // length beyond the body
		{1, 0, 1, 'a', 'b'}, // trailing byte
		{2, 0, 1, 'a'},      // count beyond the body
		{1, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 'x'}, // budget beyond uint32
	} {
		if _, err := decodeForwardBatch(bad); err == nil {
			t.Errorf("decodeForwardBatch(%v) accepted", bad)
		}
	}
	if _, err := decodeForwardAnswers(encodeForwardAnswers(answers)[1:], 2); err == nil {
		t.Error("answers of the wrong count accepted")
	}
}

func FuzzDecodeForwardBatch(f *testing.F) {
	f.Add(encodeForwardBatch([]*fwdCall{{ctx: context.Background(), cmd: []byte("x")}}, time.Now()))
	f.Add([]byte{3, 0, 0, 1, 1, 'a', 0, 2, 'b', 'c'})
	f.Fuzz(func(t *testing.T, b []byte) {
		cmds, err := decodeForwardBatch(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		calls := make([]*fwdCall, len(cmds))
		for i, c := range cmds {
			calls[i] = &fwdCall{ctx: context.Background(), cmd: c.cmd}
		}
		again, err := decodeForwardBatch(encodeForwardBatch(calls, time.Now()))
		if err != nil || len(again) != len(cmds) {
			t.Fatalf("re-encoded batch: %v (%d commands, want %d)", err, len(again), len(cmds))
		}
	})
}

// holdCluster starts three nodes whose leader's FSM holds the command
// "held" until release is called (at the latest when the test ends).
func holdCluster(t *testing.T) (leader, follower *testNode, release func()) {
	t.Helper()
	var leaderID atomic.Pointer[string]
	ch := make(chan struct{})
	nodes := newCluster(t, 3, func(c *Config) {
		id := c.ID
		c.FSM = &gateFSM{FSM: c.FSM, before: func(cmd []byte) {
			if l := leaderID.Load(); string(cmd) == "held" && l != nil && *l == id {
				<-ch
			}
		}}
	})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release) // before the nodes shut down
	leader = waitLeader(t, nodes...)
	leaderID.Store(&leader.id)
	return leader, followersOf(leader, nodes)[0], release
}

// queued reports how many proposals wait in f's forwarder for the batch out.
func queued(f *testNode, leader *testNode) int {
	q := f.fwd.queue(leader.Addr())
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting)
}

// TestForwarderBatches: proposals a follower receives while a forward batch
// is out go to the leader together, in one request, and each gets its own
// response.
func TestForwarderBatches(t *testing.T) {
	leader, f, release := holdCluster(t)
	before := leader.Stats()
	first := make(chan error, 1)
	go func() {
		_, _, err := f.Propose(ctxTimeout(t, 20*time.Second), []byte("held"))
		first <- err
	}()
	waitFor(t, 5*time.Second, "the first batch to reach the leader", func() bool {
		return leader.Stats().ForwardBatches > before.ForwardBatches
	})
	const n = 40
	errs := make(chan error, n)
	for i := range n {
		go func() {
			cmd := fmt.Sprintf("queued-%d", i)
			_, resp, err := f.Propose(ctxTimeout(t, 20*time.Second), []byte(cmd))
			if err == nil && string(resp) != "ok:"+cmd {
				err = fmt.Errorf("%s: response %q", cmd, resp)
			}
			errs <- err
		}()
	}
	waitFor(t, 5*time.Second, "the proposals to queue behind the first batch", func() bool { return queued(f, leader) == n })
	release()
	if err := <-first; err != nil {
		t.Fatalf("first: %v", err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	after := leader.Stats()
	if b, c := after.ForwardBatches-before.ForwardBatches, after.ForwardedCommands-before.ForwardedCommands; b != 2 || c != n+1 {
		t.Errorf("leader got %d forward batches with %d commands, want 2 with %d", b, c, n+1)
	}
}

// TestForwarderWithdraws: a proposal whose caller gives up while it is still
// queued at the follower is never sent: Propose reports it unavailable, not
// of unknown outcome, and no replica ever applies it.
func TestForwarderWithdraws(t *testing.T) {
	leader, f, release := holdCluster(t)
	first := make(chan error, 1)
	go func() {
		_, _, err := f.Propose(ctxTimeout(t, 20*time.Second), []byte("held"))
		first <- err
	}()
	waitFor(t, 5*time.Second, "the first batch to reach the leader", func() bool { return leader.Stats().ForwardBatches > 0 })
	_, _, err := f.Propose(ctxTimeout(t, 300*time.Millisecond), []byte("given-up"))
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("Propose = %v, want ErrUnavailable and not ErrUnknownOutcome", err)
	}
	if q := queued(f, leader); q != 0 {
		t.Fatalf("%d proposals still queued after withdrawing", q)
	}
	release()
	if err := <-first; err != nil {
		t.Fatalf("first: %v", err)
	}
	idx := mustPropose(t, f, "after")
	for _, n := range []*testNode{leader, f} {
		if err := n.WaitApplied(ctxTimeout(t, 5*time.Second), idx); err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(n.fsm.snapshotRecords(), func(r record) bool { return r.Cmd == "given-up" }) {
			t.Errorf("%s applied the withdrawn proposal", n.id)
		}
	}
}
