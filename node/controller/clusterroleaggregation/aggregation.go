// Package clusterroleaggregation keeps the rules of every ClusterRole with
// an aggregationRule equal to the union of the rules of the ClusterRoles its
// selectors match, as Kubernetes' clusterrole-aggregation controller does:
// label a ClusterRole rbac.authorization.k8s.io/aggregate-to-view: "true"
// and whoever holds view may do what it grants. It runs on the leader only
// and keeps no state; every sync reads the store.
package clusterroleaggregation

import (
	"context"
	"fmt"
	"sync"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/rbac"
	"github.com/shoal-dev/shoal/node/state"
)

// Controller aggregates ClusterRoles. Create it with New, then call Run
// once.
type Controller struct {
	c     controller.Context
	queue controller.Queue
}

// New returns the controller.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	return &Controller{c: c, queue: controller.NewQueue("clusterrole-aggregation", c.Clock)}
}

// Run works until ctx ends. Any change to any ClusterRole (its labels or
// rules) may change what an aggregated role gathers, so every aggregated
// role is looked at again; there are few of them.
func (ac *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		controller.Watch(ctx, ac.c.Store, rbac.ResourceClusterRoles, func(state.Event) { ac.enqueueAggregated() })
	})
	controller.Run(ctx, ac.queue, 1, ac.c.Log, ac.sync)
	cancel()
	wg.Wait()
}

// Sync aggregates the named ClusterRole now, as the worker would: for tests.
func (ac *Controller) Sync(ctx context.Context, name string) error { return ac.sync(ctx, name) }

// ShutDown stops the work queue (for tests that never call Run).
func (ac *Controller) ShutDown() { ac.queue.ShutDown() }

func (ac *Controller) enqueueAggregated() {
	for _, r := range ac.clusterRoles() {
		if r.AggregationRule != nil {
			ac.queue.Add(r.Name)
		}
	}
}

func (ac *Controller) clusterRoles() []*rbacv1.ClusterRole {
	objs, _ := ac.c.Store.List(rbac.ResourceClusterRoles, "")
	out := make([]*rbacv1.ClusterRole, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*rbacv1.ClusterRole))
	}
	return out
}

// sync writes the aggregated rules of one ClusterRole when they differ
// from its stored rules.
func (ac *Controller) sync(ctx context.Context, name string) error {
	_, err := controller.Modify(ctx, ac.c, rbac.ResourceClusterRoles, "", name, func(o state.Object) error {
		r := o.(*rbacv1.ClusterRole)
		if r.AggregationRule == nil {
			return controller.ErrUnchanged
		}
		rules, err := rbac.AggregatedRules(r.Name, r.AggregationRule, ac.clusterRoles())
		if err != nil {
			// Not worth retrying: the stored selector stays wrong
			// until someone changes it, which queues the role again.
			ac.c.Log.Warn("clusterrole aggregation", "clusterrole", name, "err", err)
			return controller.ErrUnchanged
		}
		if equality.Semantic.DeepEqual(rules, r.Rules) {
			return controller.ErrUnchanged
		}
		r.Rules = rules
		return nil
	})
	if state.IsCode(err, state.CodeNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("aggregating clusterrole %s: %w", name, err)
	}
	return nil
}
