package consensus

import (
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// leaderLog is the log store under raft's LogCache. It lets the leader
// write its own copy of new entries while raft sends them to the followers.
//
// hashicorp/raft stores a leader's entries before it tells the replicators
// about them, so every write paid the leader's fsync and then a follower's,
// one after the other. etcd overlaps the two. Here StoreLogs returns at once
// on the leader and a writer goroutine puts the entries on disk (several
// StoreLogs calls in one write and one fsync when they queue up), while raft
// replicates them.
//
// raft counts the leader's copy towards the commit as soon as StoreLogs
// returns, so nothing may act on a commit before the leader's copy is on
// disk too:
//   - the FSM adapter applies entries only once they are durable here
//     (waitDurable), so the leader answers no write and reaches no read
//     index before that;
//   - commitTransport never tells followers a commit index past what is
//     durable here (capCommit), in replication and in commit pushes.
//
// Every effect anyone can see therefore comes after the entry is on the
// leader's disk and on the disks of the followers that acknowledged it (their
// StoreLogs stays synchronous: an acknowledgement promises durability), which
// is a majority of the voters, as raft requires. If the leader dies before its
// copy reaches the disk, nobody has applied the entry or been told it
// committed, and losing it is as if it never had. Configuration entries are
// written synchronously all the same: raft acts on a configuration as soon as
// it counts it committed.
//
// Whether a call may return early is decided by async, which reports whether
// this node is the leader. raft calls StoreLogs only from its main goroutine,
// which is also the only one that changes its state (to Follower before it
// stores a new leader's entries), so the answer is exact at the call.
type leaderLog struct {
	inner raft.LogStore
	async func() bool

	// store serialises StoreLogs and tail deletions (raft makes them from one
	// goroutine already; this keeps the queue's order safe regardless).
	store sync.Mutex

	mu   sync.Mutex
	cond sync.Cond // signalled when queued, written or closed; uses mu
	// queued are entries StoreLogs accepted that the writer has not taken
	// yet; writing are the ones it is writing. Both are readable through
	// GetLog, and together contiguous in index order.
	queued, writing []*raft.Log
	closed          bool
	done            chan struct{} // closed when the writer has stopped
	// fail reports a write that failed after StoreLogs had returned; the
	// default panics (see writer).
	fail func(error)
}

var _ raft.MonotonicLogStore = (*leaderLog)(nil)

func newLeaderLog(inner raft.LogStore, async func() bool) *leaderLog {
	l := &leaderLog{inner: inner, async: async, done: make(chan struct{})}
	l.cond.L = &l.mu
	l.fail = func(err error) {
		// raft already counts the entries as stored and may count them
		// committed; the node cannot carry on without them. hashicorp/raft
		// panics the same way when its log store fails it.
		panic(fmt.Sprintf("consensus: writing the raft log: %v", err))
	}
	go l.writer()
	return l
}

// writer writes what StoreLogs queued, oldest first, until close.
func (l *leaderLog) writer() {
	defer close(l.done)
	l.mu.Lock()
	for {
		for len(l.queued) == 0 && !l.closed {
			l.cond.Wait()
		}
		if len(l.queued) == 0 {
			l.mu.Unlock()
			return
		}
		l.writing, l.queued = l.queued, nil
		batch := l.writing
		l.mu.Unlock()
		err := l.inner.StoreLogs(batch)
		if err != nil {
			l.fail(err)
		}
		l.mu.Lock()
		l.writing = nil
		l.cond.Broadcast()
	}
}

// close writes what is queued and stops the writer. Call it after raft has
// shut down and before the inner store is closed.
func (l *leaderLog) close() {
	l.mu.Lock()
	l.closed = true
	l.cond.Broadcast()
	l.mu.Unlock()
	<-l.done
}

// firstUndurable returns the lowest index accepted but not yet on disk, or 0.
// l.mu must be held.
func (l *leaderLog) firstUndurable() uint64 {
	switch {
	case len(l.writing) > 0:
		return l.writing[0].Index
	case len(l.queued) > 0:
		return l.queued[0].Index
	}
	return 0
}

// lastAccepted returns the highest index accepted but not yet on disk, or
// 0. l.mu must be held.
func (l *leaderLog) lastAccepted() uint64 {
	switch {
	case len(l.queued) > 0:
		return l.queued[len(l.queued)-1].Index
	case len(l.writing) > 0:
		return l.writing[len(l.writing)-1].Index
	}
	return 0
}

// drain waits until everything accepted is on disk.
func (l *leaderLog) drain() {
	l.mu.Lock()
	for l.firstUndurable() != 0 {
		l.cond.Wait()
	}
	l.mu.Unlock()
}

// waitDurable blocks until the entry at index, if it was accepted, is on
// disk.
func (l *leaderLog) waitDurable(index uint64) {
	l.mu.Lock()
	for {
		first := l.firstUndurable()
		if first == 0 || first > index {
			break
		}
		l.cond.Wait()
	}
	l.mu.Unlock()
}

// capCommit lowers a commit index to the last entry on disk here.
func (l *leaderLog) capCommit(commit uint64) uint64 {
	l.mu.Lock()
	first := l.firstUndurable()
	l.mu.Unlock()
	if first != 0 && commit >= first {
		return first - 1
	}
	return commit
}

// StoreLogs implements raft.LogStore.
func (l *leaderLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	l.store.Lock()
	defer l.store.Unlock()
	if l.async() && !hasConfiguration(logs) {
		l.mu.Lock()
		if !l.closed {
			l.queued = append(l.queued, logs...)
			l.cond.Broadcast()
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
	}
	l.drain()
	// Nothing is queued, and only StoreLogs queues (under l.store).
	return l.inner.StoreLogs(logs)
}

// StoreLog implements raft.LogStore.
func (l *leaderLog) StoreLog(log *raft.Log) error {
	return l.StoreLogs([]*raft.Log{log})
}

func hasConfiguration(logs []*raft.Log) bool {
	for _, e := range logs {
		if e.Type == raft.LogConfiguration {
			return true
		}
	}
	return false
}

// GetLog implements raft.LogStore.
func (l *leaderLog) GetLog(index uint64, out *raft.Log) error {
	l.mu.Lock()
	for _, list := range [2][]*raft.Log{l.writing, l.queued} {
		if len(list) == 0 || index < list[0].Index || index > list[len(list)-1].Index {
			continue
		}
		if e := list[index-list[0].Index]; e.Index == index { // raft's indexes are contiguous
			*out = *e
			l.mu.Unlock()
			return nil
		}
	}
	l.mu.Unlock()
	// Entries leave writing only once the inner store has them.
	return l.inner.GetLog(index, out)
}

// LastIndex implements raft.LogStore.
func (l *leaderLog) LastIndex() (uint64, error) {
	l.mu.Lock()
	last := l.lastAccepted()
	l.mu.Unlock()
	if last != 0 {
		return last, nil
	}
	return l.inner.LastIndex()
}

// FirstIndex implements raft.LogStore.
func (l *leaderLog) FirstIndex() (uint64, error) {
	first, err := l.inner.FirstIndex()
	if err != nil || first != 0 {
		return first, err
	}
	l.mu.Lock()
	first = l.firstUndurable()
	l.mu.Unlock()
	if first != 0 {
		return first, nil
	}
	return l.inner.FirstIndex() // the writer may have stored them meanwhile
}

// DeleteRange implements raft.LogStore. Deleting the head of the log
// (compaction) goes ahead at once; a range that reaches accepted entries
// waits until they are on disk.
func (l *leaderLog) DeleteRange(lo, hi uint64) error {
	l.mu.Lock()
	first := l.firstUndurable()
	l.mu.Unlock()
	if first != 0 && hi >= first {
		l.store.Lock()
		defer l.store.Unlock()
		l.drain()
	}
	return l.inner.DeleteRange(lo, hi)
}

// IsMonotonic implements raft.MonotonicLogStore for the inner store.
func (l *leaderLog) IsMonotonic() bool {
	m, ok := l.inner.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}
