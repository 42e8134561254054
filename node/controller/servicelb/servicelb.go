// Package servicelb gives Services of type LoadBalancer their address: the
// nodes themselves, as k3s's ServiceLB does. status.loadBalancer.ingress
// lists one {ip: <InternalIP>, ipMode: VIP} per node that is Ready,
// schedulable (not cordoned), not a bench-only hollow node and not
// labelled node.kubernetes.io/exclude-from-external-load-balancers, sorted
// by address; it follows the nodes as they change, and is cleared when the
// service stops being a LoadBalancer. Services with a loadBalancerClass
// belong to another implementation and are left alone.
//
// ipMode VIP is what the Kubernetes API server stores for an ingress IP
// without one: the service proxy handles traffic to those addresses
// itself.
//
// It runs on the leader only and keeps no state but the set of services to
// revisit when nodes change; every sync reads the store.
package servicelb

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// Labels and annotations that take a node out of load balancers.
const (
	// LabelExcludeFromLB is Kubernetes' label for nodes that must not
	// receive load-balancer traffic.
	LabelExcludeFromLB = corev1.LabelNodeExcludeBalancers
	// HollowKey marks a bench-only hollow node (see controller.HollowKey).
	HollowKey = controller.HollowKey
)

const (
	resourceServices = "services"
	// DefaultWorkers is how many services are synced at once.
	DefaultWorkers = 2
)

// Controller is the LoadBalancer status controller. Create it with New,
// then call Run once.
type Controller struct {
	c     controller.Context
	queue controller.Queue

	mu  sync.Mutex
	lbs map[string]struct{} // guarded by mu; services that are LoadBalancers or carry an ingress

	// Workers is how many services are synced concurrently
	// (DefaultWorkers); set it before Run.
	Workers int
}

// New returns a LoadBalancer status controller.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	return &Controller{
		c:       c,
		queue:   controller.NewQueue("servicelb", c.Clock),
		lbs:     map[string]struct{}{},
		Workers: DefaultWorkers,
	}
}

// Run watches services and nodes and syncs LoadBalancer services until ctx
// ends.
func (lc *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); controller.Watch(ctx, lc.c.Store, resourceServices, lc.onService) }()
	go func() { defer wg.Done(); controller.Watch(ctx, lc.c.Store, controller.ResourceNodes, lc.onNode) }()
	controller.Run(ctx, lc.queue, lc.Workers, lc.c.Log, lc.sync)
	cancel()
	wg.Wait()
}

// onService tracks the services this controller writes to and queues
// them.
func (lc *Controller) onService(ev state.Event) {
	svc := ev.Object.(*corev1.Service)
	key := controller.Key(svc.Namespace, svc.Name)
	lc.mu.Lock()
	if ev.Type != state.Deleted && (svc.Spec.Type == corev1.ServiceTypeLoadBalancer || len(svc.Status.LoadBalancer.Ingress) > 0) {
		lc.lbs[key] = struct{}{}
	} else {
		_, was := lc.lbs[key]
		delete(lc.lbs, key)
		if !was {
			lc.mu.Unlock()
			return
		}
	}
	lc.mu.Unlock()
	if ev.Type != state.Deleted {
		lc.queue.Add(key)
	}
}

// onNode queues every LoadBalancer service when a node's part in them
// (its address, or whether it takes part) changed.
func (lc *Controller) onNode(ev state.Event) {
	var before, after netip.Addr
	if ev.Prev != nil {
		before = ingressIP(ev.Prev.(*corev1.Node))
	}
	if ev.Type != state.Deleted {
		after = ingressIP(ev.Object.(*corev1.Node))
	}
	if before == after {
		return
	}
	lc.mu.Lock()
	keys := make([]string, 0, len(lc.lbs))
	for k := range lc.lbs {
		keys = append(keys, k)
	}
	lc.mu.Unlock()
	for _, k := range keys {
		lc.queue.Add(k)
	}
}

// ingressIP is the address node gives load balancers: its first
// InternalIP when it is Ready, schedulable, not hollow and not excluded;
// the zero Addr otherwise.
func ingressIP(node *corev1.Node) netip.Addr {
	if node.Spec.Unschedulable {
		return netip.Addr{}
	}
	if _, excluded := node.Labels[LabelExcludeFromLB]; excluded {
		return netip.Addr{}
	}
	return controller.ServingNodeIP(node)
}

// Ingress returns the load-balancer ingress the nodes in the store call
// for, sorted by address (nil when no node qualifies).
func Ingress(store *state.Store) []corev1.LoadBalancerIngress {
	objs, _ := store.List(controller.ResourceNodes, "")
	ips := make([]netip.Addr, 0, len(objs))
	seen := map[netip.Addr]bool{}
	for _, o := range objs {
		if ip := ingressIP(o.(*corev1.Node)); ip.IsValid() && !seen[ip] {
			seen[ip] = true
			ips = append(ips, ip)
		}
	}
	if len(ips) == 0 {
		return nil
	}
	sort.Slice(ips, func(i, j int) bool { return ips[i].Less(ips[j]) })
	out := make([]corev1.LoadBalancerIngress, len(ips))
	for i, ip := range ips {
		vip := corev1.LoadBalancerIPModeVIP
		out[i] = corev1.LoadBalancerIngress{IP: ip.String(), IPMode: &vip}
	}
	return out
}

// desired returns the ingress svc calls for, and false when svc belongs
// to another load-balancer implementation (a loadBalancerClass).
func (lc *Controller) desired(svc *corev1.Service) ([]corev1.LoadBalancerIngress, bool) {
	switch {
	case svc.Spec.Type != corev1.ServiceTypeLoadBalancer:
		return nil, true // not (or no longer) a LoadBalancer: no address
	case svc.Spec.LoadBalancerClass != nil:
		return nil, false
	}
	return Ingress(lc.c.Store), true
}

// sync writes one service's load-balancer status.
func (lc *Controller) sync(ctx context.Context, key string) error {
	ns, name := controller.SplitKey(key)
	o, ok := lc.c.Store.Get(resourceServices, ns, name)
	if !ok {
		return nil
	}
	svc := o.(*corev1.Service)
	if want, mine := lc.desired(svc); !mine || ingressEqual(svc.Status.LoadBalancer.Ingress, want) {
		return nil
	}
	uid := svc.UID
	_, err := controller.Modify(ctx, lc.c, resourceServices, ns, name, func(o state.Object) error {
		cur := o.(*corev1.Service)
		want, mine := lc.desired(cur)
		if cur.UID != uid || !mine || ingressEqual(cur.Status.LoadBalancer.Ingress, want) {
			return controller.ErrUnchanged
		}
		cur.Status.LoadBalancer.Ingress = want
		return nil
	})
	if err != nil && !state.IsCode(err, state.CodeNotFound) {
		return fmt.Errorf("updating the load-balancer status of service %s: %w", key, err)
	}
	return nil
}

// ingressEqual compares two ingress lists field by field (nil and empty
// alike).
func ingressEqual(a, b []corev1.LoadBalancerIngress) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.IP != y.IP || x.Hostname != y.Hostname || len(x.Ports) != len(y.Ports) ||
			(x.IPMode == nil) != (y.IPMode == nil) || x.IPMode != nil && *x.IPMode != *y.IPMode {
			return false
		}
		for j := range x.Ports {
			p, q := &x.Ports[j], &y.Ports[j]
			if p.Port != q.Port || p.Protocol != q.Protocol || (p.Error == nil) != (q.Error == nil) || p.Error != nil && *p.Error != *q.Error {
				return false
			}
		}
	}
	return true
}

// Sync writes the status of the service with key ("namespace/name")
// once, now, as a worker would: for tests and tools.
func (lc *Controller) Sync(ctx context.Context, key string) error { return lc.sync(ctx, key) }
