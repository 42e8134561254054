package consensus

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func makeLog(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

func batchEntry(cmds ...string) []byte {
	bs := make([][]byte, len(cmds))
	for i, c := range cmds {
		bs[i] = []byte(c)
	}
	return encodeBatch(bs)
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

// snapshotRestore round-trips a's state into a fresh adapter over a fresh FSM.
func snapshotRestore(t *testing.T, a *fsmAdapter) (*fsmAdapter, *testFSM) {
	t.Helper()
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	fsm := &testFSM{}
	b := newFSMAdapter(fsm, hclog.NewNullLogger(), nil, nil)
	if err := b.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	return b, fsm
}

func TestFSMAdapterApply(t *testing.T) {
	fsm := &testFSM{}
	a := newFSMAdapter(fsm, hclog.NewNullLogger(), nil, nil)

	resps := a.ApplyBatch([]*raft.Log{
		makeLog(3, batchEntry("a", "b")),
		{Index: 4, Type: raft.LogConfiguration},
		makeLog(5, batchEntry("c")),
		makeLog(6, []byte{entryIgnoreFlag | 0x7f, 0xde, 0xad}),
		makeLog(7, []byte{0x42}),
		makeLog(8, nil),
		makeLog(9, []byte{entryBatchV1, 5, 1}), // count larger than the entry
		makeLog(10, batchEntry()),
	})
	want := []record{{3, "a"}, {3, "b"}, {5, "c"}}
	if got := fsm.snapshotRecords(); !slices.Equal(got, want) {
		t.Fatalf("FSM saw %v, want %v", got, want)
	}
	if got := resps[0].([][]byte); len(got) != 2 || string(got[0]) != "ok:a" || string(got[1]) != "ok:b" {
		t.Fatalf("batch response %q", got)
	}
	if resps[1] != nil || resps[3] != nil {
		t.Fatalf("configuration/ignorable entries answered %v, %v", resps[1], resps[3])
	}
	for i, want := range map[int]error{4: ErrUnknownEntryType, 5: ErrBadEntry, 6: ErrBadEntry} {
		if err, _ := resps[i].(error); !errors.Is(err, want) {
			t.Errorf("entry %d answered %v, want %v", i, resps[i], want)
		}
	}
	if got := resps[7].([][]byte); len(got) != 0 {
		t.Fatalf("empty batch answered %q", got)
	}
	if a.applied.Load() != 10 {
		t.Fatalf("applied = %d, want 10", a.applied.Load())
	}
	if r := a.Apply(makeLog(11, batchEntry("d"))); string(r.([][]byte)[0]) != "ok:d" {
		t.Fatalf("Apply answered %v", r)
	}

	b, restored := snapshotRestore(t, a)
	if got, want := restored.snapshotRecords(), fsm.snapshotRecords(); !slices.Equal(got, want) {
		t.Fatalf("restored %v, want %v", got, want)
	}
	if b.applied.Load() != 11 {
		t.Fatalf("restored applied index %d, want 11", b.applied.Load())
	}

	bad := newFSMAdapter(&testFSM{}, hclog.NewNullLogger(), nil, nil)
	if err := bad.Restore(io.NopCloser(bytes.NewReader([]byte("not a shoal snapshot")))); err == nil {
		t.Fatal("restored a snapshot without header")
	}
}

func TestBatchCodec(t *testing.T) {
	for _, cmds := range [][][]byte{
		{},
		{{}},
		{[]byte("x")},
		{[]byte("hello"), {}, bytes.Repeat([]byte{0xff}, 300)},
	} {
		enc := encodeBatch(cmds)
		if enc[0] != entryBatchV1 {
			t.Fatalf("type byte %#x", enc[0])
		}
		got, err := decodeBatch(enc[1:])
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(cmds) {
			t.Fatalf("decoded %d commands, want %d", len(got), len(cmds))
		}
		for i := range cmds {
			if !bytes.Equal(got[i], cmds[i]) {
				t.Fatalf("command %d = %q, want %q", i, got[i], cmds[i])
			}
		}
	}
	for _, bad := range [][]byte{nil, {0x80}, {2, 1, 'a'}, {1, 3, 'a', 'b'}, {1, 0, 'x'}} {
		if _, err := decodeBatch(bad); err == nil {
			t.Errorf("decodeBatch(%v) succeeded", bad)
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(batchEntry("a", "bc")[1:])
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		cmds, err := decodeBatch(b)
		if err != nil {
			return
		}
		again, err := decodeBatch(encodeBatch(cmds)[1:])
		if err != nil || !slices.EqualFunc(again, cmds, bytes.Equal) {
			t.Fatalf("round trip of %v: %q, %v; want %q", b, again, err, cmds)
		}
	})
}

func TestErrors(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", ErrUnknownOutcome)
	if !errors.Is(err, ErrUnknownOutcome) || !errors.Is(err, ErrUnavailable) {
		t.Fatal("ErrUnknownOutcome must match itself and ErrUnavailable")
	}
	if errors.Is(ErrUnavailable, ErrUnknownOutcome) {
		t.Fatal("ErrUnavailable must not match ErrUnknownOutcome")
	}
	var nle error = &NotLeaderError{LeaderID: "a", LeaderAddr: "127.0.0.1:7947"}
	if !errors.Is(nle, ErrNotLeader) {
		t.Fatal("NotLeaderError must match ErrNotLeader")
	}
}
