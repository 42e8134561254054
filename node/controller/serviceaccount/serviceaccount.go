// Package serviceaccount gives every namespace its "default"
// ServiceAccount, as Kubernetes' service-account controller does: created
// when the namespace appears (and again if someone deletes it), never in a
// namespace that is being deleted. It runs on the leader only.
package serviceaccount

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// DefaultName is the service account every namespace has.
const DefaultName = "default"

// Controller creates the default ServiceAccounts. Create it with New, then
// call Run once.
type Controller struct {
	c     controller.Context
	queue controller.Queue
}

// New returns the controller.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	return &Controller{c: c, queue: controller.NewQueue("serviceaccount", c.Clock)}
}

// Run works until ctx ends.
func (sc *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		controller.Watch(ctx, sc.c.Store, "namespaces", func(ev state.Event) {
			if ev.Type != state.Deleted {
				sc.queue.Add(ev.Object.GetName())
			}
		})
	})
	wg.Go(func() {
		controller.Watch(ctx, sc.c.Store, "serviceaccounts", func(ev state.Event) {
			if ev.Type == state.Deleted && ev.Object.GetName() == DefaultName {
				sc.queue.Add(ev.Object.GetNamespace())
			}
		})
	})
	controller.Run(ctx, sc.queue, 1, sc.c.Log, sc.sync)
	cancel()
	wg.Wait()
}

// Sync reconciles one namespace now, as the worker would.
func (sc *Controller) Sync(ctx context.Context, namespace string) error {
	return sc.sync(ctx, namespace)
}

// ShutDown stops the work queue (for tests that never call Run).
func (sc *Controller) ShutDown() { sc.queue.ShutDown() }

func (sc *Controller) sync(ctx context.Context, namespace string) error {
	o, ok := sc.c.Store.Get("namespaces", "", namespace)
	if !ok {
		return nil
	}
	ns := o.(*corev1.Namespace)
	if ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating {
		return nil
	}
	if _, ok := sc.c.Store.Get("serviceaccounts", namespace, DefaultName); ok {
		return nil
	}
	sa := &corev1.ServiceAccount{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: DefaultName, Namespace: namespace, UID: sc.c.NewUID(),
			CreationTimestamp: sc.c.MetaNow()},
	}
	if _, err := sc.c.Proposer.Propose(ctx, state.Create(sa)); err != nil {
		if state.IsCode(err, state.CodeAlreadyExists) {
			return nil
		}
		return fmt.Errorf("creating the default ServiceAccount of %s: %w", namespace, err)
	}
	return nil
}
