package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/state"
)

// nsBatch is how many deletions one proposal carries while a namespace is
// emptied.
const nsBatch = 100

// deleteNamespace marks a namespace Terminating and empties it in the
// background; the namespace itself goes once nothing is left in it.
func (s *Server) deleteNamespace(rq *request, opts *metav1.DeleteOptions) {
	gr := rq.res.groupResource()
	if protectedNamespaces[rq.name] {
		rq.fail(apierrors.NewForbidden(gr, rq.name, errors.New("this namespace may not be deleted")))
		return
	}
	for attempt := 0; ; attempt++ {
		cur, ok := s.store.Get("namespaces", "", rq.name)
		if !ok {
			rq.fail(apierrors.NewNotFound(gr, rq.name))
			return
		}
		if err := checkPreconditions(rq, opts, cur); err != nil {
			rq.fail(err)
			return
		}
		if cur.GetDeletionTimestamp() != nil {
			if !rq.dryRun() {
				s.finalizeNamespace(cur.GetName(), cur.GetUID())
			}
			rq.fail(apierrors.NewConflict(gr, rq.name, errors.New("The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.")))
			return
		}
		next := cur.DeepCopyObject().(*corev1.Namespace)
		now := metav1.NewTime(s.now().Truncate(time.Second))
		zero := int64(0)
		next.DeletionTimestamp, next.DeletionGracePeriodSeconds = &now, &zero
		next.Status.Phase = corev1.NamespaceTerminating
		next.ResourceVersion = ""
		if rq.dryRun() {
			rq.writeJSON(http.StatusOK, next)
			return
		}
		rs, err := s.prop.Propose(rq.writeContext(), state.Update(next, rvOf(cur)))
		if err != nil {
			if state.IsCode(err, state.CodeConflict) && opts.Preconditions == nil && attempt+1 < maxUpdateAttempts {
				continue
			}
			rq.fail(err)
			return
		}
		next.ResourceVersion = strconv.FormatUint(rs[0].RV, 10)
		s.finalizeNamespace(next.Name, next.UID)
		rq.writeJSON(http.StatusOK, next)
		return
	}
}

// resumeNamespaceFinalization restarts the emptying of namespaces that were
// left Terminating (e.g. by a node that restarted mid-way).
func (s *Server) resumeNamespaceFinalization() {
	nss, _ := s.store.List("namespaces", "")
	for _, o := range nss {
		if namespaceTerminating(o) {
			s.finalizeNamespace(o.GetName(), o.GetUID())
		}
	}
}

// finalizeNamespace starts emptying namespace name (uid) unless that is
// already under way on this server.
func (s *Server) finalizeNamespace(name string, uid types.UID) {
	s.nsMu.Lock()
	if s.nsBusy[name] || s.ctx.Err() != nil {
		s.nsMu.Unlock()
		return
	}
	s.nsBusy[name] = true
	s.bg.Add(1)
	s.nsMu.Unlock()
	go func() {
		defer s.bg.Done()
		defer func() {
			s.nsMu.Lock()
			delete(s.nsBusy, name)
			s.nsMu.Unlock()
		}()
		backoff := 20 * time.Millisecond
		for {
			done, err := s.purgeNamespace(name)
			if err == nil && done {
				_, err = s.prop.Propose(s.ctx, state.Delete(nsKind, "", name, 0, string(uid)))
				if err == nil || state.IsCode(err, state.CodeNotFound) || state.IsCode(err, state.CodeConflict) {
					return // gone (a conflict means another namespace of that name now exists)
				}
			}
			if _, ok := s.store.Get("namespaces", "", name); !ok {
				return
			}
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(backoff):
			}
			if backoff < 5*time.Second {
				backoff *= 2
			}
		}
	}()
}

var nsKind = func() *state.Kind {
	k, _ := state.KindFor("namespaces")
	return k
}()

// purgeNamespace makes one pass over everything in namespace ns: objects
// without finalizers are deleted in batches, objects with finalizers are
// marked for deletion. done reports that the namespace was found empty.
func (s *Server) purgeNamespace(ns string) (done bool, err error) {
	empty := true
	for _, k := range state.Kinds {
		if !k.Namespaced {
			continue
		}
		objs, _ := s.store.List(k.Key(), ns)
		if len(objs) > 0 {
			empty = false
		}
		var ops []state.Op
		flush := func() error {
			if len(ops) == 0 {
				return nil
			}
			batch := ops
			ops = nil
			if _, err := s.prop.Propose(s.ctx, batch...); err == nil {
				return nil
			}
			// One failed op aborts the batch: retry one by one, ignoring
			// objects that changed or went meanwhile (the next pass sees them).
			for _, op := range batch {
				_, err := s.prop.Propose(s.ctx, op)
				if err != nil && !state.IsCode(err, state.CodeNotFound) && !state.IsCode(err, state.CodeConflict) {
					return fmt.Errorf("emptying namespace %s: %w", ns, err)
				}
			}
			return nil
		}
		for _, o := range objs {
			switch {
			case len(o.GetFinalizers()) == 0:
				ops = append(ops, state.Delete(k, ns, o.GetName(), rvOf(o), string(o.GetUID())))
			case o.GetDeletionTimestamp() == nil:
				next := o.DeepCopyObject().(state.Object)
				now := metav1.NewTime(s.now().Truncate(time.Second))
				next.SetDeletionTimestamp(&now)
				next.SetResourceVersion("")
				ops = append(ops, state.Update(next, rvOf(o)))
			}
			if len(ops) >= nsBatch {
				if err := flush(); err != nil {
					return false, err
				}
			}
		}
		if err := flush(); err != nil {
			return false, err
		}
	}
	return empty, nil
}

// EnsureNamespaces creates the namespaces Kubernetes always has (default,
// kube-system, kube-public, kube-node-lease) if they are missing. The node
// calls it once the cluster can take writes (e.g. when it becomes leader).
func (s *Server) EnsureNamespaces(ctx context.Context) error {
	for _, name := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		if _, ok := s.store.Get("namespaces", "", name); ok {
			continue
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
		s.prepareCreate(s.disc.resources["/namespaces"], ns)
		defaults.Apply(ns)
		defaults.ApplyCreate(ns)
		if _, err := s.prop.Propose(ctx, state.Create(ns)); err != nil && !state.IsCode(err, state.CodeAlreadyExists) {
			return fmt.Errorf("creating namespace %s: %w", name, err)
		}
	}
	return nil
}
