package deployment

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/shoal-dev/shoal/node/controller"
)

// rolloutRolling takes one step of a rolling update: scale the new
// ReplicaSet up within maxSurge, else scale old ones down within
// maxUnavailable, then write the status. Each step's writes wake the
// ReplicaSet controller, whose status writes wake this one again.
func (dc *Controller) rolloutRolling(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, oldRSs, err := dc.getAllReplicaSetsAndSyncRevision(ctx, d, rsList, true)
	if err != nil {
		return err
	}
	// Shoal waits for the ReplicaSet controller to have acted on the last
	// step (status.observedGeneration) before the next one: decisions then
	// rest on counts that include that step, so replicas - maxUnavailable
	// and replicas + maxSurge hold for the pods themselves, not only for
	// the ReplicaSets' specs, however syncs interleave. (Kubernetes reads
	// the statuses as they are.)
	if !allObserved(withNew(oldRSs, newRS)) {
		return dc.syncRolloutStatus(ctx, withNew(oldRSs, newRS), newRS, d)
	}
	scaledUp, newRS, err := dc.reconcileNewReplicaSet(ctx, withNew(oldRSs, newRS), newRS, d)
	if err != nil {
		return err
	}
	if scaledUp {
		return dc.syncRolloutStatus(ctx, withNew(oldRSs, newRS), newRS, d)
	}
	scaledDown, err := dc.reconcileOldReplicaSets(ctx, withNew(oldRSs, newRS), activeRSs(oldRSs), newRS, d)
	if err != nil {
		return err
	}
	oldRSs = dc.refresh(oldRSs)
	if scaledDown {
		return dc.syncRolloutStatus(ctx, withNew(oldRSs, newRS), newRS, d)
	}
	if deploymentComplete(d, &d.Status) {
		if err := dc.cleanupDeployment(ctx, oldRSs, d); err != nil {
			return err
		}
		oldRSs = dc.refresh(oldRSs)
	}
	return dc.syncRolloutStatus(ctx, withNew(oldRSs, newRS), newRS, d)
}

// reconcileNewReplicaSet scales the new ReplicaSet towards d's replicas,
// as far as maxSurge allows.
func (dc *Controller) reconcileNewReplicaSet(ctx context.Context, allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment) (bool, *appsv1.ReplicaSet, error) {
	want := deploymentReplicas(d)
	switch {
	case rsReplicas(newRS) == want:
		return false, newRS, nil
	case rsReplicas(newRS) > want:
		return dc.scaleReplicaSetAndRecordEvent(ctx, newRS, want, d)
	}
	return dc.scaleReplicaSetAndRecordEvent(ctx, newRS, newRSNewReplicas(d, allRSs, newRS), d)
}

// reconcileOldReplicaSets scales old ReplicaSets down as far as
// maxUnavailable allows: first their unavailable pods, then available
// ones down to replicas - maxUnavailable available in all.
func (dc *Controller) reconcileOldReplicaSets(ctx context.Context, allRSs, oldRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment) (bool, error) {
	if specReplicas(oldRSs) == 0 {
		return false, nil
	}
	minAvailable := deploymentReplicas(d) - MaxUnavailable(d)
	newUnavailable := rsReplicas(newRS) - newRS.Status.AvailableReplicas
	maxScaledDown := specReplicas(allRSs) - minAvailable - newUnavailable
	if maxScaledDown <= 0 {
		return false, nil
	}
	// Unhealthy replicas go first: scaling them down costs no
	// availability, and a rollout stuck on them could not proceed.
	oldRSs, cleaned, err := dc.cleanupUnhealthyReplicas(ctx, oldRSs, d, maxScaledDown)
	if err != nil {
		return false, err
	}
	scaled, err := dc.scaleDownOldReplicaSetsForRollingUpdate(ctx, withNew(oldRSs, newRS), oldRSs, d)
	if err != nil {
		return false, err
	}
	return cleaned+scaled > 0, nil
}

func (dc *Controller) cleanupUnhealthyReplicas(ctx context.Context, oldRSs []*appsv1.ReplicaSet, d *appsv1.Deployment, maxCleanup int32) ([]*appsv1.ReplicaSet, int32, error) {
	oldRSs = append([]*appsv1.ReplicaSet(nil), oldRSs...)
	sortByCreation(oldRSs)
	var total int32
	for i, rs := range oldRSs {
		if total >= maxCleanup {
			break
		}
		if rsReplicas(rs) == 0 || rsReplicas(rs) == rs.Status.AvailableReplicas {
			continue
		}
		n := min(maxCleanup-total, rsReplicas(rs)-rs.Status.AvailableReplicas)
		if n <= 0 {
			continue
		}
		_, updated, err := dc.scaleReplicaSetAndRecordEvent(ctx, rs, rsReplicas(rs)-n, d)
		if err != nil {
			return nil, total, err
		}
		total += n
		oldRSs[i] = updated
	}
	return oldRSs, total, nil
}

func (dc *Controller) scaleDownOldReplicaSetsForRollingUpdate(ctx context.Context, allRSs, oldRSs []*appsv1.ReplicaSet, d *appsv1.Deployment) (int32, error) {
	minAvailable := deploymentReplicas(d) - MaxUnavailable(d)
	_, _, available := statusReplicas(allRSs)
	if available <= minAvailable {
		return 0, nil
	}
	oldRSs = append([]*appsv1.ReplicaSet(nil), oldRSs...)
	sortByCreation(oldRSs)
	var total int32
	want := available - minAvailable
	for _, rs := range oldRSs {
		if total >= want {
			break
		}
		if rsReplicas(rs) == 0 {
			continue
		}
		n := min(rsReplicas(rs), want-total)
		if _, _, err := dc.scaleReplicaSetAndRecordEvent(ctx, rs, rsReplicas(rs)-n, d); err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// rolloutRecreate stops every old pod before the new ReplicaSet is
// created or scaled up.
func (dc *Controller) rolloutRecreate(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet, sel labels.Selector) error {
	newRS, oldRSs, err := dc.getAllReplicaSetsAndSyncRevision(ctx, d, rsList, false)
	if err != nil {
		return err
	}
	scaledDown := false
	for _, rs := range activeRSs(oldRSs) {
		scaled, _, err := dc.scaleReplicaSetAndRecordEvent(ctx, rs, 0, d)
		if err != nil {
			return err
		}
		scaledDown = scaledDown || scaled
	}
	oldRSs = dc.refresh(oldRSs)
	if scaledDown || dc.oldPodsRunning(d, newRS, oldRSs, sel) {
		return dc.syncRolloutStatus(ctx, withNew(oldRSs, newRS), newRS, d)
	}
	if newRS == nil {
		if newRS, oldRSs, err = dc.getAllReplicaSetsAndSyncRevision(ctx, d, dc.refresh(rsList), true); err != nil {
			return err
		}
	}
	if _, newRS, err = dc.scaleReplicaSetAndRecordEvent(ctx, newRS, deploymentReplicas(d), d); err != nil {
		return err
	}
	if deploymentComplete(d, &d.Status) {
		if err := dc.cleanupDeployment(ctx, oldRSs, d); err != nil {
			return err
		}
		oldRSs = dc.refresh(oldRSs)
	}
	return dc.syncRolloutStatus(ctx, withNew(oldRSs, newRS), newRS, d)
}

// oldPodsRunning reports whether any pod of an old ReplicaSet may still
// run: counted by their status, or any such pod (even one being deleted)
// that has not finished.
func (dc *Controller) oldPodsRunning(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, oldRSs []*appsv1.ReplicaSet, sel labels.Selector) bool {
	if n, _, _ := statusReplicas(oldRSs); n > 0 {
		return true
	}
	old := map[string]bool{}
	for _, rs := range oldRSs {
		old[string(rs.UID)] = true
	}
	objs, _ := dc.c.Store.List(controller.ResourcePods, d.Namespace)
	for _, o := range objs {
		pod := o.(*corev1.Pod)
		ref := controller.ControllerOf(pod)
		if ref == nil || !old[string(ref.UID)] || (newRS != nil && ref.UID == newRS.UID) || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		if pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
			return true
		}
	}
	return false
}

// allObserved reports whether the ReplicaSet controller has observed the
// latest spec of every ReplicaSet (their status counts are current).
func allObserved(rss []*appsv1.ReplicaSet) bool {
	for _, rs := range rss {
		if rs.Status.ObservedGeneration < rs.Generation {
			return false
		}
	}
	return true
}
