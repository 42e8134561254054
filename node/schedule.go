package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/scheduler"
	"github.com/shoal-dev/shoal/node/state"
)

// defaultSchedulerName is the schedulerName Shoal's scheduler serves.
const defaultSchedulerName = corev1.DefaultSchedulerName

// Scheduler settings an operator can change at run time, in the ConfigMap
// kube-system/shoal-scheduler (like Nomad's scheduler configuration):
//
//	paused: "true"   hold every pending pod where it is (maintenance, or
//	                 to fill the queue before measuring the scheduler)
const (
	schedConfigNamespace = "kube-system"
	schedConfigName      = "shoal-scheduler"
)

// Tuning of the scheduling loop.
const (
	// schedGather lets a burst of creations gather into one round.
	schedGather = 2 * time.Millisecond
	// schedRetry tries unschedulable pods again even when no event said
	// the cluster changed (kube-scheduler flushes its unschedulable queue
	// on a timer too).
	schedRetry = 10 * time.Second
	// schedCommitBatch is how many decisions go into one proposal; a few
	// proposals are in flight at once while the next pods are scheduled.
	schedCommitBatch    = 500
	schedCommitInflight = 4
)

// runScheduler (a leader duty) places pending pods. It keeps a scheduler
// snapshot of the replica between rounds and brings it up to date from the
// store's events (a pod bound, deleted or finished), so a round costs what
// its pending pods cost, not what the stored pods do; a change to nodes or
// namespace labels, or a lost event, rebuilds it. Each round schedules the
// pods that arrived or changed since the last one (highest priority first,
// each placement assumed before the next) and hands the bindings to
// committers while it goes on; pods that fit nowhere get PodScheduled=False
// with kube-scheduler's message and a FailedScheduling event, and wait until
// the cluster changes (a node, a pod leaving, a bound pod's labels) or
// schedRetry passes.
func (n *Node) runScheduler(ctx context.Context, rec *events.Recorder) {
	l := &schedLoop{
		metrics:  &n.metrics.sched,
		store:    n.store,
		proposer: n.proposer,
		now:      n.now,
		log:      n.log,
		rec:      rec,
		preempt: func(ctx context.Context, victim, preemptor *corev1.Pod, node string, now time.Time) {
			n.preempt(ctx, rec, victim, preemptor, node, now)
		},
	}
	l.run(ctx)
}

// schedLoop is the state of the leader's scheduler between rounds. Only
// the loop goroutine touches it, except inbox.
type schedLoop struct {
	metrics  *schedMetrics // nil in tests
	store    *state.Store
	proposer state.Proposer
	now      func() time.Time
	log      *slog.Logger
	rec      *events.Recorder
	preempt  func(ctx context.Context, victim, preemptor *corev1.Pod, node string, now time.Time)

	inbox eventInbox

	snap    *scheduler.Snapshot
	stale   bool                   // rebuild before the next round
	builtAt uint64                 // the store revision the snapshot reflects
	placed  map[string]*corev1.Pod // key → the object the snapshot holds for a placed (or assumed) pod
	pending map[string]*pendingPod // key → an unbound pod to schedule
	paused  atomic.Bool

	rebuilds atomic.Int64 // for tests: how often the snapshot was built

	commits  chan []state.Op
	commitWG sync.WaitGroup // the committers
	inflight sync.WaitGroup // batches handed to them and not finished
	failed   chan struct{}  // a committer saw a decision fail: rebuild
}

type pendingPod struct {
	pod           *corev1.Pod
	unschedulable bool // failed its last attempt; waits for a change
}

func (l *schedLoop) run(ctx context.Context) {
	l.commits = make(chan []state.Op)
	l.failed = make(chan struct{}, 1)
	l.stale = true
	for range schedCommitInflight {
		l.commitWG.Add(1)
		go l.committer(ctx)
	}
	defer func() {
		close(l.commits)
		l.commitWG.Wait()
	}()
	l.inbox.start(ctx, l.store, "pods", "nodes", "namespaces", "configmaps/"+schedConfigNamespace)
	retry := time.NewTicker(schedRetry)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.inbox.Kick():
		case <-l.failed:
			l.stale = true
		case <-retry.C:
			l.wakeUnschedulable()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(schedGather):
		}
		evs, resync := l.inbox.take()
		if resync {
			l.stale = true
		}
		for _, ev := range evs {
			l.observe(ev)
		}
		if err := l.round(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("scheduling", "err", err)
			l.stale = true
		}
	}
}

// observe brings the snapshot and the queue up to date with one event.
func (l *schedLoop) observe(ev state.Event) {
	if ev.RV <= l.builtAt && ev.Resource != "configmaps" {
		return // the last rebuild read it from the store
	}
	switch ev.Resource {
	case "pods":
		if ev.Type == state.Deleted {
			l.forget(ev.Object.(*corev1.Pod))
			return
		}
		l.observePod(ev.Object.(*corev1.Pod))
	case "nodes":
		var prev *corev1.Node
		if ev.Prev != nil {
			prev = ev.Prev.(*corev1.Node)
		}
		cur := ev.Object.(*corev1.Node)
		if ev.Type == state.Deleted || prev == nil || nodeSchedulingChanged(prev, cur) {
			l.stale = true
		}
	case "namespaces":
		if ev.Type != state.Modified || !maps.Equal(ev.Prev.GetLabels(), ev.Object.GetLabels()) {
			l.stale = true
		}
	case "configmaps":
		if ev.Object.GetName() == schedConfigName {
			l.readConfig()
		}
	}
}

func (l *schedLoop) observePod(p *corev1.Pod) {
	key := p.Namespace + "/" + p.Name
	old := l.placed[key]
	switch {
	case p.Spec.NodeName != "" && !controller.IsPodFinished(p):
		delete(l.pending, key)
		if old != nil && old.UID == p.UID && !podPlacementChanged(old, p) {
			l.placed[key] = old // the snapshot keeps what it was given
			return
		}
		if old != nil {
			l.forget(old)
		}
		if l.snap == nil || l.stale {
			return // the rebuild reads it from the store
		}
		if err := l.snap.Assume(p, p.Spec.NodeName); err != nil {
			l.stale = true // a node the snapshot does not know yet
			return
		}
		l.placed[key] = p
		l.wakeUnschedulable() // labels another pod's affinity may want
	case p.Spec.NodeName != "":
		delete(l.pending, key) // finished: frees what it held
		l.forget(p)
	default:
		if old != nil {
			if old.UID == p.UID {
				return // assumed by this loop, its binding not committed yet
			}
			l.forget(old)
		}
		if schedulable(p) {
			pp := l.pending[key]
			if pp == nil || pp.pod.ResourceVersion != p.ResourceVersion {
				l.pending[key] = &pendingPod{pod: p}
			}
		} else {
			delete(l.pending, key)
		}
	}
}

// forget drops a pod from the queue and the snapshot; the pods it let wait
// may fit now.
func (l *schedLoop) forget(p *corev1.Pod) {
	key := p.Namespace + "/" + p.Name
	delete(l.pending, key)
	old := l.placed[key]
	if old == nil {
		return
	}
	delete(l.placed, key)
	if l.snap != nil && !l.stale {
		if err := l.snap.Forget(old); err != nil {
			l.stale = true
		}
	}
	l.wakeUnschedulable()
}

func (l *schedLoop) wakeUnschedulable() {
	for _, pp := range l.pending {
		pp.unschedulable = false
	}
}

func (l *schedLoop) readConfig() {
	paused := false
	if o, ok := l.store.Get("configmaps", schedConfigNamespace, schedConfigName); ok {
		paused = o.(*corev1.ConfigMap).Data["paused"] == "true"
	}
	if l.paused.Swap(paused) != paused {
		l.log.Info("scheduler", "paused", paused)
	}
}

// schedulable reports whether an unbound pod is this scheduler's to place.
func schedulable(p *corev1.Pod) bool {
	switch {
	case p.DeletionTimestamp != nil, controller.IsPodFinished(p):
	case p.Spec.SchedulerName != "" && p.Spec.SchedulerName != defaultSchedulerName:
	case len(p.Spec.SchedulingGates) > 0:
	default:
		return true
	}
	return false
}

// podPlacementChanged reports whether a bound pod changed in what the
// snapshot derived from it: labels (affinity, spreading), termination,
// requests (an in-place resize), priority.
func podPlacementChanged(a, b *corev1.Pod) bool {
	return (a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil) ||
		!maps.Equal(a.Labels, b.Labels) ||
		!equality.Semantic.DeepEqual(a.Spec.Containers, b.Spec.Containers) ||
		!equality.Semantic.DeepEqual(a.Spec.InitContainers, b.Spec.InitContainers) ||
		!equality.Semantic.DeepEqual(a.Spec.Resources, b.Spec.Resources) ||
		!equality.Semantic.DeepEqual(a.Spec.Priority, b.Spec.Priority)
}

// nodeSchedulingChanged reports whether a node changed in anything a filter
// or a score reads; heartbeats and the like do not rebuild the snapshot.
func nodeSchedulingChanged(a, b *corev1.Node) bool {
	if !maps.Equal(a.Labels, b.Labels) || a.Spec.Unschedulable != b.Spec.Unschedulable ||
		!equality.Semantic.DeepEqual(a.Spec.Taints, b.Spec.Taints) ||
		!equality.Semantic.DeepEqual(a.Status.Allocatable, b.Status.Allocatable) ||
		!equality.Semantic.DeepEqual(a.Status.Images, b.Status.Images) {
		return true
	}
	return controller.NodeReadyStatus(a) != controller.NodeReadyStatus(b)
}

// rebuild builds the snapshot and the queue afresh from the store, once the
// decisions in flight have committed (or not): their pods are read back as
// bound or pending.
func (l *schedLoop) rebuild() error {
	l.inflight.Wait()
	l.readConfig()
	objs, rev := l.store.List("pods", "")
	var bound []*corev1.Pod
	l.placed = make(map[string]*corev1.Pod, len(objs))
	oldPending := l.pending
	l.pending = map[string]*pendingPod{}
	for _, o := range objs {
		p := o.(*corev1.Pod)
		key := p.Namespace + "/" + p.Name
		switch {
		case p.Spec.NodeName != "":
			if !controller.IsPodFinished(p) {
				bound = append(bound, p)
				l.placed[key] = p
			}
		case schedulable(p):
			pp := &pendingPod{pod: p}
			if old := oldPending[key]; old != nil && old.pod.ResourceVersion == p.ResourceVersion {
				pp.unschedulable = old.unschedulable
			}
			l.pending[key] = pp
		}
	}
	nodeObjs, _ := l.store.List("nodes", "")
	nodes := make([]*corev1.Node, 0, len(nodeObjs))
	known := make(map[string]bool, len(nodeObjs))
	for _, o := range nodeObjs {
		nd := o.(*corev1.Node)
		nodes = append(nodes, nd)
		known[nd.Name] = true
	}
	nsLabels := map[string]map[string]string{}
	nsObjs, _ := l.store.List("namespaces", "")
	for _, o := range nsObjs {
		nsLabels[o.GetName()] = o.GetLabels()
	}
	snap, err := scheduler.NewSnapshot(nodes, bound, scheduler.Options{
		NamespaceLabels: nsLabels,
		Seed:            rev,
		Volumes:         l.volume,
	})
	if err != nil {
		return err
	}
	l.snap, l.stale, l.builtAt = snap, false, rev
	l.rebuilds.Add(1)
	// Pods bound to nodes the snapshot lacks are not in it.
	for key, p := range l.placed {
		if !known[p.Spec.NodeName] {
			delete(l.placed, key)
		}
	}
	return nil
}

func (l *schedLoop) volume(ns, claim string) (*corev1.PersistentVolume, bool) {
	o, ok := l.store.Get("persistentvolumeclaims", ns, claim)
	if !ok {
		return nil, false
	}
	pvc := o.(*corev1.PersistentVolumeClaim)
	if pvc.Spec.VolumeName == "" {
		return nil, true
	}
	pv, ok := l.store.Get("persistentvolumes", "", pvc.Spec.VolumeName)
	if !ok {
		return nil, true
	}
	return pv.(*corev1.PersistentVolume), true
}

// round schedules the pods waiting for a try.
func (l *schedLoop) round(ctx context.Context) error {
	if l.stale {
		if err := l.rebuild(); err != nil {
			return err
		}
	}
	if l.paused.Load() {
		return nil
	}
	var todo []*corev1.Pod
	for _, pp := range l.pending {
		if !pp.unschedulable {
			todo = append(todo, pp.pod)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	l.snap.SortPending(todo)
	start := time.Now()
	var scheduled, unschedulable, failed int
	defer func() {
		if m := l.metrics; m != nil {
			m.round.Observe(time.Since(start).Seconds())
			m.attempts.WithLabelValues("scheduled").Add(float64(scheduled))
			m.attempts.WithLabelValues("unschedulable").Add(float64(unschedulable))
			m.attempts.WithLabelValues("error").Add(float64(failed))
			m.pending.Set(float64(len(l.pending)))
		}
	}()
	now := l.now()
	ops := make([]state.Op, 0, min(len(todo), schedCommitBatch))
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		l.inflight.Add(1)
		select {
		case l.commits <- ops:
		case <-ctx.Done():
			l.inflight.Done()
			return ctx.Err()
		}
		ops = make([]state.Op, 0, min(len(todo), schedCommitBatch))
		return nil
	}
	add := func(op state.Op) error {
		ops = append(ops, op)
		if len(ops) == schedCommitBatch {
			return flush()
		}
		return nil
	}
	for _, p := range todo {
		key := p.Namespace + "/" + p.Name
		res, err := l.snap.Schedule(p)
		if err == nil && res.Scheduled() {
			scheduled++
			if err := l.snap.Assume(p, res.NodeName); err != nil {
				return err
			}
			delete(l.pending, key)
			l.placed[key] = p
			// The binding goes to the log as the decision alone (the
			// FSM sets nodeName and PodScheduled as an update would).
			if err := add(state.Bind(p.Namespace, p.Name, res.NodeName, rvOf(p), now.Unix())); err != nil {
				return err
			}
			continue
		}
		upd := p.DeepCopy()
		switch {
		case err != nil:
			failed++
			state.SetPodCondition(&upd.Status, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: "SchedulerError", Message: err.Error()}, now)
			l.pending[key].unschedulable = true
		default:
			unschedulable++
			l.pending[key].unschedulable = true
			state.SetPodCondition(&upd.Status, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: res.Reason, Message: res.Message}, now)
			if res.NominatedNodeName != "" && upd.Status.NominatedNodeName != res.NominatedNodeName {
				upd.Status.NominatedNodeName = res.NominatedNodeName
				for _, v := range res.Victims {
					l.preempt(ctx, v, p, res.NominatedNodeName, now)
				}
			}
			if !equality.Semantic.DeepEqual(upd.Status, p.Status) {
				l.rec.Eventf(p, "Pod", corev1.EventTypeWarning, "FailedScheduling", "%s", res.Message)
			}
		}
		if upd.Spec.NodeName == p.Spec.NodeName && equality.Semantic.DeepEqual(upd.Status, p.Status) {
			continue
		}
		if err := add(state.Update(upd, rvOf(p))); err != nil {
			return err
		}
	}
	return flush()
}

// committer proposes batches of decisions. A batch that fails on one op (a
// pod changed meanwhile) is retried op by op; when any decision does not
// commit, the loop rebuilds its snapshot, which then drops the placements
// that did not happen.
func (l *schedLoop) committer(ctx context.Context) {
	defer l.commitWG.Done()
	for ops := range l.commits {
		ok, err := l.commit(ctx, ops)
		l.inflight.Done()
		if err != nil && ctx.Err() == nil {
			l.log.Warn("scheduling", "err", err)
		}
		if !ok {
			select {
			case l.failed <- struct{}{}:
			default:
			}
		}
	}
}

func (l *schedLoop) commit(ctx context.Context, ops []state.Op) (bool, error) {
	_, err := l.proposer.Propose(ctx, ops...)
	if err == nil {
		l.bound(ops)
		return true, nil
	}
	if !state.IsCode(err, state.CodeConflict) && !state.IsCode(err, state.CodeNotFound) {
		return false, fmt.Errorf("committing %d scheduling decisions: %w", len(ops), err)
	}
	all := true
	for _, op := range ops {
		if _, err := l.proposer.Propose(ctx, op); err != nil {
			all = false
			continue
		}
		l.bound([]state.Op{op})
	}
	if !all {
		return false, errors.New("some scheduling decisions did not commit; rebuilding the scheduler's view")
	}
	return true, nil
}

// bound records a Scheduled event for each committed binding.
func (l *schedLoop) bound(ops []state.Op) {
	for _, op := range ops {
		if op.Type != state.OpBind {
			continue
		}
		if l.metrics != nil {
			l.metrics.bindings.Inc()
		}
		// The event names the pod as bound (committed, so in this
		// leader's replica unless deleted since).
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: op.Namespace, Name: op.Name}}
		if o, ok := l.store.Get("pods", op.Namespace, op.Name); ok {
			p = o.(*corev1.Pod)
		}
		l.rec.Eventf(p, "Pod", corev1.EventTypeNormal, "Scheduled", "Successfully assigned %s/%s to %s", op.Namespace, op.Name, op.Key)
	}
}

// preempt evicts a victim for preemptor: it is marked DisruptionTarget
// (PreemptionByScheduler), so the scheduler sees it as on its way out, then
// deleted gracefully as the API would.
func (n *Node) preempt(ctx context.Context, rec *events.Recorder, victim, preemptor *corev1.Pod, node string, now time.Time) {
	rec.Eventf(victim, "Pod", corev1.EventTypeNormal, "Preempted", "Preempted by pod %s on node %s", preemptor.UID, node)
	upd := victim.DeepCopy()
	state.SetPodCondition(&upd.Status, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
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
