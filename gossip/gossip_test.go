package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	testKey  = bytes.Repeat([]byte{0x5a}, KeySize)
	otherKey = bytes.Repeat([]byte{0xa5}, KeySize)
)

// Deadlines for polling. They are generous because the box is shared and
// tests run with -race; measured times are logged.
const (
	convergeTimeout = 15 * time.Second
	detectTimeout   = 20 * time.Second
)

// harness creates members on 127.0.0.1 with kernel-chosen ports (distinct per
// member) and real DefaultConfig timing. memberlist's logs go to a buffer that
// is printed only if the test fails.
type harness struct {
	t    *testing.T
	logs *lockedBuffer
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, logs: new(lockedBuffer)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gossip logs:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *harness) config(name string) Config {
	c := DefaultConfig()
	c.Name = name
	c.BindAddr = "127.0.0.1"
	c.BindPort = 0
	c.SecretKey = testKey
	c.Meta = []byte("meta-" + name)
	c.Logger = log.New(h.logs, name+" ", log.Lmicroseconds)
	return c
}

func (h *harness) start(c Config) *Gossip {
	h.t.Helper()
	g, err := New(c)
	if err != nil {
		h.t.Fatalf("New(%s): %v", c.Name, err)
	}
	h.t.Cleanup(func() { g.Shutdown() })
	return g
}

func (h *harness) node(name string) *Gossip {
	h.t.Helper()
	return h.start(h.config(name))
}

// cluster starts members with the given names, joins them all through the
// first and waits until every one sees every other alive.
func (h *harness) cluster(names ...string) []*Gossip {
	h.t.Helper()
	nodes := make([]*Gossip, len(names))
	for i, n := range names {
		nodes[i] = h.node(n)
	}
	for _, g := range nodes[1:] {
		if n, err := g.Join([]string{nodes[0].Local().Address()}); err != nil || n != 1 {
			h.t.Fatalf("%s joining %s: %d, %v", g.Local().Name, nodes[0].Local().Name, n, err)
		}
	}
	for _, g := range nodes {
		waitFor(h.t, convergeTimeout, g.Local().Name+" sees all alive", func() bool {
			return len(g.Alive()) == len(names)
		})
	}
	return nodes
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventLog records every event of one member as it arrives.
type eventLog struct {
	mu     sync.Mutex
	events []Event
	at     []time.Time
	done   chan struct{} // closed when Events is closed
}

func record(g *Gossip) *eventLog {
	l := &eventLog{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for ev := range g.Events() {
			l.mu.Lock()
			l.events = append(l.events, ev)
			l.at = append(l.at, time.Now())
			l.mu.Unlock()
		}
	}()
	return l
}

// wait returns the first event matching match (and when it arrived), polling
// until timeout.
func (l *eventLog) wait(t *testing.T, timeout time.Duration, what string, match func(Event) bool) (Event, time.Time) {
	t.Helper()
	var (
		ev Event
		at time.Time
	)
	waitFor(t, timeout, what, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for i, e := range l.events {
			if match(e) {
				ev, at = e, l.at[i]
				return true
			}
		}
		return false
	})
	return ev, at
}

func is(typ EventType, name string) func(Event) bool {
	return func(e Event) bool { return e.Type == typ && e.Member.Name == name }
}

func member(g *Gossip, name string) (Member, bool) {
	for _, m := range g.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func TestJoinMetaAndUpdate(t *testing.T) {
	h := newHarness(t)
	a, b, c := h.node("a"), h.node("b"), h.node("c")
	evA, evC := record(a), record(c)

	if _, err := b.Join([]string{a.Local().Address()}); err != nil {
		t.Fatalf("b joining a: %v", err)
	}
	if _, err := c.Join([]string{a.Local().Address()}); err != nil {
		t.Fatalf("c joining a: %v", err)
	}
	all := []*Gossip{a, b, c}
	for _, g := range all {
		waitFor(t, convergeTimeout, g.Local().Name+" sees a, b, c alive with their meta", func() bool {
			alive := g.Alive()
			if !slices.Equal(names(alive), []string{"a", "b", "c"}) {
				return false
			}
			for i, m := range alive {
				want := all[i].Local()
				if string(m.Meta) != "meta-"+m.Name || m.Address() != want.Address() || m.Since.IsZero() {
					return false
				}
			}
			return true
		})
	}
	// Joins arrive as events too, the local member's own first.
	if first, _ := evA.wait(t, convergeTimeout, "a's own join", func(Event) bool { return true }); !is(EventJoin, "a")(first) {
		t.Errorf("a's first event = %v, want its own join", first)
	}
	evA.wait(t, convergeTimeout, "a sees b join", is(EventJoin, "b"))
	evA.wait(t, convergeTimeout, "a sees c join", is(EventJoin, "c"))

	if err := b.UpdateMeta([]byte("meta-b-v2")); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	if got := string(b.Local().Meta); got != "meta-b-v2" {
		t.Errorf("b.Local().Meta = %q right after UpdateMeta", got)
	}
	for _, l := range []*eventLog{evA, evC} {
		ev, _ := l.wait(t, convergeTimeout, "update event for b", func(e Event) bool {
			return is(EventUpdate, "b")(e) && string(e.Member.Meta) == "meta-b-v2"
		})
		if ev.Member.State != StateAlive {
			t.Errorf("update event %v: state %v, want alive", ev, ev.Member.State)
		}
	}
	for _, g := range []*Gossip{a, c} {
		m, _ := member(g, "b")
		if string(m.Meta) != "meta-b-v2" || m.State != StateAlive {
			t.Errorf("%s sees b as %v meta %q after its update event", g.Local().Name, m, m.Meta)
		}
	}

	// Returned members are copies.
	m := a.Members()
	m[0].Meta[0] = 'X'
	if again, _ := member(a, m[0].Name); again.Meta[0] == 'X' {
		t.Error("modifying a returned Member changed the member table")
	}
}

func TestFailureDetectionAndLeave(t *testing.T) {
	h := newHarness(t)
	nodes := h.cluster("a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	evA, evB := record(a), record(b)

	stopped := time.Now()
	if err := c.Shutdown(); err != nil { // no Leave: a crash, as far as the others can tell
		t.Fatalf("Shutdown: %v", err)
	}
	for _, x := range []struct {
		g *Gossip
		l *eventLog
	}{{a, evA}, {b, evB}} {
		ev, at := x.l.wait(t, detectTimeout, x.g.Local().Name+" gets c's dead event", is(EventDead, "c"))
		t.Logf("%s reported c dead %v after it stopped", x.g.Local().Name, at.Sub(stopped).Round(time.Millisecond))
		if ev.Member.State != StateDead {
			t.Errorf("dead event member state = %v", ev.Member.State)
		}
		m, ok := member(x.g, "c")
		if !ok || m.State != StateDead || m.Since.Before(stopped) || m.Since.After(at) {
			t.Errorf("%s.Members() has c = %v (found %t, since %v), want dead since between %v and %v",
				x.g.Local().Name, m, ok, m.Since, stopped, at)
		}
		if slices.Contains(names(x.g.Alive()), "c") {
			t.Errorf("%s.Alive() still lists c", x.g.Local().Name)
		}
	}

	// Forget drops dead members only.
	a.Forget("b")
	a.Forget("a")
	a.Forget("c")
	if got := names(a.Members()); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("after Forget: a.Members() = %v, want [a b]", got)
	}

	if err := b.Leave(5 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	ev, _ := evA.wait(t, detectTimeout, "a gets b's leave event", is(EventLeave, "b"))
	if ev.Member.State != StateLeft {
		t.Errorf("leave event member state = %v", ev.Member.State)
	}
	if m, _ := member(a, "b"); m.State != StateLeft {
		t.Errorf("a sees b as %v after leave, want left", m)
	}
	if m := b.Local(); m.State != StateLeft {
		t.Errorf("b.Local() = %v after Leave, want left", m)
	}
	if err := b.UpdateMeta([]byte("x")); !errors.Is(err, ErrLeft) {
		t.Errorf("UpdateMeta after Leave = %v, want ErrLeft", err)
	}
	if _, err := b.Join([]string{a.Local().Address()}); !errors.Is(err, ErrLeft) {
		t.Errorf("Join after Leave = %v, want ErrLeft", err)
	}
	// A leave is not a failure: no dead event for b ever.
	for _, e := range func() []Event { evA.mu.Lock(); defer evA.mu.Unlock(); return slices.Clone(evA.events) }() {
		if is(EventDead, "b")(e) {
			t.Errorf("a got %v for a member that left", e)
		}
	}
}

func TestRestartSameNameNewAddress(t *testing.T) {
	for _, tc := range []struct {
		name         string
		waitForDeath bool // restart only after the others declared the old one dead
	}{
		{name: "immediately", waitForDeath: false},
		{name: "after declared dead", waitForDeath: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			nodes := h.cluster("a", "b", "c")
			a, b, c := nodes[0], nodes[1], nodes[2]
			evA, evB := record(a), record(b)
			old := c.Local()

			stopped := time.Now()
			c.Shutdown()
			if tc.waitForDeath {
				evA.wait(t, detectTimeout, "a declares c dead", is(EventDead, "c"))
				evB.wait(t, detectTimeout, "b declares c dead", is(EventDead, "c"))
			}
			var c2 *Gossip
			for c2 == nil || c2.Local().Port == old.Port {
				if c2 != nil {
					c2.Shutdown() // the kernel handed back the old port; try again
				}
				c2 = h.node("c")
			}
			c2.UpdateMeta([]byte("meta-c-restarted"))
			started := time.Now()
			if _, err := c2.Join([]string{a.Local().Address()}); err != nil {
				t.Fatalf("restarted c joining a: %v", err)
			}
			newAddr := c2.Local().Address()

			for _, x := range []struct {
				g *Gossip
				l *eventLog
			}{{a, evA}, {b, evB}} {
				_, at := x.l.wait(t, detectTimeout, x.g.Local().Name+" gets a join or update for c at "+newAddr, func(e Event) bool {
					return e.Member.Name == "c" && (e.Type == EventJoin || e.Type == EventUpdate) && e.Member.Address() == newAddr
				})
				t.Logf("%s sees c alive at its new address %v after the restart (%v after the old one stopped)",
					x.g.Local().Name, at.Sub(started).Round(time.Millisecond), at.Sub(stopped).Round(time.Millisecond))
				waitFor(t, convergeTimeout, x.g.Local().Name+" lists exactly a, b and c alive, c at "+newAddr, func() bool {
					ms := x.g.Members()
					if !slices.Equal(names(ms), []string{"a", "b", "c"}) {
						return false
					}
					for _, m := range ms {
						if m.State != StateAlive {
							return false
						}
					}
					return ms[2].Address() == newAddr && string(ms[2].Meta) == "meta-c-restarted"
				})
			}
			waitFor(t, convergeTimeout, "restarted c sees a and b alive", func() bool {
				return slices.Equal(names(c2.Alive()), []string{"a", "b", "c"})
			})
		})
	}
}

func TestWrongKeyCannotJoin(t *testing.T) {
	h := newHarness(t)
	nodes := h.cluster("a", "b")
	a, b := nodes[0], nodes[1]

	cfg := h.config("intruder")
	cfg.SecretKey = otherKey
	x := h.start(cfg)
	n, err := x.Join([]string{a.Local().Address(), b.Local().Address()})
	if err == nil || n != 0 {
		t.Fatalf("Join with the wrong key = %d, %v; want 0 and an error", n, err)
	}

	// A legitimate member joining afterwards is a synchronization point: once
	// everyone sees it, they have processed everything sent before it.
	d := h.node("d")
	if _, err := d.Join([]string{a.Local().Address()}); err != nil {
		t.Fatalf("d joining: %v", err)
	}
	for _, g := range []*Gossip{a, b, d} {
		waitFor(t, convergeTimeout, g.Local().Name+" sees a, b, d", func() bool {
			return slices.Equal(names(g.Alive()), []string{"a", "b", "d"})
		})
		if got := names(g.Members()); !slices.Equal(got, []string{"a", "b", "d"}) {
			t.Errorf("%s.Members() = %v, want no intruder", g.Local().Name, got)
		}
	}
	if got := names(x.Members()); !slices.Equal(got, []string{"intruder"}) {
		t.Errorf("intruder.Members() = %v, want only itself", got)
	}
}

func TestEventsNeverBlockMemberlist(t *testing.T) {
	h := newHarness(t)
	a := h.node("a") // nobody reads a.Events() until the end

	// Alone, UpdateMeta does not wait for a broadcast, so this generates
	// updates as fast as memberlist accepts them, each one a local event
	// delivered through the delegate while holding memberlist's lock.
	const updates = 5000
	done := make(chan error, 1)
	go func() {
		for i := range updates {
			if err := a.UpdateMeta(fmt.Appendf(nil, "v%d", i)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("UpdateMeta: %v", err)
		}
	case <-time.After(convergeTimeout):
		t.Fatal("UpdateMeta blocked while nobody reads events")
	}

	// Memberlist still works: a member joins, a sees it, and a's further
	// update (which now waits for its broadcast) reaches it.
	b := h.node("b")
	evB := record(b)
	if _, err := b.Join([]string{a.Local().Address()}); err != nil {
		t.Fatalf("b joining a: %v", err)
	}
	waitFor(t, convergeTimeout, "a sees b alive", func() bool { return len(a.Alive()) == 2 })
	if err := a.UpdateMeta([]byte("final")); err != nil {
		t.Fatalf("UpdateMeta with a peer: %v", err)
	}
	evB.wait(t, convergeTimeout, "b gets a's final meta", func(e Event) bool {
		return e.Member.Name == "a" && string(e.Member.Meta) == "final"
	})

	// Every event is still there, in order.
	want := []string{"join a meta-a"}
	for i := range updates {
		want = append(want, fmt.Sprintf("update a v%d", i))
	}
	want = append(want, "join b meta-b", "update a final")
	var got []string
	timeout := time.After(convergeTimeout)
	for len(got) < len(want) {
		select {
		case ev := <-a.Events():
			got = append(got, fmt.Sprintf("%s %s %s", ev.Type, ev.Member.Name, ev.Member.Meta))
		case <-timeout:
			t.Fatalf("got %d of %d events", len(got), len(want))
		}
	}
	if !slices.Equal(got, want) {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("event %d = %q, want %q", i, got[i], want[i])
			}
		}
	}
}

func TestErrors(t *testing.T) {
	h := newHarness(t)
	a := h.node("a")
	if _, err := a.Join(nil); !errors.Is(err, ErrInvalidSeed) {
		t.Errorf("Join(nil) = %v, want ErrInvalidSeed", err)
	}
	if _, err := a.Join([]string{"10.0.0.1:0"}); !errors.Is(err, ErrInvalidSeed) {
		t.Errorf("Join(bad port) = %v, want ErrInvalidSeed", err)
	}
	if err := a.UpdateMeta(make([]byte, MetaMaxSize+1)); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("UpdateMeta(too large) = %v, want ErrMetaTooLarge", err)
	}
	// A seed nobody listens on.
	dead := h.node("dead")
	addr := dead.Local().Address()
	dead.Shutdown()
	if n, err := a.Join([]string{addr}); err == nil || n != 0 {
		t.Errorf("Join(%s) with nobody there = %d, %v; want an error", addr, n, err)
	}
}

func TestShutdownIdempotentNoLeaks(t *testing.T) {
	waitNoGossipGoroutines(t) // earlier tests' members are gone
	before := runtime.NumGoroutine()

	h := newHarness(t)
	nodes := h.cluster("a", "b", "c")
	logs := make([]*eventLog, len(nodes))
	for i, g := range nodes {
		logs[i] = record(g)
	}
	if err := nodes[0].UpdateMeta([]byte("v2")); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	for i, g := range nodes {
		if err := g.Shutdown(); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if err := g.Shutdown(); err != nil {
			t.Fatalf("second Shutdown: %v", err)
		}
		select {
		case <-logs[i].done:
		case <-time.After(convergeTimeout):
			t.Fatal("Events not closed by Shutdown")
		}
		if _, err := g.Join([]string{"127.0.0.1:1"}); !errors.Is(err, ErrShutdown) {
			t.Errorf("Join after Shutdown = %v, want ErrShutdown", err)
		}
		if err := g.UpdateMeta(nil); !errors.Is(err, ErrShutdown) {
			t.Errorf("UpdateMeta after Shutdown = %v, want ErrShutdown", err)
		}
		if err := g.Leave(time.Second); !errors.Is(err, ErrShutdown) {
			t.Errorf("Leave after Shutdown = %v, want ErrShutdown", err)
		}
		if len(g.Members()) == 0 {
			t.Error("Members after Shutdown is empty; want the last known view")
		}
	}

	waitNoGossipGoroutines(t)
	deadline := time.Now().Add(convergeTimeout)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Shutdown, %d before:\n%s", runtime.NumGoroutine(), before, goroutineDump())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitNoGossipGoroutines waits until no goroutine runs memberlist or this
// package's code (timers memberlist armed may still fire briefly after
// Shutdown, then exit).
func waitNoGossipGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(convergeTimeout)
	for {
		var live []string
		for _, g := range strings.Split(goroutineDump(), "\n\n") {
			if strings.Contains(g, "hashicorp/memberlist") || strings.Contains(g, "shoal/gossip.(*Gossip)") {
				live = append(live, g)
			}
		}
		if len(live) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d gossip goroutines still running:\n%s", len(live), strings.Join(live, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func goroutineDump() string {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	return b.String()
}

// TestShutdownRacesOtherCalls runs Shutdown while Join, UpdateMeta, Leave and
// the readers are busy: nothing may panic (memberlist's Leave panics after its
// Shutdown) or block, and every call ends in success or a sentinel error.
func TestShutdownRacesOtherCalls(t *testing.T) {
	h := newHarness(t)
	nodes := h.cluster("a", "b")
	a, b := nodes[0], nodes[1]
	record(a)
	seed := b.Local().Address()

	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	call := func(f func() error) {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			if err := f(); err != nil {
				errs <- err
				if errors.Is(err, ErrShutdown) {
					return
				}
			}
		}
	}
	wg.Add(5)
	go call(func() error { _, err := a.Join([]string{seed}); return err })
	go call(func() error { return a.UpdateMeta([]byte("x")) })
	go call(func() error { a.Members(); a.Alive(); a.Local(); return nil })
	go call(func() error {
		if err := a.Leave(time.Second); err != nil {
			return err
		}
		return a.Leave(time.Second) // idempotent
	})
	go func() {
		defer wg.Done()
		time.Sleep(5 * time.Millisecond) // let the others get going; not an assertion
		if err := a.Shutdown(); err != nil {
			errs <- err
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrShutdown) && !errors.Is(err, ErrLeft) {
			t.Errorf("unexpected error: %v", err)
		}
	}
}
