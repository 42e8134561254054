// Package apiservice keeps the default/kubernetes Service, its Endpoints
// and its EndpointSlice, as kube-apiserver does, so that pods reach the
// API at https://kubernetes.default.svc:
//
//   - the Service: type ClusterIP, cluster IP the first address of the
//     service range (the API server's allocator reserves it; it is set
//     here explicitly), port https 443/TCP → the API port, no selector,
//     labels component=apiserver and provider=kubernetes;
//   - the Endpoints (labelled endpointslice.kubernetes.io/skip-mirror) and
//     the EndpointSlice "kubernetes" (managed by shoal.dev/apiserver):
//     the InternalIP of every Ready node (bench-only hollow nodes aside)
//     on the API port, named https.
//
// All three are created when missing and repaired when changed; other
// slices this controller would manage for the service are deleted (never
// two). Fields of the Service it does not own (session affinity, other
// labels, annotations) are left as they are. Writes are one atomic
// proposal, and none when everything is as it should be.
//
// It runs on the leader only and keeps no state; every sync reads the
// store.
package apiservice

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/state"
)

// Names, as kube-apiserver has them (but the managed-by value, Shoal's).
const (
	Namespace   = "default"
	ServiceName = "kubernetes"
	PortName    = "https"
	ServicePort = 443
	// ManagedBy is the managed-by label value of the service's slice.
	ManagedBy = "shoal.dev/apiserver"
	// LabelSkipMirror keeps EndpointSlice mirroring away from the
	// Endpoints (kube-apiserver sets it too).
	LabelSkipMirror = "endpointslice.kubernetes.io/skip-mirror"
	// HollowKey marks a bench-only hollow node (see controller.HollowKey).
	HollowKey = controller.HollowKey
)

// Defaults.
var (
	// DefaultClusterIP is the first address of the default service range
	// (10.43.0.0/16).
	DefaultClusterIP = netip.MustParseAddr("10.43.0.1")
)

// DefaultAPIPort is the API server's default port.
const DefaultAPIPort = 6443

// Store keys.
const (
	resourceServices       = "services"
	resourceEndpoints      = "endpoints"
	resourceEndpointSlices = "endpointslices.discovery.k8s.io"
	queueKey               = Namespace + "/" + ServiceName
)

var sliceKind, _ = state.KindFor(resourceEndpointSlices)

// Config is what the controller needs to know about the API.
type Config struct {
	// APIPort is the port every node's API server listens on
	// (DefaultAPIPort): the service's targetPort and its endpoints' port.
	APIPort int32
	// ClusterIP is the service's address: the first address of the
	// service range (DefaultClusterIP; see FirstIP).
	ClusterIP netip.Addr
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{APIPort: DefaultAPIPort, ClusterIP: DefaultClusterIP}
}

// FirstIP returns the first address of a service range (its network
// address plus one): the kubernetes service's.
func FirstIP(serviceCIDR netip.Prefix) netip.Addr {
	return serviceCIDR.Masked().Addr().Next()
}

// Controller keeps the kubernetes service. Create it with New, then call
// Run once.
type Controller struct {
	c     controller.Context
	cfg   Config
	queue controller.Queue
}

// New returns the controller; zero fields of cfg take their defaults.
func New(c controller.Context, cfg Config) *Controller {
	c = c.WithDefaults()
	def := DefaultConfig()
	if cfg.APIPort == 0 {
		cfg.APIPort = def.APIPort
	}
	if !cfg.ClusterIP.IsValid() {
		cfg.ClusterIP = def.ClusterIP
	}
	return &Controller{c: c, cfg: cfg, queue: controller.NewQueue("apiservice", c.Clock)}
}

// Run watches the service, its endpoints and the nodes, and keeps them
// until ctx ends.
func (ac *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ac.queue.Add(queueKey)
	var wg sync.WaitGroup
	watch := func(resource string, relevant func(state.Event) bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			controller.Watch(ctx, ac.c.Store, resource, func(ev state.Event) {
				if relevant(ev) {
					ac.queue.Add(queueKey)
				}
			})
		}()
	}
	ours := func(ev state.Event) bool {
		return ev.Object.GetNamespace() == Namespace && ev.Object.GetName() == ServiceName
	}
	watch(resourceServices, ours)
	watch(resourceEndpoints, ours)
	watch(resourceEndpointSlices, func(ev state.Event) bool {
		return ev.Object.GetNamespace() == Namespace &&
			(ev.Object.GetName() == ServiceName || ev.Object.GetLabels()[discoveryv1.LabelServiceName] == ServiceName)
	})
	watch(controller.ResourceNodes, nodeChanged)
	controller.Run(ctx, ac.queue, 1, ac.c.Log, func(ctx context.Context, _ string) error { return ac.sync(ctx) })
	cancel()
	wg.Wait()
}

// nodeChanged reports whether a node event changes the endpoints.
func nodeChanged(ev state.Event) bool {
	var before, after netip.Addr
	if ev.Prev != nil {
		before = endpointIP(ev.Prev.(*corev1.Node))
	}
	if ev.Type != state.Deleted {
		after = endpointIP(ev.Object.(*corev1.Node))
	}
	return before != after
}

// endpointIP is the address node serves the API on: its first InternalIP
// when it is Ready and not hollow; the zero Addr otherwise.
func endpointIP(node *corev1.Node) netip.Addr { return controller.ServingNodeIP(node) }

// apiNode is one node serving the API.
type apiNode struct {
	ip   netip.Addr
	name string
}

// apiNodes lists the nodes serving the API, by address (one per address).
func (ac *Controller) apiNodes() []apiNode {
	objs, _ := ac.c.Store.List(controller.ResourceNodes, "")
	var out []apiNode
	seen := map[netip.Addr]bool{}
	for _, o := range objs {
		if ip := endpointIP(o.(*corev1.Node)); ip.IsValid() && !seen[ip] {
			seen[ip] = true
			out = append(out, apiNode{ip: ip, name: o.GetName()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ip.Less(out[j].ip) })
	return out
}

// sync makes the service, its Endpoints and its slice what they should
// be, in one proposal.
func (ac *Controller) sync(ctx context.Context) error {
	nodes := ac.apiNodes()
	var ops []state.Op
	if op, ok := ac.serviceOp(); ok {
		ops = append(ops, op)
	}
	if op, ok := ac.endpointsOp(nodes); ok {
		ops = append(ops, op)
	}
	ops = append(ops, ac.sliceOps(nodes)...)
	if len(ops) == 0 {
		return nil
	}
	if _, err := ac.c.Proposer.Propose(ctx, ops...); err != nil {
		return fmt.Errorf("writing the %s service and its endpoints: %w", queueKey, err)
	}
	return nil
}

// Sync reconciles once, now, as the worker would: for tests and tools.
func (ac *Controller) Sync(ctx context.Context) error { return ac.sync(ctx) }

// wantLabels are the labels the service must carry.
var wantLabels = map[string]string{"component": "apiserver", "provider": "kubernetes"}

// serviceOp returns the create or repair of the service, or false.
func (ac *Controller) serviceOp() (state.Op, bool) {
	ip := ac.cfg.ClusterIP.String()
	o, found := ac.c.Store.Get(resourceServices, Namespace, ServiceName)
	if !found {
		svc := &corev1.Service{}
		svc.Namespace, svc.Name = Namespace, ServiceName
		svc.UID = ac.c.NewUID()
		svc.CreationTimestamp = ac.c.MetaNow()
		svc.Generation = 1
		svc.Labels = map[string]string{}
		for k, v := range wantLabels {
			svc.Labels[k] = v
		}
		ac.repairSpec(&svc.Spec, ip)
		defaults.Apply(svc)
		return state.Create(svc), true
	}
	cur := o.(*corev1.Service)
	next := cur.DeepCopy()
	ac.repairSpec(&next.Spec, ip)
	defaults.Apply(next)
	labelsOK := true
	for k, v := range wantLabels {
		if cur.Labels[k] != v {
			labelsOK = false
		}
	}
	specOK := equality.Semantic.DeepEqual(cur.Spec, next.Spec)
	if labelsOK && specOK {
		return state.Op{}, false
	}
	if !labelsOK {
		l := make(map[string]string, len(cur.Labels)+len(wantLabels))
		for k, v := range cur.Labels {
			l[k] = v
		}
		for k, v := range wantLabels {
			l[k] = v
		}
		next.Labels = l
	}
	if !specOK {
		next.Generation++
	}
	return state.Update(next, controller.RV(cur)), true
}

// repairSpec sets the fields of the service this controller owns and
// clears those that do not go with a ClusterIP service.
func (ac *Controller) repairSpec(s *corev1.ServiceSpec, ip string) {
	single := corev1.IPFamilyPolicySingleStack
	s.Type = corev1.ServiceTypeClusterIP
	s.Selector = nil
	s.ClusterIP = ip
	s.ClusterIPs = []string{ip}
	s.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	if ac.cfg.ClusterIP.Is6() {
		s.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	}
	s.IPFamilyPolicy = &single
	s.Ports = []corev1.ServicePort{{Name: PortName, Protocol: corev1.ProtocolTCP, Port: ServicePort, TargetPort: intstr.FromInt32(ac.cfg.APIPort)}}
	s.ExternalName = ""
	s.ExternalTrafficPolicy = ""
	s.HealthCheckNodePort = 0
	s.LoadBalancerIP = ""
	s.LoadBalancerSourceRanges = nil
	s.LoadBalancerClass = nil
	s.AllocateLoadBalancerNodePorts = nil
}

// endpointsOp returns the create or repair of the Endpoints, or false.
func (ac *Controller) endpointsOp(nodes []apiNode) (state.Op, bool) {
	var subsets []corev1.EndpointSubset
	if len(nodes) > 0 {
		s := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: PortName, Port: ac.cfg.APIPort, Protocol: corev1.ProtocolTCP}}}
		for _, n := range nodes {
			s.Addresses = append(s.Addresses, corev1.EndpointAddress{IP: n.ip.String()})
		}
		subsets = []corev1.EndpointSubset{s}
	}
	o, found := ac.c.Store.Get(resourceEndpoints, Namespace, ServiceName)
	if !found {
		ep := &corev1.Endpoints{}
		ep.Namespace, ep.Name = Namespace, ServiceName
		ep.UID = ac.c.NewUID()
		ep.CreationTimestamp = ac.c.MetaNow()
		ep.Labels = map[string]string{LabelSkipMirror: "true"}
		ep.Subsets = subsets
		return state.Create(ep), true
	}
	cur := o.(*corev1.Endpoints)
	if cur.Labels[LabelSkipMirror] == "true" && equality.Semantic.DeepEqual(cur.Subsets, subsets) {
		return state.Op{}, false
	}
	next := cur.DeepCopy()
	next.Subsets = subsets
	if next.Labels[LabelSkipMirror] != "true" {
		l := map[string]string{LabelSkipMirror: "true"}
		for k, v := range cur.Labels {
			if k != LabelSkipMirror {
				l[k] = v
			}
		}
		next.Labels = l
	}
	return state.Update(next, controller.RV(cur)), true
}

// sliceOps returns the create or repair of the slice "kubernetes", and the
// deletes of any other slice managed for the service.
func (ac *Controller) sliceOps(nodes []apiNode) []state.Op {
	name, proto, port := PortName, corev1.ProtocolTCP, ac.cfg.APIPort
	at := discoveryv1.AddressTypeIPv4
	if ac.cfg.ClusterIP.Is6() {
		at = discoveryv1.AddressTypeIPv6
	}
	var eps []discoveryv1.Endpoint
	for _, n := range nodes {
		if n.ip.Is6() != (at == discoveryv1.AddressTypeIPv6) {
			continue
		}
		ready, serving, terminating := true, true, false
		nodeName := n.name
		eps = append(eps, discoveryv1.Endpoint{
			Addresses:  []string{n.ip.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &nodeName,
		})
	}
	ports := []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}}
	labels := map[string]string{discoveryv1.LabelServiceName: ServiceName, discoveryv1.LabelManagedBy: ManagedBy}

	var ops []state.Op
	objs, _ := ac.c.Store.List(resourceEndpointSlices, Namespace)
	for _, o := range objs {
		s := o.(*discoveryv1.EndpointSlice)
		if s.Name != ServiceName && s.Labels[discoveryv1.LabelServiceName] == ServiceName && s.Labels[discoveryv1.LabelManagedBy] == ManagedBy {
			ops = append(ops, state.Delete(sliceKind, s.Namespace, s.Name, controller.RV(s), string(s.UID)))
		}
	}
	create := func() state.Op {
		s := &discoveryv1.EndpointSlice{AddressType: at, Endpoints: eps, Ports: ports}
		s.Namespace, s.Name = Namespace, ServiceName
		s.UID = ac.c.NewUID()
		s.CreationTimestamp = ac.c.MetaNow()
		s.Labels = labels
		return state.Create(s)
	}
	o, found := ac.c.Store.Get(resourceEndpointSlices, Namespace, ServiceName)
	if !found {
		return append(ops, create())
	}
	cur := o.(*discoveryv1.EndpointSlice)
	if cur.AddressType != at {
		// The address type is immutable: replace the slice.
		return append(ops, state.Delete(sliceKind, Namespace, ServiceName, controller.RV(cur), string(cur.UID)), create())
	}
	labelsOK := cur.Labels[discoveryv1.LabelServiceName] == ServiceName && cur.Labels[discoveryv1.LabelManagedBy] == ManagedBy
	if labelsOK && equality.Semantic.DeepEqual(cur.Endpoints, eps) && equality.Semantic.DeepEqual(cur.Ports, ports) {
		return ops
	}
	next := cur.DeepCopy()
	next.Endpoints = eps
	next.Ports = ports
	if !labelsOK {
		l := make(map[string]string, len(cur.Labels)+2)
		for k, v := range cur.Labels {
			l[k] = v
		}
		for k, v := range labels {
			l[k] = v
		}
		next.Labels = l
	}
	return append(ops, state.Update(next, controller.RV(cur)))
}
