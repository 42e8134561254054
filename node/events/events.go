// Package events records Kubernetes Events (what `kubectl describe` shows)
// for the agent and the leader's controllers: off the caller's path (a
// bounded queue drained by Run), aggregated like the Kubernetes event
// recorder (the same event again within ten minutes bumps the count of the
// stored one instead of adding another), and bounded in number and age by
// GC, which the leader runs.
package events

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/state"
)

// Defaults.
const (
	DefaultQueue     = 4096
	DefaultTTL       = time.Hour
	DefaultMaxEvents = 20000
	// aggregateWindow is how long an event is counted into the stored one
	// instead of being stored again.
	aggregateWindow = 10 * time.Minute
	// messageLimit bounds an event's message, as Kubernetes does (1 KiB).
	messageLimit = 1024
)

var eventKind, _ = state.KindFor("events")

// Config configures a Recorder.
type Config struct {
	Proposer state.Proposer
	// Component and Host fill the events' source (e.g. "kubelet" and the
	// node name; "default-scheduler").
	Component, Host string
	Queue           int // default DefaultQueue
	Now             func() time.Time
	Log             *slog.Logger
}

// Recorder records events. Create it with New, start Run; Eventf never
// blocks.
type Recorder struct {
	cfg     Config
	queue   chan *corev1.Event
	dropped atomic.Uint64
	seq     atomic.Uint64

	mu   sync.Mutex
	seen map[string]*seenEvent // aggregation key → the stored event; guarded by mu
}

type seenEvent struct {
	name, namespace string
	count           int32
	first, last     time.Time
}

// New returns a Recorder; nothing is written until Run runs.
func New(cfg Config) *Recorder {
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{cfg: cfg, queue: make(chan *corev1.Event, cfg.Queue), seen: map[string]*seenEvent{}}
}

// Dropped is how many events were dropped because the queue was full.
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

// Eventf records an event about obj (any API object with ObjectMeta).
// eventType is corev1.EventTypeNormal or corev1.EventTypeWarning.
func (r *Recorder) Eventf(obj metav1.Object, kind, eventType, reason, format string, args ...any) {
	r.EventfPath(obj, kind, "", eventType, reason, format, args...)
}

// EventfPath is Eventf for a part of obj, e.g. fieldPath
// "spec.containers{main}".
func (r *Recorder) EventfPath(obj metav1.Object, kind, fieldPath, eventType, reason, format string, args ...any) {
	if r == nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if len(msg) > messageLimit {
		msg = msg[:messageLimit-3] + "..."
	}
	now := metav1.NewTime(r.cfg.Now().Truncate(time.Second))
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: eventNamespace(obj)},
		InvolvedObject: corev1.ObjectReference{
			Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: obj.GetUID(),
			APIVersion: apiVersionOf(kind), ResourceVersion: obj.GetResourceVersion(), FieldPath: fieldPath,
		},
		Reason: reason, Message: msg, Type: eventType,
		Source:              corev1.EventSource{Component: r.cfg.Component, Host: r.cfg.Host},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		ReportingController: r.cfg.Component,
		ReportingInstance:   r.cfg.Host,
	}
	select {
	case r.queue <- ev:
	default:
		r.dropped.Add(1)
	}
}

func eventNamespace(obj metav1.Object) string {
	if ns := obj.GetNamespace(); ns != "" {
		return ns
	}
	return metav1.NamespaceDefault // events about cluster-scoped objects
}

func apiVersionOf(kind string) string {
	switch kind {
	case "Deployment", "ReplicaSet", "DaemonSet", "StatefulSet":
		return "apps/v1"
	case "Job", "CronJob":
		return "batch/v1"
	}
	return "v1"
}

// Run writes queued events until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-r.queue:
			batch := []*corev1.Event{ev}
		more:
			for len(batch) < 64 {
				select {
				case ev := <-r.queue:
					batch = append(batch, ev)
				default:
					break more
				}
			}
			r.write(ctx, batch)
		}
	}
}

// aggregationKey identifies "the same event" for aggregation.
func aggregationKey(ev *corev1.Event) string {
	o := ev.InvolvedObject
	return string(o.UID) + "\x00" + o.Kind + "\x00" + o.Namespace + "\x00" + o.Name + "\x00" + o.FieldPath + "\x00" + ev.Type + "\x00" + ev.Reason + "\x00" + ev.Message
}

// write stores a batch: new events are created, repeats update the stored
// event's count. Each is its own proposal (they are batched into shared
// raft entries by the leader), so one failure costs only that event.
func (r *Recorder) write(ctx context.Context, batch []*corev1.Event) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, ev := range batch {
		op := r.prepare(ev)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := r.cfg.Proposer.Propose(ctx, op); err != nil {
				if state.IsCode(err, state.CodeNotFound) {
					// The stored event was collected: store it anew.
					r.forget(ev)
					_, err = r.cfg.Proposer.Propose(ctx, r.prepare(ev))
				}
				if err != nil && ctx.Err() == nil {
					r.cfg.Log.Debug("events: writing", "reason", ev.Reason, "object", ev.InvolvedObject.Name, "err", err)
				}
			}
		}()
	}
	wg.Wait()
}

// prepare names a new event or turns a repeat into an update of the stored one.
func (r *Recorder) prepare(ev *corev1.Event) state.Op {
	key := aggregationKey(ev)
	now := ev.LastTimestamp.Time
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.seen[key]; ok && now.Sub(s.last) < aggregateWindow {
		s.count++
		s.last = now
		ev.Name, ev.Namespace = s.name, s.namespace
		ev.Count = s.count
		ev.FirstTimestamp = metav1.NewTime(s.first)
		return state.Update(ev, 0)
	}
	if len(r.seen) > 10000 {
		for k, s := range r.seen {
			if now.Sub(s.last) >= aggregateWindow {
				delete(r.seen, k)
			}
		}
	}
	ev.Name = ev.InvolvedObject.Name + "." + strconv.FormatInt(now.UnixNano()+int64(r.seq.Add(1)), 16)
	ev.UID = types.UID(fmt.Sprintf("%s-%d", ev.Name, r.seq.Load()))
	ev.CreationTimestamp = ev.FirstTimestamp
	r.seen[key] = &seenEvent{name: ev.Name, namespace: ev.Namespace, count: 1, first: now, last: now}
	return state.Create(ev)
}

func (r *Recorder) forget(ev *corev1.Event) {
	r.mu.Lock()
	delete(r.seen, aggregationKey(ev))
	r.mu.Unlock()
	ev.Count = 1
	ev.FirstTimestamp = ev.LastTimestamp
}

// GC deletes events last seen more than ttl ago and, beyond max events,
// the oldest ones. The leader runs it.
func GC(ctx context.Context, store *state.Store, p state.Proposer, now time.Time, ttl time.Duration, maxEvents int) (int, error) {
	objs, _ := store.List("events", "")
	type aged struct {
		ev   *corev1.Event
		last time.Time
	}
	all := make([]aged, 0, len(objs))
	for _, o := range objs {
		ev := o.(*corev1.Event)
		last := ev.LastTimestamp.Time
		if last.IsZero() {
			last = ev.EventTime.Time
		}
		if last.IsZero() {
			last = ev.CreationTimestamp.Time
		}
		all = append(all, aged{ev, last})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].last.Before(all[j].last) })
	var ops []state.Op
	for i, a := range all {
		if now.Sub(a.last) > ttl || len(all)-i > maxEvents {
			ops = append(ops, state.Delete(eventKind, a.ev.Namespace, a.ev.Name, 0, string(a.ev.UID)))
		}
	}
	deleted := 0
	for len(ops) > 0 {
		n := min(len(ops), 256)
		_, err := p.Propose(ctx, ops[:n]...)
		switch {
		case err == nil:
			deleted += n
		case state.IsCode(err, state.CodeNotFound) || state.IsCode(err, state.CodeConflict):
			// One of them changed meanwhile (the batch is atomic): one by one.
			for _, op := range ops[:n] {
				if _, err := p.Propose(ctx, op); err == nil {
					deleted++
				}
			}
		default:
			return deleted, err
		}
		ops = ops[n:]
	}
	return deleted, nil
}
