package consensus

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// FSM is the replicated state machine supplied by the caller. Raft calls
// Apply, Snapshot and Restore from a single goroutine.
type FSM interface {
	// Apply applies one command committed at index. Its return value is sent
	// back to the proposer. Business errors are encoded in the response, never
	// a panic. Must be deterministic. cmd must not be modified; it may be
	// retained. Commands batched into one raft entry share its index.
	Apply(index uint64, cmd []byte) []byte
	// Snapshot captures the state cheaply; the expensive work belongs in
	// FSMSnapshot.Persist, which runs concurrently with Apply.
	Snapshot() (raft.FSMSnapshot, error)
	// Restore replaces the state wholesale.
	Restore(rc io.ReadCloser) error
}

// Raft entry types: the first byte of every command entry. A type with the
// ignore bit that this version does not know is skipped, so a newer leader can
// add optional entry kinds; any other unknown type is a hard error.
const (
	entryBatchV1    byte = 0x01
	entryIgnoreFlag byte = 0x80
)

// snapshotMagic starts every snapshot, followed by the big-endian applied
// index the snapshot reflects and then the caller's FSM data.
var snapshotMagic = [8]byte{'s', 'h', 'o', 'a', 'l', 's', 'n', '1'}

const snapshotHeaderLen = len(snapshotMagic) + 8

// fsmAdapter is the raft.FSM handed to raft. It decodes entries, calls the
// caller's FSM per command and tracks the index the caller's state reflects.
type fsmAdapter struct {
	fsm    FSM
	logger hclog.Logger
	// durable blocks until the entry at an index is on the local disk (see
	// leaderLog); raft may hand the leader's FSM entries before that.
	durable func(index uint64)
	// committing, if set, is told of entries that committed before they
	// are applied (see batcher.committing).
	committing func(logs []*raft.Log)

	// applied is the highest index whose effects the caller's FSM reflects:
	// every command entry at or below it has been applied.
	applied atomic.Uint64
	// changed is notified whenever applied advances.
	changed notifier
}

var _ raft.BatchingFSM = (*fsmAdapter)(nil)

func newFSMAdapter(fsm FSM, logger hclog.Logger, durable func(uint64), committing func([]*raft.Log)) *fsmAdapter {
	return &fsmAdapter{fsm: fsm, logger: logger, durable: durable, committing: committing}
}

// Apply implements raft.FSM.
func (a *fsmAdapter) Apply(l *raft.Log) any {
	return a.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch implements raft.BatchingFSM. It returns, per log, [][]byte (one
// response per command), nil (nothing to answer) or an error.
func (a *fsmAdapter) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	if len(logs) > 0 && a.durable != nil {
		a.durable(logs[len(logs)-1].Index)
	}
	if a.committing != nil {
		a.committing(logs)
	}
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			out[i] = a.applyEntry(l.Index, l.Data)
		}
		a.advance(l.Index)
	}
	a.changed.notify()
	return out
}

// applyEntry dispatches one command entry on its type byte.
func (a *fsmAdapter) applyEntry(index uint64, data []byte) any {
	if len(data) == 0 {
		a.logger.Error("empty raft entry", "index", index)
		return fmt.Errorf("%w: empty entry at index %d", ErrBadEntry, index)
	}
	switch typ := data[0]; {
	case typ == entryBatchV1:
		cmds, err := decodeBatch(data[1:])
		if err != nil {
			a.logger.Error("undecodable batch entry", "index", index, "error", err)
			return fmt.Errorf("%w: index %d: %w", ErrBadEntry, index, err)
		}
		resps := make([][]byte, len(cmds))
		for i, cmd := range cmds {
			resps[i] = a.fsm.Apply(index, cmd)
		}
		return resps
	case typ&entryIgnoreFlag != 0:
		a.logger.Debug("skipping raft entry of unknown ignorable type", "index", index, "type", typ)
		return nil
	default:
		a.logger.Error("raft entry of unknown type; this node may be too old for the cluster",
			"index", index, "type", typ)
		return fmt.Errorf("%w %#x at index %d", ErrUnknownEntryType, typ, index)
	}
}

// advance raises applied to index if it is higher.
func (a *fsmAdapter) advance(index uint64) {
	for {
		cur := a.applied.Load()
		if index <= cur || a.applied.CompareAndSwap(cur, index) {
			return
		}
	}
}

// Snapshot implements raft.FSM.
func (a *fsmAdapter) Snapshot() (raft.FSMSnapshot, error) {
	inner, err := a.fsm.Snapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{index: a.applied.Load(), inner: inner}, nil
}

// Restore implements raft.FSM.
func (a *fsmAdapter) Restore(rc io.ReadCloser) error {
	var hdr [snapshotHeaderLen]byte
	if _, err := io.ReadFull(rc, hdr[:]); err != nil {
		_ = rc.Close()
		return fmt.Errorf("reading snapshot header: %w", err)
	}
	if [8]byte(hdr[:8]) != snapshotMagic {
		_ = rc.Close()
		return fmt.Errorf("snapshot header: bad magic %q", hdr[:8])
	}
	index := binary.BigEndian.Uint64(hdr[8:])
	if err := a.fsm.Restore(rc); err != nil {
		return err
	}
	// A restore replaces state, so the applied index is replaced too.
	a.applied.Store(index)
	a.changed.notify()
	return nil
}

// fsmSnapshot prefixes the caller's snapshot with the header.
type fsmSnapshot struct {
	index uint64
	inner raft.FSMSnapshot
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	var hdr [snapshotHeaderLen]byte
	copy(hdr[:], snapshotMagic[:])
	binary.BigEndian.PutUint64(hdr[8:], s.index)
	if _, err := sink.Write(hdr[:]); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("writing snapshot header: %w", err)
	}
	return s.inner.Persist(sink)
}

func (s *fsmSnapshot) Release() { s.inner.Release() }
