package job

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/gc"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

type env struct {
	t     *testing.T
	ctx   context.Context
	store *state.Store
	p     state.Proposer
	clk   *testingclock.FakeClock
	cc    controller.Context
	jc    *Controller
}

func newEnv(t *testing.T) *env {
	t.Helper()
	store := state.NewStore(0)
	var n atomic.Int64
	e := &env{
		t: t, ctx: context.Background(), store: store,
		p:   state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{})),
		clk: testingclock.NewFakeClock(t0),
	}
	e.cc = controller.Context{
		Store: store, Proposer: e.p, Clock: e.clk,
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", n.Add(1))) },
	}
	e.jc = New(e.cc)
	e.propose(state.Create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "node-n1"}}))
	e.propose(state.Create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default", UID: "ns-default"}}))
	return e
}

func (e *env) propose(ops ...state.Op) {
	e.t.Helper()
	if _, err := e.p.Propose(e.ctx, ops...); err != nil {
		e.t.Fatal(err)
	}
}

// newJob returns a Job as the API stores it (defaults, generated selector).
func newJob(name string, mutate func(*batchv1.Job)) *batchv1.Job {
	uid := types.UID("job-" + name)
	j := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: uid, CreationTimestamp: metav1.NewTime(t0)},
		Spec: batchv1.JobSpec{
			Completions: ptr(int32(1)), Parallelism: ptr(int32(1)), BackoffLimit: ptr(int32(6)),
			CompletionMode: ptr(batchv1.NonIndexedCompletion), Suspend: ptr(false),
			PodReplacementPolicy: ptr(batchv1.TerminatingOrFailed),
			Selector:             &metav1.LabelSelector{MatchLabels: map[string]string{batchv1.ControllerUidLabel: string(uid)}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{
					batchv1.ControllerUidLabel: string(uid), labelLegacyUID: string(uid),
					batchv1.JobNameLabel: name, labelLegacyJobName: name, "app": "work",
				}},
				Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers:    []corev1.Container{{Name: "main", Image: "busybox"}},
				},
			},
		},
	}
	if mutate != nil {
		mutate(j)
	}
	return j
}

func ptr[T any](v T) *T { return &v }

func (e *env) createJob(j *batchv1.Job) {
	e.t.Helper()
	e.propose(state.Create(j))
}

func (e *env) job(name string) *batchv1.Job {
	e.t.Helper()
	o, ok := e.store.Get("jobs.batch", "default", name)
	if !ok {
		return nil
	}
	return o.(*batchv1.Job)
}

// sync runs the controller's sync for a Job until it changes nothing more.
func (e *env) sync(name string) {
	e.t.Helper()
	for range 10 {
		rev := e.store.Revision()
		if err := e.jc.sync(e.ctx, controller.Key("default", name)); err != nil {
			e.t.Fatalf("sync %s: %v", name, err)
		}
		if e.store.Revision() == rev {
			return
		}
	}
	e.t.Fatalf("sync %s did not settle", name)
}

// pods returns the Job's pods, by name.
func (e *env) pods(name string) []*corev1.Pod {
	objs, _ := e.store.List("pods", "default")
	var out []*corev1.Pod
	for _, o := range objs {
		if ref := metav1.GetControllerOf(o); ref != nil && ref.Name == name {
			out = append(out, o.(*corev1.Pod))
		}
	}
	return out
}

func running(pods []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if !terminal(p) && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// kubelet sets a pod's status as its node's agent would: start binds it to
// n1 and runs it; finish ends it with phase.
func (e *env) start(p *corev1.Pod) {
	e.t.Helper()
	e.updatePod(p.Name, func(p *corev1.Pod) {
		p.Spec.NodeName = "n1"
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	})
}

func (e *env) finish(p *corev1.Pod, phase corev1.PodPhase) {
	e.t.Helper()
	e.updatePod(p.Name, func(p *corev1.Pod) {
		p.Status.Phase = phase
		p.Status.Conditions = nil
		code := int32(0)
		if phase == corev1.PodFailed {
			code = 1
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: code, FinishedAt: metav1.NewTime(e.clk.Now())},
		}}}
	})
}

func (e *env) updatePod(name string, f func(*corev1.Pod)) {
	e.t.Helper()
	o, ok := e.store.Get("pods", "default", name)
	if !ok {
		e.t.Fatalf("pod %s not found", name)
	}
	p := o.(*corev1.Pod).DeepCopy()
	f(p)
	e.propose(state.Update(p, rvOf(o)))
}

// agentFinish deletes pods marked for graceful deletion, as the agent does
// once their containers have stopped.
func (e *env) agentFinish() {
	e.t.Helper()
	objs, _ := e.store.List("pods", "default")
	for _, o := range objs {
		if o.GetDeletionTimestamp() != nil {
			e.propose(state.Delete(podKind, "default", o.GetName(), 0, string(o.GetUID())))
		}
	}
}

func condition(j *batchv1.Job, typ batchv1.JobConditionType) *batchv1.JobCondition {
	return findCondition(j.Status.Conditions, typ, corev1.ConditionTrue)
}

func conditionTypes(j *batchv1.Job) []string {
	var out []string
	for _, c := range j.Status.Conditions {
		out = append(out, string(c.Type)+"="+string(c.Status))
	}
	return out
}

// TestCompletionsParallelism: completions=5 parallelism=2 never runs more
// than 2 pods and completes with 5 succeeded.
func TestCompletionsParallelism(t *testing.T) {
	e := newEnv(t)
	e.createJob(newJob("work", func(j *batchv1.Job) {
		j.Spec.Completions, j.Spec.Parallelism = ptr(int32(5)), ptr(int32(2))
	}))
	created := map[string]bool{}
	for round := 0; ; round++ {
		if round > 20 {
			t.Fatal("job did not complete")
		}
		e.sync("work")
		j := e.job("work")
		if condition(j, batchv1.JobComplete) != nil {
			break
		}
		act := running(e.pods("work"))
		if len(act) > 2 || j.Status.Active > 2 {
			t.Fatalf("round %d: %d pods active (status %d), parallelism 2", round, len(act), j.Status.Active)
		}
		if int(j.Status.Active) != len(act) {
			t.Fatalf("status.active = %d, %d pods active", j.Status.Active, len(act))
		}
		for _, p := range act {
			created[p.Name] = true
		}
		e.start(act[0])
		e.sync("work")
		if r := e.job("work").Status.Ready; r == nil || *r != 1 {
			t.Fatalf("status.ready = %v, want 1", r)
		}
		e.finish(act[0], corev1.PodSucceeded)
	}
	j := e.job("work")
	if j.Status.Succeeded != 5 || j.Status.Failed != 0 || j.Status.Active != 0 {
		t.Errorf("status succeeded=%d failed=%d active=%d, want 5, 0, 0", j.Status.Succeeded, j.Status.Failed, j.Status.Active)
	}
	if len(created) != 5 {
		t.Errorf("%d pods created, want 5", len(created))
	}
	if got := conditionTypes(j); strings.Join(got, " ") != "SuccessCriteriaMet=True Complete=True" {
		t.Errorf("conditions %v, want SuccessCriteriaMet then Complete", got)
	}
	if c := condition(j, batchv1.JobSuccessCriteriaMet); c.Reason != batchv1.JobReasonCompletionsReached {
		t.Errorf("SuccessCriteriaMet reason %q", c.Reason)
	}
	if j.Status.StartTime == nil || j.Status.CompletionTime == nil {
		t.Errorf("startTime %v completionTime %v, want both set", j.Status.StartTime, j.Status.CompletionTime)
	}
	// The pods: generated names, Kubernetes' labels, a controller reference.
	for _, p := range e.pods("work") {
		if !strings.HasPrefix(p.Name, "work-") || len(p.Name) != len("work-")+5 {
			t.Errorf("pod name %q, want work-<5 random>", p.Name)
		}
		for k, v := range map[string]string{
			batchv1.JobNameLabel: "work", labelLegacyJobName: "work",
			batchv1.ControllerUidLabel: "job-work", labelLegacyUID: "job-work", "app": "work",
		} {
			if p.Labels[k] != v {
				t.Errorf("pod %s label %s = %q, want %q", p.Name, k, p.Labels[k], v)
			}
		}
		ref := metav1.GetControllerOf(p)
		if ref == nil || ref.UID != "job-work" || ref.Kind != "Job" || ref.APIVersion != "batch/v1" || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
			t.Errorf("pod %s controller %+v", p.Name, ref)
		}
		if p.Annotations[annotationCounted] != countedSucceeded {
			t.Errorf("pod %s counted %q", p.Name, p.Annotations[annotationCounted])
		}
	}

	// A new leader's controller over the same store counts nothing again.
	New(e.cc).sync(e.ctx, "default/work")
	if s := e.job("work").Status.Succeeded; s != 5 {
		t.Errorf("after a new controller synced: succeeded = %d", s)
	}
}

// TestBackoffLimit: failures beyond backoffLimit fail the Job, with the
// exponential back-off between replacements.
func TestBackoffLimit(t *testing.T) {
	e := newEnv(t)
	e.createJob(newJob("flaky", func(j *batchv1.Job) { j.Spec.BackoffLimit = ptr(int32(2)) }))
	e.sync("flaky")
	for i := 1; i <= 3; i++ {
		act := running(e.pods("flaky"))
		if len(act) != 1 {
			t.Fatalf("failure %d: %d active pods, want 1", i, len(act))
		}
		e.start(act[0])
		e.finish(act[0], corev1.PodFailed)
		e.sync("flaky")
		j := e.job("flaky")
		if j.Status.Failed != int32(i) {
			t.Fatalf("failed = %d, want %d", j.Status.Failed, i)
		}
		if i == 3 {
			break
		}
		if n := len(running(e.pods("flaky"))); n != 0 {
			t.Fatalf("replacement created during the back-off")
		}
		backoff := defaultBackoff << (i - 1)
		e.clk.Step(backoff - time.Second)
		e.sync("flaky")
		if n := len(running(e.pods("flaky"))); n != 0 {
			t.Fatalf("replacement created %v into a %v back-off", backoff-time.Second, backoff)
		}
		e.clk.Step(time.Second)
		e.sync("flaky")
	}
	j := e.job("flaky")
	f := condition(j, batchv1.JobFailed)
	if f == nil || f.Reason != batchv1.JobReasonBackoffLimitExceeded {
		t.Fatalf("conditions %v, want Failed BackoffLimitExceeded", conditionTypes(j))
	}
	if condition(j, batchv1.JobFailureTarget) == nil {
		t.Error("no FailureTarget condition")
	}
	if n := len(e.pods("flaky")); n != 3 {
		t.Errorf("%d pods, want 3", n)
	}
}

// TestBackoffLimitOnFailure: with restartPolicy OnFailure, container
// restarts count against the limit; the pod is removed.
func TestBackoffLimitOnFailure(t *testing.T) {
	e := newEnv(t)
	e.createJob(newJob("restarts", func(j *batchv1.Job) {
		j.Spec.BackoffLimit = ptr(int32(3))
		j.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	}))
	e.sync("restarts")
	p := running(e.pods("restarts"))[0]
	e.start(p)
	e.updatePod(p.Name, func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", RestartCount: 2}}
	})
	e.sync("restarts")
	if condition(e.job("restarts"), batchv1.JobFailureTarget) != nil {
		t.Fatal("failed after 2 restarts with backoffLimit 3")
	}
	e.updatePod(p.Name, func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", RestartCount: 3}}
	})
	e.sync("restarts")
	j := e.job("restarts")
	if c := condition(j, batchv1.JobFailureTarget); c == nil || c.Reason != batchv1.JobReasonBackoffLimitExceeded {
		t.Fatalf("conditions %v, want FailureTarget BackoffLimitExceeded", conditionTypes(j))
	}
	if condition(j, batchv1.JobFailed) != nil {
		t.Fatal("Failed while its pod is still terminating")
	}
	e.agentFinish()
	e.sync("restarts")
	if condition(e.job("restarts"), batchv1.JobFailed) == nil {
		t.Fatalf("conditions %v, want Failed", conditionTypes(e.job("restarts")))
	}
}

// TestActiveDeadline: past activeDeadlineSeconds the Job fails with
// DeadlineExceeded and its running pods are killed; the controller requeues
// itself for the deadline.
func TestActiveDeadline(t *testing.T) {
	e := newEnv(t)
	e.createJob(newJob("slow", func(j *batchv1.Job) {
		j.Spec.ActiveDeadlineSeconds = ptr(int64(30))
		j.Spec.Parallelism, j.Spec.Completions = ptr(int32(2)), ptr(int32(2))
	}))
	e.sync("slow")
	act := running(e.pods("slow"))
	e.start(act[0]) // the other one never got a node
	e.sync("slow")
	if n := e.jc.queue.Len(); n != 0 {
		t.Fatalf("queue has %d keys before the deadline", n)
	}
	e.clk.Step(31 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for e.jc.queue.Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("job not requeued at its deadline")
		}
		time.Sleep(time.Millisecond)
	}
	e.sync("slow")
	j := e.job("slow")
	if c := condition(j, batchv1.JobFailureTarget); c == nil || c.Reason != batchv1.JobReasonDeadlineExceeded {
		t.Fatalf("conditions %v, want FailureTarget DeadlineExceeded", conditionTypes(j))
	}
	pods := e.pods("slow")
	if len(pods) != 1 || pods[0].DeletionTimestamp == nil {
		t.Fatalf("pods %v: want the running pod marked for deletion, the unbound one gone", pods)
	}
	if j.Status.Active != 0 || j.Status.Terminating == nil || *j.Status.Terminating != 1 {
		t.Errorf("active %d terminating %v, want 0 and 1", j.Status.Active, j.Status.Terminating)
	}
	e.agentFinish()
	e.sync("slow")
	j = e.job("slow")
	if c := condition(j, batchv1.JobFailed); c == nil || c.Reason != batchv1.JobReasonDeadlineExceeded {
		t.Fatalf("conditions %v, want Failed DeadlineExceeded", conditionTypes(j))
	}
	if j.Status.Failed != 2 {
		t.Errorf("failed = %d, want 2 (the killed pods)", j.Status.Failed)
	}
}

// TestIndexed: each index runs once to success; completedIndexes is kept
// in Kubernetes' compressed form; pods carry their index.
func TestIndexed(t *testing.T) {
	e := newEnv(t)
	e.createJob(newJob("idx", func(j *batchv1.Job) {
		j.Spec.Completions, j.Spec.Parallelism = ptr(int32(5)), ptr(int32(3))
		j.Spec.CompletionMode = ptr(batchv1.IndexedCompletion)
		j.Spec.BackoffLimit = ptr(int32(10))
	}))
	e.sync("idx")
	byIndex := func() map[int]*corev1.Pod {
		m := map[int]*corev1.Pod{}
		for _, p := range running(e.pods("idx")) {
			m[podIndex(p)] = p
		}
		return m
	}
	act := byIndex()
	if len(act) != 3 || act[0] == nil || act[1] == nil || act[2] == nil {
		t.Fatalf("active indexes %v, want 0, 1, 2", act)
	}
	p := act[1]
	if !strings.HasPrefix(p.Name, "idx-1-") || p.Spec.Hostname != "idx-1" ||
		p.Annotations[batchv1.JobCompletionIndexAnnotation] != "1" || p.Labels[batchv1.JobCompletionIndexAnnotation] != "1" {
		t.Errorf("pod %s hostname %q annotations %v labels %v", p.Name, p.Spec.Hostname, p.Annotations, p.Labels)
	}
	if env := p.Spec.Containers[0].Env; len(env) != 1 || env[0].Name != envCompletionIndex || env[0].Value != "1" {
		t.Errorf("env %v, want JOB_COMPLETION_INDEX=1", env)
	}

	e.finish(act[0], corev1.PodSucceeded)
	e.finish(act[2], corev1.PodSucceeded)
	e.finish(act[1], corev1.PodFailed)
	e.clk.Step(time.Minute) // past the back-off
	e.sync("idx")
	j := e.job("idx")
	if j.Status.CompletedIndexes != "0,2" || j.Status.Succeeded != 2 || j.Status.Failed != 1 {
		t.Fatalf("completedIndexes %q succeeded %d failed %d, want \"0,2\", 2, 1", j.Status.CompletedIndexes, j.Status.Succeeded, j.Status.Failed)
	}
	act = byIndex()
	if len(act) != 3 || act[1] == nil || act[3] == nil || act[4] == nil {
		t.Fatalf("active indexes %v, want 1, 3, 4", act)
	}
	for _, p := range act {
		e.finish(p, corev1.PodSucceeded)
	}
	e.sync("idx")
	j = e.job("idx")
	if j.Status.CompletedIndexes != "0-4" || j.Status.Succeeded != 5 || condition(j, batchv1.JobComplete) == nil {
		t.Fatalf("completedIndexes %q succeeded %d conditions %v", j.Status.CompletedIndexes, j.Status.Succeeded, conditionTypes(j))
	}
}

// TestSuccessPolicy: an Indexed Job succeeds when a rule matches; the
// remaining pods are removed.
func TestSuccessPolicy(t *testing.T) {
	e := newEnv(t)
	e.createJob(newJob("leader", func(j *batchv1.Job) {
		j.Spec.Completions, j.Spec.Parallelism = ptr(int32(3)), ptr(int32(3))
		j.Spec.CompletionMode = ptr(batchv1.IndexedCompletion)
		j.Spec.SuccessPolicy = &batchv1.SuccessPolicy{Rules: []batchv1.SuccessPolicyRule{{SucceededIndexes: ptr("0")}}}
	}))
	e.sync("leader")
	for _, p := range running(e.pods("leader")) {
		if podIndex(p) == 0 {
			e.finish(p, corev1.PodSucceeded)
		}
	}
	e.sync("leader")
	j := e.job("leader")
	c := condition(j, batchv1.JobComplete)
	if c == nil || c.Reason != batchv1.JobReasonSuccessPolicy || c.Message != "Matched rules at index 0" {
		t.Fatalf("conditions %v", j.Status.Conditions)
	}
	if n := len(running(e.pods("leader"))); n != 0 || j.Status.Failed != 0 {
		t.Errorf("%d pods still running, failed %d", n, j.Status.Failed)
	}
}

// TestSuspendResume: a suspended Job runs nothing; resuming starts it and
// resets startTime; suspending again removes its pods without counting them
// as failures.
func TestSuspendResume(t *testing.T) {
	e := newEnv(t)
	e.createJob(newJob("later", func(j *batchv1.Job) {
		j.Spec.Suspend = ptr(true)
		j.Spec.Completions, j.Spec.Parallelism = ptr(int32(2)), ptr(int32(2))
	}))
	e.sync("later")
	j := e.job("later")
	if n := len(e.pods("later")); n != 0 {
		t.Fatalf("%d pods for a suspended job", n)
	}
	if c := condition(j, batchv1.JobSuspended); c == nil || c.Reason != "JobSuspended" {
		t.Fatalf("conditions %v, want Suspended", conditionTypes(j))
	}
	if j.Status.StartTime != nil {
		t.Error("startTime set on a suspended job")
	}

	e.clk.Step(time.Hour)
	setSuspend(e, "later", false)
	e.sync("later")
	j = e.job("later")
	if n := len(running(e.pods("later"))); n != 2 {
		t.Fatalf("%d pods after resuming, want 2", n)
	}
	c := findCondition(j.Status.Conditions, batchv1.JobSuspended, corev1.ConditionFalse)
	if c == nil || c.Reason != "JobResumed" {
		t.Fatalf("conditions %v, want Suspended=False JobResumed", conditionTypes(j))
	}
	if j.Status.StartTime == nil || !j.Status.StartTime.Time.Equal(t0.Add(time.Hour)) {
		t.Errorf("startTime %v, want the resumption time", j.Status.StartTime)
	}

	for _, p := range running(e.pods("later")) {
		e.start(p)
	}
	setSuspend(e, "later", true)
	e.sync("later")
	for _, p := range e.pods("later") {
		if p.DeletionTimestamp == nil || p.Annotations[annotationCounted] != countedRemoved {
			t.Errorf("pod %s not removed (deletion %v, counted %q)", p.Name, p.DeletionTimestamp, p.Annotations[annotationCounted])
		}
	}
	e.agentFinish()
	e.sync("later")
	j = e.job("later")
	if j.Status.Failed != 0 || j.Status.Active != 0 || condition(j, batchv1.JobSuspended) == nil {
		t.Errorf("failed %d active %d conditions %v", j.Status.Failed, j.Status.Active, conditionTypes(j))
	}
}

func setSuspend(e *env, name string, v bool) {
	e.t.Helper()
	j := e.job(name).DeepCopy()
	j.Spec.Suspend = &v
	e.propose(state.Update(j, rvOf(e.job(name))))
}

// TestTTLAfterFinished: a finished Job is deleted ttlSecondsAfterFinished
// later, and its pods with it by the garbage collector.
func TestTTLAfterFinished(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		gc.New(e.cc).Run(ctx)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()
	e.createJob(newJob("brief", func(j *batchv1.Job) { j.Spec.TTLSecondsAfterFinished = ptr(int32(60)) }))
	e.sync("brief")
	e.finish(running(e.pods("brief"))[0], corev1.PodSucceeded)
	e.sync("brief")
	if condition(e.job("brief"), batchv1.JobComplete) == nil {
		t.Fatal("job not complete")
	}
	e.clk.Step(59 * time.Second)
	e.sync("brief")
	if e.job("brief") == nil {
		t.Fatal("deleted before its TTL")
	}
	e.clk.Step(time.Second)
	e.sync("brief")
	if e.job("brief") != nil {
		t.Fatal("not deleted after its TTL")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(e.pods("brief")) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("pods of the deleted job not collected")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestWorkQueue: without completions, the Job completes once a pod
// succeeded and none is left running; no pod is started after a success.
func TestWorkQueue(t *testing.T) {
	e := newEnv(t)
	e.createJob(newJob("queue", func(j *batchv1.Job) {
		j.Spec.Completions, j.Spec.Parallelism = nil, ptr(int32(3))
	}))
	e.sync("queue")
	act := running(e.pods("queue"))
	if len(act) != 3 {
		t.Fatalf("%d pods, want 3", len(act))
	}
	e.finish(act[0], corev1.PodSucceeded)
	e.sync("queue")
	if n := len(running(e.pods("queue"))); n != 2 {
		t.Fatalf("%d running after a success, want 2", n)
	}
	e.finish(act[1], corev1.PodSucceeded)
	e.finish(act[2], corev1.PodSucceeded)
	e.sync("queue")
	if j := e.job("queue"); condition(j, batchv1.JobComplete) == nil || j.Status.Succeeded != 3 {
		t.Fatalf("conditions %v succeeded %d", conditionTypes(j), j.Status.Succeeded)
	}
}

// TestRun: the controller's watches drive it: a Job completes while a
// simulated kubelet runs its pods.
func TestRun(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.jc.Run(ctx)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()
	e.createJob(newJob("live", func(j *batchv1.Job) {
		j.Spec.Completions, j.Spec.Parallelism = ptr(int32(4)), ptr(int32(2))
	}))
	deadline := time.Now().Add(10 * time.Second)
	maxActive := 0
	for {
		j := e.job("live")
		if condition(j, batchv1.JobComplete) != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job not complete: %+v", j.Status)
		}
		act := running(e.pods("live"))
		maxActive = max(maxActive, len(act))
		if len(act) > 0 {
			e.finish(act[0], corev1.PodSucceeded)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if maxActive > 2 {
		t.Errorf("%d pods active at once, parallelism 2", maxActive)
	}
	if j := e.job("live"); j.Status.Succeeded != 4 {
		t.Errorf("succeeded %d, want 4", j.Status.Succeeded)
	}
}

// TestAdoptAndRelease: an orphan the selector matches is adopted; a pod
// relabelled out of the selector is released.
func TestAdoptAndRelease(t *testing.T) {
	e := newEnv(t)
	j := newJob("adopt", func(j *batchv1.Job) { j.Spec.Completions, j.Spec.Parallelism = ptr(int32(2)), ptr(int32(2)) })
	e.createJob(j)
	orphan := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "stray", Namespace: "default", UID: "stray", Labels: j.Spec.Template.Labels},
		Spec:       j.Spec.Template.Spec,
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
	e.propose(state.Create(orphan))
	e.sync("adopt")
	pods := e.pods("adopt")
	names := []string{}
	for _, p := range pods {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	if len(pods) != 2 || names[1] != "stray" {
		t.Fatalf("pods %v, want the stray adopted and one created", names)
	}
	e.updatePod("stray", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "other"} })
	e.sync("adopt")
	if o, _ := e.store.Get("pods", "default", "stray"); metav1.GetControllerOf(o) != nil {
		t.Error("relabelled pod not released")
	}
	if n := len(running(e.pods("adopt"))); n != 2 {
		t.Errorf("%d pods, want 2 after the release", n)
	}
}

func TestIndexSet(t *testing.T) {
	for _, c := range []struct {
		in, out string
		n       int
	}{
		{"", "", 10}, {"0", "0", 10}, {"0,1", "0,1", 10}, {"0-2,5", "0-2,5", 10},
		{"5,0,1,2", "0-2,5", 10}, {"0-3,7-9", "0-3,7-9", 10}, {"0-20", "0-9", 10}, {"x,3", "3", 10},
	} {
		if got := parseIndexes(c.in, c.n).String(); got != c.out {
			t.Errorf("parse(%q).String() = %q, want %q", c.in, got, c.out)
		}
	}
}
