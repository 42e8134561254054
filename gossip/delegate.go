package gossip

import (
	"bytes"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate is Gossip seen by memberlist. Its methods run on memberlist's
// goroutines, mostly with memberlist's node lock held: they only take g.mu,
// never block and never call into memberlist.
type delegate Gossip

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

// NodeMeta serves the local meta with its header (Validate and UpdateMeta
// keep it within limit).
func (d *delegate) NodeMeta(limit int) []byte {
	g := (*Gossip)(d)
	g.mu.Lock()
	defer g.mu.Unlock()
	return encodeMeta(g.meta, g.leaving)
}

// User messages and state are unused: Shoal's replicated state travels over
// raft, not gossip.
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *delegate) NotifyJoin(n *memberlist.Node) {
	(*Gossip)(d).observe(EventJoin, n)
}

func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	(*Gossip)(d).observe(EventUpdate, n)
}

// NotifyLeave reports a leave if the member's last meta announced one (see
// Leave; n.State cannot be trusted in memberlist v0.7), else a failure.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	t := EventDead
	if _, leaving := decodeMeta(n.Meta); leaving {
		t = EventLeave
	}
	(*Gossip)(d).observe(t, n)
}

// NotifyConflict is called when a member's name is claimed from another
// address while this node still holds it for the known one. If the claimant
// is the same node restarted elsewhere, the known address will be declared
// dead soon; reconcileConflicts then merges with the claimant.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	g := (*Gossip)(d)
	claimant := net.JoinHostPort(other.Addr.String(), strconv.Itoa(int(other.Port)))
	known := net.JoinHostPort(existing.Addr.String(), strconv.Itoa(int(existing.Port)))
	if existing.Name == g.name {
		// Usually a record of this node's previous run at its old
		// address; memberlist refutes it once that address is suspected.
		// Otherwise two live nodes share a Name, which is a deployment bug.
		g.logf("WARN", "local name %q also claimed by %s (stale record of an earlier run, or a duplicate Name)", g.name, claimant)
		return
	}
	g.logf("WARN", "name conflict: %q known at %s, claimed by %s; will merge once %s is declared dead",
		existing.Name, known, claimant, known)

	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	c := g.conflicts[existing.Name]
	if c == nil {
		c = &conflict{first: now, next: now}
		g.conflicts[existing.Name] = c
	}
	c.addr = claimant
}

// observe records a memberlist notification in the member table and queues
// the matching event.
func (g *Gossip) observe(t EventType, n *memberlist.Node) {
	now := time.Now()
	meta, _ := decodeMeta(n.Meta)
	m := Member{
		Name:  n.Name,
		Addr:  append(net.IP(nil), n.Addr...),
		Port:  n.Port,
		Meta:  bytes.Clone(meta),
		Since: now,
	}
	switch t {
	case EventJoin, EventUpdate:
		m.State = StateAlive
	case EventLeave:
		m.State = StateLeft
	case EventDead:
		m.State = StateDead
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	prev, known := g.members[m.Name]
	if t == EventUpdate && known && prev.State == StateAlive {
		if bytes.Equal(prev.Meta, m.Meta) && prev.Address() == m.Address() {
			return // only the header changed: a leave announcement
		}
		m.Since = prev.Since // an update changes meta, not state
	}
	g.members[m.Name] = m
	if c := g.conflicts[m.Name]; c != nil && m.State == StateAlive && m.Address() == c.addr {
		delete(g.conflicts, m.Name)
	}
	g.enqueueLocked(Event{Type: t, Member: m.clone()})
}
