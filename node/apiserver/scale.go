package apiserver

import (
	"errors"
	"net/http"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/shoal-dev/shoal/node/state"
)

var scaleGVK = autoscalingv1.SchemeGroupVersion.WithKind("Scale")

// scaleParts returns the spec.replicas field, status.replicas and the
// selector of a scalable object.
func scaleParts(obj state.Object) (replicas **int32, statusReplicas int32, sel *metav1.LabelSelector, ok bool) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Replicas, o.Status.Replicas, o.Spec.Selector, true
	case *appsv1.ReplicaSet:
		return &o.Spec.Replicas, o.Status.Replicas, o.Spec.Selector, true
	case *appsv1.StatefulSet:
		return &o.Spec.Replicas, o.Status.Replicas, o.Spec.Selector, true
	}
	return nil, 0, nil, false
}

// scaleOf builds the autoscaling/v1 Scale view of obj.
func scaleOf(obj state.Object) (*autoscalingv1.Scale, error) {
	rp, statusReplicas, sel, ok := scaleParts(obj)
	if !ok {
		return nil, errors.New("not a scalable object")
	}
	sc := &autoscalingv1.Scale{
		TypeMeta: metav1.TypeMeta{Kind: "Scale", APIVersion: "autoscaling/v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name: obj.GetName(), Namespace: obj.GetNamespace(), UID: obj.GetUID(),
			ResourceVersion: obj.GetResourceVersion(), CreationTimestamp: obj.GetCreationTimestamp(),
		},
		Status: autoscalingv1.ScaleStatus{Replicas: statusReplicas},
	}
	if *rp != nil {
		sc.Spec.Replicas = **rp
	}
	if sel != nil {
		if s, err := metav1.LabelSelectorAsSelector(sel); err == nil {
			sc.Status.Selector = s.String()
		}
	}
	return sc, nil
}

func (s *Server) getScale(rq *request) {
	obj, ok := s.store.Get(rq.res.Key(), rq.namespace, rq.name)
	if !ok {
		rq.fail(apierrors.NewNotFound(rq.res.groupResource(), rq.name))
		return
	}
	sc, err := scaleOf(obj)
	if err != nil {
		rq.fail(err)
		return
	}
	rq.writeJSON(http.StatusOK, sc)
}

func (s *Server) updateScale(rq *request) {
	if err := rq.checkFieldManager("UpdateOptions"); err != nil {
		rq.fail(err)
		return
	}
	in := &autoscalingv1.Scale{}
	if err := rq.decodeScale(in); err != nil {
		rq.fail(err)
		return
	}
	s.applyScale(rq, func(state.Object) (*autoscalingv1.Scale, error) { return in, nil })
}

func (rq *request) decodeScale(in *autoscalingv1.Scale) error {
	return rq.decodeBody(in, scaleGVK)
}

// applyScale sets spec.replicas from the Scale that desired computes from the
// current object, and answers with the new Scale.
func (s *Server) applyScale(rq *request, desired func(cur state.Object) (*autoscalingv1.Scale, error)) {
	out, _, err := s.guaranteedUpdate(rq, func(cur state.Object) (state.Object, error) {
		sc, err := desired(cur)
		if err != nil {
			return nil, err
		}
		if sc.Name != "" && sc.Name != rq.name {
			return nil, badRequest("the name of the object (%s) does not match the name on the URL (%s)", sc.Name, rq.name)
		}
		if rv := sc.ResourceVersion; rv != "" && rv != cur.GetResourceVersion() {
			return nil, apierrors.NewConflict(rq.res.groupResource(), rq.name,
				errors.New("the object has been modified; please apply your changes to the latest version and try again"))
		}
		if sc.Spec.Replicas < 0 {
			return nil, apierrors.NewInvalid(schema.GroupKind{Group: "autoscaling", Kind: "Scale"}, rq.name, field.ErrorList{
				field.Invalid(field.NewPath("spec", "replicas"), sc.Spec.Replicas, "must be greater than or equal to 0"),
			})
		}
		next := cur.DeepCopyObject().(state.Object)
		rp, _, _, _ := scaleParts(next)
		if *rp != nil && **rp == sc.Spec.Replicas {
			return next, nil
		}
		r := sc.Spec.Replicas
		*rp = &r
		next.SetGeneration(cur.GetGeneration() + 1)
		if rq.tracksManagedFields(cur) {
			// The manager owns spec.replicas, recorded with subresource
			// "scale" as kube-apiserver's scale handler records it.
			next = rq.recordUpdate(cur, next)
		}
		return next, nil
	})
	if err != nil {
		rq.fail(err)
		return
	}
	sc, err := scaleOf(out)
	if err != nil {
		rq.fail(err)
		return
	}
	rq.writeJSON(http.StatusOK, sc)
}
