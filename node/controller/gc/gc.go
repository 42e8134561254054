// Package gc is the garbage collector: it deletes objects whose owners are
// gone, following metadata.ownerReferences as the Kubernetes garbage
// collector does, with the three propagation policies of a delete:
//
//   - Background: the API removed the owner at once; its dependents, found
//     dangling here, are deleted (pods gracefully, as the API deletes them).
//   - Foreground: the owner carries the finalizer "foregroundDeletion" and a
//     deletionTimestamp; its dependents are deleted first (those with
//     blockOwnerDeletion that have dependents of their own in the foreground
//     too), and once no dependent with blockOwnerDeletion=true is left, the
//     finalizer is removed and the owner deleted.
//   - Orphan: the owner carries the finalizer "orphan"; the references to it
//     are removed from its dependents, then the finalizer, then the owner.
//
// An owner is present when an object with its UID exists (looked up by the
// reference's kind and name, then by UID): an owner recreated under the same
// name is another owner, and the old one's dependents are collected.
// References to kinds Shoal does not store are never considered dangling.
//
// All state is in the store: the controller keeps only an index from owner
// UIDs to dependents, rebuilt from the replica when it starts, so a new
// leader resumes any cascade where the old one stopped. Every write carries
// the resourceVersion (and, for deletes, the UID) it was decided on.
//
// Namespace deletion is the API server's (it empties a Terminating
// namespace, then removes it); the collector only does what the finalizers
// of the objects in it ask for, which the API's emptying waits on.
package gc

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// Finalizers that ask the collector for Foreground and Orphan propagation.
const (
	finalizerForeground = metav1.FinalizerDeleteDependents // "foregroundDeletion"
	finalizerOrphan     = metav1.FinalizerOrphanDependents // "orphan"
)

const workers = 4

// Controller is the garbage collector. Create it with New and run it once
// with Run (a new leadership term gets a new Controller).
type Controller struct {
	c     controller.Context
	log   *slog.Logger
	queue controller.Queue
	graph graph
}

// New returns a garbage collector over c.Store.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	return &Controller{
		c:     c,
		log:   c.Log.With("controller", "garbagecollector"),
		queue: controller.NewQueue("garbagecollector", c.Clock),
		graph: graph{
			items: map[string]item{},
			byUID: map[types.UID]string{},
			deps:  map[types.UID]map[string]struct{}{},
		},
	}
}

// Run watches every kind in the store and processes objects until ctx ends.
func (gc *Controller) Run(ctx context.Context) {
	var wg, listed sync.WaitGroup
	listed.Add(len(state.Kinds))
	for _, k := range state.Kinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gc.watch(ctx, k, listed.Done)
		}()
	}
	// Collect only once every kind is indexed and watched (as Kubernetes
	// waits for its caches): each kind is listed on its own, so before that
	// an owner could look absent (not indexed by UID yet), or be deleted
	// unseen after its dependents were checked.
	allListed := make(chan struct{})
	go func() {
		listed.Wait()
		close(allListed)
	}()
	select {
	case <-allListed:
		controller.Run(ctx, gc.queue, workers, gc.log, gc.sync)
	case <-ctx.Done():
		gc.queue.ShutDown()
	}
	wg.Wait()
}

// Queue keys name one object: "resource/namespace/name" (names and
// resources never contain a slash; the namespace is empty for cluster-scoped
// objects).
func itemKey(resource, namespace, name string) string {
	return resource + "/" + namespace + "/" + name
}

func splitItemKey(key string) (resource, namespace, name string, ok bool) {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

func objectKey(k *state.Kind, o state.Object) string {
	return itemKey(k.Key(), o.GetNamespace(), o.GetName())
}

// graph indexes the replica by owner: which objects name a UID as their
// owner. It only says where to look; every decision re-reads the store.
//
// Every object has its UID indexed (an owner is found by UID when its
// references name it wrongly), but only objects with owners have an item:
// most objects (ConfigMaps, Secrets, Services, ...) own nothing and are
// owned by nothing, and the collector holds for them one map entry instead
// of two (on a store of ~300,000 ConfigMaps the index was a fifth of the
// leader's live heap).
type graph struct {
	mu sync.Mutex
	// guarded by mu:
	items map[string]item                   // item key → owners, for objects that have owners
	byUID map[types.UID]string              // object UID → item key
	deps  map[types.UID]map[string]struct{} // owner UID → dependents' item keys
}

type item struct {
	uid    types.UID
	owners []types.UID
}

// set records the object at key with its UID and owners. prev is the UID
// the index may hold for key from an earlier object ("" if unknown).
func (g *graph) set(key string, uid types.UID, owners []types.UID, prev types.UID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.removeLocked(key, prev)
	if len(owners) > 0 {
		g.items[key] = item{uid: uid, owners: owners}
	}
	g.byUID[uid] = key
	for _, o := range owners {
		m := g.deps[o]
		if m == nil {
			m = map[string]struct{}{}
			g.deps[o] = m
		}
		m[key] = struct{}{}
	}
}

// remove forgets the object at key, whose UID is uid if known, and returns
// what the index held for it: its UID (that of the item if the object had
// owners, else uid) and its owners. ok is false if key was not indexed.
func (g *graph) remove(key string, uid types.UID) (item, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.removeLocked(key, uid)
}

func (g *graph) removeLocked(key string, uid types.UID) (item, bool) {
	it, owned := g.items[key]
	if !owned {
		it = item{uid: uid}
	}
	indexed := owned
	for _, u := range []types.UID{uid, it.uid} {
		if u != "" && g.byUID[u] == key {
			delete(g.byUID, u)
			indexed = true
		}
	}
	if !indexed {
		return item{}, false
	}
	delete(g.items, key)
	for _, o := range it.owners {
		if m := g.deps[o]; m != nil {
			delete(m, key)
			if len(m) == 0 {
				delete(g.deps, o)
			}
		}
	}
	return it, true
}

// dependents returns the keys of the objects that name uid as an owner.
func (g *graph) dependents(uid types.UID) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.deps[uid]))
	for k := range g.deps[uid] {
		out = append(out, k)
	}
	return out
}

// keyOf returns the item key of the object with uid, if indexed.
func (g *graph) keyOf(uid types.UID) (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, ok := g.byUID[uid]
	return k, ok
}

// indexed returns the item keys of one resource with the UIDs indexed
// for them.
func (g *graph) indexed(resource string) map[types.UID]string {
	prefix := resource + "/"
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[types.UID]string{}
	for uid, k := range g.byUID {
		if strings.HasPrefix(k, prefix) {
			out[uid] = k
		}
	}
	return out
}

// watch keeps the index of one kind current and feeds the queue; listed is
// called once the first list is indexed. After a broken watch it lists
// again and forgets what disappeared meanwhile.
func (gc *Controller) watch(ctx context.Context, k *state.Kind, listed func()) {
	defer func() {
		if listed != nil {
			listed()
		}
	}()
	for ctx.Err() == nil {
		objs, _, w := gc.c.Store.ListAndWatch(state.WatchOptions{Resource: k.Key(), Buffer: 1 << 14})
		// What the index holds that the list no longer has went away
		// unseen (or came back as another object under the same name).
		present := make(map[string]types.UID, len(objs))
		for _, o := range objs {
			present[objectKey(k, o)] = o.GetUID()
		}
		for uid, key := range gc.graph.indexed(k.Key()) {
			if present[key] != uid {
				gc.forget(key, uid)
			}
		}
		for _, o := range objs {
			gc.observe(k, state.Event{Type: state.Added, Resource: k.Key(), Object: o})
		}
		if listed != nil {
			listed()
			listed = nil
		}
		w.Consume(ctx, func(ev state.Event) { gc.observe(k, ev) })
	}
}

// observe updates the index for one change and queues what it may affect.
func (gc *Controller) observe(k *state.Kind, ev state.Event) {
	o := ev.Object
	key := objectKey(k, o)
	if ev.Type == state.Deleted {
		gc.forget(key, o.GetUID())
		return
	}
	refs := o.GetOwnerReferences()
	prev := ev.Prev
	var prevUID types.UID
	if prev != nil {
		prevUID = prev.GetUID()
	}
	gc.graph.set(key, o.GetUID(), ownerUIDs(refs), prevUID)
	changed := ev.Type == state.Added || prev == nil || prev.GetUID() != o.GetUID() ||
		!sameOwners(prev.GetOwnerReferences(), refs) ||
		(prev.GetDeletionTimestamp() == nil) != (o.GetDeletionTimestamp() == nil) ||
		!slices.Equal(prev.GetFinalizers(), o.GetFinalizers())
	if !changed {
		return
	}
	if len(refs) > 0 || collecting(o) {
		gc.queue.Add(key)
	}
	// A dependent that changed its references or started going away may
	// unblock an owner deleting in the foreground.
	for _, r := range refs {
		gc.enqueueIfCollecting(r.UID)
	}
	if prev != nil {
		for _, r := range prev.GetOwnerReferences() {
			gc.enqueueIfCollecting(r.UID)
		}
	}
}

// forget drops a deleted object (with uid, if known) from the index and
// queues its dependents (now possibly dangling) and its owners (possibly
// unblocked).
func (gc *Controller) forget(key string, uid types.UID) {
	it, ok := gc.graph.remove(key, uid)
	if ok && uid == "" {
		uid = it.uid
	}
	if uid != "" {
		for _, d := range gc.graph.dependents(uid) {
			gc.queue.Add(d)
		}
	}
	if ok && it.uid != uid {
		for _, d := range gc.graph.dependents(it.uid) {
			gc.queue.Add(d)
		}
	}
	for _, o := range it.owners {
		gc.enqueueIfCollecting(o)
	}
}

// enqueueIfCollecting queues the object with uid if it is being deleted
// with a finalizer the collector handles.
func (gc *Controller) enqueueIfCollecting(uid types.UID) {
	key, ok := gc.graph.keyOf(uid)
	if !ok {
		return
	}
	if o := gc.get(key); o != nil && o.GetUID() == uid && collecting(o) {
		gc.queue.Add(key)
	}
}

// get reads the object an item key names from the store.
func (gc *Controller) get(key string) state.Object {
	res, ns, name, ok := splitItemKey(key)
	if !ok {
		return nil
	}
	o, ok := gc.c.Store.Get(res, ns, name)
	if !ok {
		return nil
	}
	return o
}

// collecting reports whether o is being deleted with a finalizer the
// collector must act on.
func collecting(o state.Object) bool {
	if o.GetDeletionTimestamp() == nil {
		return false
	}
	for _, f := range o.GetFinalizers() {
		if f == finalizerForeground || f == finalizerOrphan {
			return true
		}
	}
	return false
}

func ownerUIDs(refs []metav1.OwnerReference) []types.UID {
	if len(refs) == 0 {
		return nil
	}
	out := make([]types.UID, len(refs))
	for i, r := range refs {
		out[i] = r.UID
	}
	return out
}

func sameOwners(a, b []metav1.OwnerReference) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].UID != b[i].UID || a[i].Name != b[i].Name || a[i].Kind != b[i].Kind ||
			boolValue(a[i].BlockOwnerDeletion) != boolValue(b[i].BlockOwnerDeletion) {
			return false
		}
	}
	return true
}

func boolValue(b *bool) bool { return b != nil && *b }

// groupKind → stored kind, for resolving owner references.
var kindsByGroupKind = func() map[schema.GroupKind]*state.Kind {
	m := make(map[schema.GroupKind]*state.Kind, len(state.Kinds))
	for _, k := range state.Kinds {
		m[schema.GroupKind{Group: k.Group, Kind: k.Kind}] = k
	}
	return m
}()

// kindOfRef resolves an owner reference's kind (any version of its group).
func kindOfRef(r metav1.OwnerReference) (*state.Kind, bool) {
	gv, err := schema.ParseGroupVersion(r.APIVersion)
	if err != nil {
		return nil, false
	}
	k, ok := kindsByGroupKind[schema.GroupKind{Group: gv.Group, Kind: r.Kind}]
	return k, ok
}
