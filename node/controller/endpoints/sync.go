package endpoints

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// sync reconciles the Endpoints and EndpointSlices of one service (key
// "namespace/name"), in one atomic proposal:
//
//   - service gone: delete its Endpoints and the slices managed for it;
//   - no selector or ExternalName: delete the slices managed for it and
//     leave Endpoints alone (they are the user's);
//   - otherwise: write the Endpoints and slices its pods call for, and
//     nothing when they are already stored.
func (ec *Controller) sync(ctx context.Context, key string) error {
	ns, name := controller.SplitKey(key)
	o, ok := ec.c.Store.Get(resourceServices, ns, name)
	if !ok {
		ops := ec.deleteSliceOps(key)
		if ep, ok := ec.c.Store.Get(ResourceEndpoints, ns, name); ok {
			ops = append(ops, state.Delete(endpointsKind, ns, name, controller.RV(ep), string(ep.GetUID())))
		}
		return ec.write(ctx, nil, key, ops)
	}
	svc := o.(*corev1.Service)
	if !selectsPods(svc) {
		return ec.write(ctx, svc, key, ec.deleteSliceOps(key))
	}
	pods := ec.idx.podsMatching(ns, svc.Spec.Selector)
	var ops []state.Op
	if op, ok := ec.endpointsOp(svc, pods); ok {
		ops = append(ops, op)
	}
	ops = append(ops, ec.sliceOps(key, svc, pods)...)
	if ec.namespaceTerminating(ns) {
		// The API refuses new objects there (and empties it): create
		// nothing, as Kubernetes' controllers end up doing.
		kept := ops[:0]
		for _, op := range ops {
			if op.Type != state.OpCreate {
				kept = append(kept, op)
			}
		}
		ops = kept
	}
	return ec.write(ctx, svc, key, ops)
}

// namespaceTerminating reports whether namespace ns is being deleted.
func (ec *Controller) namespaceTerminating(ns string) bool {
	o, ok := ec.c.Store.Get(resourceNamespaces, "", ns)
	if !ok {
		return false
	}
	n := o.(*corev1.Namespace)
	return n.DeletionTimestamp != nil || n.Status.Phase == corev1.NamespaceTerminating
}

// endpointsOp returns the write that makes svc's Endpoints what its pods
// call for, or false when they already are.
func (ec *Controller) endpointsOp(svc *corev1.Service, pods []*corev1.Pod) (state.Op, bool) {
	subsets := desiredSubsets(svc, pods)
	truncated := truncateSubsets(subsets, MaxEndpointsAddresses)
	labels := endpointsLabels(svc)
	o, found := ec.c.Store.Get(ResourceEndpoints, svc.Namespace, svc.Name)
	if !found {
		ep := &corev1.Endpoints{}
		ep.Namespace, ep.Name = svc.Namespace, svc.Name
		ep.UID = ec.c.NewUID()
		ep.CreationTimestamp = ec.c.MetaNow()
		ep.Labels = labels
		if truncated {
			ep.Annotations = map[string]string{corev1.EndpointsOverCapacity: overCapacityTruncated}
		}
		ep.Subsets = subsets
		return state.Create(ep), true
	}
	cur := o.(*corev1.Endpoints)
	annotated, hasAnnotation := cur.Annotations[corev1.EndpointsOverCapacity]
	if equalMaps(cur.Labels, labels) && hasAnnotation == truncated && (!truncated || annotated == overCapacityTruncated) &&
		subsetsEqual(cur.Subsets, subsets) {
		return state.Op{}, false
	}
	next := cur.DeepCopy()
	next.Labels = labels
	next.Subsets = subsets
	if truncated {
		if next.Annotations == nil {
			next.Annotations = map[string]string{}
		}
		next.Annotations[corev1.EndpointsOverCapacity] = overCapacityTruncated
	} else if hasAnnotation {
		delete(next.Annotations, corev1.EndpointsOverCapacity)
	}
	return state.Update(next, controller.RV(cur)), true
}

// managedSlices returns the stored slices this controller manages for the
// service key, sorted by name.
func (ec *Controller) managedSlices(key string) []*discoveryv1.EndpointSlice {
	ns, name := controller.SplitKey(key)
	var out []*discoveryv1.EndpointSlice
	for _, sn := range ec.idx.slicesOf(key) {
		o, ok := ec.c.Store.Get(ResourceEndpointSlices, ns, sn)
		if !ok {
			continue
		}
		s := o.(*discoveryv1.EndpointSlice)
		if managedService(s) == name {
			out = append(out, s)
		}
	}
	return out
}

// sliceOps returns the writes that make svc's slices what its pods call
// for.
func (ec *Controller) sliceOps(key string, svc *corev1.Service, pods []*corev1.Pod) []state.Op {
	zones := map[string]string{}
	zoneOf := func(node string) string {
		z, ok := zones[node]
		if !ok {
			if o, found := ec.c.Store.Get(controller.ResourceNodes, "", node); found {
				z = o.GetLabels()[corev1.LabelTopologyZone]
			}
			zones[node] = z
		}
		return z
	}
	types := addressTypesOf(svc, pods)
	desired := make(map[discoveryv1.AddressType][]*sliceGroup, len(types))
	for _, at := range types {
		desired[at] = desiredSliceGroups(svc, pods, at, zoneOf)
	}
	maxPer := ec.MaxEndpointsPerSlice
	if maxPer <= 0 {
		maxPer = DefaultMaxEndpointsPerSlice
	}
	plan := planSlices(svc, ec.managedSlices(key), types, desired, maxPer)
	ops := make([]state.Op, 0, len(plan.creates)+len(plan.updates)+len(plan.deletes))
	if len(plan.creates) > 0 {
		ref := controller.NewControllerRef(svc, serviceGVK)
		labels := sliceLabels(svc)
		prefix := controller.NamePrefix(svc.Name)
		for _, s := range plan.creates {
			s.Namespace = svc.Namespace
			s.GenerateName = prefix
			s.Name = controller.GenerateName(prefix)
			s.UID = ec.c.NewUID()
			s.CreationTimestamp = ec.c.MetaNow()
			s.Labels = labels
			s.OwnerReferences = []metav1.OwnerReference{*ref}
			ops = append(ops, state.Create(s))
		}
	}
	for _, s := range plan.updates {
		ops = append(ops, state.Update(s, controller.RV(s)))
	}
	for _, s := range plan.deletes {
		ops = append(ops, state.Delete(sliceKind, s.Namespace, s.Name, controller.RV(s), string(s.UID)))
	}
	return ops
}

// deleteSliceOps returns the deletes of every slice managed for the
// service key.
func (ec *Controller) deleteSliceOps(key string) []state.Op {
	var ops []state.Op
	for _, s := range ec.managedSlices(key) {
		ops = append(ops, state.Delete(sliceKind, s.Namespace, s.Name, controller.RV(s), string(s.UID)))
	}
	return ops
}

// write proposes ops (nothing when empty) and records what was written:
// the slice index learns about created and deleted slices at once (the
// next sync must not wait for the watch), and the resourceVersions
// written let the watch handlers tell this controller's writes from
// others'.
func (ec *Controller) write(ctx context.Context, svc *corev1.Service, key string, ops []state.Op) error {
	if len(ops) == 0 {
		return nil
	}
	rs, err := ec.c.Proposer.Propose(ctx, ops...)
	if err != nil {
		if svc != nil && !controller.UnknownOutcome(err) && !state.IsCode(err, state.CodeConflict) {
			ec.c.Events.Eventf(svc, serviceGVK.Kind, corev1.EventTypeWarning, reasonFailedToUpdate,
				"Error updating Endpoints and EndpointSlices for Service %s: %v", key, err)
		}
		return fmt.Errorf("writing endpoints of service %s: %w", key, err)
	}
	_, svcName := controller.SplitKey(key)
	for i, op := range ops {
		objKey := op.Resource + "/" + op.Namespace + "/" + op.Name
		switch {
		case op.Type == state.OpDelete:
			if op.Resource == ResourceEndpointSlices {
				ec.idx.deleteSlice(op.Namespace, op.Name)
			}
			ec.written.forget(objKey)
		default:
			if op.Resource == ResourceEndpointSlices {
				ec.idx.setSlice(op.Namespace, op.Name, svcName)
			}
			ec.written.record(objKey, rs[i].RV)
		}
	}
	return nil
}
