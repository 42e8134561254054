package events

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

func newStore(t *testing.T) (*state.Store, *state.LocalProposer) {
	t.Helper()
	store := state.NewStore(0)
	return store, state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
}

func events(store *state.Store) []*corev1.Event {
	objs, _ := store.List("events", "")
	out := make([]*corev1.Event, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.Event))
	}
	return out
}

func waitEvents(t *testing.T, store *state.Store, cond func([]*corev1.Event) bool) []*corev1.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := events(store)
		if cond(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("events never matched: %+v", evs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRecordAndAggregate(t *testing.T) {
	store, p := newStore(t)
	now := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	clock := now
	r := New(Config{Proposer: p, Component: "kubelet", Host: "n1", Now: func() time.Time { return clock }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "u1"}}
	r.EventfPath(pod, "Pod", "spec.containers{main}", corev1.EventTypeNormal, "Started", "Started container %s", "main")
	evs := waitEvents(t, store, func(e []*corev1.Event) bool { return len(e) == 1 })
	ev := evs[0]
	if ev.InvolvedObject.Name != "web" || ev.InvolvedObject.UID != "u1" || ev.InvolvedObject.FieldPath != "spec.containers{main}" ||
		ev.Reason != "Started" || ev.Message != "Started container main" || ev.Count != 1 || ev.Source.Host != "n1" || ev.Namespace != "default" {
		t.Fatalf("event %+v", ev)
	}
	// The same event again is counted into the stored one.
	clock = now.Add(time.Minute)
	r.EventfPath(pod, "Pod", "spec.containers{main}", corev1.EventTypeNormal, "Started", "Started container %s", "main")
	evs = waitEvents(t, store, func(e []*corev1.Event) bool { return len(e) == 1 && e[0].Count == 2 })
	if !evs[0].LastTimestamp.Time.Equal(clock) || !evs[0].FirstTimestamp.Time.Equal(now) {
		t.Fatalf("aggregated event times %v %v", evs[0].FirstTimestamp, evs[0].LastTimestamp)
	}
	// A different message is a new event; so is the same one after the window.
	r.Eventf(pod, "Pod", corev1.EventTypeWarning, "BackOff", "Back-off")
	waitEvents(t, store, func(e []*corev1.Event) bool { return len(e) == 2 })
	clock = now.Add(time.Hour)
	r.EventfPath(pod, "Pod", "spec.containers{main}", corev1.EventTypeNormal, "Started", "Started container %s", "main")
	waitEvents(t, store, func(e []*corev1.Event) bool { return len(e) == 3 })

	// GC: the first two are older than the TTL from now+2h... keep the newest.
	n, err := GC(ctx, store, p, now.Add(90*time.Minute), time.Hour, 100)
	if err != nil || n != 2 {
		t.Fatalf("GC deleted %d (%v), want 2", n, err)
	}
	if evs := events(store); len(evs) != 1 || !evs[0].LastTimestamp.Time.Equal(clock) {
		t.Fatalf("after GC: %+v", evs)
	}
	// An aggregated event whose stored copy was collected is stored anew.
	clock = clock.Add(time.Minute)
	_, _ = GC(ctx, store, p, clock.Add(2*time.Hour), time.Hour, 100)
	r.EventfPath(pod, "Pod", "spec.containers{main}", corev1.EventTypeNormal, "Started", "Started container %s", "main")
	waitEvents(t, store, func(e []*corev1.Event) bool { return len(e) == 1 && e[0].Count == 1 })
}

func TestGCCapsCount(t *testing.T) {
	store, p := newStore(t)
	now := time.Now()
	for i := range 10 {
		ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e" + string(rune('a'+i)), Namespace: "default"},
			LastTimestamp: metav1.NewTime(now.Add(time.Duration(i) * time.Second))}
		if _, err := p.Propose(context.Background(), state.Create(ev)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := GC(context.Background(), store, p, now, time.Hour, 4)
	if err != nil || n != 6 {
		t.Fatalf("GC deleted %d (%v), want 6", n, err)
	}
	for _, ev := range events(store) {
		if ev.Name < "eg" {
			t.Errorf("kept an old event %s", ev.Name)
		}
	}
}

func TestQueueFullDrops(t *testing.T) {
	_, p := newStore(t)
	r := New(Config{Proposer: p, Queue: 2})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "default"}}
	for range 5 {
		r.Eventf(pod, "Pod", corev1.EventTypeNormal, "R", "m")
	}
	if r.Dropped() != 3 {
		t.Fatalf("dropped %d, want 3", r.Dropped())
	}
	var nilRec *Recorder
	nilRec.Eventf(pod, "Pod", corev1.EventTypeNormal, "R", "m") // no-op
}
