package apiserver

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"

	"github.com/shoal-dev/shoal/node/admission"
	"github.com/shoal-dev/shoal/node/state"
)

// Finalizers the API adds for propagation policies; a garbage collector
// (a later controller) removes them once dependents are handled.
const (
	finalizerForeground = metav1.FinalizerDeleteDependents // "foregroundDeletion"
	finalizerOrphan     = metav1.FinalizerOrphanDependents // "orphan"
)

// protectedNamespaces can never be deleted.
var protectedNamespaces = map[string]bool{
	"default": true, "kube-system": true, "kube-public": true, "kube-node-lease": true,
}

// deleteOptions reads DeleteOptions from the body (JSON or protobuf, may be
// empty) and the query.
func (rq *request) deleteOptions() (*metav1.DeleteOptions, error) {
	opts := &metav1.DeleteOptions{}
	buf := getBuf()
	defer putBuf(buf)
	if err := readBody(rq.r, buf, rq.s.maxBody); err != nil {
		return nil, err
	}
	if body := bytes.TrimSpace(buf.Bytes()); len(body) > 0 {
		switch mt := mediaType(rq.r.Header.Get("Content-Type")); mt {
		case mediaProtobuf:
			gvk := schema.GroupVersionKind{Group: "meta.k8s.io", Version: "v1", Kind: "DeleteOptions"}
			out, _, err := protobufSerializer.Decode(body, &gvk, opts)
			if err != nil {
				return nil, badRequest("decoding DeleteOptions: %v", err)
			}
			if out != opts {
				return nil, badRequest("the body is not a DeleteOptions")
			}
		case "", mediaJSON, "*/*":
			if err := kjson.UnmarshalCaseSensitivePreserveInts(body, opts); err != nil {
				return nil, badRequest("decoding DeleteOptions: %v", err)
			}
		default:
			return nil, unsupportedMediaType(fmt.Sprintf("DeleteOptions in an unsupported format %q", mt))
		}
	}
	if v := rq.query.Get("gracePeriodSeconds"); v != "" {
		g, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, badRequest("gracePeriodSeconds must be an integer, not %q", v)
		}
		opts.GracePeriodSeconds = &g
	}
	if v := rq.query.Get("propagationPolicy"); v != "" {
		p := metav1.DeletionPropagation(v)
		opts.PropagationPolicy = &p
	}
	if v := rq.query.Get("orphanDependents"); v != "" {
		o := isTrue(v)
		opts.OrphanDependents = &o //nolint:staticcheck // still sent by old clients
	}
	if p := opts.PropagationPolicy; p != nil {
		switch *p {
		case metav1.DeletePropagationForeground, metav1.DeletePropagationBackground, metav1.DeletePropagationOrphan:
		default:
			return nil, apierrors.NewInvalid(schema.GroupKind{Group: "meta.k8s.io", Kind: "DeleteOptions"}, "",
				field.ErrorList{field.NotSupported(field.NewPath("propagationPolicy"), *p,
					[]string{string(metav1.DeletePropagationForeground), string(metav1.DeletePropagationBackground), string(metav1.DeletePropagationOrphan)})})
		}
	}
	return opts, nil
}

// finalizerFor is the finalizer a propagation policy asks for ("" = none).
func finalizerFor(opts *metav1.DeleteOptions) string {
	if opts.PropagationPolicy != nil {
		switch *opts.PropagationPolicy {
		case metav1.DeletePropagationForeground:
			return finalizerForeground
		case metav1.DeletePropagationOrphan:
			return finalizerOrphan
		}
		return ""
	}
	if o := opts.OrphanDependents; o != nil && *o { //nolint:staticcheck
		return finalizerOrphan
	}
	return ""
}

func checkPreconditions(rq *request, opts *metav1.DeleteOptions, cur state.Object) error {
	p := opts.Preconditions
	if p == nil {
		return nil
	}
	if p.UID != nil && *p.UID != cur.GetUID() {
		return apierrors.NewConflict(rq.res.groupResource(), rq.name,
			fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", *p.UID, cur.GetUID()))
	}
	if p.ResourceVersion != nil && *p.ResourceVersion != cur.GetResourceVersion() {
		return apierrors.NewConflict(rq.res.groupResource(), rq.name,
			fmt.Errorf("Precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *p.ResourceVersion, cur.GetResourceVersion()))
	}
	return nil
}

func (s *Server) delete(rq *request) {
	opts, err := rq.deleteOptions()
	if err != nil {
		rq.fail(err)
		return
	}
	if rq.res.Resource == "namespaces" {
		s.deleteNamespace(rq, opts)
		return
	}
	out, immediate, err := s.deleteObject(rq, rq.namespace, rq.name, opts)
	if err != nil {
		rq.fail(err)
		return
	}
	if immediate && !rq.res.returnDeleted {
		rq.writeJSON(http.StatusOK, &metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status:   metav1.StatusSuccess,
			Details: &metav1.StatusDetails{
				Name: rq.name, Group: rq.res.Group, Kind: rq.res.Resource, UID: out.GetUID(),
			},
		})
		return
	}
	rq.writeObject(http.StatusOK, out)
}

// deleteObject deletes one object: objects with finalizers (or a propagation
// policy that adds one) are marked with a deletionTimestamp and stay until an
// update empties their finalizers; others are removed now. Pods are removed
// gracefully: a running pod bound to a node is marked and stays until that
// node's agent has stopped its containers (podGracePeriod). It returns the
// object as last stored and whether it is gone.
func (s *Server) deleteObject(rq *request, ns, name string, opts *metav1.DeleteOptions) (state.Object, bool, error) {
	gr := rq.res.groupResource()
	if rq.res.Key() == admission.ResourcePriorityClasses && (name == admission.SystemClusterCritical || name == admission.SystemNodeCritical) {
		return nil, false, apierrors.NewForbidden(gr, name, errors.New("this is a system priority class and cannot be deleted"))
	}
	add := finalizerFor(opts)
	for attempt := 0; ; attempt++ {
		cur, ok := s.store.Get(rq.res.Key(), ns, name)
		if !ok {
			return nil, false, apierrors.NewNotFound(gr, name)
		}
		if err := checkPreconditions(rq, opts, cur); err != nil {
			return nil, false, err
		}
		fins := cur.GetFinalizers()
		if add != "" && !contains(fins, add) {
			fins = append(append([]string(nil), fins...), add)
		}
		var op state.Op
		var out state.Object
		podGrace := int64(0)
		if pod, ok := cur.(*corev1.Pod); ok {
			podGrace = s.podGracePeriod(pod, opts)
		}
		immediate := len(fins) == 0 && podGrace == 0
		if immediate {
			out = cur
			op = state.Delete(rq.res.Kind, ns, name, rvOf(cur), string(cur.GetUID()))
		} else {
			shorter := podGrace > 0 && cur.GetDeletionGracePeriodSeconds() != nil && podGrace < *cur.GetDeletionGracePeriodSeconds()
			if cur.GetDeletionTimestamp() != nil && len(fins) == len(cur.GetFinalizers()) && !shorter {
				return cur, false, nil // already being deleted
			}
			next := cur.DeepCopyObject().(state.Object)
			next.SetFinalizers(fins)
			if next.GetDeletionTimestamp() == nil || shorter {
				grace := int64(0)
				if opts.GracePeriodSeconds != nil && *opts.GracePeriodSeconds > 0 {
					grace = *opts.GracePeriodSeconds
				}
				if podGrace > 0 {
					grace = podGrace
				}
				// As in Kubernetes, the timestamp is when the grace period
				// ends.
				at := metav1.NewTime(s.now().Add(time.Duration(grace) * time.Second).Truncate(1e9))
				next.SetDeletionTimestamp(&at)
				next.SetDeletionGracePeriodSeconds(&grace)
			}
			next.SetResourceVersion("")
			out = next
			op = state.Update(next, rvOf(cur))
		}
		if rq.dryRun() {
			return out, immediate, nil
		}
		rs, err := s.prop.Propose(rq.writeContext(), op)
		if err != nil {
			if state.IsCode(err, state.CodeConflict) && opts.Preconditions == nil && attempt+1 < maxUpdateAttempts {
				continue
			}
			if state.IsCode(err, state.CodeNotFound) {
				return nil, false, apierrors.NewNotFound(gr, name)
			}
			return nil, false, err
		}
		if !immediate {
			out.SetResourceVersion(strconv.FormatUint(rs[0].RV, 10))
		}
		return out, immediate, nil
	}
}

// deleteCollection deletes every object the selectors match, one by one.
func (s *Server) deleteCollection(rq *request) {
	opts, err := rq.deleteOptions()
	if err != nil {
		rq.fail(err)
		return
	}
	if rq.res.Resource == "namespaces" {
		rq.fail(apierrors.NewMethodNotSupported(rq.res.groupResource(), "deletecollection"))
		return
	}
	f, err := rq.listFilter()
	if err != nil {
		rq.fail(err)
		return
	}
	objs, rev := s.store.List(rq.res.Key(), rq.namespace)
	var deleted []state.Object
	for _, o := range objs {
		if !f.matches(o) {
			continue
		}
		out, _, err := s.deleteObject(rq, o.GetNamespace(), o.GetName(), opts)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			rq.fail(err)
			return
		}
		deleted = append(deleted, out)
	}
	rq.writeList(deleted, &metav1.ListMeta{ResourceVersion: strconv.FormatUint(rev, 10)})
}

// namespacePhase is a helper for tests and the finalizer.
func namespaceTerminating(o state.Object) bool {
	n, ok := o.(*corev1.Namespace)
	return ok && (n.DeletionTimestamp != nil || n.Status.Phase == corev1.NamespaceTerminating)
}

// podGracePeriod is how long a pod being deleted gets to stop: 0 deletes it
// at once — when asked (gracePeriodSeconds=0), when it never ran on a node,
// when it has finished, or when its node is gone (nothing would ever finish
// the deletion); otherwise the request's grace period, else the pod's
// terminationGracePeriodSeconds (30 s by default).
func (s *Server) podGracePeriod(pod *corev1.Pod, opts *metav1.DeleteOptions) int64 {
	if pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return 0
	}
	if _, ok := s.store.Get("nodes", "", pod.Spec.NodeName); !ok {
		return 0
	}
	if g := opts.GracePeriodSeconds; g != nil {
		return max(*g, 0)
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return max(*g, 1)
	}
	return corev1.DefaultTerminationGracePeriodSeconds
}
