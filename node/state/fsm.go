package state

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/raft"
)

// FSM applies log commands to a Store. It implements consensus.FSM. Apply,
// Snapshot and Restore are called by raft from one goroutine.
type FSM struct {
	store  *Store
	sealer Sealer
}

// NewFSM returns an FSM over store. sealer encrypts sealed kinds (Secrets)
// in snapshots and decrypts them from the log; it may be nil in tests that
// store no secrets.
func NewFSM(store *Store, sealer Sealer) *FSM {
	return &FSM{store: store, sealer: sealer}
}

// Store returns the store the FSM applies to.
func (f *FSM) Store() *Store { return f.store }

// Apply applies one command committed at raft index idx and returns the
// encoded []Result. A command is atomic: if any op fails, none is applied.
func (f *FSM) Apply(idx uint64, cmd []byte) []byte {
	if len(cmd) == 0 {
		f.markApplied(idx)
		return encodeResults([]Result{{Code: CodeInvalid, Message: "empty command"}})
	}
	if cmd[0] != cmdOps {
		f.markApplied(idx)
		if cmd[0]&cmdIgnoreBit != 0 {
			return nil
		}
		return encodeResults([]Result{{Code: CodeInvalid, Message: fmt.Sprintf("unknown command type %d", cmd[0])}})
	}
	ops, err := decodeOps(cmd)
	if err != nil {
		f.markApplied(idx)
		return encodeResults([]Result{{Code: CodeInvalid, Message: err.Error()}})
	}
	// Decode objects before taking the lock: it is the expensive part.
	objs := make([]Object, len(ops))
	for i := range ops {
		if ops[i].raw == nil {
			continue
		}
		k, ok := KindFor(ops[i].Resource)
		if !ok {
			f.markApplied(idx)
			return failAt(len(ops), i, Result{Code: CodeInvalid, Message: fmt.Sprintf("unknown resource %q", ops[i].Resource)})
		}
		if objs[i], err = unmarshalObject(k, ops[i].raw, f.sealer); err != nil {
			f.markApplied(idx)
			return failAt(len(ops), i, Result{Code: CodeInvalid, Message: err.Error()})
		}
	}

	s := f.store
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := txn{s: s, startRev: s.rev}
	results := make([]Result, len(ops))
	for i := range ops {
		res := tx.apply(&ops[i], objs[i])
		if res.Code != CodeOK {
			tx.rollback()
			s.markAppliedLocked(idx)
			return failAt(len(ops), i, res)
		}
		results[i] = res
	}
	s.publishLocked(tx.events)
	s.markAppliedLocked(idx)
	return encodeResults(results)
}

func (f *FSM) markApplied(idx uint64) {
	f.store.mu.Lock()
	f.store.markAppliedLocked(idx)
	f.store.mu.Unlock()
}

// failAt reports res for op i and CodeAborted for every other op.
func failAt(n, i int, res Result) []byte {
	rs := make([]Result, n)
	for j := range rs {
		rs[j] = Result{Code: CodeAborted, Message: "aborted: another change in the same request failed"}
	}
	rs[i] = res
	return encodeResults(rs)
}

// txn applies ops to the store and can undo them.
type txn struct {
	s        *Store
	startRev uint64
	undo     []func()
	events   []Event
}

func (t *txn) rollback() {
	for i := len(t.undo) - 1; i >= 0; i-- {
		t.undo[i]()
	}
	t.s.rev = t.startRev
}

func (t *txn) setObj(res, key string, o Object) {
	m := t.s.objs[res]
	prev, had := m[key]
	if k, ok := KindFor(res); ok && k.Unique != nil {
		t.setUnique(k, uniqueOwner(res, key), prev, o)
	}
	if o == nil {
		delete(m, key)
	} else {
		m[key] = o
	}
	t.undo = append(t.undo, func() {
		if had {
			m[key] = prev
		} else {
			delete(m, key)
		}
	})
}

// setUnique moves the unique keys of owner from prev's to next's (either may
// be nil), with undo.
func (t *txn) setUnique(k *Kind, owner string, prev, next Object) {
	idx := t.s.unique
	var old, cur []string
	if prev != nil {
		old = k.Unique(prev)
	}
	if next != nil {
		cur = k.Unique(next)
	}
	for _, key := range old {
		if idx[key] == owner && !slices.Contains(cur, key) {
			delete(idx, key)
			t.undo = append(t.undo, func() { idx[key] = owner })
		}
	}
	for _, key := range cur {
		if h, ok := idx[key]; !ok || h != owner {
			had, hadOK := idx[key]
			idx[key] = owner
			t.undo = append(t.undo, func() {
				if hadOK {
					idx[key] = had
				} else {
					delete(idx, key)
				}
			})
		}
	}
}

func (t *txn) setKV(key string, v []byte, del bool) {
	prev, had := t.s.kv[key]
	if del {
		delete(t.s.kv, key)
	} else {
		t.s.kv[key] = v
	}
	t.undo = append(t.undo, func() {
		if had {
			t.s.kv[key] = prev
		} else {
			delete(t.s.kv, key)
		}
	})
}

func rvOf(o Object) uint64 {
	v, _ := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
	return v
}

func (t *txn) apply(op *decodedOp, obj Object) Result {
	s := t.s
	switch op.Type {
	case OpCreate, OpUpdate:
		m, ok := s.objs[op.Resource]
		if !ok || obj == nil {
			return Result{Code: CodeInvalid, Message: "object missing"}
		}
		if obj.GetName() != op.Name || obj.GetNamespace() != op.Namespace {
			return Result{Code: CodeInvalid, Message: "object name does not match the request"}
		}
		key := objKey(op.Namespace, op.Name)
		prev, exists := m[key]
		evType := Added
		if op.Type == OpCreate {
			if exists {
				return Result{Code: CodeAlreadyExists, Message: fmt.Sprintf("%s %q already exists", op.Resource, op.Name)}
			}
		} else {
			if !exists {
				return Result{Code: CodeNotFound, Message: fmt.Sprintf("%s %q not found", op.Resource, op.Name)}
			}
			if op.ExpectRV != 0 && rvOf(prev) != op.ExpectRV {
				return Result{Code: CodeConflict, Message: fmt.Sprintf("the object has been modified; please apply your changes to the latest version and try again (stored %s, expected %d)", prev.GetResourceVersion(), op.ExpectRV)}
			}
			if uid := obj.GetUID(); uid != "" && uid != prev.GetUID() {
				return Result{Code: CodeConflict, Message: fmt.Sprintf("UID mismatch: stored %s, given %s", prev.GetUID(), uid)}
			}
			evType = Modified
		}
		if k, _ := KindFor(op.Resource); k != nil {
			if u, holder := s.checkUnique(k, uniqueOwner(op.Resource, key), obj); u != "" {
				field, value, _ := strings.Cut(u, "=")
				return Result{Code: CodeTaken, Message: fmt.Sprintf("%s: %s is already allocated (to %s)", field, value, holder)}
			}
		}
		s.rev++
		obj.SetResourceVersion(strconv.FormatUint(s.rev, 10))
		t.setObj(op.Resource, key, obj)
		t.events = append(t.events, Event{Type: evType, Resource: op.Resource, Object: obj, Prev: prev, RV: s.rev})
		return Result{RV: s.rev}
	case OpDelete:
		m, ok := s.objs[op.Resource]
		if !ok {
			return Result{Code: CodeInvalid, Message: fmt.Sprintf("unknown resource %q", op.Resource)}
		}
		key := objKey(op.Namespace, op.Name)
		prev, exists := m[key]
		if !exists {
			return Result{Code: CodeNotFound, Message: fmt.Sprintf("%s %q not found", op.Resource, op.Name)}
		}
		if op.ExpectRV != 0 && rvOf(prev) != op.ExpectRV {
			return Result{Code: CodeConflict, Message: fmt.Sprintf("the object has been modified (stored %s, expected %d)", prev.GetResourceVersion(), op.ExpectRV)}
		}
		if op.ExpectUID != "" && string(prev.GetUID()) != op.ExpectUID {
			return Result{Code: CodeConflict, Message: fmt.Sprintf("UID precondition failed: stored %s, expected %s", prev.GetUID(), op.ExpectUID)}
		}
		s.rev++
		gone := prev.DeepCopyObject().(Object)
		gone.SetResourceVersion(strconv.FormatUint(s.rev, 10))
		t.setObj(op.Resource, key, nil)
		t.events = append(t.events, Event{Type: Deleted, Resource: op.Resource, Object: gone, Prev: prev, RV: s.rev})
		return Result{RV: s.rev}
	case OpPutKV:
		t.setKV(op.Key, op.Value, false)
		return Result{}
	case OpCreateKV:
		if _, ok := s.kv[op.Key]; ok {
			return Result{Code: CodeAlreadyExists, Message: fmt.Sprintf("%s already exists", op.Key)}
		}
		t.setKV(op.Key, op.Value, false)
		return Result{}
	case OpDeleteKV:
		t.setKV(op.Key, nil, true)
		return Result{}
	case OpUseToken:
		return t.useToken(op)
	case OpBind:
		return t.bind(op)
	}
	return Result{Code: CodeInvalid, Message: fmt.Sprintf("unknown op type %d", op.Type)}
}

func (t *txn) useToken(op *decodedOp) Result {
	raw, ok := t.s.kv[op.Key]
	if !ok {
		return Result{Code: CodeTokenInvalid, Message: "unknown join token"}
	}
	var rec TokenRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return Result{Code: CodeTokenInvalid, Message: "corrupt token record"}
	}
	switch {
	case rec.SecretHash != op.Secret:
		return Result{Code: CodeTokenInvalid, Message: "wrong join token secret"}
	case rec.Revoked:
		return Result{Code: CodeTokenRevoked, Message: "join token has been revoked"}
	case !rec.Expires.IsZero() && op.Time >= rec.Expires.Unix():
		return Result{Code: CodeTokenExpired, Message: "join token has expired"}
	case rec.Uses > 0 && rec.Used >= rec.Uses:
		return Result{Code: CodeTokenUsedUp, Message: "join token has been used up"}
	}
	rec.Used++
	b, _ := json.Marshal(rec)
	t.setKV(op.Key, b, false)
	return Result{}
}

// UseToken returns an op that consumes one use of token id, presented with a
// secret whose hash is secretHash, at unix time now.
func UseToken(id, secretHash string, now int64) Op {
	return Op{Type: OpUseToken, Key: TokenKey(id), Secret: secretHash, Time: now}
}

// Snapshot format, version 1:
//
//	"SHOALSNAP1", uvarint rev, uvarint applied,
//	per kind: bytes key, uvarint count, count × bytes object
//	bytes "" (end of kinds), uvarint kv count, per record bytes key, bytes value
var snapMagic = []byte("SHOALSNAP1")

type snapshot struct {
	rev, applied uint64
	objs         map[string][]Object
	kv           map[string][]byte
	sealer       Sealer
}

// Snapshot captures the state. Objects are immutable, so copying the
// references under the read lock is a consistent, cheap point-in-time copy.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	s := f.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	snap := &snapshot{rev: s.rev, applied: s.applied, objs: map[string][]Object{}, kv: make(map[string][]byte, len(s.kv)), sealer: f.sealer}
	for res, m := range s.objs {
		l := make([]Object, 0, len(m))
		for _, o := range m {
			l = append(l, o)
		}
		snap.objs[res] = l
	}
	for k, v := range s.kv {
		snap.kv[k] = v
	}
	return snap, nil
}

func (sn *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := sn.write(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (sn *snapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	var b []byte
	flush := func() error {
		_, err := bw.Write(b)
		b = b[:0]
		return err
	}
	b = append(b, snapMagic...)
	b = binary.AppendUvarint(b, sn.rev)
	b = binary.AppendUvarint(b, sn.applied)
	for res, objs := range sn.objs {
		k, ok := KindFor(res)
		if !ok {
			continue
		}
		b = appendBytes(b, res)
		b = binary.AppendUvarint(b, uint64(len(objs)))
		for _, o := range objs {
			raw, err := marshalObject(k, o, sn.sealer)
			if err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
			b = appendBytes(b, raw)
			if len(b) > 1<<15 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	b = appendBytes(b, "") // the end of the kinds
	b = binary.AppendUvarint(b, uint64(len(sn.kv)))
	for k, v := range sn.kv {
		b = appendBytes(b, k)
		b = appendBytes(b, v)
		if len(b) > 1<<15 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return bw.Flush()
}

func (sn *snapshot) Release() {}

// Restore replaces the whole state with a snapshot. Open watches end with
// ErrRestored (clients re-list, as after a 410).
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("reading snapshot: %w", err)
	}
	if len(data) < len(snapMagic) || string(data[:len(snapMagic)]) != string(snapMagic) {
		return errors.New("not a shoal snapshot")
	}
	r := reader{b: data[len(snapMagic):]}
	rev, applied := r.uvarint(), r.uvarint()
	objs := map[string]map[string]Object{}
	for _, k := range Kinds {
		objs[k.Key()] = map[string]Object{}
	}
	for r.err == nil {
		res := string(r.bytes())
		if res == "" {
			break
		}
		k, ok := KindFor(res)
		n := r.uvarint()
		for i := uint64(0); i < n && r.err == nil; i++ {
			raw := r.bytes()
			if !ok || r.err != nil {
				continue // a kind this version does not know: skip it
			}
			o, err := unmarshalObject(k, raw, f.sealer)
			if err != nil {
				return fmt.Errorf("restoring snapshot: %w", err)
			}
			objs[res][objKey(o.GetNamespace(), o.GetName())] = o
		}
	}
	nkv := r.uvarint()
	kv := make(map[string][]byte, nkv)
	for i := uint64(0); i < nkv && r.err == nil; i++ {
		k := string(r.bytes())
		v := r.bytes()
		kv[k] = v
	}
	if r.err != nil {
		return fmt.Errorf("corrupt snapshot: %w", r.err)
	}

	s := f.store
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeWatchersLocked(ErrRestored)
	s.rev = rev
	s.resetLocked()
	s.objs, s.kv = objs, kv
	s.rebuildUniqueLocked()
	if applied > s.applied {
		s.markAppliedLocked(applied)
	} else {
		s.applied = applied
	}
	return nil
}
