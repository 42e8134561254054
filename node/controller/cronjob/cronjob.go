// Package cronjob is the CronJob controller: it creates a Job from a
// CronJob's template at each time its schedule names, as the Kubernetes
// CronJob controller (v2) does — standard five-field cron syntax and the
// @hourly-style descriptors (github.com/robfig/cron/v3), spec.timeZone,
// concurrencyPolicy Allow/Forbid/Replace, startingDeadlineSeconds, suspend,
// successful/failed history limits — and keeps status.active,
// lastScheduleTime and lastSuccessfulTime.
//
// As in Kubernetes, only the most recent missed time is run, and a Job is
// named "<cronjob>-<scheduled time in minutes since the epoch>" with the
// annotation batch.kubernetes.io/cronjob-scheduled-timestamp. Shoal creates
// the Job and records it in the CronJob's status in one atomic proposal, so
// a new leader never runs one time twice: either both happened or neither.
// Without spec.timeZone, schedules are read in UTC (Kubernetes uses the
// controller manager's local zone; Shoal's leader moves between machines).
//
// Jobs are created past the API server, so the controller gives them what
// the API would: a UID, the Job defaults and the generated selector.
package cronjob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/state"
)

const (
	// nextScheduleDelta is added to the requeue delay so the sync runs just
	// after the scheduled time (as Kubernetes does).
	nextScheduleDelta = 100 * time.Millisecond
	// tooManyMissed: more missed times than this gives a warning event.
	tooManyMissed = 100

	workers = 2
)

var (
	cronJobKind, _ = state.KindFor("cronjobs.batch")
	jobKind, _     = state.KindFor("jobs.batch")
	controllerKind = batchv1.SchemeGroupVersion.WithKind("CronJob")
)

// Controller is the CronJob controller. Create it with New and run it once
// with Run (a new leadership term gets a new Controller).
type Controller struct {
	c     controller.Context
	log   *slog.Logger
	queue controller.Queue
}

// New returns a CronJob controller.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	return &Controller{
		c:     c,
		log:   c.Log.With("controller", "cronjob"),
		queue: controller.NewQueue("cronjob", c.Clock),
	}
}

// Run watches CronJobs and Jobs and syncs CronJobs until ctx ends.
func (cc *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		controller.Watch(ctx, cc.c.Store, cronJobKind.Key(), func(ev state.Event) {
			cc.queue.Add(controller.Key(ev.Object.GetNamespace(), ev.Object.GetName()))
		})
	}()
	go func() {
		defer wg.Done()
		controller.Watch(ctx, cc.c.Store, jobKind.Key(), func(ev state.Event) {
			for _, o := range []metav1.Object{ev.Object, ev.Prev} {
				if o == nil {
					continue
				}
				if ref := cronJobRef(o); ref != nil {
					cc.queue.Add(controller.Key(o.GetNamespace(), ref.Name))
				}
			}
		})
	}()
	controller.Run(ctx, cc.queue, workers, cc.log, cc.sync)
	wg.Wait()
}

// cronJobRef returns o's controller reference if a CronJob is its controller.
func cronJobRef(o metav1.Object) *metav1.OwnerReference {
	ref := metav1.GetControllerOfNoCopy(o)
	if ref == nil || ref.Kind != "CronJob" {
		return nil
	}
	if gv, err := schema.ParseGroupVersion(ref.APIVersion); err != nil || gv.Group != batchv1.GroupName {
		return nil
	}
	return ref
}

// syncCronJob is one sync of one CronJob: its next status and the ops to
// commit with it.
type syncCronJob struct {
	cc     *Controller
	cj     *batchv1.CronJob // as stored: read-only
	now    time.Time
	status batchv1.CronJobStatus
	ops    []state.Op
	events []event
}

type event struct{ typ, reason, msg string }

func (s *syncCronJob) eventf(typ, reason, format string, args ...any) {
	s.events = append(s.events, event{typ, reason, fmt.Sprintf(format, args...)})
}

// sync brings one CronJob up to date: its record of active and finished
// Jobs, its history, and the Job of the most recent unmet scheduled time.
func (cc *Controller) sync(ctx context.Context, key string) error {
	ns, name := controller.SplitKey(key)
	o, ok := cc.c.Store.Get(cronJobKind.Key(), ns, name)
	if !ok {
		return nil
	}
	cj := o.(*batchv1.CronJob)
	s := &syncCronJob{cc: cc, cj: cj, now: cc.c.Now(), status: *cj.Status.DeepCopy()}
	jobs := cc.jobsOf(cj)
	s.reconcileJobs(jobs)
	if cj.DeletionTimestamp != nil {
		return s.commit(ctx)
	}
	s.cleanupHistory(jobs)
	next, err := s.schedule()
	if err != nil {
		return err
	}
	if err := s.commit(ctx); err != nil {
		return err
	}
	if next > 0 {
		cc.queue.AddAfter(key, next)
	}
	return nil
}

// jobsOf lists the Jobs cj controls.
func (cc *Controller) jobsOf(cj *batchv1.CronJob) []*batchv1.Job {
	objs, _ := cc.c.Store.List(jobKind.Key(), cj.Namespace)
	var out []*batchv1.Job
	for _, o := range objs {
		if ref := metav1.GetControllerOfNoCopy(o); ref != nil && ref.UID == cj.UID {
			out = append(out, o.(*batchv1.Job))
		}
	}
	return out
}

// reconcileJobs updates status.active and lastSuccessfulTime from the Jobs.
func (s *syncCronJob) reconcileJobs(jobs []*batchv1.Job) {
	children := map[types.UID]bool{}
	for _, j := range jobs {
		children[j.UID] = true
		active := s.inActive(j.UID)
		fin, ftype := finished(j)
		switch {
		case !active && !fin:
			// Ours and running but not recorded (someone else made it, or the
			// status was edited): track it, so that Forbid and Replace see it.
			s.eventf(corev1.EventTypeWarning, "UnexpectedJob", "Saw a job that the controller did not create or forgot: %s", j.Name)
			s.status.Active = append(s.status.Active, jobReference(j))
		case active && fin:
			s.removeActive(j.UID)
			s.eventf(corev1.EventTypeNormal, "SawCompletedJob", "Saw completed job: %s, condition: %v", j.Name, ftype)
		}
		if fin && ftype == batchv1.JobComplete && j.Status.CompletionTime != nil {
			if t := s.status.LastSuccessfulTime; t == nil || j.Status.CompletionTime.After(t.Time) {
				c := *j.Status.CompletionTime
				s.status.LastSuccessfulTime = &c
			}
		}
	}
	for _, ref := range append([]corev1.ObjectReference(nil), s.status.Active...) {
		if !children[ref.UID] {
			s.removeActive(ref.UID)
			s.eventf(corev1.EventTypeNormal, "MissingJob", "Active job went missing: %v", ref.Name)
		}
	}
}

func (s *syncCronJob) inActive(uid types.UID) bool {
	for _, r := range s.status.Active {
		if r.UID == uid {
			return true
		}
	}
	return false
}

func (s *syncCronJob) removeActive(uid types.UID) {
	var keep []corev1.ObjectReference
	for _, r := range s.status.Active {
		if r.UID != uid {
			keep = append(keep, r)
		}
	}
	s.status.Active = keep
}

// finished reports whether a Job is Complete or Failed, and which.
func finished(j *batchv1.Job) (bool, batchv1.JobConditionType) {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true, c.Type
		}
	}
	return false, ""
}

func jobReference(j *batchv1.Job) corev1.ObjectReference {
	return corev1.ObjectReference{
		Kind: "Job", APIVersion: "batch/v1", Namespace: j.Namespace, Name: j.Name, UID: j.UID,
		ResourceVersion: j.ResourceVersion,
	}
}

// cleanupHistory deletes the oldest finished Jobs beyond the history
// limits (in the background: the garbage collector removes their pods).
func (s *syncCronJob) cleanupHistory(jobs []*batchv1.Job) {
	var succeeded, failed []*batchv1.Job
	for _, j := range jobs {
		switch fin, t := finished(j); {
		case !fin || j.DeletionTimestamp != nil:
		case t == batchv1.JobComplete:
			succeeded = append(succeeded, j)
		default:
			failed = append(failed, j)
		}
	}
	for _, c := range []struct {
		jobs  []*batchv1.Job
		limit *int32
	}{{succeeded, s.cj.Spec.SuccessfulJobsHistoryLimit}, {failed, s.cj.Spec.FailedJobsHistoryLimit}} {
		if c.limit == nil || len(c.jobs) <= int(*c.limit) {
			continue
		}
		sortByStart(c.jobs)
		for _, j := range c.jobs[:len(c.jobs)-int(max(*c.limit, 0))] {
			s.deleteJob(j)
		}
	}
}

// sortByStart orders Jobs oldest first: by start time (never started
// first), then creation, then name.
func sortByStart(jobs []*batchv1.Job) {
	start := func(j *batchv1.Job) time.Time {
		if j.Status.StartTime != nil {
			return j.Status.StartTime.Time
		}
		return time.Time{}
	}
	sort.SliceStable(jobs, func(a, b int) bool {
		ja, jb := jobs[a], jobs[b]
		if sa, sb := start(ja), start(jb); !sa.Equal(sb) {
			return sa.Before(sb)
		}
		if !ja.CreationTimestamp.Equal(&jb.CreationTimestamp) {
			return ja.CreationTimestamp.Before(&jb.CreationTimestamp)
		}
		return ja.Name < jb.Name
	})
}

// deleteJob deletes a Job as the API would with background propagation:
// marked if it has finalizers, removed otherwise.
func (s *syncCronJob) deleteJob(j *batchv1.Job) {
	if len(j.Finalizers) > 0 {
		if j.DeletionTimestamp != nil {
			return
		}
		next := j.DeepCopy()
		now := metav1.NewTime(s.now.Truncate(time.Second))
		zero := int64(0)
		next.DeletionTimestamp, next.DeletionGracePeriodSeconds = &now, &zero
		next.ResourceVersion = ""
		s.ops = append(s.ops, state.Update(next, rvOf(j)))
	} else {
		s.ops = append(s.ops, state.Delete(jobKind, j.Namespace, j.Name, rvOf(j), string(j.UID)))
	}
	s.removeActive(j.UID)
	s.eventf(corev1.EventTypeNormal, "SuccessfulDelete", "Deleted job %v", j.Name)
}

// schedule starts the Job of the most recent unmet scheduled time, if it
// may, and returns when to sync again (0: only on a change).
func (s *syncCronJob) schedule() (time.Duration, error) {
	cj := s.cj
	if cj.Spec.Suspend != nil && *cj.Spec.Suspend {
		return 0, nil
	}
	loc := time.UTC
	if tz := cj.Spec.TimeZone; tz != nil {
		l, err := time.LoadLocation(*tz)
		if err != nil {
			s.eventf(corev1.EventTypeWarning, "UnknownTimeZone", "invalid timeZone: %q: %s", *tz, err)
			return 0, nil
		}
		loc = l
	}
	spec := cj.Spec.Schedule
	if strings.Contains(spec, "TZ") {
		s.eventf(corev1.EventTypeWarning, "UnsupportedSchedule",
			"CRON_TZ or TZ used in schedule %q is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details", spec)
	} else if cj.Spec.TimeZone != nil {
		spec = "TZ=" + *cj.Spec.TimeZone + " " + spec
	}
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		s.eventf(corev1.EventTypeWarning, "UnparseableSchedule", "unparseable schedule: %q : %s", cj.Spec.Schedule, err)
		return 0, nil
	}
	// Schedules without a zone are read in the zone of the times given.
	now := s.now.In(loc)

	_, scheduled, missed, err := mostRecentScheduleTime(cj.CreationTimestamp.Time, s.status.LastScheduleTime, cj.Spec.StartingDeadlineSeconds, now, sched, true)
	if err != nil {
		s.eventf(corev1.EventTypeWarning, "InvalidSchedule", "invalid schedule: %s : %s", cj.Spec.Schedule, err)
		return 0, nil
	}
	if missed > tooManyMissed {
		s.eventf(corev1.EventTypeWarning, "TooManyMissedTimes", "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew")
	}
	requeue := func() (time.Duration, error) { return s.nextDelay(now, sched), nil }
	if scheduled == nil {
		return requeue()
	}
	if d := cj.Spec.StartingDeadlineSeconds; d != nil && scheduled.Add(time.Duration(*d)*time.Second).Before(now) {
		s.eventf(corev1.EventTypeWarning, "MissSchedule", "Missed scheduled time to start a job: %s", scheduled.UTC().Format(time.RFC1123Z))
		return requeue()
	}
	name := jobName(cj.Name, *scheduled)
	if last := s.status.LastScheduleTime; last != nil && last.Time.Equal(*scheduled) {
		return requeue() // already done
	}
	for _, r := range s.status.Active {
		if r.Name == name {
			return requeue()
		}
	}
	if cj.Spec.ConcurrencyPolicy == batchv1.ForbidConcurrent && len(s.status.Active) > 0 {
		s.eventf(corev1.EventTypeNormal, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid")
		return requeue()
	}
	if cj.Spec.ConcurrencyPolicy == batchv1.ReplaceConcurrent {
		for _, r := range append([]corev1.ObjectReference(nil), s.status.Active...) {
			o, ok := s.cc.c.Store.Get(jobKind.Key(), r.Namespace, r.Name)
			if !ok || o.GetUID() != r.UID {
				s.removeActive(r.UID)
				continue
			}
			s.deleteJob(o.(*batchv1.Job))
		}
	}
	if s.namespaceTerminating() {
		return 0, nil
	}
	if existing, ok := s.cc.c.Store.Get(jobKind.Key(), cj.Namespace, name); ok {
		// The Job of this time exists (made by someone else, or recorded in a
		// status since overwritten): this time is done.
		if ref := metav1.GetControllerOfNoCopy(existing); ref != nil && ref.UID == cj.UID {
			if fin, _ := finished(existing.(*batchv1.Job)); !fin && !s.inActive(existing.GetUID()) {
				s.status.Active = append(s.status.Active, jobReference(existing.(*batchv1.Job)))
			}
		} else {
			s.eventf(corev1.EventTypeWarning, "FailedCreate", "Error creating job: a job named %s already exists", name)
		}
		s.status.LastScheduleTime = &metav1.Time{Time: *scheduled}
		return requeue()
	}
	job := s.newJob(name, *scheduled, loc)
	s.ops = append(s.ops, state.Create(job))
	s.status.Active = append(s.status.Active, jobReference(job))
	s.status.LastScheduleTime = &metav1.Time{Time: *scheduled}
	s.eventf(corev1.EventTypeNormal, "SuccessfulCreate", "Created job %v", name)
	return requeue()
}

// nextDelay is how long until just after the next scheduled time.
func (s *syncCronJob) nextDelay(now time.Time, sched cron.Schedule) time.Duration {
	earliest, recent, _, _ := mostRecentScheduleTime(s.cj.CreationTimestamp.Time, s.status.LastScheduleTime, nil, now, sched, false)
	from := earliest
	if recent != nil {
		from = *recent
	}
	next := sched.Next(from)
	if next.IsZero() {
		return 0 // never again
	}
	return next.Sub(now) + nextScheduleDelta
}

// mostRecentScheduleTime returns the earliest time it considered — the
// last scheduled time, else the CronJob's creation, moved up to now -
// startingDeadlineSeconds when withDeadline — the most recent scheduled
// time in (earliest, now] (nil if none) and about how many times were
// missed, as Kubernetes computes them. It errs on a schedule whose times
// are not a second apart (e.g. "0 0 31 2 *", which never comes).
func mostRecentScheduleTime(created time.Time, last *metav1.Time, deadline *int64, now time.Time, sched cron.Schedule, withDeadline bool) (time.Time, *time.Time, int64, error) {
	earliest := created
	if last != nil {
		earliest = last.Time
	}
	if withDeadline && deadline != nil {
		if d := now.Add(-time.Duration(*deadline) * time.Second); d.After(earliest) {
			earliest = d
		}
	}
	earliest = earliest.In(now.Location())
	t1 := sched.Next(earliest)
	if t1.IsZero() || now.Before(t1) {
		return earliest, nil, 0, nil
	}
	t2 := sched.Next(t1)
	if t2.IsZero() || now.Before(t2) {
		return earliest, &t1, 1, nil
	}
	interval := int64(t2.Sub(t1).Round(time.Second).Seconds())
	if interval < 1 {
		return earliest, nil, 0, errors.New("time difference between two schedules is less than 1 second")
	}
	// Estimate how many intervals fit up to now, jump close to the end and
	// walk the schedule from there (exact for irregular schedules too).
	// Only the estimate is reported: it is what Kubernetes warns on.
	missed := int64(now.Sub(t1).Seconds())/interval + 1
	from := t1.Add(time.Duration((missed-2)*interval) * time.Second)
	if from.Before(earliest) {
		from = earliest
	}
	var recent time.Time
	for t := sched.Next(from); !t.IsZero() && !t.After(now); t = sched.Next(t) {
		recent = t
	}
	if recent.IsZero() {
		return earliest, nil, missed, nil
	}
	return earliest, &recent, missed, nil
}

// jobName is Kubernetes' name for the Job of a scheduled time: the minutes
// since the epoch, so the name is the same whoever creates it.
func jobName(cronJob string, scheduled time.Time) string {
	return cronJob + "-" + strconv.FormatInt(scheduled.Unix()/60, 10)
}

// newJob makes the Job of a scheduled time from the CronJob's template,
// with what the API server would add.
func (s *syncCronJob) newJob(name string, scheduled time.Time, loc *time.Location) *batchv1.Job {
	cj := s.cj
	t := cj.Spec.JobTemplate.DeepCopy()
	ann := make(map[string]string, len(t.Annotations)+1)
	for k, v := range t.Annotations {
		ann[k] = v
	}
	ann[batchv1.CronJobScheduledTimestampAnnotation] = scheduled.In(loc).Format(time.RFC3339)
	lbl := make(map[string]string, len(t.Labels))
	for k, v := range t.Labels {
		lbl[k] = v
	}
	j := &batchv1.Job{
		TypeMeta: metav1.TypeMeta{Kind: "Job", APIVersion: "batch/v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name:              name,
			Namespace:         cj.Namespace,
			UID:               s.cc.c.NewUID(),
			CreationTimestamp: metav1.NewTime(s.now.Truncate(time.Second)),
			Generation:        1,
			Labels:            lbl,
			Annotations:       ann,
			OwnerReferences:   []metav1.OwnerReference{*metav1.NewControllerRef(cj, controllerKind)},
		},
		Spec: t.Spec,
	}
	// As the API server would on a create: defaults and the generated selector.
	defaults.Apply(j)
	defaults.ApplyCreate(j)
	return j
}

func (s *syncCronJob) namespaceTerminating() bool {
	o, ok := s.cc.c.Store.Get("namespaces", "", s.cj.Namespace)
	return ok && o.GetDeletionTimestamp() != nil
}

// commit writes the Job changes and the CronJob's status in one atomic
// proposal, conditional on the versions read, then records the events.
func (s *syncCronJob) commit(ctx context.Context) error {
	ops := s.ops
	if !equality.Semantic.DeepEqual(s.cj.Status, s.status) {
		next := s.cj.DeepCopy()
		next.Status = s.status
		next.ResourceVersion = ""
		ops = append(ops, state.Update(next, rvOf(s.cj)))
	}
	if len(ops) > 0 {
		if _, err := s.cc.c.Proposer.Propose(ctx, ops...); err != nil {
			return fmt.Errorf("syncing cronjob %s/%s: %w", s.cj.Namespace, s.cj.Name, err)
		}
	}
	for _, ev := range s.events {
		s.cc.c.Events.Eventf(s.cj, "CronJob", ev.typ, ev.reason, "%s", ev.msg)
	}
	return nil
}

func rvOf(o metav1.Object) uint64 {
	v, _ := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
	return v
}
