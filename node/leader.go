package node

import (
	"context"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/gossip"
	"github.com/shoal-dev/shoal/node/events"
)

// runLeadership starts the leader's duties when this node becomes the raft
// leader and stops them when it stops being one. "Lost and regained" is
// stop-then-start: duties always begin from the replica, never from memory.
func (n *Node) runLeadership(ctx context.Context) {
	var stopDuties func()
	defer func() {
		if stopDuties != nil {
			stopDuties()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-n.raft.LeadershipChanges():
			switch {
			case leader && stopDuties == nil:
				stopDuties = n.startDuties(ctx)
			case !leader && stopDuties != nil:
				stopDuties()
				stopDuties = nil
			}
		}
	}
}

// startDuties starts the leader's duties and returns the function that stops
// them and waits until they have stopped.
func (n *Node) startDuties(ctx context.Context) (stop func()) {
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); n.leaderDuties(lctx) }()
	go func() { defer wg.Done(); n.collectEvents(lctx) }()
	go func() {
		defer wg.Done()
		if n.waitCaughtUp(lctx) == nil {
			n.runControllers(lctx)
		}
	}()
	go func() {
		defer wg.Done()
		if n.waitCaughtUp(lctx) == nil {
			n.watchPodBindings(lctx)
		}
	}()
	n.log.Info("leader duties started")
	return func() {
		cancel()
		wg.Wait()
		n.log.Info("leader duties stopped")
	}
}

// leaderDuties runs while this node leads: membership (gossip → raft voters
// and Node conditions) and pod CIDR allocation, on every membership change
// and at least once a second.
func (n *Node) leaderDuties(ctx context.Context) {
	// Wait for everything committed by earlier leaders to be applied here.
	if err := n.waitCaughtUp(ctx); err != nil {
		return
	}
	m := newMembership(n)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		m.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-n.changed:
		case <-t.C:
		}
	}
}

// watchGossip turns gossip events into a poke for the leader. It always
// drains the events, leader or not, so gossip never backs up.
func (n *Node) watchGossip(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-n.gossip.Events():
			if !ok {
				return
			}
			n.log.Debug("gossip", "event", ev.Type, "member", ev.Member.Name)
			if ev.Type == gossip.EventJoin {
				n.savePeers()
			}
			select {
			case n.changed <- struct{}{}:
			default:
			}
		}
	}
}

// collectEvents (a leader duty) bounds the stored Events in age (an hour)
// and number, every minute.
func (n *Node) collectEvents(ctx context.Context) {
	every(ctx, time.Minute, func() {
		if d, err := events.GC(ctx, n.store, n.proposer, n.now(), events.DefaultTTL, events.DefaultMaxEvents); err != nil && ctx.Err() == nil {
			n.log.Warn("collecting old events", "err", err)
		} else if d > 0 {
			n.log.Debug("collected old events", "count", d)
		}
	})
}
