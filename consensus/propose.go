package consensus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Propose commits cmd through raft and returns the index of the entry it was
// applied at and the FSM's response (from the leader's FSM). Any node may be
// called: a follower forwards to the leader. While there is no leader Propose
// waits and retries until ctx ends; ctx should carry a deadline.
//
// Errors:
//   - errors.Is(err, ErrUnavailable): nothing was applied; no leader was
//     reachable or quorum was lost before ctx ended, or the node is shut down.
//   - errors.Is(err, ErrUnknownOutcome) (which also matches ErrUnavailable):
//     the command reached a leader but its fate is unknown, e.g. the leader
//     changed or ctx ended while the entry was in flight. It may be applied.
//   - anything else: a definitive failure (e.g. ErrCommandTooLarge).
//
// Propose never retries a command that may already be applied. The local FSM
// may lag behind the returned index on a follower; see WaitApplied.
func (n *Node) Propose(ctx context.Context, cmd []byte) (index uint64, resp []byte, err error) {
	if len(cmd) > MaxCommandSize {
		return 0, nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrCommandTooLarge, len(cmd), MaxCommandSize)
	}
	var (
		bo   backoff
		last error
		hint string // leader address suggested by a peer
		hops int    // consecutive hints followed
	)
	for {
		if n.closed.Load() {
			return 0, nil, fmt.Errorf("%w: %w", ErrUnavailable, ErrShutdown)
		}
		if ctx.Err() != nil {
			return 0, nil, unavailable(ctx, "no raft leader committed the command", last)
		}
		changed := n.leaderChange.wait()
		var r result
		tried := ""
		if n.raft.State() == raft.Leader {
			r = n.proposeLocal(ctx, cmd, false)
		} else if tried = n.target(&hint); tried != "" {
			r = n.fwd.propose(ctx, tried, cmd)
		} else {
			r = retryResult(errNoLeader)
		}
		switch r.outcome {
		case outcomeOK:
			return r.index, r.resp, nil
		case outcomeUnknown:
			return 0, nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, r.err)
		case outcomeFailed:
			return 0, nil, r.err
		}
		last = r.err
		hint = nextHint(r.err, tried, n.advertise)
		hops = hopCount(hops, hint)
		n.pause(ctx, &bo, changed, hint != "" && hops <= maxFastHops)
	}
}

// ReadIndex returns an index that a linearizable read must wait for (with
// WaitApplied) before reading the local FSM. On the leader it confirms
// leadership with a quorum and returns the commit index; a follower asks the
// leader. Errors match ErrUnavailable when no leader answered before ctx
// ended.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	var (
		bo   backoff
		last error
		hint string
		hops int
	)
	for {
		if n.closed.Load() {
			return 0, fmt.Errorf("%w: %w", ErrUnavailable, ErrShutdown)
		}
		if ctx.Err() != nil {
			return 0, unavailable(ctx, "no raft leader confirmed a read index", last)
		}
		changed := n.leaderChange.wait()
		var r result
		tried := ""
		if n.raft.State() == raft.Leader {
			r = n.readIndexLocal(ctx)
		} else if tried = n.target(&hint); tried != "" {
			r = n.forwardReadIndex(ctx, tried)
		} else {
			r = retryResult(errNoLeader)
		}
		switch r.outcome {
		case outcomeOK:
			return r.index, nil
		case outcomeFailed:
			return 0, r.err
		}
		// Reads change nothing, so an unknown outcome is retried as well.
		last = r.err
		hint = nextHint(r.err, tried, n.advertise)
		hops = hopCount(hops, hint)
		n.pause(ctx, &bo, changed, hint != "" && hops <= maxFastHops)
	}
}

// unavailable reports giving up because ctx ended.
func unavailable(ctx context.Context, what string, last error) error {
	if last == nil {
		last = errNoLeader
	}
	return fmt.Errorf("%w: %s (last error: %v): %w", ErrUnavailable, what, last, context.Cause(ctx))
}

// nextHint returns the leader address a NotLeaderError suggests, unless it
// is the peer just tried or this node.
func nextHint(err error, tried, self string) string {
	var nle *NotLeaderError
	if errors.As(err, &nle) && nle.LeaderAddr != tried && nle.LeaderAddr != self {
		return nle.LeaderAddr
	}
	return ""
}

// maxFastHops bounds how many hints in a row are followed without a pause,
// so two peers with stale views cannot bounce a request back and forth.
const maxFastHops = 2

func hopCount(hops int, hint string) int {
	if hint == "" {
		return 0
	}
	return hops + 1
}

// target returns the address to forward to: a peer's hint (used once) or the
// leader raft knows of.
func (n *Node) target(hint *string) string {
	if h := *hint; h != "" {
		*hint = ""
		return h
	}
	addr, _ := n.raft.LeaderWithID()
	if string(addr) == n.advertise {
		return "" // stale: raft still names us but we are no longer leader
	}
	return string(addr)
}

// pause waits before the next attempt: a backoff delay, cut short when the
// leader changes, ctx ends or the node shuts down (the caller's loop head
// checks the last two). With a fresh hint it does not wait.
func (n *Node) pause(ctx context.Context, bo *backoff, changed <-chan struct{}, hinted bool) {
	d := bo.delay()
	if hinted {
		d = 0
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-changed:
	case <-ctx.Done():
	case <-n.ctx.Done():
	}
}

// proposeLocal queues cmd for the leader's batcher and waits for its result;
// forwarded marks a command a follower sent (see batcher.nudge).
func (n *Node) proposeLocal(ctx context.Context, cmd []byte, forwarded bool) result {
	p := newProposal(cmd, forwarded)
	if r, ok := n.enqueue(ctx, p); !ok {
		return r
	}
	return n.await(ctx, p)
}

// enqueue hands p to the batcher; on failure (ctx ended, shutdown) it
// returns the result: nothing was proposed.
func (n *Node) enqueue(ctx context.Context, p *proposal) (result, bool) {
	select {
	case n.batcher.queue <- p:
		return result{}, true
	case <-ctx.Done():
		return retryResult(ctx.Err()), false
	case <-n.ctx.Done():
		return retryResult(ErrShutdown), false
	}
}

// await waits for the result of an enqueued proposal. If ctx ends first,
// the proposal is withdrawn when the batcher has not taken it yet (retry);
// otherwise its outcome is unknown.
func (n *Node) await(ctx context.Context, p *proposal) result {
	var cause error
	select {
	case r := <-p.done:
		return r
	case <-ctx.Done():
		cause = ctx.Err()
	case <-n.ctx.Done():
		cause = ErrShutdown
	}
	if p.abandon() {
		return retryResult(cause)
	}
	select {
	case r := <-p.done:
		return r
	default:
		return unknownResult(cause)
	}
}

// readIndexLocal implements ReadIndex on the leader.
func (n *Node) readIndexLocal(ctx context.Context) result {
	for {
		changed := n.leaderChange.wait()
		term := n.readyTerm.Load()
		if n.raft.State() != raft.Leader {
			return retryResult(n.notLeader())
		}
		if term != 0 && term == n.raft.CurrentTerm() {
			break
		}
		// A new leader's commit index is only valid once an entry of its own
		// term has committed; monitorLeadership signals that.
		select {
		case <-changed:
		case <-ctx.Done():
			return retryResult(ctx.Err())
		case <-n.ctx.Done():
			return retryResult(ErrShutdown)
		}
	}
	term := n.readyTerm.Load()
	if err := n.waitFuture(ctx, n.raft.VerifyLeader()); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return retryResult(n.notLeader())
		}
		return retryResult(err)
	}
	index := n.lastCommandAtOrBelow(n.raft.CommitIndex())
	if n.raft.CurrentTerm() != term {
		return retryResult(n.notLeader())
	}
	return result{index: index, outcome: outcomeOK}
}

// lastCommandAtOrBelow steps back from a committed index over the barriers
// and no-ops at the tail of the log: they change no state, so a replica that
// applied the last entry before them holds the same state. Followers learn
// that an entry committed only from a later AppendEntries, and after the
// batcher's nudge the tail is nearly always a barrier whose own commit
// travels only with the idle tick (Config.CommitTimeout); a read index
// pointing at it would hold follower reads up to that long. It gives up on
// the scan (keeping index) past maxSkipScan entries or a compacted one.
func (n *Node) lastCommandAtOrBelow(index uint64) uint64 {
	var l raft.Log
	for i := index; i > 0 && index-i < maxSkipScan; i-- {
		if err := n.logs.GetLog(i, &l); err != nil {
			return index
		}
		if l.Type != raft.LogBarrier && l.Type != raft.LogNoop {
			return i
		}
	}
	return index
}

// waitFuture waits for f, ctx or Shutdown.
func (n *Node) waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.ctx.Done():
		return ErrShutdown
	}
}

// awaitFuture waits for f unless stop closes first. hashicorp/raft never
// answers a future that is still queued (in applyCh, or committed but not
// yet taken by its FSM goroutine) when it shuts down, so nothing that
// Shutdown waits for may block on a future without a way out. An abandoned
// future's goroutine ends whenever raft does answer it.
func awaitFuture(stop <-chan struct{}, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-stop:
		return ErrShutdown
	}
}

// notLeader returns a NotLeaderError naming the leader this node knows of.
func (n *Node) notLeader() *NotLeaderError {
	addr, id := n.raft.LeaderWithID()
	if string(id) == n.cfg.ID {
		return &NotLeaderError{}
	}
	return &NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr)}
}
