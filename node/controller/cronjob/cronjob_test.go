package cronjob

import (
	"context"
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // the time zone tests must not depend on the machine

	"github.com/robfig/cron/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

// t0 is half a minute past noon: the first every-minute time is 12:01.
var t0 = time.Date(2025, 3, 1, 12, 0, 30, 0, time.UTC)

type env struct {
	t     *testing.T
	ctx   context.Context
	store *state.Store
	p     state.Proposer
	clk   *testingclock.FakeClock
	cc    controller.Context
	ctl   *Controller
}

func newEnv(t *testing.T) *env {
	t.Helper()
	store := state.NewStore(0)
	p := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	clk := testingclock.NewFakeClock(t0)
	ctx, cancel := context.WithCancel(context.Background())
	rec := events.New(events.Config{Proposer: p, Component: "cronjob-controller", Now: clk.Now})
	done := make(chan struct{})
	go func() {
		rec.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var n atomic.Int64
	e := &env{t: t, ctx: context.Background(), store: store, p: p, clk: clk}
	e.cc = controller.Context{
		Store: store, Proposer: p, Clock: clk, Events: rec,
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", n.Add(1))) },
	}
	e.ctl = New(e.cc)
	return e
}

func (e *env) propose(ops ...state.Op) {
	e.t.Helper()
	if _, err := e.p.Propose(e.ctx, ops...); err != nil {
		e.t.Fatal(err)
	}
}

// createCronJob stores a CronJob as the API would (defaults applied).
func (e *env) createCronJob(name, schedule string, mutate func(*batchv1.CronJob)) {
	e.t.Helper()
	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("cj-" + name), CreationTimestamp: metav1.NewTime(e.clk.Now())},
		Spec: batchv1.CronJobSpec{
			Schedule: schedule, ConcurrencyPolicy: batchv1.AllowConcurrent, Suspend: ptr(false),
			SuccessfulJobsHistoryLimit: ptr(int32(3)), FailedJobsHistoryLimit: ptr(int32(1)),
			JobTemplate: batchv1.JobTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "report"}, Annotations: map[string]string{"note": "x"}},
				Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "report"}},
					Spec: corev1.PodSpec{
						RestartPolicy: corev1.RestartPolicyNever,
						Containers:    []corev1.Container{{Name: "main", Image: "busybox"}},
					},
				}},
			},
		},
	}
	if mutate != nil {
		mutate(cj)
	}
	e.propose(state.Create(cj))
}

func (e *env) cronJob(name string) *batchv1.CronJob {
	o, ok := e.store.Get("cronjobs.batch", "default", name)
	if !ok {
		return nil
	}
	return o.(*batchv1.CronJob)
}

func (e *env) update(name string, f func(*batchv1.CronJob)) {
	e.t.Helper()
	cur := e.cronJob(name)
	next := cur.DeepCopy()
	f(next)
	e.propose(state.Update(next, rvOf(cur)))
}

func (e *env) sync(name string) {
	e.t.Helper()
	if err := e.ctl.sync(e.ctx, controller.Key("default", name)); err != nil {
		e.t.Fatalf("sync %s: %v", name, err)
	}
}

// at moves the fake clock to t and syncs.
func (e *env) at(name string, t time.Time) {
	e.t.Helper()
	e.clk.SetTime(t)
	e.sync(name)
}

// jobs returns the names of the CronJob's Jobs, sorted.
func (e *env) jobs(cj string) []string {
	objs, _ := e.store.List("jobs.batch", "default")
	var out []string
	for _, o := range objs {
		if ref := metav1.GetControllerOf(o); ref != nil && ref.Name == cj {
			out = append(out, o.GetName())
		}
	}
	sort.Strings(out)
	return out
}

func (e *env) job(name string) *batchv1.Job {
	o, ok := e.store.Get("jobs.batch", "default", name)
	if !ok {
		return nil
	}
	return o.(*batchv1.Job)
}

// finishJob marks a Job finished as the Job controller would.
func (e *env) finishJob(name string, typ batchv1.JobConditionType) {
	e.t.Helper()
	cur := e.job(name)
	j := cur.DeepCopy()
	now := metav1.NewTime(e.clk.Now())
	j.Status.StartTime = &j.CreationTimestamp
	j.Status.Conditions = append(j.Status.Conditions, batchv1.JobCondition{Type: typ, Status: corev1.ConditionTrue, LastTransitionTime: now})
	if typ == batchv1.JobComplete {
		j.Status.CompletionTime = &now
	}
	e.propose(state.Update(j, rvOf(cur)))
}

// hasEvent waits for an event with reason about the CronJob.
func (e *env) hasEvent(reason string) bool {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		evs, _ := e.store.List("events", "default")
		for _, o := range evs {
			if ev := o.(*corev1.Event); ev.Reason == reason && ev.InvolvedObject.Kind == "CronJob" {
				return true
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

func minute(h, m int) time.Time { return time.Date(2025, 3, 1, h, m, 0, 0, time.UTC) }

func nameAt(cj string, t time.Time) string { return fmt.Sprintf("%s-%d", cj, t.Unix()/60) }

func eq(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// TestEveryMinute: one Job per minute with deterministic names; a fresh
// controller (a new leader) does not run a time again.
func TestEveryMinute(t *testing.T) {
	e := newEnv(t)
	e.createCronJob("tick", "* * * * *", nil)
	e.sync("tick")
	if j := e.jobs("tick"); len(j) != 0 {
		t.Fatalf("jobs before the first time: %v", j)
	}
	e.at("tick", minute(12, 1).Add(100*time.Millisecond))
	e.sync("tick")
	want := []string{nameAt("tick", minute(12, 1))}
	if got := e.jobs("tick"); !eq(got, want) {
		t.Fatalf("jobs %v, want %v", got, want)
	}
	New(e.cc).sync(e.ctx, "default/tick") // a new leader
	if got := e.jobs("tick"); !eq(got, want) {
		t.Fatalf("after a new controller synced: jobs %v, want %v", got, want)
	}
	e.at("tick", minute(12, 2).Add(100*time.Millisecond))
	want = append(want, nameAt("tick", minute(12, 2)))
	if got := e.jobs("tick"); !eq(got, want) {
		t.Fatalf("jobs %v, want %v", got, want)
	}

	cj := e.cronJob("tick")
	if len(cj.Status.Active) != 2 || cj.Status.LastScheduleTime == nil || !cj.Status.LastScheduleTime.Time.Equal(minute(12, 2)) {
		t.Errorf("status %+v", cj.Status)
	}
	j := e.job(want[1])
	if got := j.Annotations[batchv1.CronJobScheduledTimestampAnnotation]; got != "2025-03-01T12:02:00Z" {
		t.Errorf("scheduled-timestamp annotation %q", got)
	}
	if j.Labels["app"] != "report" || j.Annotations["note"] != "x" {
		t.Errorf("labels %v annotations %v, want the template's", j.Labels, j.Annotations)
	}
	ref := metav1.GetControllerOf(j)
	if ref == nil || ref.UID != "cj-tick" || ref.Kind != "CronJob" {
		t.Errorf("controller %+v", ref)
	}
	// What the API would have given the Job.
	if j.UID == "" || j.Spec.Completions == nil || *j.Spec.Completions != 1 || j.Spec.BackoffLimit == nil ||
		j.Spec.Selector == nil || j.Spec.Selector.MatchLabels[batchv1.ControllerUidLabel] != string(j.UID) ||
		j.Spec.Template.Labels[batchv1.ControllerUidLabel] != string(j.UID) || j.Spec.Template.Labels[batchv1.JobNameLabel] != j.Name {
		t.Errorf("job not defaulted: uid %q spec %+v", j.UID, j.Spec)
	}
}

// TestRunFiresOnSchedule: the running controller requeues itself for the
// next time on the (fake) clock.
func TestRunFiresOnSchedule(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.ctl.Run(ctx)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()
	e.createCronJob("tick", "*/1 * * * *", nil)
	times := []time.Time{minute(12, 1), minute(12, 2), minute(12, 3)}
	var want []string
	for _, at := range times {
		want = append(want, nameAt("tick", at))
	}
	end := minute(12, 3).Add(30 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	stalled := 0
	for e.clk.Now().Before(end) {
		if time.Now().After(deadline) {
			t.Fatalf("at %v: jobs %v", e.clk.Now(), e.jobs("tick"))
		}
		// Step only once the controller has caught up with the time.
		n := 0
		for _, at := range times {
			if !e.clk.Now().Before(at.Add(nextScheduleDelta)) {
				n++
			}
		}
		if len(e.jobs("tick")) < n {
			// A sync reads the clock before it asks for its next run (AddAfter
			// counts from the clock then): a step in between delays the
			// timer. Nudge the clock on, a little, when nothing happens.
			if stalled++; stalled%20 == 0 {
				e.clk.Step(100 * time.Millisecond)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		stalled = 0
		e.clk.Step(time.Second)
	}
	// On a loaded machine the nudges above can carry the clock past end
	// before the last run's timer was set: keep nudging (never near the
	// next minute) while waiting for it.
	waitUntil := time.Now().Add(5 * time.Second)
	for i := 1; !eq(e.jobs("tick"), want) && time.Now().Before(waitUntil); i++ {
		if i%20 == 0 && e.clk.Now().Before(minute(12, 3).Add(50*time.Second)) {
			e.clk.Step(100 * time.Millisecond)
		}
		time.Sleep(time.Millisecond)
	}
	if got := e.jobs("tick"); !eq(got, want) {
		t.Fatalf("jobs %v, want %v", got, want)
	}
}

// TestForbid: no new Job while one runs; once it ends, the most recent
// missed time runs (as in Kubernetes).
func TestForbid(t *testing.T) {
	e := newEnv(t)
	e.createCronJob("once", "* * * * *", func(cj *batchv1.CronJob) { cj.Spec.ConcurrencyPolicy = batchv1.ForbidConcurrent })
	e.at("once", minute(12, 1).Add(time.Second))
	first := nameAt("once", minute(12, 1))
	e.at("once", minute(12, 2).Add(time.Second))
	e.at("once", minute(12, 3).Add(time.Second))
	if got := e.jobs("once"); !eq(got, []string{first}) {
		t.Fatalf("jobs %v while the first runs, want only %s", got, first)
	}
	if !e.hasEvent("JobAlreadyActive") {
		t.Error("no JobAlreadyActive event")
	}
	e.clk.SetTime(minute(12, 3).Add(30 * time.Second))
	e.finishJob(first, batchv1.JobComplete)
	e.sync("once")
	if got := e.jobs("once"); !eq(got, []string{first, nameAt("once", minute(12, 3))}) {
		t.Fatalf("jobs %v after the first ended", got)
	}
	cj := e.cronJob("once")
	if cj.Status.LastSuccessfulTime == nil || !cj.Status.LastSuccessfulTime.Time.Equal(minute(12, 3).Add(30*time.Second)) {
		t.Errorf("lastSuccessfulTime %v", cj.Status.LastSuccessfulTime)
	}
	if len(cj.Status.Active) != 1 || cj.Status.Active[0].Name != nameAt("once", minute(12, 3)) {
		t.Errorf("active %v", cj.Status.Active)
	}
}

// TestReplace: a running Job is deleted for the next one.
func TestReplace(t *testing.T) {
	e := newEnv(t)
	e.createCronJob("swap", "* * * * *", func(cj *batchv1.CronJob) { cj.Spec.ConcurrencyPolicy = batchv1.ReplaceConcurrent })
	e.at("swap", minute(12, 1).Add(time.Second))
	e.at("swap", minute(12, 2).Add(time.Second))
	second := nameAt("swap", minute(12, 2))
	if got := e.jobs("swap"); !eq(got, []string{second}) {
		t.Fatalf("jobs %v, want only %s", got, second)
	}
	if a := e.cronJob("swap").Status.Active; len(a) != 1 || a[0].Name != second {
		t.Errorf("active %v", a)
	}
}

// TestStartingDeadline: a time missed by more than startingDeadlineSeconds
// is skipped; without a deadline only the most recent missed time runs.
func TestStartingDeadline(t *testing.T) {
	e := newEnv(t)
	e.createCronJob("strict", "* * * * *", func(cj *batchv1.CronJob) { cj.Spec.StartingDeadlineSeconds = ptr(int64(10)) })
	e.createCronJob("lenient", "* * * * *", nil)
	// The controller was down from 12:00:30 to 12:05:30.
	e.at("strict", minute(12, 5).Add(30*time.Second))
	e.sync("lenient")
	if got := e.jobs("strict"); len(got) != 0 {
		t.Errorf("strict: jobs %v, want the missed 12:05 skipped", got)
	}
	if got := e.jobs("lenient"); !eq(got, []string{nameAt("lenient", minute(12, 5))}) {
		t.Errorf("lenient: jobs %v, want only the 12:05 one", got)
	}
	e.at("strict", minute(12, 6).Add(5*time.Second))
	if got := e.jobs("strict"); !eq(got, []string{nameAt("strict", minute(12, 6))}) {
		t.Errorf("strict: jobs %v, want the 12:06 one (5 s late, within its deadline)", got)
	}
}

// TestTooManyMissed: more than 100 missed times gives Kubernetes' warning
// (and still runs the most recent).
func TestTooManyMissed(t *testing.T) {
	e := newEnv(t)
	e.createCronJob("late", "* * * * *", nil)
	e.at("late", minute(15, 0).Add(time.Second))
	if !e.hasEvent("TooManyMissedTimes") {
		t.Error("no TooManyMissedTimes event")
	}
	if got := e.jobs("late"); !eq(got, []string{nameAt("late", minute(15, 0))}) {
		t.Errorf("jobs %v", got)
	}
}

// TestTimeZone: the schedule is read in spec.timeZone; an unknown zone
// schedules nothing and says why.
func TestTimeZone(t *testing.T) {
	e := newEnv(t)
	e.createCronJob("tokyo", "0 9 * * *", func(cj *batchv1.CronJob) { cj.Spec.TimeZone = ptr("Asia/Tokyo") })
	e.createCronJob("utc", "0 9 * * *", nil)
	e.createCronJob("mars", "* * * * *", func(cj *batchv1.CronJob) { cj.Spec.TimeZone = ptr("Mars/Olympus_Mons") })
	nineTokyo := time.Date(2025, 3, 2, 0, 0, 0, 0, time.UTC) // 09:00 in Tokyo (UTC+9)
	e.at("tokyo", nineTokyo.Add(-time.Second))
	if got := e.jobs("tokyo"); len(got) != 0 {
		t.Fatalf("jobs %v before 09:00 Tokyo", got)
	}
	e.at("tokyo", nineTokyo.Add(time.Second))
	e.sync("utc")
	e.sync("mars")
	want := nameAt("tokyo", nineTokyo)
	if got := e.jobs("tokyo"); !eq(got, []string{want}) {
		t.Fatalf("jobs %v, want %s", got, want)
	}
	if got := e.job(want).Annotations[batchv1.CronJobScheduledTimestampAnnotation]; got != "2025-03-02T09:00:00+09:00" {
		t.Errorf("scheduled-timestamp annotation %q", got)
	}
	if got := e.jobs("utc"); len(got) != 0 {
		t.Errorf("utc: jobs %v at 00:00 UTC", got)
	}
	if got := e.jobs("mars"); len(got) != 0 {
		t.Errorf("mars: jobs %v", got)
	}
	if !e.hasEvent("UnknownTimeZone") {
		t.Error("no UnknownTimeZone event")
	}
}

// TestSuspend: a suspended CronJob starts nothing; resumed, it runs the
// most recent missed time.
func TestSuspend(t *testing.T) {
	e := newEnv(t)
	e.createCronJob("paused", "* * * * *", func(cj *batchv1.CronJob) { cj.Spec.Suspend = ptr(true) })
	e.at("paused", minute(12, 1).Add(time.Second))
	e.at("paused", minute(12, 2).Add(time.Second))
	if got := e.jobs("paused"); len(got) != 0 {
		t.Fatalf("jobs %v while suspended", got)
	}
	e.update("paused", func(cj *batchv1.CronJob) { cj.Spec.Suspend = ptr(false) })
	e.sync("paused")
	if got := e.jobs("paused"); !eq(got, []string{nameAt("paused", minute(12, 2))}) {
		t.Fatalf("jobs %v after resuming", got)
	}
}

// TestHistoryLimits: the oldest finished Jobs beyond the limits go.
func TestHistoryLimits(t *testing.T) {
	e := newEnv(t)
	e.createCronJob("hist", "* * * * *", func(cj *batchv1.CronJob) {
		cj.Spec.SuccessfulJobsHistoryLimit, cj.Spec.FailedJobsHistoryLimit = ptr(int32(2)), ptr(int32(1))
	})
	outcome := []batchv1.JobConditionType{batchv1.JobComplete, batchv1.JobFailed, batchv1.JobComplete, batchv1.JobFailed, batchv1.JobComplete}
	for i, typ := range outcome {
		at := minute(12, i+1)
		e.at("hist", at.Add(time.Second))
		e.clk.SetTime(at.Add(30 * time.Second))
		e.finishJob(nameAt("hist", at), typ)
	}
	e.sync("hist")
	want := []string{nameAt("hist", minute(12, 3)), nameAt("hist", minute(12, 4)), nameAt("hist", minute(12, 5))}
	if got := e.jobs("hist"); !eq(got, want) {
		t.Fatalf("jobs %v, want %v (2 successful, 1 failed)", got, want)
	}
	cj := e.cronJob("hist")
	if len(cj.Status.Active) != 0 {
		t.Errorf("active %v, want none", cj.Status.Active)
	}
	if cj.Status.LastSuccessfulTime == nil || !cj.Status.LastSuccessfulTime.Time.Equal(minute(12, 5).Add(30*time.Second)) {
		t.Errorf("lastSuccessfulTime %v", cj.Status.LastSuccessfulTime)
	}
}

// TestUnparseableSchedule: nothing runs; an event says why.
func TestUnparseableSchedule(t *testing.T) {
	e := newEnv(t)
	e.createCronJob("bad", "every day at noon", nil)
	e.at("bad", minute(13, 0))
	if got := e.jobs("bad"); len(got) != 0 {
		t.Errorf("jobs %v", got)
	}
	if !e.hasEvent("UnparseableSchedule") {
		t.Error("no UnparseableSchedule event")
	}
}

// TestJobDeletedLeavesActive: a running Job deleted by someone leaves the
// active list.
func TestJobDeletedLeavesActive(t *testing.T) {
	e := newEnv(t)
	e.createCronJob("gone", "* * * * *", nil)
	e.at("gone", minute(12, 1).Add(time.Second))
	e.propose(state.Delete(jobKind, "default", nameAt("gone", minute(12, 1)), 0, ""))
	e.sync("gone")
	if a := e.cronJob("gone").Status.Active; len(a) != 0 {
		t.Errorf("active %v after the job was deleted", a)
	}
	if got := e.jobs("gone"); len(got) != 0 {
		t.Errorf("the deleted time ran again: %v", got)
	}
}

func TestMostRecentScheduleTime(t *testing.T) {
	created := time.Date(2025, 3, 1, 12, 0, 30, 0, time.UTC)
	for _, c := range []struct {
		schedule string
		now      time.Time
		want     time.Time // zero: none
		missed   int64
	}{
		{"* * * * *", minute(12, 0).Add(59 * time.Second), time.Time{}, 0},
		{"* * * * *", minute(12, 1), minute(12, 1), 1},
		{"* * * * *", minute(12, 3).Add(10 * time.Second), minute(12, 3), 3},
		{"@hourly", minute(14, 30), minute(14, 0), 2},
		{"30 6-16/4 * * 1-5", time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC), time.Date(2025, 3, 4, 10, 30, 0, 0, time.UTC), 0},
		{"*/5 * * * *", minute(12, 4), time.Time{}, 0},
	} {
		sched, err := cron.ParseStandard(c.schedule)
		if err != nil {
			t.Fatal(err)
		}
		_, got, missed, err := mostRecentScheduleTime(created, nil, nil, c.now, sched, true)
		if err != nil {
			t.Fatalf("%s: %v", c.schedule, err)
		}
		switch {
		case c.want.IsZero() && got != nil:
			t.Errorf("%s at %v: got %v, want none", c.schedule, c.now, *got)
		case !c.want.IsZero() && (got == nil || !got.Equal(c.want)):
			t.Errorf("%s at %v: got %v, want %v", c.schedule, c.now, got, c.want)
		case c.missed != 0 && missed != c.missed:
			t.Errorf("%s at %v: missed %d, want %d", c.schedule, c.now, missed, c.missed)
		}
	}
	// A schedule that never comes.
	sched, _ := cron.ParseStandard("59 23 31 2 *")
	if _, got, _, _ := mostRecentScheduleTime(created, nil, nil, created.Add(24*time.Hour), sched, true); got != nil {
		t.Errorf("Feb 31: got %v", *got)
	}
}

func ptr[T any](v T) *T { return &v }
