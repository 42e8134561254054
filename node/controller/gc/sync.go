package gc

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// sync processes one object: an owner being deleted in the foreground or
// with orphaning, or a dependent whose owners may be gone.
func (gc *Controller) sync(ctx context.Context, key string) error {
	res, ns, name, ok := splitItemKey(key)
	if !ok {
		return nil
	}
	k, ok := state.KindFor(res)
	if !ok {
		return nil
	}
	obj, ok := gc.c.Store.Get(res, ns, name)
	if !ok {
		return nil // gone: its Deleted event queued whatever depends on it
	}
	if obj.GetDeletionTimestamp() != nil {
		switch {
		case hasString(obj.GetFinalizers(), finalizerOrphan):
			return gc.orphanDependents(ctx, k, obj)
		case hasString(obj.GetFinalizers(), finalizerForeground):
			return gc.deleteDependents(ctx, k, obj)
		}
		return nil // already on its way out
	}
	if len(obj.GetOwnerReferences()) == 0 {
		return nil
	}
	return gc.attemptToDelete(ctx, k, obj)
}

// ownerState is what an owner reference resolves to.
type ownerState int

const (
	ownerSolid    ownerState = iota // exists (or cannot be resolved: never collect)
	ownerDangling                   // no object with that UID
	ownerWaiting                    // exists, deleting its dependents in the foreground
)

// resolve looks up the owner a reference of dependent dep names.
func (gc *Controller) resolve(dep state.Object, r metav1.OwnerReference) ownerState {
	k, ok := kindOfRef(r)
	if !ok {
		return ownerSolid // a kind Shoal does not store: leave it alone
	}
	ns := ""
	if k.Namespaced {
		ns = dep.GetNamespace()
		if ns == "" {
			// A cluster-scoped object cannot have a namespaced owner: the
			// reference is invalid, but never a reason to delete.
			return ownerSolid
		}
	}
	owner := gc.lookup(k, ns, r.Name, r.UID)
	switch {
	case owner == nil:
		return ownerDangling
	case owner.GetDeletionTimestamp() != nil && hasString(owner.GetFinalizers(), finalizerForeground):
		return ownerWaiting
	}
	return ownerSolid
}

// lookup returns the object with uid: by kind and name first, then through
// the index by UID alone (so a reference with a wrong name never makes a
// live owner look absent).
func (gc *Controller) lookup(k *state.Kind, ns, name string, uid types.UID) state.Object {
	if o, ok := gc.c.Store.Get(k.Key(), ns, name); ok && o.GetUID() == uid {
		return o
	}
	if key, ok := gc.graph.keyOf(uid); ok {
		if o := gc.get(key); o != nil && o.GetUID() == uid {
			return o
		}
	}
	return nil
}

// attemptToDelete collects obj if none of its owners remains, as the
// Kubernetes collector does: with a live owner left, references to absent
// owners (and to owners deleting in the foreground) are removed; with only
// owners deleting in the foreground and dependents of its own, obj is
// deleted in the foreground too; otherwise it is deleted (in the
// background, or as its own finalizers ask).
func (gc *Controller) attemptToDelete(ctx context.Context, k *state.Kind, obj state.Object) error {
	var solid, dangling, waiting int
	drop := map[types.UID]bool{}
	for _, r := range obj.GetOwnerReferences() {
		switch gc.resolve(obj, r) {
		case ownerSolid:
			solid++
		case ownerDangling:
			dangling++
			drop[r.UID] = true
		case ownerWaiting:
			waiting++
			drop[r.UID] = true
		}
	}
	switch {
	case solid > 0:
		if len(drop) == 0 {
			return nil
		}
		gc.log.Debug("removing references to absent owners", "object", objectKey(k, obj))
		return gc.removeOwnerRefs(ctx, obj, drop)
	case waiting > 0 && gc.hasDependents(obj):
		// A dependent of obj itself deleting its dependents in the
		// foreground may be waiting for obj: a cycle. Stop obj from
		// blocking its owners so that neither waits forever.
		unblock := false
		for _, d := range gc.dependentsOf(obj) {
			if d.GetDeletionTimestamp() != nil && hasString(d.GetFinalizers(), finalizerForeground) {
				unblock = true
				break
			}
		}
		gc.log.Debug("deleting dependent in the foreground", "object", objectKey(k, obj))
		return gc.deleteObject(ctx, k, obj, finalizerForeground, func(next state.Object) {
			if unblock {
				refs := next.GetOwnerReferences()
				for i := range refs {
					if boolValue(refs[i].BlockOwnerDeletion) {
						refs[i].BlockOwnerDeletion = new(bool)
					}
				}
				next.SetOwnerReferences(refs)
			}
		})
	default:
		gc.log.Debug("deleting object whose owners are gone", "object", objectKey(k, obj))
		return gc.deleteObject(ctx, k, obj, "", nil)
	}
}

// deleteDependents advances the foreground deletion of owner: it queues
// every dependent not yet being deleted and, once no dependent with
// blockOwnerDeletion is left, removes the finalizer (deleting the owner).
func (gc *Controller) deleteDependents(ctx context.Context, k *state.Kind, owner state.Object) error {
	blocking := 0
	for _, d := range gc.dependentsOf(owner) {
		for _, r := range d.GetOwnerReferences() {
			if r.UID == owner.GetUID() && boolValue(r.BlockOwnerDeletion) {
				blocking++
				break
			}
		}
		if d.GetDeletionTimestamp() == nil || collecting(d) {
			dk, _ := state.KindOf(d)
			gc.queue.Add(objectKey(dk, d))
		}
	}
	if blocking > 0 {
		return nil // each dependent's deletion queues the owner again
	}
	gc.log.Debug("foreground deletion done", "object", objectKey(k, owner))
	return gc.removeFinalizer(ctx, k, owner, finalizerForeground)
}

// orphanDependents removes the references to owner from its dependents,
// then the "orphan" finalizer from owner (deleting it if it was the last).
func (gc *Controller) orphanDependents(ctx context.Context, k *state.Kind, owner state.Object) error {
	drop := map[types.UID]bool{owner.GetUID(): true}
	for _, d := range gc.dependentsOf(owner) {
		if err := gc.removeOwnerRefs(ctx, d, drop); err != nil {
			return fmt.Errorf("orphaning %s %s/%s: %w", d.GetObjectKind().GroupVersionKind().Kind, d.GetNamespace(), d.GetName(), err)
		}
	}
	gc.log.Debug("dependents orphaned", "object", objectKey(k, owner))
	return gc.removeFinalizer(ctx, k, owner, finalizerOrphan)
}

// dependentsOf lists, from the store, the objects that name owner (by UID)
// in their ownerReferences: those in the owner's namespace, or in every
// namespace for a cluster-scoped owner. Scanning the store rather than
// trusting the index makes the foreground and orphan decisions exact.
func (gc *Controller) dependentsOf(owner state.Object) []state.Object {
	uid := owner.GetUID()
	var out []state.Object
	for _, k := range state.Kinds {
		if owner.GetNamespace() != "" && !k.Namespaced {
			continue
		}
		objs, _ := gc.c.Store.List(k.Key(), owner.GetNamespace())
		for _, o := range objs {
			for _, r := range o.GetOwnerReferences() {
				if r.UID == uid {
					out = append(out, o)
					break
				}
			}
		}
	}
	return out
}

// hasDependents reports whether some stored object names obj as an owner.
func (gc *Controller) hasDependents(obj state.Object) bool {
	uid := obj.GetUID()
	for _, key := range gc.graph.dependents(uid) {
		d := gc.get(key)
		if d == nil {
			continue
		}
		for _, r := range d.GetOwnerReferences() {
			if r.UID == uid {
				return true
			}
		}
	}
	return false
}

// removeOwnerRefs removes the references to the owners in drop from obj.
func (gc *Controller) removeOwnerRefs(ctx context.Context, obj state.Object, drop map[types.UID]bool) error {
	var keep []metav1.OwnerReference
	for _, r := range obj.GetOwnerReferences() {
		if !drop[r.UID] {
			keep = append(keep, r)
		}
	}
	if len(keep) == len(obj.GetOwnerReferences()) {
		return nil
	}
	next := obj.DeepCopyObject().(state.Object)
	next.SetOwnerReferences(keep)
	next.SetResourceVersion("")
	return ignoreNotFound(gc.propose(ctx, state.Update(next, rvOf(obj))))
}

// removeFinalizer removes finalizer f from obj; when none is left on an
// object being deleted, the object is deleted (as the API's update path
// does), except a pod still running on its node, which the node's agent
// deletes once its containers have stopped.
func (gc *Controller) removeFinalizer(ctx context.Context, k *state.Kind, obj state.Object, f string) error {
	var fins []string
	for _, x := range obj.GetFinalizers() {
		if x != f {
			fins = append(fins, x)
		}
	}
	if len(fins) == len(obj.GetFinalizers()) {
		return nil
	}
	if len(fins) == 0 && obj.GetDeletionTimestamp() != nil {
		pod, isPod := obj.(*corev1.Pod)
		if !isPod || controller.PodGracePeriod(gc.c.Store, pod) == 0 {
			return ignoreNotFound(gc.propose(ctx, state.Delete(k, obj.GetNamespace(), obj.GetName(), rvOf(obj), string(obj.GetUID()))))
		}
	}
	next := obj.DeepCopyObject().(state.Object)
	next.SetFinalizers(fins)
	next.SetResourceVersion("")
	return ignoreNotFound(gc.propose(ctx, state.Update(next, rvOf(obj))))
}

// deleteObject deletes obj as the API server's delete does, with the
// finalizer of a propagation policy (add: "" for background): an object
// with finalizers is marked with a deletionTimestamp and stays until they
// are removed; a running pod bound to a node is marked with its grace
// period and deleted by that node's agent; anything else goes at once.
// mutate, if set, also changes the object when it is marked.
func (gc *Controller) deleteObject(ctx context.Context, k *state.Kind, obj state.Object, add string, mutate func(state.Object)) error {
	fins := obj.GetFinalizers()
	if add != "" && !hasString(fins, add) {
		fins = append(append([]string(nil), fins...), add)
	}
	grace := int64(0)
	if pod, ok := obj.(*corev1.Pod); ok {
		grace = controller.PodGracePeriod(gc.c.Store, pod)
	}
	if len(fins) == 0 && grace == 0 {
		return ignoreNotFound(gc.propose(ctx, state.Delete(k, obj.GetNamespace(), obj.GetName(), rvOf(obj), string(obj.GetUID()))))
	}
	if obj.GetDeletionTimestamp() != nil && len(fins) == len(obj.GetFinalizers()) {
		return nil // already being deleted
	}
	next := obj.DeepCopyObject().(state.Object)
	next.SetFinalizers(fins)
	if next.GetDeletionTimestamp() == nil {
		// As in Kubernetes, the timestamp is when the grace period ends.
		at := metav1.NewTime(gc.c.Now().Add(time.Duration(grace) * time.Second).Truncate(time.Second))
		next.SetDeletionTimestamp(&at)
		next.SetDeletionGracePeriodSeconds(&grace)
	}
	if mutate != nil {
		mutate(next)
	}
	next.SetResourceVersion("")
	return ignoreNotFound(gc.propose(ctx, state.Update(next, rvOf(obj))))
}

func (gc *Controller) propose(ctx context.Context, ops ...state.Op) error {
	_, err := gc.c.Proposer.Propose(ctx, ops...)
	return err
}

// ignoreNotFound treats deleting or changing what is gone as done.
func ignoreNotFound(err error) error {
	if state.IsCode(err, state.CodeNotFound) {
		return nil
	}
	return err
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func rvOf(o state.Object) uint64 { return controller.RV(o) }
