package statefulset

import (
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/defaults"
)

// This file is a StatefulSet's identities: the names of its pods and
// claims, the pods and claims it makes, and the owner references its
// claim retention policy asks for.

// Labels the controller sets on its pods.
const (
	// PodNameLabel is the pod's own name, for a Service selecting one pod.
	PodNameLabel = appsv1.StatefulSetPodNameLabel
	// PodIndexLabel is the pod's ordinal.
	PodIndexLabel = appsv1.PodIndexLabel
	// RevisionLabel is the revision the pod was made from.
	RevisionLabel = appsv1.StatefulSetRevisionLabel
)

// parentAndOrdinal splits a pod name <parent>-<ordinal>; ordinal is -1
// when name is not of that form. Only the canonical decimal form counts
// (web-01 is not web-1's identity).
func parentAndOrdinal(name string) (string, int) {
	i := strings.LastIndexByte(name, '-')
	if i <= 0 {
		return "", -1
	}
	ord, err := strconv.ParseInt(name[i+1:], 10, 32)
	if err != nil || ord < 0 || strconv.FormatInt(ord, 10) != name[i+1:] {
		return "", -1
	}
	return name[:i], int(ord)
}

// ordinalOf is pod's ordinal, -1 if its name carries none.
func ordinalOf(pod *corev1.Pod) int {
	_, ord := parentAndOrdinal(pod.Name)
	return ord
}

// isMemberOf reports whether pod carries one of set's identities.
func isMemberOf(set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	parent, ord := parentAndOrdinal(pod.Name)
	return ord >= 0 && parent == set.Name && pod.Namespace == set.Namespace
}

func podName(set *appsv1.StatefulSet, ordinal int) string {
	return set.Name + "-" + strconv.Itoa(ordinal)
}

func claimName(set *appsv1.StatefulSet, template *corev1.PersistentVolumeClaim, ordinal int) string {
	return template.Name + "-" + set.Name + "-" + strconv.Itoa(ordinal)
}

func replicasOf(set *appsv1.StatefulSet) int {
	if set.Spec.Replicas == nil {
		return 1
	}
	return max(int(*set.Spec.Replicas), 0)
}

// startOrdinal is the first ordinal (spec.ordinals.start, default 0).
func startOrdinal(set *appsv1.StatefulSet) int {
	if set.Spec.Ordinals != nil {
		return int(set.Spec.Ordinals.Start)
	}
	return 0
}

// inRange reports whether ordinal is one of the identities set should
// have now.
func inRange(set *appsv1.StatefulSet, ordinal int) bool {
	start := startOrdinal(set)
	return ordinal >= start && ordinal < start+replicasOf(set)
}

// partitionOf is the index (from the start ordinal) below which pods stay
// at the current revision: the rolling update's partition, 0 without one.
func partitionOf(set *appsv1.StatefulSet) int {
	if ru := set.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil {
		return int(*ru.Partition)
	}
	return 0
}

func isRollingUpdate(set *appsv1.StatefulSet) bool {
	t := set.Spec.UpdateStrategy.Type
	return t == "" || t == appsv1.RollingUpdateStatefulSetStrategyType
}

func revisionOf(pod *corev1.Pod) string { return pod.Labels[RevisionLabel] }

// isRunningAndReady: phase Running and condition Ready.
func isRunningAndReady(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodRunning && controller.IsPodReady(pod)
}

// isHealthy: running, ready and not being deleted.
func isHealthy(pod *corev1.Pod) bool {
	return isRunningAndReady(pod) && pod.DeletionTimestamp == nil
}

// isAvailable: healthy and ready for more than minReadySeconds.
func isAvailable(set *appsv1.StatefulSet, pod *corev1.Pod, c controller.Context) bool {
	return isHealthy(pod) && controller.IsPodAvailable(pod, set.Spec.MinReadySeconds, c.Now())
}

// newPod is the pod of set's identity ordinal at revision rev, with the
// metadata the API server would set on a create and the defaults it would
// apply.
func newPod(c controller.Context, set *appsv1.StatefulSet, rev *revision, ordinal int) *corev1.Pod {
	pod := controller.NewPodFromTemplate(c, rev.template, set, controller.NewControllerRef(set, GVK))
	// Kubernetes keeps the generateName prefix on StatefulSet pods; the
	// pod is created under its fixed name all the same (see createPod).
	pod.Name = podName(set, ordinal)
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[PodNameLabel] = pod.Name
	pod.Labels[PodIndexLabel] = strconv.Itoa(ordinal)
	pod.Labels[RevisionLabel] = rev.name
	pod.Spec.Hostname = pod.Name
	pod.Spec.Subdomain = set.Spec.ServiceName
	// Each claim template becomes a volume of the same name, replacing a
	// template volume of that name.
	vols := make([]corev1.Volume, 0, len(set.Spec.VolumeClaimTemplates)+len(pod.Spec.Volumes))
	claims := map[string]bool{}
	for i := range set.Spec.VolumeClaimTemplates {
		t := &set.Spec.VolumeClaimTemplates[i]
		claims[t.Name] = true
		vols = append(vols, corev1.Volume{Name: t.Name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claimName(set, t, ordinal)},
		}})
	}
	for _, v := range pod.Spec.Volumes {
		if !claims[v.Name] {
			vols = append(vols, v)
		}
	}
	if len(vols) == 0 {
		vols = nil
	}
	pod.Spec.Volumes = vols
	defaults.Apply(pod)
	defaults.ApplyCreate(pod)
	return pod
}

// newClaim is the claim of set's identity ordinal made from template, as
// the API server would store it: labelled with the selector's matchLabels,
// owned by set when the retention policy deletes claims with it.
func newClaim(c controller.Context, set *appsv1.StatefulSet, template *corev1.PersistentVolumeClaim, ordinal int) *corev1.PersistentVolumeClaim {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name:              claimName(set, template, ordinal),
			Namespace:         set.Namespace,
			UID:               c.NewUID(),
			CreationTimestamp: c.MetaNow(),
			Generation:        1,
			Labels:            map[string]string{},
			Annotations:       copyMap(template.Annotations),
			Finalizers:        append([]string(nil), template.Finalizers...),
		},
		Spec: *template.Spec.DeepCopy(),
	}
	for k, v := range template.Labels {
		pvc.Labels[k] = v
	}
	if set.Spec.Selector != nil {
		for k, v := range set.Spec.Selector.MatchLabels {
			pvc.Labels[k] = v
		}
	}
	if len(pvc.Labels) == 0 {
		pvc.Labels = nil
	}
	if retentionOf(set).WhenDeleted == appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
		pvc.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(set, GVK)}
	}
	defaults.Apply(pvc)
	defaults.ApplyCreate(pvc)
	return pvc
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

// retentionOf is set's claim retention policy, Retain where unset.
func retentionOf(set *appsv1.StatefulSet) appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy {
	p := appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
		WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
		WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
	}
	if r := set.Spec.PersistentVolumeClaimRetentionPolicy; r != nil {
		if r.WhenDeleted == appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
			p.WhenDeleted = r.WhenDeleted
		}
		if r.WhenScaled == appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
			p.WhenScaled = r.WhenScaled
		}
	}
	return p
}

// Claim ownership, as Kubernetes keeps it for the retention policy:
//
//	whenDeleted Retain, whenScaled Retain: no reference to the set or pod
//	whenDeleted Delete, whenScaled Retain: the set controls the claim
//	whenDeleted Retain, whenScaled Delete: the pod controls the claim once
//	                                       its ordinal is out of range
//	whenDeleted Delete, whenScaled Delete: the set controls it, the pod
//	                                       instead once out of range
//
// A claim that references an earlier set or pod of the same name (UID
// differs) is left alone: it belongs to an identity being removed, and the
// garbage collector will take it. So is a claim another controller
// controls.

func matchesRef(ref *metav1.OwnerReference, obj metav1.Object, gvk schema.GroupVersionKind) bool {
	return isRef(ref, gvk) && ref.Name == obj.GetName()
}

func hasOwnerRef(target, owner metav1.Object) bool {
	for _, r := range target.GetOwnerReferences() {
		if r.UID == owner.GetUID() {
			return true
		}
	}
	return false
}

// hasStaleOwnerRef reports whether target references an object named like
// obj, of kind gvk, with another UID.
func hasStaleOwnerRef(target, obj metav1.Object, gvk schema.GroupVersionKind) bool {
	for _, r := range target.GetOwnerReferences() {
		if matchesRef(&r, obj, gvk) {
			return r.UID != obj.GetUID()
		}
	}
	return false
}

// hasUnexpectedController reports whether, under a policy that deletes
// claims, something other than set and pod controls claim (or a stale
// set or pod does).
func hasUnexpectedController(claim *corev1.PersistentVolumeClaim, set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	p := retentionOf(set)
	if p.WhenDeleted == appsv1.RetainPersistentVolumeClaimRetentionPolicyType &&
		p.WhenScaled == appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		return false
	}
	for _, r := range claim.OwnerReferences {
		switch {
		case matchesRef(&r, set, GVK):
			if r.UID != set.UID {
				return true
			}
		case matchesRef(&r, pod, podGVK):
			if r.UID != pod.UID {
				return true
			}
		case r.Controller != nil && *r.Controller:
			return true
		}
	}
	return false
}

// hasNonControllerOwner reports whether set or pod owns claim without
// controlling it (an older way of referencing it).
func hasNonControllerOwner(claim *corev1.PersistentVolumeClaim, set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	for _, r := range claim.OwnerReferences {
		if (r.UID == set.UID || r.UID == pod.UID) && (r.Controller == nil || !*r.Controller) {
			return true
		}
	}
	return false
}

// claimOwnersUpToDate reports whether claim's owner references are what
// the retention policy asks for pod's claim (or must be left alone).
func claimOwnersUpToDate(claim *corev1.PersistentVolumeClaim, set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	if hasStaleOwnerRef(claim, set, GVK) || hasStaleOwnerRef(claim, pod, podGVK) {
		return true
	}
	if hasUnexpectedController(claim, set, pod) {
		return !hasOwnerRef(claim, set) && !hasOwnerRef(claim, pod)
	}
	if hasNonControllerOwner(claim, set, pod) {
		return false
	}
	wantSet, wantPod := wantedOwners(set, pod)
	return hasOwnerRef(claim, set) == wantSet && hasOwnerRef(claim, pod) == wantPod
}

// wantedOwners says whether set and pod should control pod's claims.
func wantedOwners(set *appsv1.StatefulSet, pod *corev1.Pod) (setOwns, podOwns bool) {
	p := retentionOf(set)
	scaledDown := !inRange(set, ordinalOf(pod))
	deleteWhenScaled := p.WhenScaled == appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	deleteWithSet := p.WhenDeleted == appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	podOwns = deleteWhenScaled && scaledDown
	setOwns = deleteWithSet && !podOwns
	return setOwns, podOwns
}

// setClaimOwners rewrites claim's references to set and pod as the
// retention policy asks.
func setClaimOwners(claim *corev1.PersistentVolumeClaim, set *appsv1.StatefulSet, pod *corev1.Pod) {
	unexpected := hasUnexpectedController(claim, set, pod)
	refs := make([]metav1.OwnerReference, 0, len(claim.OwnerReferences)+1)
	for _, r := range claim.OwnerReferences {
		if !matchesRef(&r, set, GVK) && !matchesRef(&r, pod, podGVK) {
			refs = append(refs, r)
		}
	}
	if !unexpected {
		wantSet, wantPod := wantedOwners(set, pod)
		if wantSet {
			refs = append(refs, *metav1.NewControllerRef(set, GVK))
		}
		if wantPod {
			refs = append(refs, *metav1.NewControllerRef(pod, podGVK))
		}
	}
	if len(refs) == 0 {
		refs = nil
	}
	claim.OwnerReferences = refs
}
