package job

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// syncJob is one sync of one Job: what it read, and the changes it
// collects to commit as one atomic proposal.
type syncJob struct {
	jc  *Controller
	job *batchv1.Job // as stored: read-only
	now time.Time
	sel labels.Selector

	// status is the next status; pods are the Job's pods (after adoption),
	// active those neither finished nor terminating.
	status      batchv1.JobStatus
	pods        []*corev1.Pod
	active      []*corev1.Pod
	terminating int32

	// The changes: new pods, changed copies of stored pods (by name, with
	// the stored version in orig), pods to delete at once.
	creates []*corev1.Pod
	updates map[string]*corev1.Pod
	orig    map[string]*corev1.Pod
	deletes map[string]*corev1.Pod

	events  []event
	requeue time.Duration // sync again after this long (0: no need)
	again   bool          // more to do at once (a bounded step was cut short)
}

type event struct{ typ, reason, msg string }

func (jc *Controller) newSyncJob(job *batchv1.Job) (*syncJob, error) {
	sel, err := selectorOf(job)
	if err != nil {
		return nil, err
	}
	s := &syncJob{
		jc: jc, job: job, now: jc.c.Now(), sel: sel,
		status:  *job.Status.DeepCopy(),
		updates: map[string]*corev1.Pod{}, orig: map[string]*corev1.Pod{}, deletes: map[string]*corev1.Pod{},
	}
	return s, nil
}

func (s *syncJob) eventf(typ, reason, format string, args ...any) {
	s.events = append(s.events, event{typ, reason, fmt.Sprintf(format, args...)})
}

// requeueAfter asks for a sync within d.
func (s *syncJob) requeueAfter(d time.Duration) {
	if d <= 0 {
		d = time.Millisecond
	}
	if s.requeue == 0 || d < s.requeue {
		s.requeue = d
	}
}

// mod returns the copy of p this sync changes.
func (s *syncJob) mod(p *corev1.Pod) *corev1.Pod {
	if m, ok := s.updates[p.Name]; ok {
		return m
	}
	m := p.DeepCopy()
	s.updates[p.Name], s.orig[p.Name] = m, p
	return m
}

func (s *syncJob) suspended() bool { return s.job.Spec.Suspend != nil && *s.job.Spec.Suspend }

func (s *syncJob) indexed() bool {
	return s.job.Spec.CompletionMode != nil && *s.job.Spec.CompletionMode == batchv1.IndexedCompletion &&
		s.job.Spec.Completions != nil
}

// reconcile decides the Job's next status and the pod changes.
func (s *syncJob) reconcile() {
	job := s.job
	s.claimPods()
	for _, p := range s.pods {
		switch {
		case terminal(p):
		case p.DeletionTimestamp != nil:
			s.terminating++
		default:
			s.active = append(s.active, p)
		}
	}

	// Count what finished since the last sync.
	var succeededIdx indexSet
	completions := 0
	if s.indexed() {
		completions = int(*job.Spec.Completions)
		succeededIdx = parseIndexes(s.status.CompletedIndexes, completions)
	}
	counted := 0
	for _, p := range s.pods {
		if p.Annotations[annotationCounted] != "" {
			continue
		}
		var verdict string
		switch {
		case p.Status.Phase == corev1.PodSucceeded:
			verdict = countedSucceeded
		case s.isFailed(p):
			verdict = countedFailed
		default:
			continue
		}
		if counted == maxPodChangesPerSync {
			s.again = true
			break
		}
		counted++
		s.annotate(p, verdict)
		ix := podIndex(p)
		switch {
		case verdict == countedSucceeded && s.indexed():
			if ix >= 0 && ix < completions {
				succeededIdx.add(ix)
			}
		case verdict == countedSucceeded:
			s.status.Succeeded++
		case !s.indexed() || ix >= 0 && ix < completions:
			s.status.Failed++
		}
	}
	if s.indexed() {
		s.status.CompletedIndexes = succeededIdx.String()
		s.status.Succeeded = int32(succeededIdx.len())
	}

	if s.status.StartTime == nil && !s.suspended() {
		s.status.StartTime = s.timeNow()
	}
	if s.again {
		// Too many pods finished to count in one step: commit the counts
		// and come back before deciding anything on partial numbers.
		s.setCounts()
		return
	}

	// Has the Job met its end?
	var fin *batchv1.JobCondition
	switch {
	case findCondition(s.status.Conditions, batchv1.JobSuccessCriteriaMet, corev1.ConditionTrue) != nil:
		fin = findCondition(s.status.Conditions, batchv1.JobSuccessCriteriaMet, corev1.ConditionTrue)
	case findCondition(s.status.Conditions, batchv1.JobFailureTarget, corev1.ConditionTrue) != nil:
		fin = findCondition(s.status.Conditions, batchv1.JobFailureTarget, corev1.ConditionTrue)
	case s.status.Failed > s.backoffLimit() || s.pastBackoffLimitOnFailure():
		fin = s.condition(batchv1.JobFailureTarget, batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit")
	case s.pastActiveDeadline():
		fin = s.condition(batchv1.JobFailureTarget, batchv1.JobReasonDeadlineExceeded, "Job was active longer than specified deadline")
	case job.Spec.ActiveDeadlineSeconds != nil && !s.suspended() && s.status.StartTime != nil:
		s.requeueAfter(s.status.StartTime.Add(secondsDuration(*job.Spec.ActiveDeadlineSeconds)).Sub(s.now))
	}
	if fin == nil && s.indexed() && job.Spec.SuccessPolicy != nil {
		if msg, ok := matchSuccessPolicy(job.Spec.SuccessPolicy, completions, succeededIdx); ok {
			fin = s.condition(batchv1.JobSuccessCriteriaMet, batchv1.JobReasonSuccessPolicy, msg)
		}
	}

	if fin != nil {
		// Finished: nothing may keep running. A failing Job's pods count
		// as failed, as in Kubernetes.
		verdict := countedRemoved
		if fin.Type == batchv1.JobFailureTarget {
			verdict = countedFailed
		}
		for _, p := range s.active {
			if verdict == countedFailed {
				s.status.Failed++
			}
			s.deletePod(p, verdict)
		}
		s.active = nil
	} else {
		s.manage()
		succeeded := s.status.Succeeded
		complete := false
		if job.Spec.Completions == nil {
			complete = succeeded > 0 && len(s.active) == 0
		} else {
			complete = succeeded >= *job.Spec.Completions && len(s.active) == 0
		}
		switch {
		case complete:
			fin = s.condition(batchv1.JobSuccessCriteriaMet, batchv1.JobReasonCompletionsReached, "Reached expected number of succeeded pods")
		case s.suspended():
			if s.setCondition(batchv1.JobSuspended, corev1.ConditionTrue, "JobSuspended", "Job suspended") {
				s.eventf(corev1.EventTypeNormal, "Suspended", "Job suspended")
			}
		default:
			if s.setCondition(batchv1.JobSuspended, corev1.ConditionFalse, "JobResumed", "Job resumed") {
				s.eventf(corev1.EventTypeNormal, "Resumed", "Job resumed")
				// activeDeadlineSeconds counts from the resumption.
				s.status.StartTime = s.timeNow()
			}
		}
	}

	s.setCounts()
	if fin != nil && !s.again {
		s.finish(fin)
	}
}

// setCounts sets the status counts of pods now running or terminating.
func (s *syncJob) setCounts() {
	var ready int32
	for _, p := range s.active {
		if podReady(p) {
			ready++
		}
	}
	s.status.Active = int32(len(s.active))
	s.status.Ready = &ready
	terminating := s.terminating
	s.status.Terminating = &terminating
	// Always empty: see the package documentation.
	s.status.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{}
}

// finish records the interim condition (SuccessCriteriaMet or
// FailureTarget) and, once no pod is terminating, the final one.
func (s *syncJob) finish(fin *batchv1.JobCondition) {
	if findCondition(s.status.Conditions, fin.Type, corev1.ConditionTrue) == nil {
		s.status.Conditions = append(s.status.Conditions, *fin)
	}
	if s.terminating > 0 {
		return // the pods' deletions sync the Job again
	}
	final := batchv1.JobComplete
	if fin.Type == batchv1.JobFailureTarget {
		final = batchv1.JobFailed
	}
	c := s.condition(final, fin.Reason, fin.Message)
	s.status.Conditions = append(s.status.Conditions, *c)
	if final == batchv1.JobComplete {
		s.status.CompletionTime = &c.LastTransitionTime
		if comp := s.job.Spec.Completions; comp != nil && s.status.Succeeded > *comp {
			s.eventf(corev1.EventTypeWarning, "TooManySucceededPods", "Too many succeeded pods running after completion count reached")
		}
		s.eventf(corev1.EventTypeNormal, "Completed", "Job completed")
	} else {
		s.eventf(corev1.EventTypeWarning, fin.Reason, "%s", fin.Message)
	}
}

// manage creates or removes pods to run what the Job still needs.
func (s *syncJob) manage() {
	job := s.job
	if s.suspended() {
		for _, p := range s.active {
			s.deletePod(p, countedRemoved)
		}
		s.active = nil
		return
	}
	parallelism := int32(1)
	if job.Spec.Parallelism != nil {
		parallelism = *job.Spec.Parallelism
	}
	active := int32(len(s.active))
	var want int32
	if job.Spec.Completions == nil {
		// A work queue: once one pod succeeded, let the others finish.
		want = parallelism
		if s.status.Succeeded > 0 {
			want = active
		}
	} else {
		want = max(min(*job.Spec.Completions-s.status.Succeeded, parallelism), 0)
	}

	// Pods to remove: in an Indexed Job those with an index that is
	// invalid, already succeeded or held by another pod; then the surplus,
	// least advanced first.
	var rm, keep []*corev1.Pod
	if s.indexed() {
		rm, keep = s.badIndexPods()
	} else {
		keep = append(keep, s.active...)
	}
	if surplus := len(keep) - int(want); surplus > 0 {
		sortForRemoval(keep)
		rm, keep = append(rm, keep[:surplus]...), keep[surplus:]
	}
	if len(rm) > 0 {
		if len(rm) > maxPodChangesPerSync {
			keep = append(keep, rm[maxPodChangesPerSync:]...)
			rm = rm[:maxPodChangesPerSync]
			s.again = true
		}
		for _, p := range rm {
			s.deletePod(p, countedRemoved)
			s.eventf(corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %s", p.Name)
		}
		s.active = keep
		return // create in a later sync, as Kubernetes does
	}

	busy := active
	if job.Spec.PodReplacementPolicy != nil && *job.Spec.PodReplacementPolicy == batchv1.Failed {
		busy += s.terminating // replace pods only once they are gone
	}
	diff := int(want - busy)
	if diff <= 0 {
		return
	}
	if s.namespaceTerminating() {
		return
	}
	if wait := s.backoffRemaining(); wait > 0 {
		s.requeueAfter(wait)
		return
	}
	if diff > maxPodChangesPerSync {
		diff = maxPodChangesPerSync
		s.again = true
	}
	indexes := make([]int, diff)
	for i := range indexes {
		indexes[i] = -1
	}
	if s.indexed() {
		indexes = s.pendingIndexes(diff)
	}
	for _, ix := range indexes {
		p := s.newPod(ix)
		if err := controller.AdmitPod(s.jc.c, p); err != nil {
			// Refused (an unknown PriorityClass): nothing is created;
			// try again later, as for any failed create.
			s.eventf(corev1.EventTypeWarning, "FailedCreate", "Error creating: %v", err)
			s.requeueAfter(10 * time.Second)
			return
		}
		s.creates = append(s.creates, p)
		s.active = append(s.active, p)
		s.eventf(corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: %s", p.Name)
	}
}

// claimPods collects the Job's pods: those it controls and still selects,
// plus orphans it selects (adopted). Controlled pods it no longer selects
// are released.
func (s *syncJob) claimPods() {
	job := s.job
	all, _ := s.jc.c.Store.List(podKind.Key(), job.Namespace)
	for _, o := range all {
		p := o.(*corev1.Pod)
		ref := metav1.GetControllerOfNoCopy(p)
		matches := !s.sel.Empty() && s.sel.Matches(labels.Set(p.Labels))
		switch {
		case ref != nil && ref.UID == job.UID:
			if !matches && p.DeletionTimestamp == nil {
				m := s.mod(p)
				var refs []metav1.OwnerReference
				for _, r := range m.OwnerReferences {
					if r.UID != job.UID {
						refs = append(refs, r)
					}
				}
				m.OwnerReferences = refs
				continue
			}
			s.pods = append(s.pods, p)
		case ref == nil && matches && p.DeletionTimestamp == nil && !terminal(p):
			m := s.mod(p)
			m.OwnerReferences = append(m.OwnerReferences, s.controllerRef())
			s.pods = append(s.pods, p)
		}
	}
}

func (s *syncJob) controllerRef() metav1.OwnerReference {
	return *metav1.NewControllerRef(s.job, controllerKind)
}

// isFailed reports whether p counts as failed: it failed, or (unless pods
// are replaced only once failed) it is being deleted without having
// succeeded.
func (s *syncJob) isFailed(p *corev1.Pod) bool {
	if p.Status.Phase == corev1.PodFailed {
		return true
	}
	if r := s.job.Spec.PodReplacementPolicy; r != nil && *r == batchv1.Failed {
		return false
	}
	return p.DeletionTimestamp != nil && p.Status.Phase != corev1.PodSucceeded
}

func (s *syncJob) annotate(p *corev1.Pod, verdict string) {
	m := s.mod(p)
	a := make(map[string]string, len(m.Annotations)+1)
	for k, v := range m.Annotations {
		a[k] = v
	}
	a[annotationCounted] = verdict
	m.Annotations = a
}

// deletePod deletes an active pod as the API would (gracefully when it runs
// on a node), marked with verdict so that it is not counted again.
func (s *syncJob) deletePod(p *corev1.Pod, verdict string) {
	grace := controller.PodGracePeriod(s.jc.c.Store, p)
	if grace == 0 && len(p.Finalizers) == 0 {
		delete(s.updates, p.Name)
		s.deletes[p.Name] = p
		return
	}
	s.annotate(p, verdict)
	m := s.mod(p)
	if m.DeletionTimestamp == nil {
		at := metav1.NewTime(s.now.Add(secondsDuration(grace)).Truncate(time.Second))
		m.DeletionTimestamp, m.DeletionGracePeriodSeconds = &at, &grace
	}
	s.terminating++
}

func (s *syncJob) namespaceTerminating() bool {
	o, ok := s.jc.c.Store.Get("namespaces", "", s.job.Namespace)
	return ok && o.GetDeletionTimestamp() != nil
}

func (s *syncJob) backoffLimit() int32 {
	if s.job.Spec.BackoffLimit != nil {
		return *s.job.Spec.BackoffLimit
	}
	return 6
}

// pastBackoffLimitOnFailure: with restartPolicy OnFailure pods do not fail,
// their containers restart; Kubernetes counts those restarts against the
// backoff limit.
func (s *syncJob) pastBackoffLimitOnFailure() bool {
	if s.job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		return false
	}
	var restarts int32
	for _, p := range s.pods {
		if p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodPending {
			continue
		}
		for _, cs := range p.Status.InitContainerStatuses {
			restarts += cs.RestartCount
		}
		for _, cs := range p.Status.ContainerStatuses {
			restarts += cs.RestartCount
		}
	}
	if limit := s.backoffLimit(); limit > 0 {
		return restarts >= limit
	}
	return restarts > 0
}

func (s *syncJob) pastActiveDeadline() bool {
	d := s.job.Spec.ActiveDeadlineSeconds
	if d == nil || s.status.StartTime == nil || s.suspended() {
		return false
	}
	return !s.now.Before(s.status.StartTime.Add(secondsDuration(*d)))
}

// backoffRemaining is how long pod creation still waits after failures:
// 10 s after the first failure since the last success, doubling with each
// further one up to 10 min, counted from the last failure. It is derived
// from the pods in the store, so it survives a change of leader.
func (s *syncJob) backoffRemaining() time.Duration {
	type finish struct {
		at     time.Time
		failed bool
	}
	var fs []finish
	for _, p := range s.pods {
		switch {
		case p.Status.Phase == corev1.PodSucceeded:
			fs = append(fs, finish{finishTime(p), false})
		case p.Annotations[annotationCounted] == countedRemoved:
		case s.isFailed(p) || p.Annotations[annotationCounted] == countedFailed:
			fs = append(fs, finish{finishTime(p), true})
		}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].at.Before(fs[j].at) })
	failures := 0
	var last time.Time
	for _, f := range fs {
		if !f.failed {
			failures = 0
			continue
		}
		failures++
		last = f.at
	}
	if failures == 0 {
		return 0
	}
	backoff := defaultBackoff
	for i := 1; i < failures && backoff < maxBackoff; i++ {
		backoff *= 2
	}
	backoff = min(backoff, maxBackoff)
	if elapsed := s.now.Sub(last); elapsed < backoff {
		return backoff - elapsed
	}
	return 0
}

// finishTime is when a pod finished: its last container's end, else when
// its deletion started, else when it started or was created.
func finishTime(p *corev1.Pod) time.Time {
	var t time.Time
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, cs := range list {
			if term := cs.State.Terminated; term != nil && term.FinishedAt.After(t) {
				t = term.FinishedAt.Time
			}
		}
	}
	switch {
	case !t.IsZero():
	case p.DeletionTimestamp != nil:
		t = p.DeletionTimestamp.Time
		if g := p.DeletionGracePeriodSeconds; g != nil {
			t = t.Add(-secondsDuration(*g))
		}
	case p.Status.StartTime != nil:
		t = p.Status.StartTime.Time
	default:
		t = p.CreationTimestamp.Time
	}
	return t
}

// sortForRemoval orders pods least advanced first, as Kubernetes'
// ActivePods: unscheduled, pending, not ready, restarted more, newer.
func sortForRemoval(pods []*corev1.Pod) {
	phase := func(p *corev1.Pod) int {
		switch p.Status.Phase {
		case corev1.PodPending:
			return 0
		case corev1.PodUnknown:
			return 1
		}
		return 2
	}
	restarts := func(p *corev1.Pod) int32 {
		var n int32
		for _, cs := range p.Status.ContainerStatuses {
			n += cs.RestartCount
		}
		return n
	}
	sort.SliceStable(pods, func(i, j int) bool {
		a, b := pods[i], pods[j]
		if (a.Spec.NodeName == "") != (b.Spec.NodeName == "") {
			return a.Spec.NodeName == ""
		}
		if pa, pb := phase(a), phase(b); pa != pb {
			return pa < pb
		}
		if ra, rb := podReady(a), podReady(b); ra != rb {
			return !ra
		}
		if ra, rb := restarts(a), restarts(b); ra != rb {
			return ra > rb
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.After(b.CreationTimestamp.Time)
		}
		return a.Name < b.Name
	})
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// newPod makes a pod from the Job's template; index ≥ 0 for Indexed Jobs.
func (s *syncJob) newPod(index int) *corev1.Pod {
	job := s.job
	t := job.Spec.Template.DeepCopy()
	lbl := make(map[string]string, len(t.Labels)+5)
	for k, v := range t.Labels {
		lbl[k] = v
	}
	lbl[batchv1.JobNameLabel], lbl[labelLegacyJobName] = job.Name, job.Name
	lbl[batchv1.ControllerUidLabel], lbl[labelLegacyUID] = string(job.UID), string(job.UID)
	ann := make(map[string]string, len(t.Annotations)+1)
	for k, v := range t.Annotations {
		ann[k] = v
	}
	base := job.Name + "-"
	if index >= 0 {
		ix := strconv.Itoa(index)
		ann[batchv1.JobCompletionIndexAnnotation] = ix
		lbl[batchv1.JobCompletionIndexAnnotation] = ix
		if h := job.Name + "-" + ix; len(h) <= 63 {
			t.Spec.Hostname = h
		}
		for _, cs := range [][]corev1.Container{t.Spec.InitContainers, t.Spec.Containers} {
			for i := range cs {
				if !hasEnv(cs[i].Env, envCompletionIndex) {
					cs[i].Env = append(cs[i].Env, corev1.EnvVar{Name: envCompletionIndex, Value: ix})
				}
			}
		}
		base = job.Name + "-" + ix + "-"
	}
	p := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name:              controller.GenerateName(base),
			GenerateName:      base,
			Namespace:         job.Namespace,
			UID:               s.jc.c.NewUID(),
			CreationTimestamp: *s.timeNow(),
			Labels:            lbl,
			Annotations:       ann,
			Finalizers:        t.Finalizers,
			OwnerReferences:   []metav1.OwnerReference{s.controllerRef()},
		},
		Spec:   t.Spec,
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	return p
}

func hasEnv(env []corev1.EnvVar, name string) bool {
	for _, e := range env {
		if e.Name == name {
			return true
		}
	}
	return false
}

// badIndexPods splits the active pods of an Indexed Job into those to
// remove (index invalid, already succeeded, or duplicated — keeping the most
// advanced) and the rest.
func (s *syncJob) badIndexPods() (rm, keep []*corev1.Pod) {
	completions := int(*s.job.Spec.Completions)
	done := parseIndexes(s.status.CompletedIndexes, completions)
	byIndex := map[int][]*corev1.Pod{}
	for _, p := range s.active {
		ix := podIndex(p)
		if ix < 0 || ix >= completions || done.has(ix) {
			rm = append(rm, p)
			continue
		}
		byIndex[ix] = append(byIndex[ix], p)
	}
	for _, ps := range byIndex {
		sortForRemoval(ps)
		rm = append(rm, ps[:len(ps)-1]...)
		keep = append(keep, ps[len(ps)-1])
	}
	return rm, keep
}

// pendingIndexes returns up to n indexes, lowest first, that neither
// succeeded nor have an active pod (nor, when pods are replaced only once
// gone, a terminating one).
func (s *syncJob) pendingIndexes(n int) []int {
	completions := int(*s.job.Spec.Completions)
	taken := parseIndexes(s.status.CompletedIndexes, completions)
	for _, p := range s.active {
		taken.add(podIndex(p))
	}
	if r := s.job.Spec.PodReplacementPolicy; r != nil && *r == batchv1.Failed {
		for _, p := range s.pods {
			if p.DeletionTimestamp != nil && !terminal(p) {
				taken.add(podIndex(p))
			}
		}
	}
	var out []int
	for ix := 0; ix < completions && len(out) < n; ix++ {
		if !taken.has(ix) {
			out = append(out, ix)
		}
	}
	return out
}

// podIndex is a pod's completion index, -1 if it has none.
func podIndex(p *corev1.Pod) int {
	v, ok := p.Annotations[batchv1.JobCompletionIndexAnnotation]
	if !ok {
		v, ok = p.Labels[batchv1.JobCompletionIndexAnnotation]
	}
	if !ok {
		return -1
	}
	ix, err := strconv.Atoi(v)
	if err != nil || ix < 0 {
		return -1
	}
	return ix
}

func (s *syncJob) timeNow() *metav1.Time {
	t := metav1.NewTime(s.now.Truncate(time.Second))
	return &t
}

func (s *syncJob) condition(typ batchv1.JobConditionType, reason, msg string) *batchv1.JobCondition {
	now := s.timeNow()
	return &batchv1.JobCondition{
		Type: typ, Status: corev1.ConditionTrue, Reason: reason, Message: msg,
		LastProbeTime: *now, LastTransitionTime: *now,
	}
}

// setCondition sets a condition's status, reason and message; a condition
// that does not exist is added only with status True. It reports a change.
func (s *syncJob) setCondition(typ batchv1.JobConditionType, status corev1.ConditionStatus, reason, msg string) bool {
	for i := range s.status.Conditions {
		c := &s.status.Conditions[i]
		if c.Type != typ {
			continue
		}
		if c.Status == status && c.Reason == reason && c.Message == msg {
			return false
		}
		n := s.condition(typ, reason, msg)
		n.Status = status
		*c = *n
		return true
	}
	if status == corev1.ConditionFalse {
		return false
	}
	n := s.condition(typ, reason, msg)
	n.Status = status
	s.status.Conditions = append(s.status.Conditions, *n)
	return true
}

func findCondition(list []batchv1.JobCondition, typ batchv1.JobConditionType, status corev1.ConditionStatus) *batchv1.JobCondition {
	for i := range list {
		if list[i].Type == typ && list[i].Status == status {
			c := list[i]
			return &c
		}
	}
	return nil
}

// commit writes the sync's changes and the Job's status in one atomic
// proposal, conditional on the versions read: on a conflict nothing is
// applied and the sync is retried from the store.
func (s *syncJob) commit(ctx context.Context) error {
	var ops []state.Op
	for _, p := range s.creates {
		ops = append(ops, state.Create(p))
	}
	names := make([]string, 0, len(s.updates))
	for n := range s.updates {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		m := s.updates[n]
		m.ResourceVersion = ""
		ops = append(ops, state.Update(m, rvOf(s.orig[n])))
	}
	names = names[:0]
	for n := range s.deletes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := s.deletes[n]
		ops = append(ops, state.Delete(podKind, p.Namespace, p.Name, rvOf(p), string(p.UID)))
	}
	if !equality.Semantic.DeepEqual(s.job.Status, s.status) {
		next := s.job.DeepCopy()
		next.Status = s.status
		next.ResourceVersion = ""
		ops = append(ops, state.Update(next, rvOf(s.job)))
	}
	if len(ops) == 0 {
		return nil
	}
	if _, err := s.jc.c.Proposer.Propose(ctx, ops...); err != nil {
		return fmt.Errorf("syncing job %s/%s: %w", s.job.Namespace, s.job.Name, err)
	}
	return nil
}

func secondsDuration(n int64) time.Duration { return time.Duration(n) * time.Second }

func rvOf(o metav1.Object) uint64 { return controller.RV(o) }
