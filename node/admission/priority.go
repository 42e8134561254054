// Package admission holds the admission steps of kube-apiserver that must
// run on every object of a kind, whoever creates it: the API server
// (node/apiserver) for what clients send, and the leader's controllers
// (node/controller) for the pods they create through the proposer, which
// bypasses the API server. Both call the same functions, so a pod gets
// the same priority whichever way it was made.
//
// The functions read the local replica (a Reader, normally the
// *state.Store) and never write.
package admission

import (
	"cmp"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/state"
)

// ResourcePriorityClasses is the store key of PriorityClasses.
const ResourcePriorityClasses = "priorityclasses.scheduling.k8s.io"

// Priorities and names of Kubernetes' scheduling API.
const (
	// HighestUserDefinablePriority is the highest value a PriorityClass
	// other than the built-in ones may have.
	HighestUserDefinablePriority int32 = 1000000000
	// SystemCriticalPriority is the value of system-cluster-critical;
	// system-node-critical is 1000 higher.
	SystemCriticalPriority = 2 * HighestUserDefinablePriority
	// DefaultPriorityWhenNoDefaultClassExists is a pod's priority when it
	// names no class and no class is globalDefault.
	DefaultPriorityWhenNoDefaultClassExists int32 = 0

	// SystemPriorityClassPrefix starts the names reserved for the
	// built-in classes.
	SystemPriorityClassPrefix = "system-"
	// SystemClusterCritical is the built-in class of pods the cluster
	// needs, which may move to another node.
	SystemClusterCritical = "system-cluster-critical"
	// SystemNodeCritical is the built-in class of pods a node needs, which
	// must not move.
	SystemNodeCritical = "system-node-critical"
)

// Reader is what admission reads: the replica (*state.Store).
type Reader interface {
	Get(resource, namespace, name string) (state.Object, bool)
	List(resource, namespace string) ([]state.Object, uint64)
}

// SystemPriorityClasses returns new copies of the built-in classes every
// cluster has (kube-apiserver creates them at start-up; in Shoal the
// leader's priorityclass controller does): system-node-critical and
// system-cluster-critical, with Kubernetes' values and descriptions and
// preemptionPolicy PreemptLowerPriority. Only the name, value and
// globalDefault (false) are fixed; the rest is informative.
func SystemPriorityClasses() []*schedulingv1.PriorityClass {
	policy := func() *corev1.PreemptionPolicy { p := corev1.PreemptLowerPriority; return &p }
	return []*schedulingv1.PriorityClass{
		{
			TypeMeta:         metav1.TypeMeta{APIVersion: "scheduling.k8s.io/v1", Kind: "PriorityClass"},
			ObjectMeta:       metav1.ObjectMeta{Name: SystemNodeCritical},
			Value:            SystemCriticalPriority + 1000,
			Description:      "Used for system critical pods that must not be moved from their current node.",
			PreemptionPolicy: policy(),
		},
		{
			TypeMeta:         metav1.TypeMeta{APIVersion: "scheduling.k8s.io/v1", Kind: "PriorityClass"},
			ObjectMeta:       metav1.ObjectMeta{Name: SystemClusterCritical},
			Value:            SystemCriticalPriority,
			Description:      "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
			PreemptionPolicy: policy(),
		},
	}
}

// IsKnownSystemPriorityClass returns nil when name, value and
// globalDefault are those of a built-in class, else why not (Kubernetes'
// wording).
func IsKnownSystemPriorityClass(name string, value int32, globalDefault bool) error {
	for _, spc := range SystemPriorityClasses() {
		if spc.Name != name {
			continue
		}
		if spc.Value != value {
			return fmt.Errorf("value of %v PriorityClass must be %v", spc.Name, spc.Value)
		}
		if spc.GlobalDefault != globalDefault {
			return fmt.Errorf("globalDefault of %v PriorityClass must be %v", spc.Name, spc.GlobalDefault)
		}
		return nil
	}
	return fmt.Errorf("%v is not a known system priority class", name)
}

// DefaultPriorityClass returns the class marked globalDefault, or nil.
// Should several be (the store allows one, see
// state.GlobalDefaultPriorityClassKey), the lowest value wins, as in
// Kubernetes, then the first name.
func DefaultPriorityClass(r Reader) *schedulingv1.PriorityClass {
	objs, _ := r.List(ResourcePriorityClasses, "")
	var best *schedulingv1.PriorityClass
	for _, o := range objs {
		pc, ok := o.(*schedulingv1.PriorityClass)
		if !ok || !pc.GlobalDefault {
			continue
		}
		if best == nil || cmp.Or(cmp.Compare(pc.Value, best.Value), cmp.Compare(pc.Name, best.Name)) < 0 {
			best = pc
		}
	}
	return best
}

// PodPriority is Kubernetes' Priority admission plugin for a pod being
// created. A pod that names a priorityClassName gets that class's value
// as spec.priority and its preemptionPolicy; the class must exist. A pod
// that names none gets the globalDefault class (its name too) if there is
// one, else priority 0 and PreemptLowerPriority. A pod that sets
// spec.priority or spec.preemptionPolicy itself to anything but what was
// computed is refused.
//
// Refusals are *apierrors.StatusError values with reason Forbidden (the
// API answers 403), e.g. `pods "web-1" is forbidden: no PriorityClass
// with name gold was found`; pod is then unchanged. Calling it again on
// an admitted pod changes nothing.
func PodPriority(r Reader, pod *corev1.Pod) error {
	var (
		name     = pod.Spec.PriorityClassName
		priority = DefaultPriorityWhenNoDefaultClassExists
		policy   = corev1.PreemptLowerPriority
	)
	if name == "" {
		if pc := DefaultPriorityClass(r); pc != nil {
			name, priority = pc.Name, pc.Value
			if pc.PreemptionPolicy != nil {
				policy = *pc.PreemptionPolicy
			}
		}
	} else {
		o, ok := r.Get(ResourcePriorityClasses, "", name)
		pc, _ := o.(*schedulingv1.PriorityClass)
		if !ok || pc == nil {
			return forbidden(pod, fmt.Sprintf("no PriorityClass with name %v was found", name))
		}
		priority = pc.Value
		if pc.PreemptionPolicy != nil {
			policy = *pc.PreemptionPolicy
		}
	}
	if p := pod.Spec.Priority; p != nil && *p != priority {
		return forbidden(pod, fmt.Sprintf("the integer value of priority (%d) must not be provided in pod spec; priority admission controller computed %d from the given PriorityClass name", *p, priority))
	}
	if p := pod.Spec.PreemptionPolicy; p != nil && *p != policy {
		return forbidden(pod, fmt.Sprintf("the string value of PreemptionPolicy (%s) must not be provided in pod spec; priority admission controller computed %s from the given PriorityClass name", *p, policy))
	}
	pod.Spec.PriorityClassName = name
	pod.Spec.Priority = &priority
	pod.Spec.PreemptionPolicy = &policy
	return nil
}

// KeepPodPriority carries old's priority and preemptionPolicy over to its
// update pod when the client left them out, as Kubernetes' plugin does on
// update; a changed value is left for validation to refuse (pod updates
// never change priority).
func KeepPodPriority(pod, old *corev1.Pod) {
	if pod.Spec.Priority == nil && old.Spec.Priority != nil {
		p := *old.Spec.Priority
		pod.Spec.Priority = &p
	}
	if pod.Spec.PreemptionPolicy == nil && old.Spec.PreemptionPolicy != nil {
		p := *old.Spec.PreemptionPolicy
		pod.Spec.PreemptionPolicy = &p
	}
}

var _ Reader = (*state.Store)(nil)

var podsResource = corev1.Resource("pods")

func forbidden(pod *corev1.Pod, msg string) error {
	name := pod.Name
	if name == "" {
		name = pod.GenerateName
	}
	return apierrors.NewForbidden(podsResource, name, errors.New(msg))
}

// IsRefused reports whether err is an admission refusal (an API status
// error): the object was not written.
func IsRefused(err error) bool {
	var st apierrors.APIStatus
	return errors.As(err, &st)
}
