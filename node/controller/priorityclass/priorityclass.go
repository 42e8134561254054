// Package priorityclass keeps the built-in PriorityClasses every cluster
// has, as kube-apiserver does at start-up: system-cluster-critical
// (2000000000) and system-node-critical (2000001000), from
// node/admission.SystemPriorityClasses. A missing one is created (also
// after someone deleted it); one that exists is left as it is (the API
// does not let its value change, and its other fields are the user's).
// All missing classes are created in one proposal; a failed write is
// retried with back-off.
//
// It runs on the leader only and keeps no state; every sync reads the
// store.
package priorityclass

import (
	"context"
	"fmt"
	"sync"

	"github.com/shoal-dev/shoal/node/admission"
	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/state"
)

// queueKey is the controller's only work item: "check the built-ins".
const queueKey = "system"

// Controller creates the built-in PriorityClasses. Create it with New, then
// call Run once.
type Controller struct {
	c     controller.Context
	queue controller.Queue
	names map[string]bool
}

// New returns the controller.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	names := map[string]bool{}
	for _, pc := range admission.SystemPriorityClasses() {
		names[pc.Name] = true
	}
	return &Controller{c: c, queue: controller.NewQueue("priorityclass", c.Clock), names: names}
}

// Run checks the built-ins at once and again whenever one of them is
// deleted, until ctx ends.
func (pc *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pc.queue.Add(queueKey)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		controller.Watch(ctx, pc.c.Store, admission.ResourcePriorityClasses, func(ev state.Event) {
			if ev.Type == state.Deleted && pc.names[ev.Object.GetName()] {
				pc.queue.Add(queueKey)
			}
		})
	}()
	controller.Run(ctx, pc.queue, 1, pc.c.Log, func(ctx context.Context, _ string) error { return pc.sync(ctx) })
	cancel()
	wg.Wait()
}

// Sync reconciles once, now, as the worker would: for tests and tools.
func (pc *Controller) Sync(ctx context.Context) error { return pc.sync(ctx) }

// sync creates the built-in classes that are missing, in one proposal.
func (pc *Controller) sync(ctx context.Context) error {
	var ops []state.Op
	var names []string
	for _, want := range admission.SystemPriorityClasses() {
		if _, ok := pc.c.Store.Get(admission.ResourcePriorityClasses, "", want.Name); ok {
			continue
		}
		want.UID = pc.c.NewUID()
		want.CreationTimestamp = pc.c.MetaNow()
		want.Generation = 1
		defaults.Apply(want)
		ops = append(ops, state.Create(want))
		names = append(names, want.Name)
	}
	if len(ops) == 0 {
		return nil
	}
	if _, err := pc.c.Proposer.Propose(ctx, ops...); err != nil {
		return fmt.Errorf("creating the built-in PriorityClasses %v: %w", names, err)
	}
	pc.c.Log.Info("created built-in PriorityClasses", "names", names)
	return nil
}
