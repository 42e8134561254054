// Package deployment is the Deployment controller: it rolls a Deployment's
// pod template out through ReplicaSets — one per template, named
// <deployment>-<pod-template-hash> — with the RollingUpdate (maxSurge,
// maxUnavailable) or Recreate strategy; keeps revisions on them
// (deployment.kubernetes.io/revision, revision-history) so `kubectl
// rollout history/undo` work, cleans up old ones past
// revisionHistoryLimit, scales proportionally when a Deployment is scaled
// mid-rollout, honours spec.paused, reports progress (progressDeadlineSeconds
// → Progressing=False, ProgressDeadlineExceeded) and availability, and
// writes every status field `kubectl rollout status` reads — as
// kube-controller-manager's does. Beyond Kubernetes, a Deployment annotated
// shoal.dev/auto-rollback: "true" whose rollout exceeds its deadline is
// rolled back to its previous revision.
//
// It runs on the leader only and keeps no state between syncs: every
// decision is derived from the Deployment, its ReplicaSets and their pods
// in the store, and ReplicaSet names are deterministic, so a new leader
// carries on a rollout exactly where the old one stopped (a write the old
// leader made twice fails with "already exists" or a conflict and is
// re-derived). Pods are the ReplicaSet controller's business.
package deployment

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/replicaset"
	"github.com/shoal-dev/shoal/node/state"
)

// DefaultWorkers is how many Deployments are synced at once.
const DefaultWorkers = 5

// Resource is the store key of Deployments.
const Resource = "deployments.apps"

// GVK is the Deployment kind, as owner references name it.
var GVK = appsv1.SchemeGroupVersion.WithKind("Deployment")

var rsKind, _ = state.KindFor(replicaset.Resource)

// errStale means an object changed between the read a decision was based
// on and the write: the key is synced again.
var errStale = errors.New("changed meanwhile; will sync again")

// Controller is the Deployment controller. Create it with New, then call
// Run once; a Controller is not reused after Run returns (a new leader
// term makes a new one).
type Controller struct {
	c     controller.Context
	queue controller.Queue
	// Workers is how many keys are synced concurrently (DefaultWorkers);
	// set it before Run.
	Workers int
}

// New returns a Deployment controller.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	return &Controller{c: c, queue: controller.NewQueue("deployment", c.Clock), Workers: DefaultWorkers}
}

// Run watches Deployments, ReplicaSets and pods and syncs Deployments
// until ctx ends.
func (dc *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for res, h := range map[string]func(state.Event){
		Resource:                dc.onDeployment,
		replicaset.Resource:     dc.onReplicaSet,
		controller.ResourcePods: dc.onPod,
	} {
		wg.Add(1)
		go func() { defer wg.Done(); controller.Watch(ctx, dc.c.Store, res, h) }()
	}
	controller.Run(ctx, dc.queue, dc.Workers, dc.c.Log, dc.sync)
	cancel()
	wg.Wait()
}

func (dc *Controller) onDeployment(ev state.Event) {
	dc.queue.Add(controller.Key(ev.Object.GetNamespace(), ev.Object.GetName()))
}

// onReplicaSet enqueues the Deployment controlling a ReplicaSet (before
// and after the change) or, for an orphan, every Deployment that selects
// it (it may be adopted).
func (dc *Controller) onReplicaSet(ev state.Event) {
	for _, o := range []state.Object{ev.Prev, ev.Object} {
		rs, ok := o.(*appsv1.ReplicaSet)
		if !ok {
			continue
		}
		if ref := controller.ControllerOf(rs); ref != nil {
			if isDeploymentRef(ref) {
				dc.queue.Add(controller.Key(rs.Namespace, ref.Name))
			}
			continue
		}
		if ev.Type == state.Deleted || rs.DeletionTimestamp != nil {
			continue
		}
		objs, _ := dc.c.Store.List(Resource, rs.Namespace)
		for _, o := range objs {
			d := o.(*appsv1.Deployment)
			if sel, err := selectorOf(d); err == nil && sel.Matches(labels.Set(rs.Labels)) {
				dc.queue.Add(controller.Key(d.Namespace, d.Name))
			}
		}
	}
}

// onPod enqueues a Deployment when one of its pods is gone or finished:
// a Recreate rollout waits for the old pods to stop.
func (dc *Controller) onPod(ev state.Event) {
	pod, ok := ev.Object.(*corev1.Pod)
	if !ok {
		return
	}
	finished := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	if ev.Type != state.Deleted && !finished {
		return
	}
	ref := controller.ControllerOf(pod)
	if ref == nil || ref.Kind != replicaset.GVK.Kind {
		return
	}
	o, ok := dc.c.Store.Get(replicaset.Resource, pod.Namespace, ref.Name)
	if !ok || o.GetUID() != ref.UID {
		return
	}
	if dref := controller.ControllerOf(o); dref != nil && isDeploymentRef(dref) {
		dc.queue.Add(controller.Key(pod.Namespace, dref.Name))
	}
}

func isDeploymentRef(ref *metav1.OwnerReference) bool {
	return ref.Kind == GVK.Kind && ref.APIVersion == GVK.GroupVersion().String()
}

func selectorOf(d *appsv1.Deployment) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(d.Spec.Selector)
}

func selectsAll(d *appsv1.Deployment) bool {
	s := d.Spec.Selector
	return s == nil || len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

// sync reconciles one Deployment, as Kubernetes' syncDeployment does.
func (dc *Controller) sync(ctx context.Context, key string) error {
	ns, name := controller.SplitKey(key)
	o, ok := dc.c.Store.Get(Resource, ns, name)
	if !ok {
		return nil
	}
	d := o.(*appsv1.Deployment).DeepCopy()
	if selectsAll(d) {
		dc.c.Events.Eventf(d, GVK.Kind, corev1.EventTypeWarning, "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.")
		if d.Status.ObservedGeneration < d.Generation {
			d.Status.ObservedGeneration = d.Generation
			return dc.writeDeployment(ctx, d)
		}
		return nil
	}
	sel, err := selectorOf(d)
	if err != nil {
		dc.c.Log.Warn("deployment: invalid selector", "deployment", key, "err", err)
		return nil
	}
	rsList, err := dc.claimReplicaSets(ctx, d, sel)
	if err != nil {
		return err
	}
	if d.DeletionTimestamp != nil {
		return dc.syncStatusOnly(ctx, d, rsList)
	}
	if err := dc.checkPausedConditions(ctx, d); err != nil {
		return err
	}
	if d.Spec.Paused || isScalingEvent(d, rsList) {
		return dc.syncScale(ctx, d, rsList)
	}
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		return dc.rolloutRecreate(ctx, d, rsList, sel)
	}
	return dc.rolloutRolling(ctx, d, rsList)
}

// claimReplicaSets returns the ReplicaSets d controls after adopting
// orphans its selector matches and releasing the ones it no longer
// matches.
func (dc *Controller) claimReplicaSets(ctx context.Context, d *appsv1.Deployment, sel labels.Selector) ([]*appsv1.ReplicaSet, error) {
	objs, _ := dc.c.Store.List(replicaset.Resource, d.Namespace)
	rss := make([]*appsv1.ReplicaSet, len(objs))
	for i, o := range objs {
		rss[i] = o.(*appsv1.ReplicaSet)
	}
	m := controller.NewRefManager(dc.c, d, GVK, sel, replicaset.Resource)
	return controller.Claim(ctx, m, rss)
}

// isScalingEvent reports whether d's replicas changed since its active
// ReplicaSets were last sized (their desired-replicas annotation).
func isScalingEvent(d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) bool {
	for _, rs := range activeRSs(rsList) {
		if desired, ok := annotatedInt(rs, DesiredReplicasAnnotation); ok && desired != deploymentReplicas(d) {
			return true
		}
	}
	return false
}

// checkPausedConditions sets Progressing=Unknown DeploymentPaused on a
// paused Deployment and DeploymentResumed when it is resumed, so the time
// spent paused does not count against the progress deadline.
func (dc *Controller) checkPausedConditions(ctx context.Context, d *appsv1.Deployment) error {
	if !hasProgressDeadline(d) {
		return nil
	}
	cond := getCondition(d.Status, appsv1.DeploymentProgressing)
	if cond != nil && cond.Reason == ReasonProgressDeadline {
		return nil
	}
	pausedCond := cond != nil && cond.Reason == ReasonPaused
	switch {
	case d.Spec.Paused && !pausedCond:
		setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionUnknown, ReasonPaused, "Deployment is paused", dc.c.MetaNow()))
	case !d.Spec.Paused && pausedCond:
		setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionUnknown, ReasonResumed, "Deployment is resumed", dc.c.MetaNow()))
	default:
		return nil
	}
	return dc.writeDeployment(ctx, d)
}

// writeDeployment stores d (spec, metadata and status as d has them)
// conditionally on the resourceVersion it was read at, and keeps d's
// resourceVersion current. A conflict means someone else changed it:
// the sync is retried.
func (dc *Controller) writeDeployment(ctx context.Context, d *appsv1.Deployment) error {
	rs, err := dc.c.Proposer.Propose(ctx, state.Update(d, controller.RV(d)))
	if err != nil {
		return fmt.Errorf("updating deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	d.ResourceVersion = strconv.FormatUint(rs[0].RV, 10)
	return nil
}

// refresh re-reads ReplicaSets from the store after this sync wrote some
// (read-your-writes): ones that are gone are dropped.
func (dc *Controller) refresh(rss []*appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	out := make([]*appsv1.ReplicaSet, 0, len(rss))
	for _, rs := range rss {
		if o, ok := dc.c.Store.Get(replicaset.Resource, rs.Namespace, rs.Name); ok && o.GetUID() == rs.UID {
			out = append(out, o.(*appsv1.ReplicaSet))
		}
	}
	return out
}

func (dc *Controller) refreshOne(rs *appsv1.ReplicaSet) *appsv1.ReplicaSet {
	if rs == nil {
		return nil
	}
	if l := dc.refresh([]*appsv1.ReplicaSet{rs}); len(l) == 1 {
		return l[0]
	}
	return nil
}

// Sync reconciles the Deployment with key ("namespace/name") once, now,
// as a worker would: for tests and tools that drive the controller step by
// step.
func (dc *Controller) Sync(ctx context.Context, key string) error { return dc.sync(ctx, key) }
