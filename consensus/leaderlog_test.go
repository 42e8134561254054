package consensus

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// gatedStore is an in-memory log store whose StoreLogs waits for the gate
// while it is shut, and records each call's indexes.
type gatedStore struct {
	*raft.InmemStore
	mu    sync.Mutex
	open  chan struct{} // closed while the gate is open
	calls [][]uint64
	err   error
}

func newGatedStore() *gatedStore {
	g := &gatedStore{InmemStore: raft.NewInmemStore(), open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gatedStore) shut() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedStore) release() {
	g.mu.Lock()
	close(g.open)
	g.mu.Unlock()
}

func (g *gatedStore) StoreLogs(logs []*raft.Log) error {
	g.mu.Lock()
	open, err := g.open, g.err
	g.mu.Unlock()
	<-open
	if err != nil {
		return err
	}
	idx := make([]uint64, len(logs))
	for i, l := range logs {
		idx[i] = l.Index
	}
	g.mu.Lock()
	g.calls = append(g.calls, idx)
	g.mu.Unlock()
	return g.InmemStore.StoreLogs(logs)
}

func (g *gatedStore) StoreLog(l *raft.Log) error { return g.StoreLogs([]*raft.Log{l}) }

func (g *gatedStore) callList() [][]uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][]uint64(nil), g.calls...)
}

func entries(from, to uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}})
	}
	return out
}

// returnsWithin fails unless f returns within d; it reports whether it did.
func returnsWithin(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return", what)
	}
}

// blocks fails if f returns within d, and returns a channel closed when it
// does.
func blocks(t *testing.T, d time.Duration, what string, f func()) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
		t.Fatalf("%s returned while the write was held", what)
	case <-time.After(d):
	}
	return done
}

func TestLeaderLogWritesBehindOnTheLeader(t *testing.T) {
	disk := newGatedStore()
	var leader atomic.Bool
	leader.Store(true)
	l := newLeaderLog(disk, leader.Load)
	defer l.close()

	// The leader's StoreLogs returns while the disk write is held, and
	// the entries are readable meanwhile.
	disk.shut()
	returnsWithin(t, 2*time.Second, "StoreLogs on the leader", func() {
		if err := l.StoreLogs(entries(1, 3)); err != nil {
			t.Error(err)
		}
	})
	var got raft.Log
	if err := l.GetLog(2, &got); err != nil || got.Index != 2 || got.Data[0] != 2 {
		t.Fatalf("GetLog(2) = %+v, %v", got, err)
	}
	if last, _ := l.LastIndex(); last != 3 {
		t.Fatalf("LastIndex = %d, want 3", last)
	}
	if first, _ := l.FirstIndex(); first != 1 {
		t.Fatalf("FirstIndex = %d, want 1", first)
	}
	if c := l.capCommit(3); c != 0 {
		t.Fatalf("capCommit(3) = %d with nothing on disk, want 0", c)
	}
	// More entries queue behind the held write.
	if err := l.StoreLogs(entries(4, 5)); err != nil {
		t.Fatal(err)
	}
	applied := blocks(t, 100*time.Millisecond, "waitDurable(2)", func() { l.waitDurable(2) })
	disk.release()
	<-applied
	l.waitDurable(5)
	if c := l.capCommit(5); c != 5 {
		t.Fatalf("capCommit(5) = %d once written, want 5", c)
	}
	for i := uint64(1); i <= 5; i++ {
		if err := disk.GetLog(i, &got); err != nil {
			t.Fatalf("entry %d not on disk: %v", i, err)
		}
	}
	// What queued behind the held write went out in one write (or with
	// it, if the writer had not taken the first batch yet).
	if calls := disk.callList(); len(calls) > 2 || calls[len(calls)-1][len(calls[len(calls)-1])-1] != 5 {
		t.Fatalf("disk writes = %v, want [[1 2 3] [4 5]] or [[1 2 3 4 5]]", calls)
	}

	// Configuration entries are written before StoreLogs returns.
	disk.shut()
	cfg := &raft.Log{Index: 6, Term: 1, Type: raft.LogConfiguration}
	stored := blocks(t, 100*time.Millisecond, "StoreLogs of a configuration", func() {
		if err := l.StoreLogs([]*raft.Log{cfg}); err != nil {
			t.Error(err)
		}
	})
	disk.release()
	<-stored

	// A follower's StoreLogs first lets queued entries reach the disk, then
	// writes its own before it returns: its acknowledgement promises that.
	disk.shut()
	if err := l.StoreLogs(entries(7, 8)); err != nil {
		t.Fatal(err)
	}
	leader.Store(false)
	stored = blocks(t, 100*time.Millisecond, "a follower's StoreLogs", func() {
		if err := l.StoreLogs(entries(9, 9)); err != nil {
			t.Error(err)
		}
	})
	disk.release()
	<-stored
	if err := disk.GetLog(9, &got); err != nil {
		t.Fatalf("follower's entry not on disk when StoreLogs returned: %v", err)
	}
	calls := disk.callList()
	if last := calls[len(calls)-2:]; last[0][0] != 7 || last[1][0] != 9 {
		t.Fatalf("disk writes end %v, want [7 8] then [9]", last)
	}
}

func TestLeaderLogDeleteRange(t *testing.T) {
	disk := newGatedStore()
	l := newLeaderLog(disk, func() bool { return true })
	defer l.close()
	if err := l.StoreLogs(entries(1, 10)); err != nil {
		t.Fatal(err)
	}
	l.waitDurable(10)

	// Compaction of the head goes ahead while newer entries are held.
	disk.shut()
	if err := l.StoreLogs(entries(11, 12)); err != nil {
		t.Fatal(err)
	}
	returnsWithin(t, 2*time.Second, "DeleteRange of the head", func() {
		if err := l.DeleteRange(1, 5); err != nil {
			t.Error(err)
		}
	})
	if first, _ := l.FirstIndex(); first != 6 {
		t.Fatalf("FirstIndex = %d after compaction, want 6", first)
	}
	// Truncating the tail waits until the held entries are on disk, so it
	// deletes them rather than racing the writer.
	deleted := blocks(t, 100*time.Millisecond, "DeleteRange of the tail", func() {
		if err := l.DeleteRange(9, 12); err != nil {
			t.Error(err)
		}
	})
	disk.release()
	<-deleted
	if last, _ := l.LastIndex(); last != 8 {
		t.Fatalf("LastIndex = %d after truncation, want 8", last)
	}
	var got raft.Log
	if err := l.GetLog(11, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(11) after truncation: %+v, %v", got, err)
	}
}

func TestLeaderLogCloseWritesQueued(t *testing.T) {
	disk := newGatedStore()
	l := newLeaderLog(disk, func() bool { return true })
	disk.shut()
	if err := l.StoreLogs(entries(1, 4)); err != nil {
		t.Fatal(err)
	}
	closed := blocks(t, 100*time.Millisecond, "close", l.close)
	disk.release()
	<-closed
	if last, _ := disk.LastIndex(); last != 4 {
		t.Fatalf("disk LastIndex = %d after close, want 4", last)
	}
	// After close, StoreLogs writes through.
	if err := l.StoreLogs(entries(5, 5)); err != nil {
		t.Fatal(err)
	}
	if last, _ := disk.LastIndex(); last != 5 {
		t.Fatalf("disk LastIndex = %d, want 5", last)
	}
}

func TestLeaderLogWriteFailureIsFatal(t *testing.T) {
	disk := newGatedStore()
	disk.err = errors.New("disk gone")
	l := newLeaderLog(disk, func() bool { return true })
	defer l.close()
	failed := make(chan error, 1)
	l.fail = func(err error) { failed <- err }
	if err := l.StoreLogs(entries(1, 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-failed:
		if err.Error() != "disk gone" {
			t.Fatalf("fail got %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a failed background write was not reported")
	}
	// A follower's write reports the error itself.
	l2 := newLeaderLog(disk, func() bool { return false })
	defer l2.close()
	if err := l2.StoreLogs(entries(1, 1)); err == nil {
		t.Fatal("a follower's failed write returned nil")
	}
}
