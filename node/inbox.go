package node

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/shoal-dev/shoal/node/state"
)

// eventInbox gathers the store events of a few resources for one loop that
// keeps incremental state: the loop waits on Kick, then takes what came.
// Every (re)list of a watch, which may have lost events, asks the loop to
// resync from the store instead.
type eventInbox struct {
	mu     sync.Mutex
	events []state.Event
	resync bool
	kick   chan struct{}

	lists atomic.Int32 // (re)lists so far, for tests
}

// start watches each resource ("pods", or "configmaps/NAMESPACE" for one
// namespace) until ctx ends. Each watch's first list asks for a resync.
func (b *eventInbox) start(ctx context.Context, store *state.Store, resources ...string) {
	b.kick = make(chan struct{}, 1)
	for _, r := range resources {
		resource, ns, _ := strings.Cut(r, "/")
		go b.watch(ctx, store, resource, ns)
	}
}

// Kick is ready when something came.
func (b *eventInbox) Kick() <-chan struct{} { return b.kick }

func (b *eventInbox) add(ev state.Event, resync bool) {
	b.mu.Lock()
	if resync {
		b.resync = true
	} else if !b.resync {
		b.events = append(b.events, ev)
	}
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// take returns the events that came, or resync=true (and no events) when
// the loop must rebuild its state from the store.
func (b *eventInbox) take() (evs []state.Event, resync bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	evs, resync = b.events, b.resync
	b.events, b.resync = nil, false
	if resync {
		evs = nil
	}
	return evs, resync
}

func (b *eventInbox) watch(ctx context.Context, store *state.Store, resource, namespace string) {
	for ctx.Err() == nil {
		_, _, w := store.ListAndWatch(state.WatchOptions{Resource: resource, Namespace: namespace, Buffer: 1 << 16})
		b.add(state.Event{}, true)
		b.lists.Add(1)
		w.Consume(ctx, func(ev state.Event) { b.add(ev, false) })
	}
}
