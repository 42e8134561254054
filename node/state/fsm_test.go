package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/state/statetest"
)

func newTestFSM(t *testing.T) (*FSM, *LocalProposer) {
	t.Helper()
	f := NewFSM(NewStore(100), statetest.Sealer{})
	return f, NewLocalProposer(f)
}

func cm(ns, name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)}, Data: data}
}

func mustPropose(t *testing.T, p Proposer, ops ...Op) []Result {
	t.Helper()
	rs, err := p.Propose(context.Background(), ops...)
	if err != nil {
		t.Fatalf("propose: %v", err)
	}
	return rs
}

// makeLog applies a raw command at idx, as raft would.
func makeLog(t *testing.T, f *FSM, idx uint64, cmd []byte) []Result {
	t.Helper()
	rs, err := DecodeResults(f.Apply(idx, cmd))
	if err != nil {
		t.Fatalf("decode results: %v", err)
	}
	return rs
}

func TestCreateGetUpdateDelete(t *testing.T) {
	f, p := newTestFSM(t)
	s := f.Store()
	rs := mustPropose(t, p, Create(cm("default", "a", map[string]string{"k": "v"})))
	if rs[0].RV != 1 {
		t.Fatalf("first RV = %d, want 1", rs[0].RV)
	}
	o, ok := s.Get("configmaps", "default", "a")
	if !ok || o.GetResourceVersion() != "1" || o.(*corev1.ConfigMap).Data["k"] != "v" {
		t.Fatalf("get after create: %v %+v", ok, o)
	}
	if o.GetObjectKind().GroupVersionKind().Kind != "ConfigMap" {
		t.Fatalf("kind not set: %v", o.GetObjectKind().GroupVersionKind())
	}
	_, err := p.Propose(context.Background(), Create(cm("default", "a", nil)))
	if !IsCode(err, CodeAlreadyExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	// Stale update → conflict; nothing changes.
	_, err = p.Propose(context.Background(), Update(cm("default", "a", map[string]string{"k": "x"}), 99))
	if !IsCode(err, CodeConflict) {
		t.Fatalf("stale update: %v", err)
	}
	rs = mustPropose(t, p, Update(cm("default", "a", map[string]string{"k": "w"}), 1))
	if rs[0].RV != 2 {
		t.Fatalf("update RV = %d", rs[0].RV)
	}
	_, err = p.Propose(context.Background(), Update(cm("default", "nope", nil), 0))
	if !IsCode(err, CodeNotFound) {
		t.Fatalf("update missing: %v", err)
	}
	_, err = p.Propose(context.Background(), Delete(mustKind(t, "configmaps"), "default", "a", 0, "other-uid"))
	if !IsCode(err, CodeConflict) {
		t.Fatalf("delete with wrong uid: %v", err)
	}
	mustPropose(t, p, Delete(mustKind(t, "configmaps"), "default", "a", 2, "uid-a"))
	if _, ok := s.Get("configmaps", "default", "a"); ok {
		t.Fatal("still there after delete")
	}
	if s.Revision() != 3 {
		t.Fatalf("revision = %d, want 3", s.Revision())
	}
}

func mustKind(t *testing.T, key string) *Kind {
	t.Helper()
	k, ok := KindFor(key)
	if !ok {
		t.Fatalf("no kind %s", key)
	}
	return k
}

func TestAtomicCommand(t *testing.T) {
	f, p := newTestFSM(t)
	mustPropose(t, p, Create(cm("default", "exists", nil)))
	rs, err := p.Propose(context.Background(),
		Create(cm("default", "new", nil)),
		PutKV("k", []byte("v")),
		Create(cm("default", "exists", nil)))
	if !IsCode(err, CodeAlreadyExists) {
		t.Fatalf("err = %v", err)
	}
	if rs[0].Code != CodeAborted || rs[1].Code != CodeAborted || rs[2].Code != CodeAlreadyExists {
		t.Fatalf("results = %+v", rs)
	}
	if _, ok := f.Store().Get("configmaps", "default", "new"); ok {
		t.Fatal("op of a failed command was applied")
	}
	if _, ok := f.Store().GetKV("k"); ok {
		t.Fatal("kv op of a failed command was applied")
	}
	if f.Store().Revision() != 1 {
		t.Fatalf("revision moved: %d", f.Store().Revision())
	}
}

func TestListSortedAndNamespaced(t *testing.T) {
	f, p := newTestFSM(t)
	// "a-b" sorts after "a" as a namespace, though "a-b/…" < "a/…" as keys.
	for _, n := range []string{"b/x", "a/y", "a-b/a", "a/x", "c/z"} {
		ns, name, _ := strings.Cut(n, "/")
		mustPropose(t, p, Create(cm(ns, name, nil)))
	}
	names := func(objs []Object) string {
		var got []string
		for _, o := range objs {
			got = append(got, o.GetNamespace()+"/"+o.GetName())
		}
		return strings.Join(got, ",")
	}
	const want = "a/x,a/y,a-b/a,b/x,c/z"
	all, rev := f.Store().List("configmaps", "")
	if names(all) != want || rev != 5 {
		t.Fatalf("list = %v rev %d, want %s rev 5", names(all), rev, want)
	}
	objs, rev, w := f.Store().ListAndWatch(WatchOptions{Resource: "configmaps"})
	w.Stop()
	if names(objs) != want || rev != 5 {
		t.Fatalf("ListAndWatch = %v rev %d, want %s rev 5", names(objs), rev, want)
	}
	ns, _ := f.Store().List("configmaps", "a")
	if names(ns) != "a/x,a/y" {
		t.Fatalf("namespace list = %s", names(ns))
	}
}

func TestWatchResumeAndGone(t *testing.T) {
	f, p := newTestFSM(t) // history of 100 events
	s := f.Store()
	objs, rev, w := s.ListAndWatch(WatchOptions{Resource: "configmaps", Namespace: "default"})
	defer w.Stop()
	if len(objs) != 0 || rev != 0 {
		t.Fatalf("initial list %d rev %d", len(objs), rev)
	}
	mustPropose(t, p, Create(cm("default", "a", nil)))
	mustPropose(t, p, Create(cm("other", "b", nil)))
	mustPropose(t, p, Update(cm("default", "a", map[string]string{"x": "y"}), 1))
	mustPropose(t, p, Delete(mustKind(t, "configmaps"), "default", "a", 0, ""))
	want := []struct {
		typ EventType
		rv  uint64
	}{{Added, 1}, {Modified, 3}, {Deleted, 4}}
	for _, wv := range want {
		select {
		case ev := <-w.Events():
			if ev.Type != wv.typ || ev.RV != wv.rv || ev.Object.GetResourceVersion() != itoa(wv.rv) {
				t.Fatalf("event %s rv %d (obj rv %s), want %s %d", ev.Type, ev.RV, ev.Object.GetResourceVersion(), wv.typ, wv.rv)
			}
		case <-time.After(time.Second):
			t.Fatal("no event")
		}
	}
	// Resume from rv 1: sees the update and the delete, not the create.
	w2, err := s.Watch(WatchOptions{Resource: "configmaps", Namespace: "default", SinceRV: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	for _, wv := range want[1:] {
		ev := <-w2.Events()
		if ev.Type != wv.typ || ev.RV != wv.rv {
			t.Fatalf("resumed event %s %d, want %s %d", ev.Type, ev.RV, wv.typ, wv.rv)
		}
	}
	// Push history past its bound: resuming from rv 1 is now Gone.
	for i := 0; i < 120; i++ {
		mustPropose(t, p, Create(cm("x", "n"+itoa(uint64(i)), nil)))
	}
	if _, err := s.Watch(WatchOptions{Resource: "configmaps", SinceRV: 1}); !errors.Is(err, ErrGone) {
		t.Fatalf("old watch err = %v, want ErrGone", err)
	}
	if _, err := s.Watch(WatchOptions{Resource: "configmaps", SinceRV: s.Revision() - 10}); err != nil {
		t.Fatalf("recent watch: %v", err)
	}
}

func TestSlowWatcherIsClosed(t *testing.T) {
	f, p := newTestFSM(t)
	w, _ := f.Store().Watch(WatchOptions{Resource: "configmaps", Buffer: 2})
	for i := 0; i < 5; i++ {
		mustPropose(t, p, Create(cm("d", "c"+itoa(uint64(i)), nil)))
	}
	n := 0
	for range w.Events() {
		n++
	}
	if n != 2 || !errors.Is(w.Err(), ErrTooSlow) {
		t.Fatalf("got %d events, err %v", n, w.Err())
	}
}

// TestWatchBacklog: a reader that falls behind by far more than the
// watcher's channel still gets every event in order while it stays within
// Buffer; the channel itself stays small (its memory would otherwise be
// taken for the whole Buffer up front).
func TestWatchBacklog(t *testing.T) {
	f, p := newTestFSM(t)
	const n = 1000
	w, _ := f.Store().Watch(WatchOptions{Resource: "configmaps", Buffer: n})
	defer w.Stop()
	if c := cap(w.Events()); c > watchChanSize {
		t.Fatalf("channel of %d events for a buffer of %d", c, n)
	}
	var rvs []uint64
	for i := 0; i < n-1; i++ { // nobody reads meanwhile
		rs := mustPropose(t, p, Create(cm("d", "c"+itoa(uint64(i)), nil)))
		rvs = append(rvs, rs[0].RV)
	}
	for i, want := range rvs {
		ev, ok := <-w.Events()
		if !ok {
			t.Fatalf("watch closed after %d events: %v", i, w.Err())
		}
		if ev.RV != want || ev.Type != Added {
			t.Fatalf("event %d: %s %d, want ADDED %d", i, ev.Type, ev.RV, want)
		}
	}
	// And it keeps going once caught up.
	rs := mustPropose(t, p, Create(cm("d", "after", nil)))
	if ev := <-w.Events(); ev.RV != rs[0].RV {
		t.Fatalf("event after the backlog: %d, want %d", ev.RV, rs[0].RV)
	}
}

func itoa(v uint64) string { b, _ := json.Marshal(v); return string(b) }

func TestTokenUse(t *testing.T) {
	_, p := newTestFSM(t)
	now := time.Unix(1_700_000_000, 0)
	put := func(r TokenRecord) {
		b, _ := json.Marshal(r)
		mustPropose(t, p, PutKV(TokenKey(r.ID), b))
	}
	put(TokenRecord{ID: "once", SecretHash: "h1", Uses: 1, Expires: now.Add(time.Hour)})
	put(TokenRecord{ID: "old", SecretHash: "h2", Expires: now.Add(-time.Second)})
	put(TokenRecord{ID: "rev", SecretHash: "h3", Revoked: true})
	cases := []struct {
		id, hash string
		want     Code
	}{
		{"nope", "h1", CodeTokenInvalid},
		{"once", "wrong", CodeTokenInvalid},
		{"once", "h1", CodeOK},
		{"once", "h1", CodeTokenUsedUp},
		{"old", "h2", CodeTokenExpired},
		{"rev", "h3", CodeTokenRevoked},
	}
	for _, c := range cases {
		rs, _ := p.Propose(context.Background(), UseToken(c.id, c.hash, now.Unix()))
		if rs[0].Code != c.want {
			t.Errorf("use %s/%s = %s, want %s", c.id, c.hash, rs[0].Code, c.want)
		}
	}
}

func TestUnknownCommandTypes(t *testing.T) {
	f, _ := newTestFSM(t)
	if resp := f.Apply(1, []byte{0x80 | 0x33, 1, 2}); resp != nil {
		t.Fatalf("ignorable unknown command answered %q", resp)
	}
	rs := makeLog(t, f, 2, []byte{0x33})
	if rs[0].Code != CodeInvalid {
		t.Fatalf("unknown command = %+v", rs)
	}
	rs = makeLog(t, f, 3, []byte{cmdOps, 5, 1})
	if rs[0].Code != CodeInvalid {
		t.Fatalf("truncated command = %+v", rs)
	}
	if f.Store().AppliedIndex() != 3 {
		t.Fatalf("applied index %d", f.Store().AppliedIndex())
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

// snapshotRestore round-trips f through a snapshot into a fresh FSM.
func snapshotRestore(t *testing.T, f *FSM) (*FSM, []byte) {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	raw := append([]byte(nil), sink.Bytes()...)
	f2 := NewFSM(NewStore(100), f.sealer)
	if err := f2.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	return f2, raw
}

func TestSnapshotRestoreReplacesAndSeals(t *testing.T) {
	f, p := newTestFSM(t)
	mustPropose(t, p, Create(cm("default", "a", map[string]string{"k": "v"})))
	mustPropose(t, p, Create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "s"}, Data: map[string][]byte{"password": []byte("hunter2-plaintext")}}))
	mustPropose(t, p, PutKV("cluster/id", []byte("c1")))
	f2, raw := snapshotRestore(t, f)
	if bytes.Contains(raw, []byte("hunter2-plaintext")) {
		t.Fatal("secret value in plaintext in the snapshot")
	}
	if !bytes.Contains(raw, []byte("SEALED:")) {
		t.Fatal("secret not sealed in the snapshot")
	}
	s2 := f2.Store()
	if o, ok := s2.Get("secrets", "default", "s"); !ok || string(o.(*corev1.Secret).Data["password"]) != "hunter2-plaintext" {
		t.Fatalf("secret after restore: %v", o)
	}
	if s2.Revision() != 2 || s2.AppliedIndex() != 3 {
		t.Fatalf("rev %d applied %d after restore", s2.Revision(), s2.AppliedIndex())
	}
	if v, _ := s2.GetKV("cluster/id"); string(v) != "c1" {
		t.Fatalf("kv after restore %q", v)
	}
	// Restore replaces: an object that exists only in the target is gone.
	p2 := NewLocalProposer(f2)
	mustPropose(t, p2, Create(cm("default", "extra", nil)))
	w, _ := f2.Store().Watch(WatchOptions{Resource: "configmaps"})
	snap, _ := f.Snapshot()
	var sink memSink
	_ = snap.Persist(&sink)
	if err := f2.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if _, ok := f2.Store().Get("configmaps", "default", "extra"); ok {
		t.Fatal("restore merged instead of replacing")
	}
	if _, open := <-w.Events(); open || !errors.Is(w.Err(), ErrRestored) {
		t.Fatalf("watch not ended by restore: %v", w.Err())
	}
}

func TestSecretSealedInLog(t *testing.T) {
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "s"}, StringData: map[string]string{"a": "plaintext-value"}}
	cmd, err := EncodeOps([]Op{Create(sec)}, statetest.Sealer{})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(cmd, []byte("plaintext-value")) {
		t.Fatal("secret in plaintext in the log command")
	}
	if _, err := EncodeOps([]Op{Create(sec)}, nil); err == nil {
		t.Fatal("encoding a secret without a key succeeded")
	}
}

func TestWaitApplied(t *testing.T) {
	f, p := newTestFSM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Store().WaitApplied(ctx, 2) }()
	mustPropose(t, p, PutKV("a", nil))
	mustPropose(t, p, PutKV("b", nil))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if err := f.Store().WaitApplied(short, 100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait for future index: %v", err)
	}
}

func FuzzApply(f *testing.F) {
	good, _ := EncodeOps([]Op{Create(cm("d", "a", map[string]string{"k": "v"})), PutKV("k", []byte("v"))}, statetest.Sealer{})
	f.Add(good)
	bind, _ := EncodeOps([]Op{Create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "d", Name: "p"}}), Bind("d", "p", "n1", 0, 1)}, statetest.Sealer{})
	f.Add(bind)
	f.Add([]byte{cmdOps})
	f.Add([]byte{0x81, 0})
	f.Fuzz(func(t *testing.T, cmd []byte) {
		fsm := NewFSM(NewStore(10), statetest.Sealer{})
		resp := fsm.Apply(1, cmd)
		if resp != nil {
			if _, err := DecodeResults(resp); err != nil {
				t.Fatalf("undecodable response: %v", err)
			}
		}
		if fsm.Store().AppliedIndex() != 1 {
			t.Fatal("index not marked applied")
		}
	})
}

// TestEncodeOpsFormat: EncodeOps writes each object in place, sized first;
// the bytes are those of the plain format (every field length-prefixed, the
// object as its protobuf Marshal), so logs written before read the same.
func TestEncodeOpsFormat(t *testing.T) {
	k, _ := KindFor("configmaps")
	ops := []Op{
		Create(cm("default", "a", map[string]string{"payload": strings.Repeat("x", 300)})),
		Update(cm("ns-2", "b", nil), 42),
		Delete(k, "default", "c", 7, "uid-c"),
		PutKV("some/key", []byte("value")),
		Create(cm("default", "d", map[string]string{"k": "v"})),
		Create(cm("default", "e", map[string]string{"k": "v"})), // more ops than the small array
	}
	ops[1].Time = -5
	got, err := EncodeOps(ops, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{cmdOps}
	want = binary.AppendUvarint(want, uint64(len(ops)))
	for _, op := range ops {
		var obj []byte
		if op.Object != nil {
			if obj, err = op.Object.(protoObject).Marshal(); err != nil {
				t.Fatal(err)
			}
		}
		want = append(want, byte(op.Type))
		for _, str := range [...]string{op.Resource, op.Namespace, op.Name, op.Key, op.ExpectUID, op.Secret} {
			want = appendBytes(want, []byte(str))
		}
		want = binary.AppendUvarint(want, op.ExpectRV)
		want = binary.AppendVarint(want, op.Time)
		want = appendBytes(want, obj)
		want = appendBytes(want, op.Value)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("EncodeOps wrote %d bytes that differ from the format's %d", len(got), len(want))
	}
	if allocs := testing.AllocsPerRun(50, func() { _, _ = EncodeOps(ops[:1], nil) }); allocs != 1 {
		t.Errorf("encoding one create: %v allocations, want 1 (the command)", allocs)
	}

	// Sealed objects still go through the sealer, and decode back.
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "s"}, Data: map[string][]byte{"a": []byte("v")}}
	cmd, err := EncodeOps([]Op{Create(sec), ops[0]}, statetest.Sealer{})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := decodeOps(cmd)
	if err != nil || len(dec) != 2 {
		t.Fatalf("decodeOps = %d ops, %v", len(dec), err)
	}
	sk, _ := KindFor("secrets")
	o, err := unmarshalObject(sk, dec[0].raw, statetest.Sealer{})
	if err != nil || string(o.(*corev1.Secret).Data["a"]) != "v" {
		t.Fatalf("sealed secret round trip: %v, %v", o, err)
	}
}
