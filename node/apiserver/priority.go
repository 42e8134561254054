package apiserver

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/shoal-dev/shoal/node/admission"
	"github.com/shoal-dev/shoal/node/state"
)

// This file holds the API's part of pod priority: Kubernetes' Priority
// admission plugin (node/admission, shared with the controllers) on pod
// create and update, and the PriorityClass checks that read the store.

// admitCreate runs, once per create request, the admission steps that read
// the store: a pod's priority is resolved from its PriorityClass (a
// refusal is 403 Forbidden, as in Kubernetes), and a PriorityClass starts
// at generation 1 as Kubernetes' strategy sets it.
func (s *Server) admitCreate(ctx context.Context, obj state.Object) error {
	switch o := obj.(type) {
	case *corev1.Pod:
		if name := o.Spec.PriorityClassName; name != "" && s.consistentRead != nil {
			if _, ok := s.store.Get(admission.ResourcePriorityClasses, "", name); !ok {
				// A class just created through another node may not have
				// reached this replica yet: catch up before refusing.
				_ = s.consistentRead(ctx)
			}
		}
		if err := admission.PodPriority(s.store, o); err != nil {
			return err
		}
		admission.PodServiceAccount(s.store, o)
	case *schedulingv1.PriorityClass:
		o.Generation = 1
	}
	return nil
}

// admitUpdate keeps a pod's priority and preemption policy when the
// client's update leaves them out; validation refuses any change.
func admitUpdate(cur, obj state.Object) {
	if p, ok := obj.(*corev1.Pod); ok {
		admission.KeepPodPriority(p, cur.(*corev1.Pod))
	}
}

// validate is validateObject plus the checks that read the store: at most
// one PriorityClass may be globalDefault.
func (s *Server) validate(r *resource, obj, old state.Object) field.ErrorList {
	errs := validateObject(r, obj, old)
	if pc, ok := obj.(*schedulingv1.PriorityClass); ok && pc.GlobalDefault {
		if d := admission.DefaultPriorityClass(s.store); d != nil && d.Name != pc.Name {
			errs = append(errs, globalDefaultTaken(d.Name))
		}
	}
	return errs
}

func globalDefaultTaken(holder string) *field.Error {
	return field.Forbidden(field.NewPath("globalDefault"),
		fmt.Sprintf("PriorityClass %s is already marked as default. Only one default can exist", holder))
}

// explainTaken turns the store's refusal of a second globalDefault
// PriorityClass (a writer that raced past validate) into the same field
// error validate gives; other errors are returned as they are.
func (s *Server) explainTaken(r *resource, obj state.Object, err error) error {
	pc, ok := obj.(*schedulingv1.PriorityClass)
	if !ok || !pc.GlobalDefault || !state.IsCode(err, state.CodeTaken) {
		return err
	}
	holder := "another PriorityClass"
	if owner, ok := s.store.UniqueOwner(state.GlobalDefaultPriorityClassKey); ok {
		holder = owner[strings.LastIndexByte(owner, '/')+1:]
	}
	return apierrors.NewInvalid(r.GVK().GroupKind(), pc.Name, field.ErrorList{globalDefaultTaken(holder)})
}
