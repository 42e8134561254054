// Package serviceaccount gives every namespace its "default"
// ServiceAccount and the ConfigMap kube-root-ca.crt with the cluster CA
// certificate (what a pod's token volume shows as ca.crt), as Kubernetes'
// service-account and root-CA publisher controllers do: created when the
// namespace appears (and again if someone deletes them), never in a
// namespace that is being deleted. It runs on the leader only.
package serviceaccount

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/admission"
	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// DefaultName is the service account every namespace has.
const DefaultName = "default"

// Controller creates the default ServiceAccounts. Create it with New, then
// call Run once.
type Controller struct {
	c     controller.Context
	caPEM string
	queue controller.Queue
}

// New returns the controller; caPEM is the cluster CA certificate.
func New(c controller.Context, caPEM []byte) *Controller {
	c = c.WithDefaults()
	return &Controller{c: c, caPEM: string(caPEM), queue: controller.NewQueue("serviceaccount", c.Clock)}
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
	wg.Go(func() {
		controller.Watch(ctx, sc.c.Store, "configmaps", func(ev state.Event) {
			if ev.Type == state.Deleted && ev.Object.GetName() == admission.RootCAConfigMap {
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
	var ops []state.Op
	if _, ok := sc.c.Store.Get("serviceaccounts", namespace, DefaultName); !ok {
		ops = append(ops, state.Create(&corev1.ServiceAccount{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: metav1.ObjectMeta{Name: DefaultName, Namespace: namespace, UID: sc.c.NewUID(),
				CreationTimestamp: sc.c.MetaNow()},
		}))
	}
	if _, ok := sc.c.Store.Get("configmaps", namespace, admission.RootCAConfigMap); !ok && sc.caPEM != "" {
		ops = append(ops, state.Create(&corev1.ConfigMap{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: admission.RootCAConfigMap, Namespace: namespace, UID: sc.c.NewUID(),
				CreationTimestamp: sc.c.MetaNow(),
				Annotations:       map[string]string{"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
			Data: map[string]string{"ca.crt": sc.caPEM},
		}))
	}
	if len(ops) == 0 {
		return nil
	}
	// One proposal for both; a concurrent create of either (a user, a
	// previous leader) fails it as a whole, and the retry creates the other.
	if _, err := sc.c.Proposer.Propose(ctx, ops...); err != nil {
		return fmt.Errorf("creating the default ServiceAccount or kube-root-ca.crt of %s: %w", namespace, err)
	}
	return nil
}
