package controller

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/state"
)

// Expectations remembers the pod writes of a controller whose outcome is
// unknown, so that a sync holds back its creates and deletes for an owner
// until those writes show (or expire), and neither repeats nor undoes them.
//
// Kubernetes needs expectations for every create and delete because its
// controllers read an informer cache that lags behind their own writes.
// Shoal's controllers read the leader's replica, and a Proposer returns
// only after the local replica applied the write (read-your-writes): a
// write that succeeded is already in the store the next sync lists, and a
// write that failed with a result (conflict, already exists, …) was not
// applied. Only a write that failed otherwise — a timeout, lost quorum,
// "committed but not yet applied here" — may still appear later; those are
// the ones recorded here, by pod UID, until the store shows them (watch
// events or a lookup by name) or the timeout passes. A new leader starts
// with none: it has applied everything committed before it took over
// (leader duties wait for that), and a write that never committed never
// will.
type Expectations struct {
	kind    string // the owner kind whose pods are tracked
	timeout time.Duration

	mu sync.Mutex
	m  map[string]map[types.UID]*pendingWrite // guarded by mu; owner key → writes
}

type pendingWrite struct {
	namespace, name string
	create          bool // a create (else a delete)
	at              time.Time
}

// NewExpectations tracks pods controlled by owners of kind (e.g.
// "ReplicaSet"); a write unseen after timeout is given up on.
func NewExpectations(kind string, timeout time.Duration) *Expectations {
	return &Expectations{kind: kind, timeout: timeout, m: map[string]map[types.UID]*pendingWrite{}}
}

// Expect records a write of pod for owner key whose outcome is unknown.
func (e *Expectations) Expect(key string, pod *corev1.Pod, create bool, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	w := e.m[key]
	if w == nil {
		w = map[types.UID]*pendingWrite{}
		e.m[key] = w
	}
	w[pod.UID] = &pendingWrite{namespace: pod.Namespace, name: pod.Name, create: create, at: now}
}

// Observe resolves expectations from a pod watch event: a pod created, or
// one deleted (or marked for deletion).
func (e *Expectations) Observe(ev state.Event) {
	pod, ok := ev.Object.(*corev1.Pod)
	if !ok {
		return
	}
	ref := ControllerOf(pod)
	if ref == nil || ref.Kind != e.kind {
		return
	}
	key := Key(pod.Namespace, ref.Name)
	e.mu.Lock()
	defer e.mu.Unlock()
	w, ok := e.m[key][pod.UID]
	if !ok {
		return
	}
	if w.create || ev.Type == state.Deleted || pod.DeletionTimestamp != nil {
		delete(e.m[key], pod.UID)
	}
}

// Satisfied reports whether key has no write in doubt, resolving the ones
// the store now shows or that expired; otherwise it also says when the
// oldest expires.
func (e *Expectations) Satisfied(key string, store *state.Store, now time.Time) (bool, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var wait time.Duration
	for uid, w := range e.m[key] {
		o, found := store.Get(ResourcePods, w.namespace, w.name)
		same := found && o.GetUID() == uid
		done := same
		if !w.create {
			done = !same || o.GetDeletionTimestamp() != nil
		}
		left := w.at.Add(e.timeout).Sub(now)
		if done || left <= 0 {
			delete(e.m[key], uid)
			continue
		}
		if wait == 0 || left < wait {
			wait = left
		}
	}
	if len(e.m[key]) == 0 {
		delete(e.m, key)
		return true, 0
	}
	return false, wait
}

// Forget drops key's expectations (its owner is gone).
func (e *Expectations) Forget(key string) {
	e.mu.Lock()
	delete(e.m, key)
	e.mu.Unlock()
}
