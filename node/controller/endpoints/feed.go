package endpoints

import (
	"context"
	"sync"

	"github.com/shoal-dev/shoal/node/state"
)

// feed is one resource's watch on the replica: its first list resets the
// controller's view of the resource synchronously (before any sync runs,
// as Kubernetes controllers wait for their caches), then events are
// handled in order. A broken watch (a snapshot restore, a reader that fell
// behind) lists again, resets the view and requeues every service.
type feed struct {
	store    *state.Store
	resource string
	reset    func(objs []state.Object) // replaces the view of the resource
	handle   func(ev state.Event)      // one change
	relisted func()                    // after a reset that was not the first

	w *state.Watcher
}

// open lists the resource, resets the view and starts the watch; it
// returns the objects listed.
func (f *feed) open() []state.Object {
	objs, _, w := f.store.ListAndWatch(state.WatchOptions{Resource: f.resource, Buffer: 1 << 14})
	f.w = w
	f.reset(objs)
	return objs
}

// run handles events until ctx ends.
func (f *feed) run(ctx context.Context) {
	defer func() { f.w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-f.w.Events():
			if !ok {
				if !f.reopen(ctx) {
					return
				}
				continue
			}
			f.handle(ev)
		}
	}
}

// drain handles every event already delivered, without waiting: tests
// drive the controller with it, one step at a time.
func (f *feed) drain() {
	for {
		ev, ok, open := f.w.TryRecv()
		switch {
		case !open:
			f.reopen(context.Background())
		case !ok:
			return
		default:
			f.handle(ev)
		}
	}
}

// reopen lists and watches again after a broken watch; false when ctx
// ended first.
func (f *feed) reopen(ctx context.Context) bool {
	f.w.Stop()
	if ctx.Err() != nil {
		return false
	}
	f.open()
	f.relisted()
	return true
}

// runFeeds runs every feed until ctx ends and waits for them.
func runFeeds(ctx context.Context, feeds []*feed) {
	var wg sync.WaitGroup
	for _, f := range feeds {
		wg.Add(1)
		go func() { defer wg.Done(); f.run(ctx) }()
	}
	wg.Wait()
}
