package node

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/scheduler"
	"github.com/shoal-dev/shoal/node/state"
)

// defaultSchedulerName is the schedulerName Shoal's scheduler serves.
const defaultSchedulerName = corev1.DefaultSchedulerName

// runScheduler (a leader duty) places pending pods: whenever pods or nodes
// change, it schedules every pod without a node against one snapshot of
// the replica (highest priority first, each placement assumed before the
// next), commits the bindings in batches, and explains the pods that fit
// nowhere (PodScheduled=False, Unschedulable, kube-scheduler's message, a
// FailedScheduling event). They are tried again at the next change.
func (n *Node) runScheduler(ctx context.Context, rec *events.Recorder) {
	kick := make(chan struct{}, 1)
	poke := func(state.Event) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	go controller.Watch(ctx, n.store, "pods", poke)
	go controller.Watch(ctx, n.store, "nodes", poke)
	retry := time.NewTicker(10 * time.Second) // unschedulable pods, in case no event says so
	defer retry.Stop()
	var lastRound time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-retry.C:
		}
		// Let a burst of creations gather into one round: at least 5 ms,
		// and as long as the last round took (a round lists every pod and
		// rebuilds the snapshot, so with many pods stored back-to-back
		// rounds would starve the API of the leader's CPU).
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(5*time.Millisecond, min(lastRound, time.Second))):
		}
		start := time.Now()
		if err := n.scheduleRound(ctx, rec); err != nil && ctx.Err() == nil {
			n.log.Warn("scheduling", "err", err)
		}
		lastRound = time.Since(start)
	}
}

// scheduleRound schedules every pending pod once.
func (n *Node) scheduleRound(ctx context.Context, rec *events.Recorder) error {
	objs, rev := n.store.List("pods", "")
	var pending, bound []*corev1.Pod
	for _, o := range objs {
		p := o.(*corev1.Pod)
		switch {
		case p.Spec.NodeName != "":
			bound = append(bound, p)
		case p.DeletionTimestamp != nil, p.Status.Phase == corev1.PodSucceeded, p.Status.Phase == corev1.PodFailed:
		case p.Spec.SchedulerName != "" && p.Spec.SchedulerName != defaultSchedulerName:
		case len(p.Spec.SchedulingGates) > 0:
		default:
			pending = append(pending, p)
		}
	}
	if len(pending) == 0 {
		return nil
	}
	nodeObjs, _ := n.store.List("nodes", "")
	nodes := make([]*corev1.Node, 0, len(nodeObjs))
	for _, o := range nodeObjs {
		nodes = append(nodes, o.(*corev1.Node))
	}
	nsLabels := map[string]map[string]string{}
	nsObjs, _ := n.store.List("namespaces", "")
	for _, o := range nsObjs {
		nsLabels[o.GetName()] = o.GetLabels()
	}
	snap, err := scheduler.NewSnapshot(nodes, bound, scheduler.Options{
		NamespaceLabels: nsLabels,
		Seed:            rev,
		Volumes: func(ns, claim string) (*corev1.PersistentVolume, bool) {
			o, ok := n.store.Get("persistentvolumeclaims", ns, claim)
			if !ok {
				return nil, false
			}
			pvc := o.(*corev1.PersistentVolumeClaim)
			if pvc.Spec.VolumeName == "" {
				return nil, true
			}
			pv, ok := n.store.Get("persistentvolumes", "", pvc.Spec.VolumeName)
			if !ok {
				return nil, true
			}
			return pv.(*corev1.PersistentVolume), true
		},
	})
	if err != nil {
		return err
	}
	snap.SortPending(pending)
	now := n.now()
	var ops []state.Op
	var placed []*corev1.Pod
	for _, p := range pending {
		res, err := snap.Schedule(p)
		upd := p.DeepCopy()
		switch {
		case err != nil:
			setPodCondition(&upd.Status, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: "SchedulerError", Message: err.Error()}, now)
		case res.Scheduled():
			if err := snap.Assume(p, res.NodeName); err != nil {
				return err
			}
			upd.Spec.NodeName = res.NodeName
			upd.Status.NominatedNodeName = ""
			setPodCondition(&upd.Status, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, now)
			placed = append(placed, upd)
		default:
			setPodCondition(&upd.Status, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: res.Reason, Message: res.Message}, now)
			if res.NominatedNodeName != "" && upd.Status.NominatedNodeName != res.NominatedNodeName {
				upd.Status.NominatedNodeName = res.NominatedNodeName
				for _, v := range res.Victims {
					n.preempt(ctx, rec, v, p, res.NominatedNodeName, now)
				}
			}
			if !equality.Semantic.DeepEqual(upd.Status, p.Status) {
				rec.Eventf(p, "Pod", corev1.EventTypeWarning, "FailedScheduling", "%s", res.Message)
			}
		}
		if upd.Spec.NodeName == p.Spec.NodeName && equality.Semantic.DeepEqual(upd.Status, p.Status) {
			continue
		}
		ops = append(ops, state.Update(upd, rvOf(p)))
	}
	if err := n.commitBatches(ctx, ops); err != nil {
		return err
	}
	for _, p := range placed {
		rec.Eventf(p, "Pod", corev1.EventTypeNormal, "Scheduled", "Successfully assigned %s/%s to %s", p.Namespace, p.Name, p.Spec.NodeName)
	}
	return nil
}

// commitBatches proposes ops in atomic batches; a batch that fails on one
// op (a pod changed meanwhile) is retried op by op, and what still fails is
// left to the next round.
func (n *Node) commitBatches(ctx context.Context, ops []state.Op) error {
	for len(ops) > 0 {
		k := min(len(ops), 500)
		if _, err := n.proposer.Propose(ctx, ops[:k]...); err != nil {
			if !state.IsCode(err, state.CodeConflict) && !state.IsCode(err, state.CodeNotFound) {
				return fmt.Errorf("committing %d scheduling decisions: %w", k, err)
			}
			for _, op := range ops[:k] {
				_, _ = n.proposer.Propose(ctx, op)
			}
		}
		ops = ops[k:]
	}
	return nil
}

// preempt evicts a victim for preemptor: it is marked DisruptionTarget
// (PreemptionByScheduler), so the scheduler sees it as on its way out, then
// deleted gracefully as the API would.
func (n *Node) preempt(ctx context.Context, rec *events.Recorder, victim, preemptor *corev1.Pod, node string, now time.Time) {
	rec.Eventf(victim, "Pod", corev1.EventTypeNormal, "Preempted", "Preempted by pod %s on node %s", preemptor.UID, node)
	upd := victim.DeepCopy()
	setPodCondition(&upd.Status, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
		Reason: "PreemptionByScheduler", Message: "default-scheduler: preempting to accommodate a higher priority pod"}, now)
	if _, err := n.proposer.Propose(ctx, state.Update(upd, rvOf(victim))); err != nil {
		n.log.Debug("preempting", "pod", victim.Namespace+"/"+victim.Name, "err", err)
		return
	}
	if o, ok := n.store.Get("pods", victim.Namespace, victim.Name); ok {
		if err := controller.DeletePod(ctx, n.controllerContext(rec), o.(*corev1.Pod)); err != nil {
			n.log.Debug("preempting", "pod", victim.Namespace+"/"+victim.Name, "err", err)
		}
	}
}
