// Package replicaset is the ReplicaSet controller: it keeps the number of
// active pods a ReplicaSet controls at spec.replicas — creating pods from
// the template in slow-start bursts, deleting the least valuable ones
// first — adopts orphan pods its selector matches, releases the ones it no
// longer matches, and reports status (replicas, fullyLabeledReplicas,
// readyReplicas, availableReplicas, observedGeneration, the ReplicaFailure
// condition), as kube-controller-manager's does.
//
// It runs on the leader only. Everything it decides comes from the store,
// so a new leader carries on where the old one stopped; see expectations
// for the one thing it remembers between syncs.
package replicaset

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// Defaults.
const (
	// DefaultWorkers is how many ReplicaSets are synced at once.
	DefaultWorkers = 5
	// BurstReplicas bounds the pods one sync creates or deletes
	// (kube-controller-manager's default).
	BurstReplicas = 500
	// deleteParallelism bounds concurrent pod deletions in one sync.
	deleteParallelism = 16
)

// Resource is the store key of ReplicaSets.
const Resource = "replicasets.apps"

// GVK is the ReplicaSet kind, as owner references name it.
var GVK = appsv1.SchemeGroupVersion.WithKind("ReplicaSet")

// Event reasons, as Kubernetes' pod control records them on the ReplicaSet.
const (
	reasonSuccessfulCreate = "SuccessfulCreate"
	reasonFailedCreate     = "FailedCreate"
	reasonSuccessfulDelete = "SuccessfulDelete"
	reasonFailedDelete     = "FailedDelete"
)

// Controller is the ReplicaSet controller. Create it with New, then call
// Run once; a Controller is not reused after Run returns (a new leader
// term makes a new one).
type Controller struct {
	c     controller.Context
	queue controller.Queue
	exp   *controller.Expectations
	// Workers is how many keys are synced concurrently (DefaultWorkers);
	// set it before Run.
	Workers int
}

// New returns a ReplicaSet controller.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	return &Controller{
		c:       c,
		queue:   controller.NewQueue("replicaset", c.Clock),
		exp:     controller.NewExpectations(GVK.Kind, ExpectationsTimeout),
		Workers: DefaultWorkers,
	}
}

// Run watches ReplicaSets and pods and syncs ReplicaSets until ctx ends.
func (rc *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); controller.Watch(ctx, rc.c.Store, Resource, rc.onReplicaSet) }()
	go func() { defer wg.Done(); controller.Watch(ctx, rc.c.Store, controller.ResourcePods, rc.onPod) }()
	controller.Run(ctx, rc.queue, rc.Workers, rc.c.Log, rc.sync)
	cancel()
	wg.Wait()
}

func (rc *Controller) onReplicaSet(ev state.Event) {
	rc.queue.Add(controller.Key(ev.Object.GetNamespace(), ev.Object.GetName()))
}

// onPod enqueues the ReplicaSets a pod change matters to: its controller
// (before and after the change) or, for an orphan, every ReplicaSet whose
// selector matches it (it may be adopted).
func (rc *Controller) onPod(ev state.Event) {
	rc.exp.Observe(ev)
	controller.EnqueueOwners(ev, GVK, rc.queue.Add, func(o metav1.Object) []string {
		var keys []string
		for _, rs := range rc.matchingReplicaSets(o.(*corev1.Pod)) {
			keys = append(keys, controller.Key(rs.Namespace, rs.Name))
		}
		return keys
	})
}

func (rc *Controller) matchingReplicaSets(pod *corev1.Pod) []*appsv1.ReplicaSet {
	objs, _ := rc.c.Store.List(Resource, pod.Namespace)
	var out []*appsv1.ReplicaSet
	for _, o := range objs {
		rs := o.(*appsv1.ReplicaSet)
		if sel, err := selectorOf(rs); err == nil && sel.Matches(labels.Set(pod.Labels)) {
			out = append(out, rs)
		}
	}
	return out
}

// selectorOf is rs's pod selector; an empty one (which would match every
// pod: the API refuses it) is an error.
func selectorOf(rs *appsv1.ReplicaSet) (labels.Selector, error) {
	sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil {
		return nil, err
	}
	if sel.Empty() {
		return nil, errors.New("empty selector")
	}
	return sel, nil
}

// sync reconciles one ReplicaSet: claim its pods, create or delete pods
// when no earlier write is in doubt and it is not being deleted, then
// write its status.
func (rc *Controller) sync(ctx context.Context, key string) error {
	ns, name := controller.SplitKey(key)
	o, ok := rc.c.Store.Get(Resource, ns, name)
	if !ok {
		rc.exp.Forget(key)
		return nil
	}
	rs := o.(*appsv1.ReplicaSet)
	sel, err := selectorOf(rs)
	if err != nil {
		rc.c.Log.Warn("replicaset: invalid selector", "replicaset", key, "err", err)
		return nil
	}
	pods, err := rc.claimPods(ctx, rs, sel)
	if err != nil {
		return err
	}
	now := rc.c.Now()
	diff := len(pods) - int(replicasOf(rs))
	var manageErr error
	satisfied, wait := rc.exp.Satisfied(key, rc.c.Store, now)
	switch {
	case !satisfied:
		rc.queue.AddAfter(key, wait)
	case rs.DeletionTimestamp == nil && diff != 0:
		manageErr = rc.manageReplicas(ctx, key, rs, pods, diff)
		// The store already shows what was written (read-your-writes):
		// report the pods as they are now.
		pods = rc.controlledActivePods(rs, sel)
	}
	status := calculateStatus(rs, pods, manageErr, diff, rc.c.MetaNow(), now)
	if err := rc.writeStatus(ctx, rs, status); err != nil {
		return errors.Join(manageErr, err)
	}
	if manageErr != nil {
		return manageErr
	}
	// Come back when the next ready pod becomes available.
	if rs.Spec.MinReadySeconds > 0 {
		var next time.Duration
		for _, p := range pods {
			if d := controller.PodAvailableIn(p, rs.Spec.MinReadySeconds, now); d > 0 && (next == 0 || d < next) {
				next = d
			}
		}
		if next > 0 {
			rc.queue.AddAfter(key, next)
		}
	}
	return nil
}

func replicasOf(rs *appsv1.ReplicaSet) int32 {
	if rs.Spec.Replicas == nil {
		return 1
	}
	return *rs.Spec.Replicas
}

// claimPods returns the active pods rs controls after adopting orphans it
// matches and releasing owned pods it no longer matches.
func (rc *Controller) claimPods(ctx context.Context, rs *appsv1.ReplicaSet, sel labels.Selector) ([]*corev1.Pod, error) {
	objs, _ := rc.c.Store.List(controller.ResourcePods, rs.Namespace)
	pods := make([]*corev1.Pod, len(objs))
	for i, o := range objs {
		pods[i] = o.(*corev1.Pod)
	}
	m := controller.NewRefManager(rc.c, rs, GVK, sel, controller.ResourcePods)
	return controller.Claim(ctx, m, controller.FilterActivePods(pods))
}

// controlledActivePods lists the active pods rs controls and selects, as
// the store has them now.
func (rc *Controller) controlledActivePods(rs *appsv1.ReplicaSet, sel labels.Selector) []*corev1.Pod {
	objs, _ := rc.c.Store.List(controller.ResourcePods, rs.Namespace)
	var out []*corev1.Pod
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if controller.IsPodActive(p) && controller.IsControlledBy(p, rs) && sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

// manageReplicas creates (diff < 0) or deletes (diff > 0) up to
// BurstReplicas pods.
func (rc *Controller) manageReplicas(ctx context.Context, key string, rs *appsv1.ReplicaSet, pods []*corev1.Pod, diff int) error {
	if diff < 0 {
		n := min(-diff, BurstReplicas)
		_, err := slowStartBatch(n, 1, func() error { return rc.createPod(ctx, key, rs) })
		return err
	}
	n := min(diff, BurstReplicas)
	victims := podsToDelete(pods, rc.relatedPods(rs), n)
	errs := make([]error, len(victims))
	sem := make(chan struct{}, deleteParallelism)
	var wg sync.WaitGroup
	for i, p := range victims {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = rc.deletePod(ctx, key, rs, p)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err // they are likely all the same: report one
		}
	}
	return nil
}

func (rc *Controller) createPod(ctx context.Context, key string, rs *appsv1.ReplicaSet) error {
	pod := controller.NewPodFromTemplate(rc.c, &rs.Spec.Template, rs, controller.NewControllerRef(rs, GVK))
	err := controller.CreatePod(ctx, rc.c, pod)
	if err != nil {
		if controller.UnknownOutcome(err) {
			rc.exp.Expect(key, pod, true, rc.c.Now())
		}
		rc.c.Events.Eventf(rs, GVK.Kind, corev1.EventTypeWarning, reasonFailedCreate, "Error creating: %v", err)
		return err
	}
	rc.c.Events.Eventf(rs, GVK.Kind, corev1.EventTypeNormal, reasonSuccessfulCreate, "Created pod: %s", pod.Name)
	return nil
}

func (rc *Controller) deletePod(ctx context.Context, key string, rs *appsv1.ReplicaSet, pod *corev1.Pod) error {
	err := controller.DeletePod(ctx, rc.c, pod)
	if err != nil {
		if controller.UnknownOutcome(err) {
			rc.exp.Expect(key, pod, false, rc.c.Now())
		}
		rc.c.Events.Eventf(rs, GVK.Kind, corev1.EventTypeWarning, reasonFailedDelete, "Error deleting: %v", err)
		return err
	}
	rc.c.Events.Eventf(rs, GVK.Kind, corev1.EventTypeNormal, reasonSuccessfulDelete, "Deleted pod: %s", pod.Name)
	return nil
}

// relatedPods are the active pods of rs and of the ReplicaSets that share
// its controller (a Deployment's other revisions), for ranking deletions.
func (rc *Controller) relatedPods(rs *appsv1.ReplicaSet) []*corev1.Pod {
	owners := map[string]bool{string(rs.UID): true}
	if ref := controller.ControllerOf(rs); ref != nil {
		objs, _ := rc.c.Store.List(Resource, rs.Namespace)
		for _, o := range objs {
			if r := controller.ControllerOf(o); r != nil && r.UID == ref.UID {
				owners[string(o.GetUID())] = true
			}
		}
	}
	objs, _ := rc.c.Store.List(controller.ResourcePods, rs.Namespace)
	var out []*corev1.Pod
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if r := controller.ControllerOf(p); r != nil && owners[string(r.UID)] && controller.IsPodActive(p) {
			out = append(out, p)
		}
	}
	return out
}

// slowStartBatch calls fn count times in batches that start at initial
// and double after each batch that fully succeeded; it stops at the first
// batch with a failure (so a cause that fails every create — a quota, a
// bad template — costs few calls) and returns the successes and one error.
func slowStartBatch(count, initial int, fn func() error) (int, error) {
	remaining, successes := count, 0
	for batch := min(remaining, initial); batch > 0; batch = min(2*batch, remaining) {
		errs := make(chan error, batch)
		var wg sync.WaitGroup
		for range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fn(); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		successes += batch - len(errs)
		if len(errs) > 0 {
			return successes, <-errs
		}
		remaining -= batch
	}
	return successes, nil
}

// calculateStatus is rs's status for its active controlled pods. diff is
// pods minus desired replicas when manageErr happened.
func calculateStatus(rs *appsv1.ReplicaSet, pods []*corev1.Pod, manageErr error, diff int, metaNow metav1.Time, now time.Time) appsv1.ReplicaSetStatus {
	st := *rs.Status.DeepCopy()
	template := labels.SelectorFromSet(rs.Spec.Template.Labels)
	var fully, ready, available int32
	for _, p := range pods {
		if template.Matches(labels.Set(p.Labels)) {
			fully++
		}
		if controller.IsPodReady(p) {
			ready++
			if controller.IsPodAvailable(p, rs.Spec.MinReadySeconds, now) {
				available++
			}
		}
	}
	failure := condition(st.Conditions, appsv1.ReplicaSetReplicaFailure)
	switch {
	case manageErr != nil && failure == nil:
		reason := "FailedCreate"
		if diff > 0 {
			reason = "FailedDelete"
		}
		st.Conditions = append(st.Conditions, appsv1.ReplicaSetCondition{
			Type: appsv1.ReplicaSetReplicaFailure, Status: corev1.ConditionTrue,
			Reason: reason, Message: manageErr.Error(), LastTransitionTime: metaNow,
		})
	case manageErr == nil && failure != nil:
		kept := st.Conditions[:0]
		for _, c := range st.Conditions {
			if c.Type != appsv1.ReplicaSetReplicaFailure {
				kept = append(kept, c)
			}
		}
		st.Conditions = kept
		if len(st.Conditions) == 0 {
			st.Conditions = nil
		}
	}
	st.Replicas = int32(len(pods))
	st.FullyLabeledReplicas = fully
	st.ReadyReplicas = ready
	st.AvailableReplicas = available
	st.ObservedGeneration = rs.Generation
	return st
}

func condition(cs []appsv1.ReplicaSetCondition, t appsv1.ReplicaSetConditionType) *appsv1.ReplicaSetCondition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

// writeStatus stores status on rs unless it is what is stored. On a
// conflict (the spec or metadata changed meanwhile) it writes the status
// onto the newer object: the observedGeneration it carries says which
// spec it describes.
func (rc *Controller) writeStatus(ctx context.Context, rs *appsv1.ReplicaSet, status appsv1.ReplicaSetStatus) error {
	if equality.Semantic.DeepEqual(rs.Status, status) {
		return nil
	}
	uid := rs.UID
	_, err := controller.Modify(ctx, rc.c, Resource, rs.Namespace, rs.Name, func(o state.Object) error {
		cur := o.(*appsv1.ReplicaSet)
		if cur.UID != uid {
			return controller.ErrUnchanged
		}
		if equality.Semantic.DeepEqual(cur.Status, status) {
			return controller.ErrUnchanged
		}
		cur.Status = status
		return nil
	})
	if err != nil && !state.IsCode(err, state.CodeNotFound) {
		return fmt.Errorf("updating status of replicaset %s/%s: %w", rs.Namespace, rs.Name, err)
	}
	return nil
}

// Sync reconciles the ReplicaSet with key ("namespace/name") once, now,
// as a worker would: for tests and tools that drive the controller step by
// step.
func (rc *Controller) Sync(ctx context.Context, key string) error { return rc.sync(ctx, key) }

// ExpectationsTimeout is how long a pod write whose outcome is unknown
// holds back its ReplicaSet's creates and deletes when it is never seen
// (Kubernetes' value); see controller.Expectations.
const ExpectationsTimeout = 5 * time.Minute
