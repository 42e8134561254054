// Package gossip is Shoal's cluster membership layer: an encrypted SWIM
// gossip (hashicorp/memberlist) that tells every node which other nodes exist,
// which are alive, and each one's opaque meta (Shoal puts node addresses
// there). Gossip only proposes: the raft leader decides what membership
// changes mean. The package is a leaf — it knows nothing of Shoal's node
// packages and takes its own Config.
//
// # Identity
//
// A member is its Config.Name (the node UUID), never its address. A node that
// restarts with the same Name on a new address becomes the same member, alive
// at the new address, with an EventJoin; memberlist lets a name move only once
// the old incarnation is declared dead (plus Config.DeadNodeReclaimTime) or has
// left, and this package retries the merge with the claimant as soon as that
// holds, so the move takes about one failure-detection time instead of waiting
// for memberlist to forget the old address.
//
// # Liveness
//
// Members are StateAlive, StateDead (failed: stopped answering probes) or
// StateLeft (called Leave). Members remembers dead and left members, with the
// time of the change, until Forget or until they come back. memberlist's
// transient suspicion is not reported (see StateSuspect). Leave is told apart
// from failure by a flag the leaving member gossips first (see Leave), because
// memberlist v0.7 does not say which it was.
//
// # Concurrency
//
// All methods of *Gossip are safe for concurrent use. memberlist calls this
// package's delegates while holding its internal lock; they never block and
// never call back into memberlist: a change is recorded in the member table
// and appended to an unbounded in-memory queue, from which one goroutine
// delivers events to the Events channel in the order memberlist reported
// them. A consumer that stops reading therefore never stalls failure
// detection; the queue grows instead. Members reflects every event already
// received from Events (the table is updated before an event is queued).
//
// Shutdown stops memberlist and the delivery goroutine, drops undelivered
// events and closes the Events channel. It is idempotent and waits for every
// goroutine this package started.
package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

var (
	// ErrShutdown is returned by methods called after Shutdown.
	ErrShutdown = errors.New("gossip is shut down")
	// ErrLeft is returned by UpdateMeta and Join after Leave.
	ErrLeft = errors.New("gossip member has left")
	// ErrInvalidSeed is returned by Join for an empty list or a malformed
	// seed address.
	ErrInvalidSeed = errors.New("invalid seed")
	// ErrMetaTooLarge is returned by UpdateMeta for meta over MetaMaxSize.
	ErrMetaTooLarge = errors.New("node meta too large")
)

// conflictGiveUp is how long after its reclaim time a name conflict is
// retried before it is logged as unresolved and dropped.
const conflictGiveUp = 30 * time.Second

// Gossip is one running member. Create it with New; stop it with Shutdown.
type Gossip struct {
	name             string
	broadcastTimeout time.Duration
	reclaimAfter     time.Duration // how long a dead member's name is held by its old address
	tick             time.Duration // conflict reconciliation period
	logger           *log.Logger   // filtered; shared with memberlist
	ml               *memberlist.Memberlist

	// life is held for reading around every call into memberlist that may
	// talk to peers (Join, UpdateNode, Leave) and for writing by Shutdown, so
	// none of them runs on a shut-down memberlist (where Join would announce
	// the node alive again and Leave panics).
	life sync.RWMutex
	// metaMu serializes UpdateMeta and Leave: setting meta and broadcasting
	// it. Taken before life.
	metaMu sync.Mutex

	mu        sync.Mutex
	meta      []byte               // guarded by mu: local meta served to memberlist
	leaving   bool                 // guarded by mu: the leave flag served with meta
	members   map[string]Member    // guarded by mu: everything known, by name
	queue     []Event              // guarded by mu: events not yet handed to run
	conflicts map[string]*conflict // guarded by mu: names claimed from a new address, by name
	left      bool                 // guarded by mu: Leave was called
	closed    bool                 // guarded by mu: Shutdown started; delegates drop everything

	wake   chan struct{} // capacity 1: queue may be non-empty
	events chan Event    // closed by run on Shutdown
	stop   chan struct{} // closed by Shutdown
	wg     sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
}

// conflict is a member name that another address claimed while this node
// still held it for the old address.
type conflict struct {
	addr     string    // "ip:port" of the claimant
	first    time.Time // first conflict
	next     time.Time // earliest next merge attempt
	backoff  time.Duration
	inflight bool // a merge with addr is running
}

// New validates cfg, starts listening and returns a member that knows only
// itself; call Join to meet the cluster. The local member's own EventJoin is
// the first event.
func New(cfg Config) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gossip{
		name:             cfg.Name,
		broadcastTimeout: cfg.BroadcastTimeout,
		reclaimAfter:     cfg.DeadNodeReclaimTime,
		tick:             cfg.ProbeInterval,
		meta:             bytes.Clone(cfg.Meta),
		members:          make(map[string]Member),
		conflicts:        make(map[string]*conflict),
		wake:             make(chan struct{}, 1),
		events:           make(chan Event),
		stop:             make(chan struct{}),
	}
	if g.reclaimAfter == 0 {
		g.reclaimAfter = gossipToTheDeadTime
	}
	if cfg.Logger == nil {
		g.logger = log.New(io.Discard, "", 0)
	} else {
		g.logger = log.New(logFilter{dst: cfg.Logger, debug: cfg.LogDebug}, "", 0)
	}

	ml, err := memberlist.Create(cfg.memberlistConfig(g))
	if err != nil {
		return nil, fmt.Errorf("starting gossip on %s: %w",
			net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	g.ml = ml
	g.wg.Add(1)
	go g.run()
	return g, nil
}

// Join contacts the seeds ("ip:port", or "ip" for DefaultPort) and merges
// member lists with each one reachable. It returns how many were reached and
// an error only if none was (a seed with another SecretKey is unreachable).
func (g *Gossip) Join(seeds []string) (int, error) {
	if len(seeds) == 0 {
		return 0, fmt.Errorf("%w: no seeds", ErrInvalidSeed)
	}
	addrs := make([]string, 0, len(seeds))
	for _, s := range seeds {
		a, err := normalizeSeed(s)
		if err != nil {
			return 0, err
		}
		addrs = append(addrs, a)
	}
	g.life.RLock()
	defer g.life.RUnlock()
	if err := g.usable(); err != nil {
		return 0, err
	}
	n, err := g.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("joining %s: %w", strings.Join(addrs, ","), err)
	}
	return n, nil
}

// Members returns every member this node knows, itself included, sorted by
// name: alive ones and those it saw fail or leave, until they are forgotten
// (Forget) or come back.
func (g *Gossip) Members() []Member {
	return g.list(func(Member) bool { return true })
}

// Alive returns the members currently alive, itself included, sorted by name.
func (g *Gossip) Alive() []Member {
	return g.list(func(m Member) bool { return m.State == StateAlive })
}

func (g *Gossip) list(keep func(Member) bool) []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		if keep(m) {
			out = append(out, m.clone())
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Local returns this node as a member: its advertised address, current meta,
// and StateAlive (StateLeft after Leave).
func (g *Gossip) Local() Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.members[g.name].clone()
}

// Events returns the channel of membership changes, including this node's
// own. It is the same channel on every call; Shutdown closes it.
func (g *Gossip) Events() <-chan Event {
	return g.events
}

// UpdateMeta replaces this node's meta and broadcasts it. The new meta takes
// effect locally at once (with a local EventUpdate if it changed); UpdateMeta
// then waits up to Config.BroadcastTimeout for the broadcast to be sent and
// reports a timeout as an error (push/pull still spreads the meta later).
func (g *Gossip) UpdateMeta(meta []byte) error {
	if len(meta) > MetaMaxSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMetaTooLarge, len(meta), MetaMaxSize)
	}
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	g.life.RLock()
	defer g.life.RUnlock()
	if err := g.usable(); err != nil {
		return err
	}
	g.mu.Lock()
	g.meta = bytes.Clone(meta)
	g.mu.Unlock()
	if err := g.ml.UpdateNode(g.broadcastTimeout); err != nil {
		return fmt.Errorf("broadcasting meta update: %w", err)
	}
	return nil
}

// Forget drops a dead or left member from Members. It does nothing for an
// alive member or for the local node. A forgotten member that comes back is
// known again.
func (g *Gossip) Forget(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.members[name]
	if !ok || name == g.name || (m.State != StateDead && m.State != StateLeft) {
		return
	}
	delete(g.members, name)
}

// Leave announces that this node is leaving for good, then broadcasts the
// leave, waiting up to timeout in all (timeout <= 0: Config.BroadcastTimeout)
// for both broadcasts to be sent. Others then report EventLeave, not
// EventDead. Calling it again does nothing. Call Shutdown afterwards; the
// member cannot rejoin without a new Gossip.
//
// The announcement exists because memberlist v0.7 does not tell its event
// delegate whether a member left or failed (the Node passed to NotifyLeave
// always says alive; hashicorp/memberlist#293): the leaving member first
// gossips its meta with a "leaving" flag, and NotifyLeave for a member whose
// last meta carries the flag is a leave. A member that misses the flag reports
// the leave as EventDead — the conservative mistake.
func (g *Gossip) Leave(timeout time.Duration) error {
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	g.life.RLock()
	defer g.life.RUnlock()
	g.mu.Lock()
	switch {
	case g.closed:
		g.mu.Unlock()
		return ErrShutdown
	case g.left:
		g.mu.Unlock()
		return nil
	}
	g.left = true
	g.leaving = true
	g.mu.Unlock()

	if timeout <= 0 {
		timeout = g.broadcastTimeout
	}
	deadline := time.Now().Add(timeout)
	var errs []error
	if err := g.ml.UpdateNode(timeout); err != nil {
		errs = append(errs, fmt.Errorf("announcing leave: %w", err))
	}
	if err := g.ml.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		errs = append(errs, fmt.Errorf("leaving gossip: %w", err))
	}
	return errors.Join(errs...)
}

// Shutdown stops gossiping without a leave broadcast (others will report this
// node dead unless Leave came first), closes Events and waits for every
// goroutine started here. A Join, UpdateMeta or Leave in progress finishes
// first (each is bounded by its timeout). It is idempotent; later calls return
// the first result.
func (g *Gossip) Shutdown() error {
	g.shutdownOnce.Do(func() {
		g.life.Lock()
		g.mu.Lock()
		g.closed = true
		g.queue = nil
		g.mu.Unlock()
		err := g.ml.Shutdown()
		g.life.Unlock()

		close(g.stop)
		g.wg.Wait()
		if err != nil {
			g.shutdownErr = fmt.Errorf("shutting down gossip: %w", err)
		}
	})
	return g.shutdownErr
}

// usable reports ErrShutdown or ErrLeft.
func (g *Gossip) usable() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return ErrShutdown
	case g.left:
		return ErrLeft
	}
	return nil
}

// run delivers queued events in order and periodically retries name
// conflicts, until Shutdown.
func (g *Gossip) run() {
	defer g.wg.Done()
	defer close(g.events)
	ticker := time.NewTicker(g.tick)
	defer ticker.Stop()

	var (
		head Event
		have bool
	)
	for {
		if !have {
			head, have = g.pop()
		}
		var out chan<- Event
		if have {
			out = g.events
		}
		select {
		case out <- head:
			have = false
		case <-g.wake:
		case <-ticker.C:
			g.reconcileConflicts(time.Now())
		case <-g.stop:
			return
		}
	}
}

// pop removes the oldest queued event.
func (g *Gossip) pop() (Event, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) == 0 {
		return Event{}, false
	}
	ev := g.queue[0]
	g.queue[0] = Event{}
	g.queue = g.queue[1:]
	if len(g.queue) == 0 {
		g.queue = nil // release the backing array once drained
	}
	return ev, true
}

// enqueueLocked appends ev for delivery. g.mu must be held.
func (g *Gossip) enqueueLocked(ev Event) {
	g.queue = append(g.queue, ev)
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// reconcileConflicts merges with each claimant whose name the old address no
// longer holds (dead for reclaimAfter, or left): memberlist then accepts the
// claimant's alive record and reports it as a join at its new address. Without
// this the move would wait for the claimant's next push/pull.
func (g *Gossip) reconcileConflicts(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, c := range g.conflicts {
		m, known := g.members[name]
		switch {
		case known && m.State == StateAlive && m.Address() == c.addr:
			delete(g.conflicts, name) // already resolved
		case now.Sub(c.first) > g.reclaimAfter+conflictGiveUp:
			delete(g.conflicts, name)
			g.logf("WARN", "giving up on name conflict for %q claimed by %s: known member is %v (known=%t)", name, c.addr, m, known)
		case c.inflight || now.Before(c.next):
		case !known || m.State == StateLeft || (m.State == StateDead && now.Sub(m.Since) > g.reclaimAfter):
			c.inflight = true
			g.wg.Add(1) // run holds a count, so this never races with Wait from zero
			go g.mergeWith(name, c.addr)
		}
	}
}

// mergeWith runs a push/pull with addr on behalf of the conflict on name.
func (g *Gossip) mergeWith(name, addr string) {
	defer g.wg.Done()
	if err := g.mergeWithOnce(addr); err != nil {
		g.logf("WARN", "merging with %s, new address of %q: %v", addr, name, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.conflicts[name]; c != nil {
		// Still unresolved (the merge failed, or memberlist has not yet
		// released the name): try again later.
		c.inflight = false
		c.backoff = min(max(2*c.backoff, g.tick), 5*time.Second)
		c.next = time.Now().Add(c.backoff)
	}
}

func (g *Gossip) mergeWithOnce(addr string) error {
	g.life.RLock()
	defer g.life.RUnlock()
	if err := g.usable(); err != nil {
		return err
	}
	_, err := g.ml.Join([]string{addr})
	return err
}

func (g *Gossip) logf(level, format string, args ...any) {
	g.logger.Printf("["+level+"] gossip: "+format, args...)
}

// normalizeSeed turns "ip", "[ipv6]", "host" or any of these with ":port"
// into "host:port", defaulting the port to DefaultPort.
func normalizeSeed(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("%w: empty address", ErrInvalidSeed)
	}
	if host, port, err := net.SplitHostPort(s); err == nil {
		p, perr := strconv.ParseUint(port, 10, 16)
		if host == "" || perr != nil || p == 0 {
			return "", fmt.Errorf("%w: %q", ErrInvalidSeed, s)
		}
		return net.JoinHostPort(host, port), nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if host == "" || strings.ContainsAny(host, "[]/ ") {
		return "", fmt.Errorf("%w: %q", ErrInvalidSeed, s)
	}
	if strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return "", fmt.Errorf("%w: %q", ErrInvalidSeed, s)
	}
	return net.JoinHostPort(host, strconv.Itoa(DefaultPort)), nil
}

// logFilter passes memberlist's and this package's log lines to the caller's
// logger, dropping "[DEBUG]" lines unless debug is set.
type logFilter struct {
	dst   *log.Logger
	debug bool
}

func (f logFilter) Write(p []byte) (int, error) {
	if f.debug || !bytes.HasPrefix(p, []byte("[DEBUG]")) {
		f.dst.Print(string(p))
	}
	return len(p), nil
}
