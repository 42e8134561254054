package statefulset

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// computeStatus is set's status for the pods it controls (condemned and
// terminating ones included), as Kubernetes computes it: every pod counts
// in replicas; running and ready ones in readyReplicas, and in
// availableReplicas once ready for minReadySeconds; pods not being deleted
// in currentReplicas and updatedReplicas by their revision. A rolling
// update is complete — the update revision becomes the current one — when
// spec.replicas pods exist and all are ready and updated.
//
// kubectl rollout status reads observedGeneration, readyReplicas,
// updatedReplicas (against replicas minus partition), currentRevision and
// updateRevision.
func computeStatus(set *appsv1.StatefulSet, pods []*corev1.Pod, h *history, now time.Time) appsv1.StatefulSetStatus {
	collisions := h.collisionCount
	st := appsv1.StatefulSetStatus{
		ObservedGeneration: set.Generation,
		CurrentRevision:    h.current.name,
		UpdateRevision:     h.update.name,
		CollisionCount:     &collisions,
		Conditions:         append([]appsv1.StatefulSetCondition(nil), set.Status.Conditions...),
	}
	for _, p := range pods {
		st.Replicas++
		if isRunningAndReady(p) {
			st.ReadyReplicas++
			if controller.IsPodAvailable(p, set.Spec.MinReadySeconds, now) {
				st.AvailableReplicas++
			}
		}
		if p.DeletionTimestamp == nil {
			if revisionOf(p) == h.current.name {
				st.CurrentReplicas++
			}
			if revisionOf(p) == h.update.name {
				st.UpdatedReplicas++
			}
		}
	}
	want := int32(replicasOf(set))
	if isRollingUpdate(set) && st.UpdatedReplicas == want && st.ReadyReplicas == want && st.Replicas == want {
		st.CurrentReplicas = st.UpdatedReplicas
		st.CurrentRevision = st.UpdateRevision
	}
	return st
}

// writeStatus stores status on set unless it is what is stored. On a
// conflict (the spec or metadata changed meanwhile) it writes the status
// onto the newer object: the observedGeneration it carries says which
// spec it describes.
func (sc *Controller) writeStatus(ctx context.Context, set *appsv1.StatefulSet, status appsv1.StatefulSetStatus) error {
	if equality.Semantic.DeepEqual(set.Status, status) {
		return nil
	}
	uid := set.UID
	_, err := controller.Modify(ctx, sc.c, Resource, set.Namespace, set.Name, func(o state.Object) error {
		cur := o.(*appsv1.StatefulSet)
		if cur.UID != uid || equality.Semantic.DeepEqual(cur.Status, status) {
			return controller.ErrUnchanged
		}
		cur.Status = status
		return nil
	})
	if err != nil && !state.IsCode(err, state.CodeNotFound) {
		return fmt.Errorf("updating status of statefulset %s/%s: %w", set.Namespace, set.Name, err)
	}
	return nil
}
