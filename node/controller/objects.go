package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilrand "k8s.io/apimachinery/pkg/util/rand"

	"github.com/shoal-dev/shoal/node/admission"
	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/state"
)

// This file holds what controllers need to create, own and delete objects
// without the API server in the way: objects written through the Proposer
// get none of the server's create logic (node/apiserver prepareCreate,
// setDefaults, graceful pod deletion), so the helpers below do the parts
// that matter for controller-made objects.
//
// All helpers read the local replica and write with optimistic concurrency
// (the resourceVersion read); none keeps state, so any leader can use them.

// Resource keys of the kinds these helpers write.
const (
	ResourcePods  = "pods"
	ResourceNodes = "nodes"
)

// PodDeletionCostAnnotation ranks pods when a controller scales down: pods
// with a lower cost are deleted first (Kubernetes' annotation).
const PodDeletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost"

// maxUpdateAttempts bounds read-modify-write retries on conflicts.
const maxUpdateAttempts = 5

var podKind, _ = state.KindFor(ResourcePods)

// RV returns obj's resourceVersion as a number (0 when unset), for
// state.Update and state.Delete preconditions.
func RV(obj metav1.Object) uint64 {
	v, _ := strconv.ParseUint(obj.GetResourceVersion(), 10, 64)
	return v
}

// MetaNow is now as stored: the store keeps timestamps to the second
// (protobuf metav1.Time drops nanoseconds), so controllers compare and
// write second-truncated times or they would see a change on every sync.
func (c Context) MetaNow() metav1.Time { return metav1.NewTime(c.Now().Truncate(time.Second)) }

// NewControllerRef is the ownerReference a controller puts on what it
// creates or adopts: controller=true, blockOwnerDeletion=true.
func NewControllerRef(owner metav1.Object, gvk schema.GroupVersionKind) *metav1.OwnerReference {
	return metav1.NewControllerRef(owner, gvk)
}

// ControllerOf returns obj's controller reference, or nil. The result
// points into obj: do not modify it.
func ControllerOf(obj metav1.Object) *metav1.OwnerReference { return metav1.GetControllerOfNoCopy(obj) }

// IsControlledBy reports whether obj's controller reference names owner
// (by UID).
func IsControlledBy(obj, owner metav1.Object) bool {
	ref := ControllerOf(obj)
	return ref != nil && ref.UID == owner.GetUID()
}

// NamePrefix is the generateName prefix of the objects a controller named
// owner creates: "owner-", or just the owner's name when that would not be
// a valid name prefix (as Kubernetes does).
func NamePrefix(owner string) string {
	prefix := owner + "-"
	if len(apivalidation.NameIsDNSSubdomain(prefix, true)) != 0 {
		prefix = owner
	}
	return prefix
}

// GenerateName returns a name from a generateName prefix, as the API server
// generates them: the prefix (cut to 58 characters) and 5 random
// characters.
func GenerateName(prefix string) string {
	const maxPrefix = 63 - 5
	if len(prefix) > maxPrefix {
		prefix = prefix[:maxPrefix]
	}
	return prefix + utilrand.String(5)
}

// NewPodFromTemplate returns the pod a controller creates from template
// for owner, with the metadata the API server would have set on a create:
// a generated name (generateName NamePrefix(owner)), owner's namespace, a
// fresh UID, creationTimestamp, generation 1, phase Pending; the template's
// labels, annotations, finalizers and spec (copied); and ref (normally
// NewControllerRef(owner, gvk)) as its only ownerReference. The template is
// expected to be defaulted already (templates come from the API, which
// defaults them); the pod gets what the API adds to pods only (the default
// not-ready/unreachable tolerations, node/defaults.Apply). Callers may
// change the result (e.g. GenerateName/Name for indexed names) before
// CreatePod.
func NewPodFromTemplate(c Context, template *corev1.PodTemplateSpec, owner metav1.Object, ref *metav1.OwnerReference) *corev1.Pod {
	prefix := NamePrefix(owner.GetName())
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:         owner.GetNamespace(),
			GenerateName:      prefix,
			Name:              GenerateName(prefix),
			UID:               c.NewUID(),
			CreationTimestamp: c.MetaNow(),
			Generation:        1,
			Labels:            copyMap(template.Labels),
			Annotations:       copyMap(template.Annotations),
			Finalizers:        append([]string(nil), template.Finalizers...),
		},
		Spec:   *template.Spec.DeepCopy(),
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	if ref != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*ref}
	}
	defaults.Apply(pod)
	return pod
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// AdmitPod does to a pod a controller is about to create what the API
// server's admission does to every new pod: it resolves the pod's priority
// and preemption policy from its PriorityClass (node/admission.PodPriority)
// and gives it its service account and token volume
// (node/admission.PodServiceAccount).
// A refusal (the class does not exist, a priority set in the template
// that is not the class's) is an *apierrors.StatusError, Forbidden, worded
// as the API would answer (`pods "web-x7k2p" is forbidden: no PriorityClass
// with name gold was found`); the pod is then unchanged. CreatePod calls it;
// controllers that propose pods directly must call it themselves.
func AdmitPod(c Context, pod *corev1.Pod) error {
	if err := admission.PodPriority(c.Store, pod); err != nil {
		return err
	}
	admission.PodServiceAccount(c.Store, pod)
	return nil
}

// CreatePod admits (AdmitPod) and stores pod (from NewPodFromTemplate). A
// pod with a GenerateName gets another random name when its name is
// taken, up to 8 times, as the API server does; pod.Name is always the
// last name tried (so a caller that got an error of unknown outcome knows
// what may yet appear). On success pod.ResourceVersion is set. An
// admission refusal is final (UnknownOutcome reports false): nothing was
// written.
func CreatePod(ctx context.Context, c Context, pod *corev1.Pod) error {
	if err := AdmitPod(c, pod); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		rs, err := c.Proposer.Propose(ctx, state.Create(pod))
		if err == nil {
			pod.ResourceVersion = strconv.FormatUint(rs[0].RV, 10)
			return nil
		}
		if pod.GenerateName != "" && attempt < 8 && state.IsCode(err, state.CodeAlreadyExists) {
			pod.Name = GenerateName(pod.GenerateName)
			continue
		}
		return fmt.Errorf("creating pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
}

// UnknownOutcome reports whether a failed write may still be applied: any
// error that is not an op's result (a timeout, no quorum, committed but not
// applied here yet). Results (conflict, not found, …) and admission
// refusals (nothing was proposed) are final.
func UnknownOutcome(err error) bool {
	var re *state.ResultError
	return err != nil && !errors.As(err, &re) && !admission.IsRefused(err)
}

// NodeReadyStatus is the status of node's Ready condition, "" without one.
func NodeReadyStatus(node *corev1.Node) corev1.ConditionStatus {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

// IsPodFinished reports whether pod ran to completion (phase Succeeded or
// Failed): it holds no resources and runs nothing any more.
func IsPodFinished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// IsPodActive reports whether pod counts as one of its controller's
// replicas: not finished (Succeeded/Failed) and not being deleted.
func IsPodActive(pod *corev1.Pod) bool {
	return !IsPodFinished(pod) && pod.DeletionTimestamp == nil
}

// FilterActivePods returns the active pods of pods (see IsPodActive).
func FilterActivePods(pods []*corev1.Pod) []*corev1.Pod {
	out := make([]*corev1.Pod, 0, len(pods))
	for _, p := range pods {
		if IsPodActive(p) {
			out = append(out, p)
		}
	}
	return out
}

// PodReadyCondition returns pod's Ready condition, or nil.
func PodReadyCondition(pod *corev1.Pod) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.PodReady {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// IsPodReady reports whether pod's Ready condition is True.
func IsPodReady(pod *corev1.Pod) bool {
	c := PodReadyCondition(pod)
	return c != nil && c.Status == corev1.ConditionTrue
}

// IsPodAvailable reports whether pod has been ready for more than
// minReadySeconds at now (Kubernetes' definition of available).
func IsPodAvailable(pod *corev1.Pod, minReadySeconds int32, now time.Time) bool {
	return PodAvailableIn(pod, minReadySeconds, now) == 0
}

// PodAvailableIn is how long after now pod becomes available if it stays
// ready: 0 when it is available, -1 when it is not ready.
func PodAvailableIn(pod *corev1.Pod, minReadySeconds int32, now time.Time) time.Duration {
	c := PodReadyCondition(pod)
	if c == nil || c.Status != corev1.ConditionTrue {
		return -1
	}
	if minReadySeconds == 0 || c.LastTransitionTime.IsZero() {
		return 0
	}
	at := c.LastTransitionTime.Add(time.Duration(minReadySeconds) * time.Second)
	if at.Before(now) {
		return 0
	}
	// Available strictly after at; times are kept to the second.
	return at.Sub(now) + time.Second
}

// PodGracePeriod is how long pod gets to stop when a controller deletes it,
// as the API server decides for a DELETE without options: 0 (delete now)
// when it was never bound, has finished, or its node does not exist;
// otherwise its terminationGracePeriodSeconds (at least 1), 30 s when
// unset.
func PodGracePeriod(store *state.Store, pod *corev1.Pod) int64 {
	if pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return 0
	}
	if _, ok := store.Get(ResourceNodes, "", pod.Spec.NodeName); !ok {
		return 0
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return max(*g, 1)
	}
	return corev1.DefaultTerminationGracePeriodSeconds
}

// DeletePod deletes pod the way a DELETE through the API would (see
// node/apiserver deleteObject): a pod with a grace period (PodGracePeriod)
// or finalizers is marked — deletionTimestamp = now + grace,
// deletionGracePeriodSeconds = grace — and its node's agent (or whoever
// removes the finalizers) finishes the deletion; any other pod is removed
// at once. The pod is re-read from the store: a pod that is gone, already
// being deleted, or replaced by another of the same name (UID) is success.
func DeletePod(ctx context.Context, c Context, pod *corev1.Pod) error {
	for attempt := 0; attempt < maxUpdateAttempts; attempt++ {
		o, ok := c.Store.Get(ResourcePods, pod.Namespace, pod.Name)
		if !ok || o.GetUID() != pod.UID {
			return nil
		}
		cur := o.(*corev1.Pod)
		grace := PodGracePeriod(c.Store, cur)
		var op state.Op
		if grace == 0 && len(cur.Finalizers) == 0 {
			op = state.Delete(podKind, cur.Namespace, cur.Name, RV(cur), string(cur.UID))
		} else {
			if cur.DeletionTimestamp != nil {
				return nil
			}
			next := cur.DeepCopy()
			at := metav1.NewTime(c.Now().Add(time.Duration(grace) * time.Second).Truncate(time.Second))
			next.DeletionTimestamp = &at
			next.DeletionGracePeriodSeconds = &grace
			op = state.Update(next, RV(cur))
		}
		_, err := c.Proposer.Propose(ctx, op)
		switch {
		case err == nil, state.IsCode(err, state.CodeNotFound):
			return nil
		case state.IsCode(err, state.CodeConflict):
			continue
		default:
			return fmt.Errorf("deleting pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
	return fmt.Errorf("deleting pod %s/%s: %w", pod.Namespace, pod.Name, errTooManyConflicts)
}

var errTooManyConflicts = errors.New("the object kept changing; giving up for now")

// ErrUnchanged is returned by a Modify mutate function when there is
// nothing to write.
var ErrUnchanged = errors.New("unchanged")

// Modify is a read-modify-write of one stored object: it reads the object
// from the store, hands mutate a deep copy, and writes the result
// conditionally on the resourceVersion read, re-reading and calling mutate
// again on a conflict. mutate returning ErrUnchanged writes nothing (Modify
// then returns the stored object); any other error is returned as is. A
// missing object is a *state.ResultError with CodeNotFound. The result is
// the object as stored (resourceVersion set); callers must not change it.
func Modify(ctx context.Context, c Context, resource, namespace, name string, mutate func(obj state.Object) error) (state.Object, error) {
	for attempt := 0; attempt < maxUpdateAttempts; attempt++ {
		cur, ok := c.Store.Get(resource, namespace, name)
		if !ok {
			return nil, &state.ResultError{Code: state.CodeNotFound, Message: fmt.Sprintf("%s %q not found", resource, name)}
		}
		next := cur.DeepCopyObject().(state.Object)
		if err := mutate(next); err != nil {
			if errors.Is(err, ErrUnchanged) {
				return cur, nil
			}
			return nil, err
		}
		rs, err := c.Proposer.Propose(ctx, state.Update(next, RV(cur)))
		if state.IsCode(err, state.CodeConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		next.SetResourceVersion(strconv.FormatUint(rs[0].RV, 10))
		return next, nil
	}
	return nil, fmt.Errorf("updating %s %s/%s: %w", resource, namespace, name, errTooManyConflicts)
}

// RefManager adopts and releases objects for one controller object, as
// Kubernetes' ControllerRefManager does: an orphan that matches the
// selector is adopted (the controller's ownerReference is added), an owned
// object that no longer matches is released (the reference removed), and
// objects controlled by anything else are never touched.
type RefManager struct {
	c        Context
	owner    state.Object
	gvk      schema.GroupVersionKind
	selector labels.Selector
	resource string

	adoptChecked bool
	adoptErr     error
}

// NewRefManager returns a RefManager for owner (as read from the store,
// of kind gvk), claiming objects of resource that selector matches.
func NewRefManager(c Context, owner state.Object, gvk schema.GroupVersionKind, selector labels.Selector, resource string) *RefManager {
	return &RefManager{c: c, owner: owner, gvk: gvk, selector: selector, resource: resource}
}

// canAdopt checks once, before the first adoption, that the owner still
// exists with the same UID and is not being deleted: a controller must not
// adopt for an owner that is going away.
func (m *RefManager) canAdopt() error {
	if m.adoptChecked {
		return m.adoptErr
	}
	m.adoptChecked = true
	k, _ := state.KindOf(m.owner)
	cur, ok := m.c.Store.Get(k.Key(), m.owner.GetNamespace(), m.owner.GetName())
	switch {
	case !ok || cur.GetUID() != m.owner.GetUID():
		m.adoptErr = fmt.Errorf("%s %s/%s is gone: not adopting", m.gvk.Kind, m.owner.GetNamespace(), m.owner.GetName())
	case cur.GetDeletionTimestamp() != nil:
		m.adoptErr = fmt.Errorf("%s %s/%s is being deleted: not adopting", m.gvk.Kind, m.owner.GetNamespace(), m.owner.GetName())
	}
	return m.adoptErr
}

// Claim returns the objects of objs the owner controls after adopting
// and releasing; the ones it adopted are returned as stored after the
// adoption. Objects that vanish meanwhile are skipped.
func Claim[T state.Object](ctx context.Context, m *RefManager, objs []T) ([]T, error) {
	var claimed []T
	var errs []error
	for _, o := range objs {
		ok, err := m.claim(ctx, o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok != nil {
			claimed = append(claimed, ok.(T))
		}
	}
	return claimed, errors.Join(errs...)
}

// claim returns the object if the owner controls it now (adopting it if
// needed), nil otherwise.
func (m *RefManager) claim(ctx context.Context, obj state.Object) (state.Object, error) {
	matches := m.selector.Matches(labels.Set(obj.GetLabels()))
	if ref := ControllerOf(obj); ref != nil {
		if ref.UID != m.owner.GetUID() {
			return nil, nil // someone else's
		}
		if matches {
			return obj, nil
		}
		if m.owner.GetDeletionTimestamp() != nil {
			return nil, nil
		}
		return nil, m.release(ctx, obj)
	}
	if m.owner.GetDeletionTimestamp() != nil || !matches || obj.GetDeletionTimestamp() != nil ||
		obj.GetNamespace() != m.owner.GetNamespace() {
		return nil, nil
	}
	if err := m.canAdopt(); err != nil {
		return nil, err
	}
	return m.adopt(ctx, obj)
}

func (m *RefManager) adopt(ctx context.Context, obj state.Object) (state.Object, error) {
	uid := obj.GetUID()
	out, err := Modify(ctx, m.c, m.resource, obj.GetNamespace(), obj.GetName(), func(o state.Object) error {
		if o.GetUID() != uid || o.GetDeletionTimestamp() != nil || ControllerOf(o) != nil ||
			!m.selector.Matches(labels.Set(o.GetLabels())) {
			return errNotClaimable
		}
		o.SetOwnerReferences(append(o.GetOwnerReferences(), *NewControllerRef(m.owner, m.gvk)))
		return nil
	})
	if errors.Is(err, errNotClaimable) || state.IsCode(err, state.CodeNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("adopting %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	return out, nil
}

func (m *RefManager) release(ctx context.Context, obj state.Object) error {
	uid, owner := obj.GetUID(), m.owner.GetUID()
	_, err := Modify(ctx, m.c, m.resource, obj.GetNamespace(), obj.GetName(), func(o state.Object) error {
		if o.GetUID() != uid {
			return ErrUnchanged
		}
		refs := o.GetOwnerReferences()
		kept := make([]metav1.OwnerReference, 0, len(refs))
		for _, r := range refs {
			if r.UID != owner {
				kept = append(kept, r)
			}
		}
		if len(kept) == len(refs) {
			return ErrUnchanged
		}
		if len(kept) == 0 {
			kept = nil
		}
		o.SetOwnerReferences(kept)
		return nil
	})
	if err != nil && !state.IsCode(err, state.CodeNotFound) {
		return fmt.Errorf("releasing %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

var errNotClaimable = errors.New("no longer claimable")

// HollowKey marks a benchmark's hollow node (a Node object with no agent),
// as a label or an annotation "true": it serves nothing.
const HollowKey = "shoal.dev/hollow"

// ServingNodeIP is the address a node serves on (its first InternalIP) when
// it is Ready, not being deleted and not hollow; the zero Addr otherwise.
func ServingNodeIP(node *corev1.Node) netip.Addr {
	if node.Labels[HollowKey] == "true" || node.Annotations[HollowKey] == "true" || node.DeletionTimestamp != nil {
		return netip.Addr{}
	}
	ready := false
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	if !ready {
		return netip.Addr{}
	}
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip.Unmap()
			}
		}
	}
	return netip.Addr{}
}
