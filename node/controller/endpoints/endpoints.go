// Package endpoints is the endpoints controller: for every Service with a
// selector it keeps an Endpoints object of the same name and the
// discovery.k8s.io/v1 EndpointSlices of its pods in step with the pods,
// as kube-controller-manager's endpoints and EndpointSlice controllers do
// (one controller here, one queue keyed by service, one atomic proposal
// per sync).
//
//   - Pods: those of the service's namespace its selector matches, with an
//     IP, not finished. Endpoints list ready pods under addresses and the
//     others under notReadyAddresses, and leave terminating pods out;
//     slices carry every pod with conditions ready (Ready and not
//     terminating), serving (Ready) and terminating. With
//     publishNotReadyAddresses every such pod counts as ready, in both.
//   - Ports: each service port's targetPort, a number or a container port
//     name resolved per pod; a pod without a named port is left out of that
//     port. Endpoints subsets and slices group pods by identical port sets.
//   - Slices: at most MaxEndpointsPerSlice endpoints each, labelled with
//     the service name and this controller's managed-by, controlled by the
//     service; updated in place, the surplus deleted, an empty placeholder
//     kept for a service without endpoints.
//   - A deleted service's Endpoints and slices are deleted at once (the
//     garbage collector would only get the slices, later); a service that
//     loses its selector (or becomes ExternalName) loses the slices this
//     controller made and keeps its Endpoints (from then on the user's).
//   - Nothing is written when nothing changed: outputs are sorted and
//     compared semantically with what is stored.
//
// Latency: a pod event enqueues, with no delay, only the services of its
// namespace whose selector matches the pod's old or new labels, found
// through an index (see index), and only when something endpoints depend
// on changed. A sync costs work in proportion to the service's pods and
// slices, never to the cluster's.
//
// It runs on the leader only; all its state is in the store but for the
// index, rebuilt from the replica when it starts (before the first sync),
// so a new leader converges without duplicating anything.
package endpoints

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// Names and limits, as Kubernetes has them.
const (
	// ControllerName is the managed-by label value of the slices this
	// controller manages (Kubernetes' EndpointSlice controller's, so
	// clients that look for it find them).
	ControllerName = "endpointslice-controller.k8s.io"
	// LabelEndpointsManagedBy and EndpointsControllerName mark the
	// Endpoints this controller writes (Kubernetes 1.33's label).
	LabelEndpointsManagedBy = "endpoints.kubernetes.io/managed-by"
	EndpointsControllerName = "endpoint-controller"
	// DefaultMaxEndpointsPerSlice is the default bound of endpoints in one
	// slice (kube-controller-manager's --max-endpoints-per-slice).
	DefaultMaxEndpointsPerSlice = 100
	// MaxEndpointsAddresses bounds the addresses of one Endpoints object;
	// beyond it they are truncated and the object annotated
	// endpoints.kubernetes.io/over-capacity: truncated.
	MaxEndpointsAddresses = 1000
	// DefaultWorkers is how many services are synced at once.
	DefaultWorkers = 5

	overCapacityTruncated = "truncated"
	reasonFailedToUpdate  = "FailedToUpdateEndpoint"
	// leaderAnnotation marks Endpoints used as leader-election locks:
	// never treated as leftovers.
	leaderAnnotation = "control-plane.alpha.kubernetes.io/leader"
)

// Store keys of the resources this controller reads and writes.
const (
	ResourceEndpoints      = "endpoints"
	ResourceEndpointSlices = "endpointslices.discovery.k8s.io"
	resourceServices       = "services"
	resourceNamespaces     = "namespaces"
)

var (
	endpointsKind, _ = state.KindFor(ResourceEndpoints)
	sliceKind, _     = state.KindFor(ResourceEndpointSlices)
	serviceGVK       = corev1.SchemeGroupVersion.WithKind("Service")
)

// Controller is the endpoints controller. Create it with New, then call
// Run once; a Controller is not reused after Run returns (a new leader
// term makes a new one).
type Controller struct {
	c       controller.Context
	queue   controller.Queue
	idx     *index
	written writeTracker
	feeds   []*feed

	// Workers is how many services are synced concurrently
	// (DefaultWorkers); set it before Run.
	Workers int
	// MaxEndpointsPerSlice bounds the endpoints of one slice
	// (DefaultMaxEndpointsPerSlice); set it before Run.
	MaxEndpointsPerSlice int
}

// New returns an endpoints controller.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	ec := &Controller{
		c:                    c,
		queue:                controller.NewQueue("endpoints", c.Clock),
		idx:                  newIndex(),
		written:              writeTracker{rv: map[string]uint64{}},
		Workers:              DefaultWorkers,
		MaxEndpointsPerSlice: DefaultMaxEndpointsPerSlice,
	}
	ec.feeds = []*feed{
		{resource: resourceServices, reset: ec.idx.resetServices, handle: ec.onService},
		{resource: controller.ResourcePods, reset: ec.idx.resetPods, handle: ec.onPod},
		{resource: ResourceEndpointSlices, reset: ec.idx.resetSlices, handle: ec.onSlice},
		{resource: ResourceEndpoints, reset: func([]state.Object) {}, handle: ec.onEndpoints},
		{resource: controller.ResourceNodes, reset: func([]state.Object) {}, handle: ec.onNode},
	}
	for _, f := range ec.feeds {
		f.store = c.Store
		f.relisted = ec.enqueueAll
	}
	return ec
}

// Run watches services, pods, slices, Endpoints and nodes and syncs
// services until ctx ends.
func (ec *Controller) Run(ctx context.Context) {
	ec.start()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); runFeeds(ctx, ec.feeds) }()
	controller.Run(ctx, ec.queue, ec.Workers, ec.c.Log, ec.sync)
	cancel()
	wg.Wait()
}

// start lists every resource into the index and queues every service,
// every service with managed slices (its service may be gone) and every
// Endpoints this controller wrote whose service is gone.
func (ec *Controller) start() {
	var endpoints []state.Object
	for _, f := range ec.feeds {
		objs := f.open()
		switch f.resource {
		case resourceServices:
			for _, o := range objs {
				ec.queue.Add(controller.Key(o.GetNamespace(), o.GetName()))
			}
		case ResourceEndpoints:
			endpoints = objs
		}
	}
	for _, k := range ec.idx.sliceOwners() {
		ec.queue.Add(k)
	}
	for _, o := range endpoints {
		if _, lock := o.GetAnnotations()[leaderAnnotation]; lock || o.GetLabels()[LabelEndpointsManagedBy] != EndpointsControllerName {
			continue
		}
		if _, ok := ec.c.Store.Get(resourceServices, o.GetNamespace(), o.GetName()); !ok {
			ec.queue.Add(controller.Key(o.GetNamespace(), o.GetName()))
		}
	}
}

// enqueueAll queues every service and every service with managed slices
// (after a watch was re-established: changes may have been missed).
func (ec *Controller) enqueueAll() {
	objs, _ := ec.c.Store.List(resourceServices, "")
	for _, o := range objs {
		ec.queue.Add(controller.Key(o.GetNamespace(), o.GetName()))
	}
	for _, k := range ec.idx.sliceOwners() {
		ec.queue.Add(k)
	}
}

func (ec *Controller) onService(ev state.Event) {
	svc := ev.Object.(*corev1.Service)
	key := controller.Key(svc.Namespace, svc.Name)
	if ev.Type == state.Deleted {
		ec.idx.deleteService(svc.Namespace, svc.Name)
		ec.queue.Add(key)
		return
	}
	ec.idx.setService(svc)
	if prev, ok := ev.Prev.(*corev1.Service); ok && ev.Type == state.Modified && !serviceChanged(prev, svc) {
		return // a status write (a load balancer's address): nothing here depends on it
	}
	ec.queue.Add(key)
}

// serviceChanged reports whether a service update can change its
// endpoints.
func serviceChanged(a, b *corev1.Service) bool {
	return a.UID != b.UID || !equalMaps(a.Labels, b.Labels) ||
		(a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil) ||
		!equality.Semantic.DeepEqual(a.Spec, b.Spec)
}

// onPod updates the index and queues the services whose selector matches
// the pod before or after the change, when the change matters to them.
func (ec *Controller) onPod(ev state.Event) {
	pod := ev.Object.(*corev1.Pod)
	prev, _ := ev.Prev.(*corev1.Pod)
	if ev.Type == state.Deleted {
		ec.idx.deletePod(pod.Namespace, pod.Name)
	} else {
		ec.idx.setPod(pod)
	}
	if ev.Type == state.Modified && prev != nil && !podChanged(prev, pod) {
		return
	}
	ec.idx.servicesFor(pod.Namespace, pod.Labels, ec.queue.Add)
	if prev != nil && !equalMaps(prev.Labels, pod.Labels) {
		ec.idx.servicesFor(prev.Namespace, prev.Labels, ec.queue.Add)
	}
}

// onSlice keeps the slice index and queues the service of a managed slice
// someone else changed or deleted (this controller's own writes are known
// by their resourceVersion).
func (ec *Controller) onSlice(ev state.Event) {
	s := ev.Object.(*discoveryv1.EndpointSlice)
	prev, _ := ev.Prev.(*discoveryv1.EndpointSlice)
	svc, prevSvc := managedService(s), managedService(prev)
	objKey := ResourceEndpointSlices + "/" + s.Namespace + "/" + s.Name
	if ev.Type == state.Deleted || svc == "" {
		ec.idx.deleteSlice(s.Namespace, s.Name)
	} else {
		ec.idx.setSlice(s.Namespace, s.Name, svc)
	}
	if ev.Type == state.Deleted {
		ec.written.forget(objKey)
	} else if ec.written.ours(objKey, ev.RV) {
		return
	}
	if svc != "" {
		ec.queue.Add(controller.Key(s.Namespace, svc))
	}
	if prevSvc != "" && prevSvc != svc {
		ec.queue.Add(controller.Key(s.Namespace, prevSvc))
	}
}

// onEndpoints queues a service whose Endpoints someone else changed or
// deleted, when this controller keeps them. An Endpoints object created
// for a service that does not exist (yet) is left alone, as Kubernetes
// does.
func (ec *Controller) onEndpoints(ev state.Event) {
	o := ev.Object
	objKey := ResourceEndpoints + "/" + o.GetNamespace() + "/" + o.GetName()
	if ev.Type == state.Deleted {
		ec.written.forget(objKey)
	} else if ec.written.ours(objKey, ev.RV) {
		return
	}
	if ec.idx.hasService(o.GetNamespace(), o.GetName()) {
		ec.queue.Add(controller.Key(o.GetNamespace(), o.GetName()))
	}
}

// onNode queues the services of the pods on a node whose zone changed
// (slices carry it). Added and deleted nodes are skipped: a node has no
// running pods before its object exists, and the pods of a deleted node
// are collected (their deletion queues their services). The first list is
// skipped too: every service is synced after it anyway.
func (ec *Controller) onNode(ev state.Event) {
	if ev.Type != state.Modified || ev.Prev == nil {
		return
	}
	if ev.Object.GetLabels()[corev1.LabelTopologyZone] == ev.Prev.GetLabels()[corev1.LabelTopologyZone] {
		return
	}
	for _, p := range ec.idx.podsOnNode(ev.Object.GetName()) {
		ec.idx.servicesFor(p.Namespace, p.Labels, ec.queue.Add)
	}
}

// Sync reconciles the service with key ("namespace/name") once, now, as a
// worker would: for tests and tools that drive the controller step by
// step (after Run started, or after start in tests).
func (ec *Controller) Sync(ctx context.Context, key string) error { return ec.sync(ctx, key) }

// writeTracker remembers the resourceVersion of this controller's last
// write of each object, so that watch events of its own writes are not
// taken for someone else's. One entry per object written, dropped when
// the object is deleted.
type writeTracker struct {
	mu sync.Mutex
	rv map[string]uint64 // guarded by mu; "resource/namespace/name" → resourceVersion
}

func (w *writeTracker) record(key string, rv uint64) {
	w.mu.Lock()
	if rv > w.rv[key] {
		w.rv[key] = rv
	}
	w.mu.Unlock()
}

// ours reports whether the version rv of key is one this controller wrote
// (or older).
func (w *writeTracker) ours(key string, rv uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.rv[key]
	return ok && rv <= r
}

func (w *writeTracker) forget(key string) {
	w.mu.Lock()
	delete(w.rv, key)
	w.mu.Unlock()
}
