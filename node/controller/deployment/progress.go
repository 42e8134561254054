package deployment

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/shoal-dev/shoal/node/controller"
)

// syncRolloutStatus writes the status of a rollout in progress, including
// the Progressing condition: NewReplicaSetAvailable when complete,
// ReplicaSetUpdated on progress, ProgressDeadlineExceeded when there was
// none for progressDeadlineSeconds — and then, for a Deployment that asks
// for it, rolls back.
func (dc *Controller) syncRolloutStatus(ctx context.Context, allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment) error {
	now := dc.c.MetaNow()
	st := calculateStatus(allRSs, newRS, d, now)
	if !hasProgressDeadline(d) {
		removeCondition(&st, appsv1.DeploymentProgressing)
	}
	cur := getCondition(d.Status, appsv1.DeploymentProgressing)
	complete := st.Replicas == st.UpdatedReplicas && cur != nil && cur.Reason == ReasonNewRSAvailable
	timedOut := false
	if hasProgressDeadline(d) && !complete {
		name := ""
		if newRS != nil {
			name = newRS.Name
		}
		switch {
		case deploymentComplete(d, &st):
			setCondition(&st, newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonNewRSAvailable,
				fmt.Sprintf("ReplicaSet %q has successfully progressed.", name), now))
		case deploymentProgressing(d, &st):
			c := newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonReplicaSetUpdated,
				fmt.Sprintf("ReplicaSet %q is progressing.", name), now)
			// Progress renews lastUpdateTime even with the same reason.
			if cur != nil {
				if cur.Status == corev1.ConditionTrue {
					c.LastTransitionTime = cur.LastTransitionTime
				}
				removeCondition(&st, appsv1.DeploymentProgressing)
			}
			setCondition(&st, c)
		case deploymentTimedOut(d, &st, dc.c.Now()):
			setCondition(&st, newCondition(appsv1.DeploymentProgressing, corev1.ConditionFalse, ReasonProgressDeadline,
				fmt.Sprintf("ReplicaSet %q has timed out progressing.", name), now))
			timedOut = true
		}
	}
	// The new ReplicaSet's failure first, else any old one's.
	if f := replicaFailure(allRSs, newRS); f != nil {
		setCondition(&st, *f)
	} else {
		removeCondition(&st, appsv1.DeploymentReplicaFailure)
	}
	if c := getCondition(st, appsv1.DeploymentProgressing); c != nil && c.Reason == ReasonNewRSAvailable {
		// A completed rollout ends what an automatic rollback guarded.
		if _, ok := d.Annotations[AutoRolledBackFromAnnotation]; ok {
			delete(d.Annotations, AutoRolledBackFromAnnotation)
			d.Status = st
			return dc.writeDeployment(ctx, d)
		}
	}
	if timedOut && d.Annotations[AutoRollbackAnnotation] == "true" {
		if target := rollbackTarget(d, allRSs, newRS); target != nil {
			return dc.autoRollback(ctx, d, newRS, target, st)
		}
	}
	if !equality.Semantic.DeepEqual(d.Status, st) {
		d.Status = st
		if err := dc.writeDeployment(ctx, d); err != nil {
			return err
		}
	}
	dc.requeueStuckDeployment(d, st)
	return nil
}

func replicaFailure(allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) *appsv1.DeploymentCondition {
	toDeployment := func(c appsv1.ReplicaSetCondition) *appsv1.DeploymentCondition {
		return &appsv1.DeploymentCondition{
			Type: appsv1.DeploymentReplicaFailure, Status: c.Status, Reason: c.Reason, Message: c.Message,
			LastUpdateTime: c.LastTransitionTime, LastTransitionTime: c.LastTransitionTime,
		}
	}
	if newRS != nil {
		for _, c := range newRS.Status.Conditions {
			if c.Type == appsv1.ReplicaSetReplicaFailure {
				return toDeployment(c)
			}
		}
	}
	for _, rs := range allRSs {
		for _, c := range rs.Status.Conditions {
			if c.Type == appsv1.ReplicaSetReplicaFailure {
				return toDeployment(c)
			}
		}
	}
	return nil
}

// requeueStuckDeployment syncs d again when its progress deadline would
// pass without news (there may be no other event to wake it).
func (dc *Controller) requeueStuckDeployment(d *appsv1.Deployment, st appsv1.DeploymentStatus) {
	cur := getCondition(d.Status, appsv1.DeploymentProgressing)
	if !hasProgressDeadline(d) || cur == nil || deploymentComplete(d, &st) || cur.Reason == ReasonProgressDeadline {
		return
	}
	after := cur.LastUpdateTime.Add(time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second).Sub(dc.c.Now())
	// The deadline passes strictly after it; times are kept to the second.
	dc.queue.AddAfter(controller.Key(d.Namespace, d.Name), max(after+time.Second, time.Second))
}

// rollbackTarget is the ReplicaSet of the previous revision (the highest
// among the old ones) when an automatic rollback may go back to it: it has
// another template, and it is not the rollout an earlier automatic
// rollback abandoned.
func rollbackTarget(d *appsv1.Deployment, allRSs []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) *appsv1.ReplicaSet {
	if newRS == nil {
		return nil
	}
	var target *appsv1.ReplicaSet
	for _, rs := range findOldReplicaSets(allRSs, newRS) {
		if target == nil || Revision(rs) > Revision(target) {
			target = rs
		}
	}
	if target == nil || Revision(target) == 0 || EqualIgnoreHash(&target.Spec.Template, &d.Spec.Template) {
		return nil
	}
	if from, ok := d.Annotations[AutoRolledBackFromAnnotation]; ok && from == templateHash(target) {
		return nil
	}
	return target
}

func templateHash(rs *appsv1.ReplicaSet) string {
	if h := rs.Spec.Template.Labels[TemplateHashLabel]; h != "" {
		return h
	}
	return rs.Labels[TemplateHashLabel]
}

// autoRollback puts the target's template back into d (as `kubectl
// rollout undo` does) in the same write as the timed-out status, whose
// Progressing message says so, and records an Event. The next syncs roll
// the old template out again: its ReplicaSet becomes the new one and gets
// the next revision.
func (dc *Controller) autoRollback(ctx context.Context, d *appsv1.Deployment, newRS, target *appsv1.ReplicaSet, st appsv1.DeploymentStatus) error {
	rev := Revision(target)
	if c := getCondition(st, appsv1.DeploymentProgressing); c != nil {
		c.Message += fmt.Sprintf(" Rolled back automatically to revision %d (ReplicaSet %q): %s is \"true\".", rev, target.Name, AutoRollbackAnnotation)
	}
	template := target.Spec.Template.DeepCopy()
	delete(template.Labels, TemplateHashLabel)
	if len(template.Labels) == 0 {
		template.Labels = nil
	}
	d.Spec.Template = *template
	d.Generation++ // a spec change, as the API server would count it
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[AutoRolledBackFromAnnotation] = templateHash(newRS)
	d.Status = st
	if err := dc.writeDeployment(ctx, d); err != nil {
		return err
	}
	dc.c.Log.Info("deployment: rolled back automatically", "deployment", controller.Key(d.Namespace, d.Name), "revision", rev)
	dc.c.Events.Eventf(d, GVK.Kind, corev1.EventTypeWarning, ReasonRollback,
		"Rolled back deployment %q to revision %d: ReplicaSet %q exceeded its progress deadline (%s)", d.Name, rev, newRS.Name, AutoRollbackAnnotation)
	dc.queue.Add(controller.Key(d.Namespace, d.Name))
	return nil
}
