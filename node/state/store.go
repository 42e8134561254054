// Package state is Shoal's replicated object store: the raft FSM that applies
// log commands to an in-memory set of Kubernetes objects and internal records,
// snapshots and restores it, and serves reads and watches from it.
//
// Every node holds a full replica. Writes are Ops, encoded with EncodeOps and
// committed through raft by a Proposer; FSM.Apply applies them atomically,
// assigns resourceVersions and notifies watchers. Reads (Get, List, Watch) take
// a read lock and never wait for raft.
//
// resourceVersion is the store revision: a counter the FSM bumps once per
// changed object, deterministically from the log (like etcd's revision), so
// every replica gives an object the same resourceVersion and two writes never
// share one even when the leader batches many into one raft entry.
//
// Objects handed out are shared and must not be modified.
package state

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrGone is returned by Watch when the requested resourceVersion is older
// than the history the store keeps (HTTP 410 in the API).
var ErrGone = errors.New("too old resource version")

// DefaultHistory is how many events the store remembers for resumed watches.
const DefaultHistory = 50000

// Store is the in-memory state. The FSM mutates it; everyone else reads.
type Store struct {
	mu sync.RWMutex
	// guarded by mu:
	objs     map[string]map[string]Object // resource key → "ns/name" → object
	kv       map[string][]byte
	unique   map[string]string // unique key → holder (unique.go)
	rev      uint64            // last assigned resourceVersion
	applied  uint64            // last applied raft index
	history  []Event
	histHead int    // index of the oldest event in history (ring)
	histLen  int    // number of events in history
	histFrom uint64 // events with RV > histFrom are all in history
	watchers map[*Watcher]struct{}
	notify   chan struct{} // closed and replaced whenever applied advances

	histCap int
}

// NewStore returns an empty store keeping historyLen events for watches
// (DefaultHistory if ≤ 0).
func NewStore(historyLen int) *Store {
	if historyLen <= 0 {
		historyLen = DefaultHistory
	}
	s := &Store{histCap: historyLen, watchers: map[*Watcher]struct{}{}, notify: make(chan struct{})}
	s.resetLocked()
	return s
}

func (s *Store) resetLocked() {
	s.objs = make(map[string]map[string]Object, len(Kinds))
	for _, k := range Kinds {
		s.objs[k.Key()] = map[string]Object{}
	}
	s.kv = map[string][]byte{}
	s.unique = map[string]string{}
	s.history = make([]Event, s.histCap)
	s.histHead, s.histLen = 0, 0
	s.histFrom = s.rev
}

func objKey(namespace, name string) string { return namespace + "/" + name }

// Get returns the object or false.
func (s *Store) Get(resource, namespace, name string) (Object, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	o, ok := s.objs[resource][objKey(namespace, name)]
	return o, ok
}

// List returns the objects of resource in namespace ("" = all), sorted by
// namespace and name, and the revision the list is consistent with.
func (s *Store) List(resource, namespace string) ([]Object, uint64) {
	s.mu.RLock()
	out, rev := s.collectLocked(resource, namespace), s.rev
	s.mu.RUnlock()
	sortObjects(out)
	return out, rev
}

// collectLocked returns the objects of resource in namespace, unordered.
func (s *Store) collectLocked(resource, namespace string) []Object {
	m := s.objs[resource]
	out := make([]Object, 0, len(m))
	for _, o := range m {
		if namespace != "" && o.GetNamespace() != namespace {
			continue
		}
		out = append(out, o)
	}
	return out
}

// sortObjects orders objs by namespace and name. It runs outside the
// store's lock, which the FSM needs to apply: sorting a few hundred thousand
// objects takes a good part of a second, and a new leader's controllers
// list every kind at once.
func sortObjects(objs []Object) {
	type keyed struct {
		ns, name string
		o        Object
	}
	ks := make([]keyed, len(objs))
	for i, o := range objs {
		ks[i] = keyed{o.GetNamespace(), o.GetName(), o}
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		if c := strings.Compare(a.ns, b.ns); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	for i := range ks {
		objs[i] = ks[i].o
	}
}

// Count returns how many objects of resource are stored.
func (s *Store) Count(resource string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.objs[resource])
}

// GetKV returns an internal record.
func (s *Store) GetKV(key string) ([]byte, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.kv[key]
	return v, ok
}

// ListKV returns the internal records whose key starts with prefix, by key.
func (s *Store) ListKV(prefix string) map[string][]byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string][]byte{}
	for k, v := range s.kv {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			out[k] = v
		}
	}
	return out
}

// Revision is the latest resourceVersion assigned.
func (s *Store) Revision() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// AppliedIndex is the last raft index applied.
func (s *Store) AppliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// WaitApplied blocks until the raft index idx has been applied or ctx ends.
func (s *Store) WaitApplied(ctx context.Context, idx uint64) error {
	for {
		s.mu.RLock()
		applied, ch := s.applied, s.notify
		s.mu.RUnlock()
		if applied >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// markAppliedLocked records idx as applied and wakes waiters.
func (s *Store) markAppliedLocked(idx uint64) {
	if idx <= s.applied {
		return
	}
	s.applied = idx
	close(s.notify)
	s.notify = make(chan struct{})
}

// EventType is the kind of change an Event reports.
type EventType string

// Event types, as in Kubernetes watch events.
const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
)

// Event is one change to one object. For Deleted, Object is the last state of
// the object with its resourceVersion set to the revision of the deletion.
type Event struct {
	Type     EventType
	Resource string
	Object   Object
	Prev     Object // the object before a Modified or Deleted event
	RV       uint64
}

// WatchOptions filters a watch.
type WatchOptions struct {
	Resource  string // required
	Namespace string // "" = all namespaces
	// SinceRV replays every matching event after this revision from history;
	// 0 means "from now". ErrGone if history no longer covers it.
	SinceRV uint64
	// Buffer is how many events a watcher may fall behind; one that falls
	// further is closed with ErrTooSlow. Default 4096. The backlog takes
	// memory only while it exists (see Watcher).
	Buffer int
}

// ErrTooSlow ends a watch whose reader fell too far behind.
var ErrTooSlow = errors.New("watcher fell too far behind")

// Watcher receives events until Stop is called or it falls behind.
//
// Events go straight into a small channel while the reader keeps up; a
// backlog beyond it waits in a slice that a goroutine of the watcher feeds
// into the channel. A channel as large as Buffer would do the same job, but
// its memory is taken up front and touched slot by slot as events pass: a
// node's few dozen watches with buffers of 16,000–65,000 events grew an
// idle agent's RSS by ~80 MiB within minutes.
type Watcher struct {
	s    *Store
	opts WatchOptions
	ch   chan Event
	done chan struct{} // closed by closeLocked: the feeder closes ch and exits

	qmu     sync.Mutex
	q       []Event       // the backlog, from head
	head    int           //
	feeding bool          // the feeder holds events it took from q
	wake    chan struct{} // cap 1: the backlog grew
	pending atomic.Int64  // events in q or held by the feeder

	// guarded by s.mu:
	closed bool
	err    error
}

// watchChanSize is the channel part of a watcher's buffer.
const watchChanSize = 64

// Events delivers the watch events; it is closed when the watch ends.
func (w *Watcher) Events() <-chan Event { return w.ch }

// TryRecv returns the next event without waiting for one to be sent:
// ok=false when every event sent so far has been received. open=false when
// the watch has ended and nothing is left (as a closed Events). It sees the
// events still in the backlog, so a reader that drains with it after a
// write has every event of that write, as it would from a channel as large
// as the buffer.
func (w *Watcher) TryRecv() (ev Event, ok, open bool) {
	for {
		select {
		case ev, open := <-w.ch:
			return ev, open, open
		default:
		}
		w.qmu.Lock()
		if w.feeding {
			// The feeder holds the next event and ch has room: it lands
			// in a moment.
			w.qmu.Unlock()
			runtime.Gosched()
			continue
		}
		if w.head < len(w.q) {
			ev := w.q[w.head]
			w.q[w.head] = Event{}
			w.head++
			w.pending.Add(-1)
			w.qmu.Unlock()
			return ev, true, true
		}
		w.qmu.Unlock()
		select {
		case <-w.done: // ended: the feeder closes ch at once
			ev, open := <-w.ch
			return ev, open, open
		default:
			return Event{}, false, true
		}
	}
}

// Err says why Events was closed (nil after Stop).
func (w *Watcher) Err() error {
	w.s.mu.RLock()
	defer w.s.mu.RUnlock()
	return w.err
}

// Consume calls handle with each event until ctx ends or the watch does,
// then stops the watch.
func (w *Watcher) Consume(ctx context.Context, handle func(Event)) {
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ch:
			if !ok {
				return
			}
			handle(ev)
		}
	}
}

// Stop ends the watch. It is safe to call more than once.
func (w *Watcher) Stop() {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.closeLocked(nil)
}

func (w *Watcher) closeLocked(err error) {
	if w.closed {
		return
	}
	w.closed, w.err = true, err
	delete(w.s.watchers, w)
	close(w.done)
}

// feed moves the backlog into ch in order until the watch is closed, then
// closes ch (after what ch already holds, readers see the end).
func (w *Watcher) feed() {
	defer close(w.ch)
	var spare []Event // the other of the two backlog slices
	for {
		w.qmu.Lock()
		if w.head == len(w.q) {
			w.feeding = false
			w.q, w.head = w.q[:0], 0
			w.qmu.Unlock()
			select {
			case <-w.wake:
				continue
			case <-w.done:
				return
			}
		}
		// Take the whole backlog at once: one lock per batch, not per event.
		batch := w.q[w.head:]
		w.q, w.head, w.feeding = spare[:0], 0, true
		w.qmu.Unlock()
		for i := range batch {
			select {
			case w.ch <- batch[i]:
				batch[i] = Event{}
				w.pending.Add(-1)
			case <-w.done:
				w.qmu.Lock()
				w.feeding = false
				w.qmu.Unlock()
				return
			}
		}
		spare = nil
		if cap(batch) <= 4*watchChanSize {
			spare = batch[:0] // a burst's large backlog is not kept
		}
	}
}

func (w *Watcher) matches(ev *Event) bool {
	if ev.Resource != w.opts.Resource {
		return false
	}
	return w.opts.Namespace == "" || ev.Object.GetNamespace() == w.opts.Namespace
}

// sendLocked delivers ev without blocking; a full buffer ends the watch.
func (w *Watcher) sendLocked(ev Event) {
	if w.closed || !w.matches(&ev) {
		return
	}
	w.qmu.Lock()
	backlog := len(w.q) - w.head
	if backlog == 0 && !w.feeding {
		select {
		case w.ch <- ev: // the reader keeps up: no hop through the feeder
			w.qmu.Unlock()
			return
		default:
		}
	}
	if int(w.pending.Load())+len(w.ch) >= w.opts.Buffer {
		w.qmu.Unlock()
		w.closeLocked(ErrTooSlow)
		return
	}
	w.q = append(w.q, ev)
	w.pending.Add(1)
	w.qmu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Watch starts a watch. With SinceRV > 0 it first replays history.
func (s *Store) Watch(opts WatchOptions) (*Watcher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watchLocked(opts)
}

func (s *Store) watchLocked(opts WatchOptions) (*Watcher, error) {
	if opts.Buffer <= 0 {
		opts.Buffer = 4096
	}
	if opts.SinceRV != 0 && opts.SinceRV < s.histFrom {
		return nil, ErrGone
	}
	var replay []Event
	if opts.SinceRV != 0 {
		for i := 0; i < s.histLen; i++ {
			ev := s.history[(s.histHead+i)%len(s.history)]
			if ev.RV > opts.SinceRV {
				replay = append(replay, ev)
			}
		}
	}
	w := &Watcher{s: s, opts: opts}
	if n := countMatching(w, replay); n > opts.Buffer {
		opts.Buffer = n + opts.Buffer
		w.opts = opts
	}
	w.ch = make(chan Event, min(opts.Buffer, watchChanSize))
	w.done, w.wake = make(chan struct{}), make(chan struct{}, 1)
	go w.feed()
	for _, ev := range replay {
		w.sendLocked(ev)
	}
	s.watchers[w] = struct{}{}
	return w, nil
}

func countMatching(w *Watcher, evs []Event) int {
	n := 0
	for i := range evs {
		if w.matches(&evs[i]) {
			n++
		}
	}
	return n
}

// ListAndWatch lists resource in namespace and starts a watch that delivers
// every later event and only those, atomically.
func (s *Store) ListAndWatch(opts WatchOptions) ([]Object, uint64, *Watcher) {
	s.mu.Lock()
	opts.SinceRV = 0
	objs, rev := s.collectLocked(opts.Resource, opts.Namespace), s.rev
	w, _ := s.watchLocked(opts) // cannot fail with SinceRV 0
	s.mu.Unlock()
	sortObjects(objs)
	return objs, rev, w
}

// publishLocked records events in history and hands them to watchers.
func (s *Store) publishLocked(evs []Event) {
	for _, ev := range evs {
		if s.histLen == len(s.history) {
			s.histFrom = s.history[s.histHead].RV
			s.history[s.histHead] = Event{}
			s.histHead = (s.histHead + 1) % len(s.history)
			s.histLen--
		}
		s.history[(s.histHead+s.histLen)%len(s.history)] = ev
		s.histLen++
		for w := range s.watchers {
			w.sendLocked(ev)
		}
	}
}

// closeWatchersLocked ends every watch (after a restore: clients re-list).
func (s *Store) closeWatchersLocked(err error) {
	for w := range s.watchers {
		w.closeLocked(err)
	}
}

// ErrRestored ends watches when a snapshot replaced the state.
var ErrRestored = errors.New("state replaced from a snapshot")

// TokenRecord is a join token as the cluster stores it: never the secret.
type TokenRecord struct {
	ID          string    `json:"id"`
	SecretHash  string    `json:"secretHash"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires"`        // zero = never
	Uses        int       `json:"uses,omitempty"` // 0 = unlimited
	Used        int       `json:"used"`           // successful joins
	Revoked     bool      `json:"revoked,omitempty"`
}

// TokenKey is the KV key of a token record.
func TokenKey(id string) string { return "tokens/" + id }
