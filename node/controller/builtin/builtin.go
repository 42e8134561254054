// Package builtin keeps objects every cluster has, as kube-apiserver does
// at start-up: the built-in PriorityClasses, the bootstrap RBAC policy. A
// missing one is created (also after someone deleted it); one that exists
// is left as it is (its fields are the user's), unless the object comes
// with a Reconcile function, which may bring it up to date (the bootstrap
// RBAC policy gains what a newer version adds). All writes go in one
// proposal; a failed one is retried with back-off.
//
// It runs on the leader only and keeps no state; every sync reads the
// store.
package builtin

import (
	"context"
	"fmt"
	"sync"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/state"
)

// Object is one built-in object and the store key of its resource.
type Object struct {
	Resource string
	Object   state.Object
	// Reconcile, when set, is given a copy of the stored object and
	// returns it brought up to date and true, or false when it needs no
	// write. It runs whenever the controller syncs: when the leader
	// starts, and after a built-in is deleted.
	Reconcile func(stored state.Object) (state.Object, bool)
}

// queueKey is the controller's only work item: "check the built-ins".
const queueKey = "builtins"

// Controller creates the built-in objects that are missing. Create it with
// New, then call Run once.
type Controller struct {
	c       controller.Context
	what    string
	objects func() []Object // fresh copies on every call
	queue   controller.Queue
	keys    map[string]bool // resource/namespace/name of the built-ins
}

// New returns a controller for the objects returns; what names them in
// logs and errors ("built-in PriorityClasses").
func New(c controller.Context, what string, objects func() []Object) *Controller {
	c = c.WithDefaults()
	keys := map[string]bool{}
	for _, o := range objects() {
		keys[key(o.Resource, o.Object)] = true
	}
	return &Controller{c: c, what: what, objects: objects, queue: controller.NewQueue(what, c.Clock), keys: keys}
}

func key(resource string, o state.Object) string {
	return resource + "/" + o.GetNamespace() + "/" + o.GetName()
}

// Run checks the built-ins at once and again whenever one of them is
// deleted, until ctx ends.
func (bc *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bc.queue.Add(queueKey)
	resources := map[string]bool{}
	for _, o := range bc.objects() {
		resources[o.Resource] = true
	}
	var wg sync.WaitGroup
	for resource := range resources {
		wg.Go(func() {
			controller.Watch(ctx, bc.c.Store, resource, func(ev state.Event) {
				if ev.Type == state.Deleted && bc.keys[key(resource, ev.Object)] {
					bc.queue.Add(queueKey)
				}
			})
		})
	}
	controller.Run(ctx, bc.queue, 1, bc.c.Log, func(ctx context.Context, _ string) error { return bc.sync(ctx) })
	cancel()
	wg.Wait()
}

// Sync reconciles once, now, as the worker would: for tests and tools.
func (bc *Controller) Sync(ctx context.Context) error { return bc.sync(ctx) }

// ShutDown stops the work queue (for tests that never call Run).
func (bc *Controller) ShutDown() { bc.queue.ShutDown() }

// sync creates the built-ins that are missing and updates those that
// reconcile to something new, in one proposal.
func (bc *Controller) sync(ctx context.Context) error {
	var ops []state.Op
	var names []string
	for _, want := range bc.objects() {
		o := want.Object
		if cur, ok := bc.c.Store.Get(want.Resource, o.GetNamespace(), o.GetName()); ok {
			if want.Reconcile == nil {
				continue
			}
			if next, changed := want.Reconcile(cur.DeepCopyObject().(state.Object)); changed {
				ops = append(ops, state.Update(next, controller.RV(cur)))
				names = append(names, o.GetName())
			}
			continue
		}
		o.SetUID(bc.c.NewUID())
		o.SetCreationTimestamp(bc.c.MetaNow())
		o.SetGeneration(1)
		defaults.Apply(o)
		ops = append(ops, state.Create(o))
		names = append(names, o.GetName())
	}
	if len(ops) == 0 {
		return nil
	}
	if _, err := bc.c.Proposer.Propose(ctx, ops...); err != nil {
		return fmt.Errorf("writing the %s %v: %w", bc.what, names, err)
	}
	bc.c.Log.Info("created or updated "+bc.what, "names", names)
	return nil
}
