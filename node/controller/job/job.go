// Package job is the Job controller: it runs a Job's pods to completion as
// the Kubernetes Job controller does — completions and parallelism (or a
// work queue with no completions), Indexed completion mode, backoffLimit
// with exponential back-off between pod creations, activeDeadlineSeconds,
// suspend and resume, successPolicy, ttlSecondsAfterFinished — and reports
// status: startTime, completionTime, active, ready, terminating, succeeded,
// failed, completedIndexes, and the conditions Kubernetes 1.31+ sets
// (SuccessCriteriaMet then Complete; FailureTarget then Failed, the final
// condition once no pod of the Job is still terminating; Suspended).
//
// Counting finished pods exactly once. Kubernetes puts a tracking finalizer
// on every pod and moves its UID through status.uncountedTerminatedPods.
// Shoal commits a sync as one atomic proposal instead: the Job's new status
// and the annotation shoal.dev/job-counted on each pod it counts (value
// Succeeded, Failed, or Removed for pods the controller itself removed)
// apply together or not at all, so a new leader counts each pod once and
// status.uncountedTerminatedPods stays empty. A pod deleted before the
// controller saw it finish or start terminating is not counted (it is
// replaced). Not supported: podFailurePolicy, backoffLimitPerIndex,
// maxFailedIndexes, elastic Indexed Jobs.
//
// All state is in the store (pods and the Job status); the controller
// reads its local replica, which proposals update before they return, so it
// needs no "expectations" cache.
package job

import (
	"context"
	"log/slog"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

const (
	// annotationCounted marks a pod the Job's status has counted.
	annotationCounted = "shoal.dev/job-counted"
	countedSucceeded  = "Succeeded"
	countedFailed     = "Failed"
	countedRemoved    = "Removed" // removed by the controller: counts as neither

	// Pod labels besides the batch.kubernetes.io ones.
	labelLegacyJobName = "job-name"
	labelLegacyUID     = "controller-uid"

	// envCompletionIndex is set in every container of an Indexed Job's pod.
	envCompletionIndex = "JOB_COMPLETION_INDEX"

	// managedBy is the spec.managedBy value (or nil) this controller obeys.
	managedBy = "kubernetes.io/job-controller"

	// maxPodChangesPerSync bounds the pods created, deleted or counted in one
	// sync (one proposal), as Kubernetes' MaxPodCreateDeletePerSync.
	maxPodChangesPerSync = 500

	workers = 4
)

// Back-off before recreating failed pods: 10 s doubling up to 10 min, as
// in Kubernetes.
const (
	defaultBackoff = 10 * time.Second
	maxBackoff     = 10 * time.Minute
)

var (
	podKind, _     = state.KindFor("pods")
	jobKind, _     = state.KindFor("jobs.batch")
	controllerKind = batchv1.SchemeGroupVersion.WithKind("Job")
)

// Controller is the Job controller. Create it with New and run it once with
// Run (a new leadership term gets a new Controller).
type Controller struct {
	c     controller.Context
	log   *slog.Logger
	queue controller.Queue
}

// New returns a Job controller.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	return &Controller{
		c:     c,
		log:   c.Log.With("controller", "job"),
		queue: controller.NewQueue("job", c.Clock),
	}
}

// Run watches Jobs and pods and syncs Jobs until ctx ends.
func (jc *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		controller.Watch(ctx, jc.c.Store, jobKind.Key(), func(ev state.Event) {
			jc.queue.Add(controller.Key(ev.Object.GetNamespace(), ev.Object.GetName()))
		})
	}()
	go func() {
		defer wg.Done()
		controller.Watch(ctx, jc.c.Store, podKind.Key(), jc.podEvent)
	}()
	controller.Run(ctx, jc.queue, workers, jc.log, jc.sync)
	wg.Wait()
}

// podEvent queues the Job that controls a pod (before and after the
// change), or the Jobs that could adopt an orphan.
func (jc *Controller) podEvent(ev state.Event) {
	p := ev.Object
	ref := jobRef(p)
	if ref != nil {
		jc.queue.Add(controller.Key(p.GetNamespace(), ref.Name))
	}
	if ev.Prev != nil {
		if old := jobRef(ev.Prev); old != nil && (ref == nil || old.UID != ref.UID) {
			jc.queue.Add(controller.Key(p.GetNamespace(), old.Name))
		}
	}
	if ref == nil && ev.Type != state.Deleted && metav1.GetControllerOfNoCopy(p) == nil {
		pod, ok := p.(*corev1.Pod)
		if !ok || pod.DeletionTimestamp != nil || terminal(pod) || len(pod.Labels) == 0 {
			return
		}
		jobs, _ := jc.c.Store.List(jobKind.Key(), p.GetNamespace())
		for _, o := range jobs {
			if sel, err := selectorOf(o.(*batchv1.Job)); err == nil && !sel.Empty() && sel.Matches(labels.Set(pod.Labels)) {
				jc.queue.Add(controller.Key(o.GetNamespace(), o.GetName()))
			}
		}
	}
}

// jobRef returns the controller reference of o if a Job is its controller.
func jobRef(o metav1.Object) *metav1.OwnerReference {
	ref := metav1.GetControllerOfNoCopy(o)
	if ref == nil || ref.Kind != "Job" {
		return nil
	}
	if gv, err := schema.ParseGroupVersion(ref.APIVersion); err != nil || gv.Group != batchv1.GroupName {
		return nil
	}
	return ref
}

// selectorOf is a Job's pod selector; a Job stored without one (created
// past the API) selects by its controller-uid label, as the API generates.
func selectorOf(job *batchv1.Job) (labels.Selector, error) {
	if job.Spec.Selector == nil {
		return labels.SelectorFromSet(labels.Set{batchv1.ControllerUidLabel: string(job.UID)}), nil
	}
	return metav1.LabelSelectorAsSelector(job.Spec.Selector)
}

func terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// sync brings one Job's pods and status up to date.
func (jc *Controller) sync(ctx context.Context, key string) error {
	ns, name := controller.SplitKey(key)
	o, ok := jc.c.Store.Get(jobKind.Key(), ns, name)
	if !ok {
		return nil
	}
	job := o.(*batchv1.Job)
	if m := job.Spec.ManagedBy; m != nil && *m != managedBy {
		return nil // another controller's
	}
	if job.DeletionTimestamp != nil {
		return nil // its pods go with it (garbage collector)
	}
	if c := finishedCondition(&job.Status); c != nil {
		return jc.expire(ctx, key, job, c)
	}
	s, err := jc.newSyncJob(job)
	if err != nil {
		jc.c.Events.Eventf(job, "Job", corev1.EventTypeWarning, "InvalidSelector", "invalid selector: %v", err)
		return nil
	}
	s.reconcile()
	if err := s.commit(ctx); err != nil {
		return err
	}
	for _, ev := range s.events {
		jc.c.Events.Eventf(job, "Job", ev.typ, ev.reason, "%s", ev.msg)
	}
	if s.again {
		jc.queue.Add(key)
	} else if s.requeue > 0 {
		jc.queue.AddAfter(key, s.requeue)
	}
	if c := finishedCondition(&s.status); c != nil && job.Spec.TTLSecondsAfterFinished != nil {
		jc.queue.AddAfter(key, secondsDuration(int64(*job.Spec.TTLSecondsAfterFinished)))
	}
	return nil
}

// expire deletes a finished Job ttlSecondsAfterFinished after it finished.
// The Job goes in the background: the garbage collector removes its pods.
func (jc *Controller) expire(ctx context.Context, key string, job *batchv1.Job, fin *batchv1.JobCondition) error {
	if job.Spec.TTLSecondsAfterFinished == nil {
		return nil
	}
	at := fin.LastTransitionTime.Time
	if job.Status.CompletionTime != nil {
		at = job.Status.CompletionTime.Time
	}
	expireAt := at.Add(secondsDuration(int64(*job.Spec.TTLSecondsAfterFinished)))
	if now := jc.c.Now(); now.Before(expireAt) {
		jc.queue.AddAfter(key, expireAt.Sub(now))
		return nil
	}
	jc.log.Debug("deleting finished job after its TTL", "job", key)
	var op state.Op
	if len(job.Finalizers) > 0 {
		next := job.DeepCopy()
		now := metav1.NewTime(jc.c.Now().Truncate(time.Second))
		zero := int64(0)
		next.DeletionTimestamp, next.DeletionGracePeriodSeconds = &now, &zero
		next.ResourceVersion = ""
		op = state.Update(next, rvOf(job))
	} else {
		op = state.Delete(jobKind, job.Namespace, job.Name, rvOf(job), string(job.UID))
	}
	if _, err := jc.c.Proposer.Propose(ctx, op); err != nil && !state.IsCode(err, state.CodeNotFound) {
		return err
	}
	return nil
}

// finishedCondition returns the Complete or Failed condition, if true.
func finishedCondition(st *batchv1.JobStatus) *batchv1.JobCondition {
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}
