package deployment

import (
	"context"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/replicaset"
	"github.com/shoal-dev/shoal/node/state"
)

// syncStatusOnly only writes the status (a Deployment being deleted).
func (dc *Controller) syncStatusOnly(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, oldRSs, err := dc.getAllReplicaSetsAndSyncRevision(ctx, d, rsList, false)
	if err != nil {
		return err
	}
	return dc.syncDeploymentStatus(ctx, withNew(oldRSs, newRS), newRS, d)
}

// syncScale scales the ReplicaSets to the Deployment's replicas without
// rolling out (a scaling event, or a paused Deployment).
func (dc *Controller) syncScale(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, oldRSs, err := dc.getAllReplicaSetsAndSyncRevision(ctx, d, rsList, false)
	if err != nil {
		return err
	}
	if err := dc.scale(ctx, d, newRS, oldRSs); err != nil {
		return err
	}
	newRS, oldRSs = dc.refreshOne(newRS), dc.refresh(oldRSs)
	if d.Spec.Paused {
		if err := dc.cleanupDeployment(ctx, oldRSs, d); err != nil {
			return err
		}
		oldRSs = dc.refresh(oldRSs)
	}
	return dc.syncDeploymentStatus(ctx, withNew(oldRSs, newRS), newRS, d)
}

// getAllReplicaSetsAndSyncRevision splits rsList into the new ReplicaSet
// (the one with d's template; created when create is set and there is
// none) and the old ones, and brings revisions up to date: the new one's
// is raised above every old one's and copied to the Deployment.
func (dc *Controller) getAllReplicaSetsAndSyncRevision(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet, create bool) (*appsv1.ReplicaSet, []*appsv1.ReplicaSet, error) {
	existing := findNewReplicaSet(d, rsList)
	oldRSs := findOldReplicaSets(rsList, existing)
	newRS, err := dc.getNewReplicaSet(ctx, d, existing, oldRSs, create)
	if err != nil {
		return nil, nil, err
	}
	return newRS, oldRSs, nil
}

func (dc *Controller) getNewReplicaSet(ctx context.Context, d *appsv1.Deployment, existing *appsv1.ReplicaSet, oldRSs []*appsv1.ReplicaSet, create bool) (*appsv1.ReplicaSet, error) {
	newRevision := strconv.FormatInt(maxRevision(oldRSs)+1, 10)
	if existing != nil {
		rsCopy := existing.DeepCopy()
		annotationsChanged := setNewReplicaSetAnnotations(d, rsCopy, newRevision, true)
		if annotationsChanged || rsCopy.Spec.MinReadySeconds != d.Spec.MinReadySeconds {
			if rsCopy.Spec.MinReadySeconds != d.Spec.MinReadySeconds {
				rsCopy.Spec.MinReadySeconds = d.Spec.MinReadySeconds
				rsCopy.Generation++
			}
			return dc.writeReplicaSet(ctx, rsCopy)
		}
		needsUpdate := setDeploymentRevision(d, rsCopy.Annotations[RevisionAnnotation])
		// A Deployment that never had a Progressing condition starts
		// counting its progress now.
		if hasProgressDeadline(d) && getCondition(d.Status, appsv1.DeploymentProgressing) == nil {
			setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonFoundNewRS,
				fmt.Sprintf("Found new replica set %q", rsCopy.Name), dc.c.MetaNow()))
			needsUpdate = true
		}
		if needsUpdate {
			if err := dc.writeDeployment(ctx, d); err != nil {
				return nil, err
			}
		}
		return existing, nil
	}
	if !create {
		return nil, nil
	}

	template := *d.Spec.Template.DeepCopy()
	hash := ComputeHash(&template, d.Status.CollisionCount)
	template.Labels = cloneLabelsWith(d.Spec.Template.Labels, TemplateHashLabel, hash)
	newRS := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name:              d.Name + "-" + hash,
			Namespace:         d.Namespace,
			UID:               dc.c.NewUID(),
			CreationTimestamp: dc.c.MetaNow(),
			Generation:        1,
			Labels:            cloneLabelsWith(d.Spec.Template.Labels, TemplateHashLabel, hash),
			OwnerReferences:   []metav1.OwnerReference{*controller.NewControllerRef(d, GVK)},
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas:        new(int32),
			MinReadySeconds: d.Spec.MinReadySeconds,
			Selector:        cloneSelectorWith(d.Spec.Selector, TemplateHashLabel, hash),
			Template:        template,
		},
	}
	n := newRSNewReplicas(d, withNew(oldRSs, newRS), newRS)
	*newRS.Spec.Replicas = n
	setNewReplicaSetAnnotations(d, newRS, newRevision, false)

	_, err := dc.c.Proposer.Propose(ctx, state.Create(newRS))
	alreadyExists := false
	switch {
	case state.IsCode(err, state.CodeAlreadyExists):
		// A ReplicaSet of that name: ours for this template (an earlier
		// sync or leader created it and our list missed it), or a hash
		// collision, resolved by bumping collisionCount.
		o, ok := dc.c.Store.Get(replicaset.Resource, newRS.Namespace, newRS.Name)
		if !ok {
			return nil, fmt.Errorf("replicaset %s/%s: %w", newRS.Namespace, newRS.Name, errStale)
		}
		rs := o.(*appsv1.ReplicaSet)
		if controller.IsControlledBy(rs, d) && EqualIgnoreHash(&d.Spec.Template, &rs.Spec.Template) {
			newRS, alreadyExists = rs, true
			break
		}
		if d.Status.CollisionCount == nil {
			d.Status.CollisionCount = new(int32)
		}
		*d.Status.CollisionCount++
		if werr := dc.writeDeployment(ctx, d); werr != nil {
			return nil, werr
		}
		dc.c.Log.Info("deployment: pod-template-hash collision, bumped collisionCount", "deployment", controller.Key(d.Namespace, d.Name), "collisionCount", *d.Status.CollisionCount)
		return nil, fmt.Errorf("replicaset %s/%s exists with another template: %w", newRS.Namespace, newRS.Name, errStale)
	case err != nil:
		msg := fmt.Sprintf("Failed to create new replica set %q: %v", newRS.Name, err)
		if hasProgressDeadline(d) && !controller.UnknownOutcome(err) {
			setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionFalse, ReasonFailedRSCreate, msg, dc.c.MetaNow()))
			_ = dc.writeDeployment(ctx, d) // the create error is what matters
		}
		dc.c.Events.Eventf(d, GVK.Kind, corev1.EventTypeWarning, ReasonFailedRSCreate, "%s", msg)
		return nil, err
	}
	if !alreadyExists && n > 0 {
		dc.c.Events.Eventf(d, GVK.Kind, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled up replica set %s from 0 to %d", newRS.Name, n)
	}
	needsUpdate := setDeploymentRevision(d, newRevision)
	if !alreadyExists && hasProgressDeadline(d) {
		setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonNewRSCreated,
			fmt.Sprintf("Created new replica set %q", newRS.Name), dc.c.MetaNow()))
		needsUpdate = true
	}
	if needsUpdate {
		if err := dc.writeDeployment(ctx, d); err != nil {
			return nil, err
		}
	}
	if !alreadyExists {
		newRS = dc.refreshOne(newRS)
		if newRS == nil {
			return nil, errStale
		}
	}
	return newRS, nil
}

func cloneLabelsWith(l map[string]string, key, value string) map[string]string {
	out := make(map[string]string, len(l)+1)
	for k, v := range l {
		out[k] = v
	}
	out[key] = value
	return out
}

// setDeploymentRevision sets d's revision annotation; it reports whether
// it changed.
func setDeploymentRevision(d *appsv1.Deployment, revision string) bool {
	if d.Annotations[RevisionAnnotation] == revision {
		return false
	}
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[RevisionAnnotation] = revision
	return true
}

// writeReplicaSet stores rs (a modified copy of a stored one) on the
// condition it was not changed meanwhile, and returns it as stored.
func (dc *Controller) writeReplicaSet(ctx context.Context, rs *appsv1.ReplicaSet) (*appsv1.ReplicaSet, error) {
	res, err := dc.c.Proposer.Propose(ctx, state.Update(rs, controller.RV(rs)))
	if err != nil {
		return nil, fmt.Errorf("updating replicaset %s/%s: %w", rs.Namespace, rs.Name, err)
	}
	rs.ResourceVersion = strconv.FormatUint(res[0].RV, 10)
	return rs, nil
}

// scale brings the replicas of d's ReplicaSets to d's replicas without a
// rollout: the only active one (or the newest) gets them all; a saturated
// new one means the old ones go to zero; otherwise (a rolling update in
// progress) every active ReplicaSet is scaled in proportion to its size.
func (dc *Controller) scale(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, oldRSs []*appsv1.ReplicaSet) error {
	if rs := findActiveOrLatest(newRS, oldRSs); rs != nil {
		if rsReplicas(rs) == deploymentReplicas(d) {
			return nil
		}
		_, _, err := dc.scaleReplicaSetAndRecordEvent(ctx, rs, deploymentReplicas(d), d)
		return err
	}
	if isSaturated(d, newRS) {
		for _, old := range activeRSs(oldRSs) {
			if _, _, err := dc.scaleReplicaSetAndRecordEvent(ctx, old, 0, d); err != nil {
				return err
			}
		}
		return nil
	}
	if !isRollingUpdate(d) {
		return nil
	}
	all := activeRSs(withNew(oldRSs, newRS))
	allowed := int32(0)
	if deploymentReplicas(d) > 0 {
		allowed = deploymentReplicas(d) + MaxSurge(d)
	}
	toAdd := allowed - specReplicas(all)
	op := ""
	switch {
	case toAdd > 0:
		sortBySize(all, true)
		op = "up"
	case toAdd < 0:
		sortBySize(all, false)
		op = "down"
	}
	added := int32(0)
	sizes := make(map[string]int32, len(all))
	for _, rs := range all {
		sizes[rs.Name] = rsReplicas(rs)
		if toAdd != 0 {
			p := proportion(rs, d, toAdd, added)
			sizes[rs.Name] += p
			added += p
		}
	}
	for i, rs := range all {
		// Leftovers go to the largest.
		if i == 0 && toAdd != 0 {
			sizes[rs.Name] = max(sizes[rs.Name]+toAdd-added, 0)
		}
		if _, _, err := dc.scaleReplicaSet(ctx, rs, sizes[rs.Name], d, op); err != nil {
			return err
		}
	}
	return nil
}

func (dc *Controller) scaleReplicaSetAndRecordEvent(ctx context.Context, rs *appsv1.ReplicaSet, newScale int32, d *appsv1.Deployment) (bool, *appsv1.ReplicaSet, error) {
	if rsReplicas(rs) == newScale {
		return false, rs, nil
	}
	op := "up"
	if rsReplicas(rs) > newScale {
		op = "down"
	}
	return dc.scaleReplicaSet(ctx, rs, newScale, d, op)
}

// scaleReplicaSet sets rs's replicas (and the replica annotations) and
// records a ScalingReplicaSet event. It fails with errStale if rs's
// replicas changed since it was read.
func (dc *Controller) scaleReplicaSet(ctx context.Context, rs *appsv1.ReplicaSet, newScale int32, d *appsv1.Deployment, op string) (bool, *appsv1.ReplicaSet, error) {
	desired, maxReplicas := deploymentReplicas(d), deploymentReplicas(d)+MaxSurge(d)
	sizeChange := rsReplicas(rs) != newScale
	if !sizeChange && !replicasAnnotationsNeedUpdate(rs, desired, maxReplicas) {
		return false, rs, nil
	}
	oldScale, uid := rsReplicas(rs), rs.UID
	o, err := controller.Modify(ctx, dc.c, replicaset.Resource, rs.Namespace, rs.Name, func(o state.Object) error {
		cur := o.(*appsv1.ReplicaSet)
		if cur.UID != uid || rsReplicas(cur) != oldScale {
			return errStale
		}
		if sizeChange {
			cur.Spec.Replicas = &newScale
			cur.Generation++
		}
		setReplicasAnnotations(cur, desired, maxReplicas)
		return nil
	})
	if err != nil {
		return false, rs, fmt.Errorf("scaling replicaset %s/%s: %w", rs.Namespace, rs.Name, err)
	}
	if sizeChange {
		dc.c.Events.Eventf(d, GVK.Kind, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled %s replica set %s from %d to %d", op, rs.Name, oldScale, newScale)
	}
	return sizeChange, o.(*appsv1.ReplicaSet), nil
}

// cleanupDeployment deletes the oldest old ReplicaSets beyond
// revisionHistoryLimit that are fully scaled down (and whose scale-down
// their controller has observed).
func (dc *Controller) cleanupDeployment(ctx context.Context, oldRSs []*appsv1.ReplicaSet, d *appsv1.Deployment) error {
	if !hasRevisionHistoryLimit(d) {
		return nil
	}
	var cleanable []*appsv1.ReplicaSet
	for _, rs := range oldRSs {
		if rs.DeletionTimestamp == nil {
			cleanable = append(cleanable, rs)
		}
	}
	diff := len(cleanable) - int(*d.Spec.RevisionHistoryLimit)
	if diff <= 0 {
		return nil
	}
	sortByRevision(cleanable)
	for _, rs := range cleanable[:diff] {
		if rs.Status.Replicas != 0 || rsReplicas(rs) != 0 || rs.Generation > rs.Status.ObservedGeneration {
			continue
		}
		_, err := dc.c.Proposer.Propose(ctx, state.Delete(rsKind, rs.Namespace, rs.Name, controller.RV(rs), string(rs.UID)))
		if err != nil && !state.IsCode(err, state.CodeNotFound) {
			return fmt.Errorf("deleting old replicaset %s/%s: %w", rs.Namespace, rs.Name, err)
		}
	}
	return nil
}

// syncDeploymentStatus writes the status allRSs give, if it changed.
func (dc *Controller) syncDeploymentStatus(ctx context.Context, allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment) error {
	st := calculateStatus(allRSs, newRS, d, dc.c.MetaNow())
	if equality.Semantic.DeepEqual(d.Status, st) {
		return nil
	}
	d.Status = st
	return dc.writeDeployment(ctx, d)
}

// calculateStatus is d's status from its ReplicaSets; conditions other
// than Available are carried over.
func calculateStatus(allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment, now metav1.Time) appsv1.DeploymentStatus {
	replicas, ready, available := statusReplicas(allRSs)
	var updated int32
	if newRS != nil {
		updated = newRS.Status.Replicas
	}
	st := appsv1.DeploymentStatus{
		ObservedGeneration:  d.Generation,
		Replicas:            replicas,
		UpdatedReplicas:     updated,
		ReadyReplicas:       ready,
		AvailableReplicas:   available,
		UnavailableReplicas: max(specReplicas(allRSs)-available, 0),
		CollisionCount:      d.Status.CollisionCount,
	}
	st.Conditions = append(st.Conditions, d.Status.Conditions...)
	if available >= deploymentReplicas(d)-MaxUnavailable(d) {
		setCondition(&st, newCondition(appsv1.DeploymentAvailable, corev1.ConditionTrue, ReasonMinimumReplicasAvail, "Deployment has minimum availability.", now))
	} else {
		setCondition(&st, newCondition(appsv1.DeploymentAvailable, corev1.ConditionFalse, ReasonMinimumReplicasUnavai, "Deployment does not have minimum availability.", now))
	}
	return st
}
