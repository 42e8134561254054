package daemonset

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// ExpectationsTimeout is how long a pod write whose outcome is unknown
// holds back its DaemonSet's creates and deletes when it is never seen
// (Kubernetes' value).
const ExpectationsTimeout = 5 * time.Minute

// expectations remembers pod writes whose outcome a sync could not know,
// so the next sync neither repeats them (a second pod for one node) nor
// undoes them.
//
// The controller reads the leader's replica, and a Proposer returns only
// after the local replica applied the write, so a write that succeeded is
// in the store the next sync reads and a write that failed with a result
// (conflict, already exists, …) was not applied. Only a write that failed
// otherwise — a timeout, lost quorum — may still appear; those are
// recorded here, by pod UID, until the store shows them (a watch event or a
// lookup by name) or ExpectationsTimeout passes. A new leader starts with
// none: it has applied everything committed before it took over, and a
// write that never committed never will. (The ReplicaSet controller keeps
// the same record for the same reasons.)
type expectations struct {
	mu sync.Mutex
	m  map[string]map[types.UID]*pendingWrite // guarded by mu; DaemonSet key → writes
}

type pendingWrite struct {
	namespace, name string
	create          bool // a create (else a delete)
	at              time.Time
}

func newExpectations() *expectations {
	return &expectations{m: map[string]map[types.UID]*pendingWrite{}}
}

// expect records a write of pod for key whose outcome is unknown.
func (e *expectations) expect(key string, pod *corev1.Pod, create bool, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	w := e.m[key]
	if w == nil {
		w = map[types.UID]*pendingWrite{}
		e.m[key] = w
	}
	w[pod.UID] = &pendingWrite{namespace: pod.Namespace, name: pod.Name, create: create, at: now}
}

// observe resolves expectations from a pod watch event.
func (e *expectations) observe(ev state.Event) {
	pod, ok := ev.Object.(*corev1.Pod)
	if !ok {
		return
	}
	ref := controller.ControllerOf(pod)
	if ref == nil || ref.Kind != GVK.Kind {
		return
	}
	key := controller.Key(pod.Namespace, ref.Name)
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

// satisfied reports whether key has no write in doubt, resolving the ones
// the store now shows or that expired; otherwise it also says when the
// oldest expires.
func (e *expectations) satisfied(key string, store *state.Store, now time.Time) (bool, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var wait time.Duration
	for uid, w := range e.m[key] {
		o, found := store.Get(controller.ResourcePods, w.namespace, w.name)
		same := found && o.GetUID() == uid
		done := same
		if !w.create {
			done = !same || o.GetDeletionTimestamp() != nil
		}
		left := w.at.Add(ExpectationsTimeout).Sub(now)
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

// forget drops key's expectations (its DaemonSet is gone).
func (e *expectations) forget(key string) {
	e.mu.Lock()
	delete(e.m, key)
	e.mu.Unlock()
}
