// Package controller holds what the leader's reconcilers share: the
// dependencies they are given (Context), keyed work queues (client-go's
// workqueue: deduplicated keys, delayed and rate-limited retries), feeding a
// queue from the replica's watch, and running sync workers. Each controller
// lives in a subpackage (node/controller/replicaset, …) as a type with
// Run(ctx) and sync(ctx, key), and is tested against an in-memory store
// with a LocalProposer and a fake clock.
//
// Controllers run only on the raft leader and only while it leads; they
// read the local replica (which the leader keeps current) and write through
// the Proposer with optimistic concurrency, so a new leader picks up
// exactly where the old one stopped: all their state is in the store.
package controller

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/state"
)

// Context is what every controller is given.
type Context struct {
	Store    *state.Store
	Proposer state.Proposer
	// Events records what controllers decide (nil: nothing).
	Events *events.Recorder
	// Clock is the time source (a fake in tests).
	Clock clock.WithTicker
	// NewUID names new objects (default: random UUIDs).
	NewUID func() types.UID
	Log    *slog.Logger
}

// WithDefaults fills the optional fields.
func (c Context) WithDefaults() Context {
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.NewUID == nil {
		c.NewUID = func() types.UID { return types.UID(uuid.NewString()) }
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Now is the controller clock's time.
func (c Context) Now() time.Time { return c.Clock.Now() }

// Queue is a keyed, deduplicating, rate-limited work queue.
type Queue = workqueue.TypedRateLimitingInterface[string]

// NewQueue returns a queue named for metrics and logs, with client-go's
// default per-key exponential back-off for retries, on clk.
func NewQueue(name string, clk clock.WithTicker) Queue {
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: name, Clock: clk},
	)
}

// Key is the queue key of a namespaced object: "namespace/name".
func Key(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// SplitKey undoes Key.
func SplitKey(key string) (namespace, name string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}

// Watch calls handle for every object of resource in the replica now
// (as Added events) and for every later change, until ctx ends. When the
// watch breaks (a snapshot restore, a slow reader) it lists again, so
// handle sees every object at least once more: handlers must be idempotent
// (they normally only enqueue keys).
func Watch(ctx context.Context, store *state.Store, resource string, handle func(state.Event)) {
	for ctx.Err() == nil {
		objs, rv, w := store.ListAndWatch(state.WatchOptions{Resource: resource, Buffer: 1 << 14})
		for _, o := range objs {
			handle(state.Event{Type: state.Added, Resource: resource, Object: o, RV: rv})
		}
		w.Consume(ctx, handle)
	}
}

// Run runs workers goroutines that take keys from q and call sync, until
// ctx ends; then it shuts q down and waits for them. A sync error requeues
// the key with back-off; success forgets its back-off.
func Run(ctx context.Context, q Queue, workers int, log *slog.Logger, syncKey func(ctx context.Context, key string) error) {
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				key, quit := q.Get()
				if quit {
					return
				}
				err := syncKey(ctx, key)
				switch {
				case err == nil:
					q.Forget(key)
				case ctx.Err() != nil:
				default:
					if log != nil {
						log.Debug("controller: sync failed, retrying", "queue", key, "err", err)
					}
					q.AddRateLimited(key)
				}
				q.Done(key)
			}
		}()
	}
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
}

// EnqueueOwners routes a watch event on a dependent (a pod) to the owners
// it matters to: the controller of kind gvk that owns it, before and after
// the change, and — for a live orphan — the owners adopt returns (those
// whose selector matches it and that may adopt it). add receives owner
// keys.
func EnqueueOwners(ev state.Event, gvk schema.GroupVersionKind, add func(key string), adopt func(obj metav1.Object) []string) {
	for _, o := range []state.Object{ev.Prev, ev.Object} {
		if o == nil {
			continue
		}
		if ref := metav1.GetControllerOfNoCopy(o); ref != nil {
			if ref.Kind == gvk.Kind && ref.APIVersion == gvk.GroupVersion().String() {
				add(Key(o.GetNamespace(), ref.Name))
			}
			continue
		}
		if ev.Type == state.Deleted || o.GetDeletionTimestamp() != nil || adopt == nil {
			continue
		}
		for _, k := range adopt(o) {
			add(k)
		}
	}
}
