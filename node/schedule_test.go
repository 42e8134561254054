package node

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/state"
)

type schedEnv struct {
	t     *testing.T
	store *state.Store
	prop  *state.LocalProposer
	loop  *schedLoop
	seq   int
}

func newSchedEnv(t *testing.T) *schedEnv {
	store := state.NewStore(0)
	prop := state.NewLocalProposer(state.NewFSM(store, nil))
	ctx, cancel := context.WithCancel(context.Background())
	rec := events.New(events.Config{Proposer: prop, Component: defaultSchedulerName})
	l := &schedLoop{store: store, proposer: prop, now: time.Now, log: slog.New(slog.DiscardHandler), rec: rec,
		preempt: func(context.Context, *corev1.Pod, *corev1.Pod, string, time.Time) {}}
	done := make(chan struct{}, 2)
	go func() { defer func() { done <- struct{}{} }(); rec.Run(ctx) }()
	go func() { defer func() { done <- struct{}{} }(); l.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	e := &schedEnv{t: t, store: store, prop: prop, loop: l}
	// Once every watch has listed, no resync is left to come.
	e.waitFor("the scheduler's watches", func() bool { return l.inbox.lists.Load() == 4 })
	return e
}

func (e *schedEnv) propose(ops ...state.Op) {
	e.t.Helper()
	if _, err := e.prop.Propose(context.Background(), ops...); err != nil {
		e.t.Fatal(err)
	}
}

func (e *schedEnv) node(name string, pods int64) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"kubernetes.io/hostname": name}}}
	n.Status.Allocatable = corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("4"),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   *resource.NewQuantity(pods, resource.DecimalSI),
	}
	n.Status.Capacity = n.Status.Allocatable
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	return n
}

func (e *schedEnv) pod(name string) *corev1.Pod {
	e.seq++
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID(fmt.Sprintf("uid-%s-%d", name, e.seq)),
			CreationTimestamp: metav1.Now()},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
}

func (e *schedEnv) get(name string) *corev1.Pod {
	o, ok := e.store.Get("pods", "default", name)
	if !ok {
		e.t.Fatalf("pod %s not found", name)
	}
	return o.(*corev1.Pod)
}

func (e *schedEnv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (e *schedEnv) bound(name string) bool { return e.get(name).Spec.NodeName != "" }

func (e *schedEnv) unschedulable(name string) bool {
	for _, c := range e.get(name).Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return true
		}
	}
	return false
}

// perNode counts the bound pods of each node.
func (e *schedEnv) perNode() map[string]int {
	objs, _ := e.store.List("pods", "")
	out := map[string]int{}
	for _, o := range objs {
		if n := o.(*corev1.Pod).Spec.NodeName; n != "" {
			out[n]++
		}
	}
	return out
}

// The loop keeps one snapshot while pods come and go: pods fill the nodes
// exactly to capacity, a pod leaving lets a waiting one in, a new node takes
// the rest, and heartbeats do not rebuild anything.
func TestSchedLoopIncremental(t *testing.T) {
	e := newSchedEnv(t)
	e.propose(state.Create(e.node("a", 3)), state.Create(e.node("b", 3)))
	var ops []state.Op
	for i := range 8 {
		ops = append(ops, state.Create(e.pod(fmt.Sprintf("p%d", i))))
	}
	e.propose(ops...)
	e.waitFor("6 pods bound, 2 unschedulable", func() bool {
		pn := e.perNode()
		return pn["a"] == 3 && pn["b"] == 3 && e.unschedulable("p6") && e.unschedulable("p7")
	})
	rebuilds := e.loop.rebuilds.Load()

	// A heartbeat changes nothing the scheduler reads.
	o, _ := e.store.Get("nodes", "", "a")
	n := o.(*corev1.Node).DeepCopy()
	n.Status.Conditions[0].LastHeartbeatTime = metav1.Now()
	e.propose(state.Update(n, 0))

	// A pod leaving frees a place for one waiting pod.
	var victim *corev1.Pod
	for i := range 6 {
		if p := e.get(fmt.Sprintf("p%d", i)); p.Spec.NodeName == "a" {
			victim = p
			break
		}
	}
	k, _ := state.KindFor("pods")
	e.propose(state.Delete(k, "default", victim.Name, 0, ""))
	e.waitFor("one waiting pod bound to a", func() bool { return e.perNode()["a"] == 3 && (e.bound("p6") != e.bound("p7")) })
	if got := e.loop.rebuilds.Load(); got != rebuilds {
		t.Fatalf("snapshot rebuilt %d times for a heartbeat and a pod deletion", got-rebuilds)
	}

	// A finished pod frees its place too.
	fin := e.get("p0")
	if fin.Spec.NodeName == "" {
		t.Fatal("p0 not bound")
	}
	fin = fin.DeepCopy()
	fin.Status.Phase = corev1.PodSucceeded
	e.propose(state.Update(fin, 0))
	e.waitFor("both waiting pods bound", func() bool { return e.bound("p6") && e.bound("p7") })
	if pn := e.perNode(); pn["a"]+pn["b"] != 7 {
		t.Fatalf("per node %v", pn)
	}
	// A pod bound after waiting: PodScheduled turned True, its reason gone,
	// and the Scheduled event recorded.
	var cond *corev1.PodCondition
	for i, c := range e.get("p6").Status.Conditions {
		if c.Type == corev1.PodScheduled {
			cond = &e.get("p6").Status.Conditions[i]
		}
	}
	if cond == nil || cond.Status != corev1.ConditionTrue || cond.Reason != "" || cond.Message != "" {
		t.Fatalf("p6's PodScheduled after binding: %+v", cond)
	}
	e.waitFor("p6's Scheduled event", func() bool {
		evs, _ := e.store.List("events", "default")
		for _, o := range evs {
			if ev := o.(*corev1.Event); ev.InvolvedObject.Name == "p6" && ev.Reason == "Scheduled" &&
				strings.Contains(ev.Message, "to "+e.get("p6").Spec.NodeName) && ev.InvolvedObject.UID == e.get("p6").UID {
				return true
			}
		}
		return false
	})

	// A new node: the snapshot is rebuilt and takes new pods.
	e.propose(state.Create(e.node("c", 5)))
	ops = ops[:0]
	for i := 8; i < 12; i++ {
		ops = append(ops, state.Create(e.pod(fmt.Sprintf("p%d", i))))
	}
	e.propose(ops...)
	e.waitFor("new pods bound to c", func() bool { return e.perNode()["c"] == 4 })
	if e.loop.rebuilds.Load() == rebuilds {
		t.Fatal("a new node did not rebuild the snapshot")
	}
	// Never over capacity (a, b hold 3 each; p0 finished still says a or b).
	pn := e.perNode()
	active := map[string]int{}
	objs, _ := e.store.List("pods", "")
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if p.Spec.NodeName != "" && !controller.IsPodFinished(p) {
			active[p.Spec.NodeName]++
		}
	}
	if active["a"] > 3 || active["b"] > 3 || active["c"] > 5 {
		t.Fatalf("over capacity: %v (all bound %v)", active, pn)
	}
}

// Pausing holds pending pods; resuming places them all.
func TestSchedLoopPause(t *testing.T) {
	e := newSchedEnv(t)
	e.propose(state.Create(e.node("a", 110)))
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: schedConfigNamespace, Name: schedConfigName, UID: "uid-cm"},
		Data: map[string]string{"paused": "true"}}
	e.propose(state.Create(cm))
	e.waitFor("paused", e.loop.paused.Load)
	var ops []state.Op
	for i := range 50 {
		ops = append(ops, state.Create(e.pod(fmt.Sprintf("q%d", i))))
	}
	e.propose(ops...)
	time.Sleep(100 * time.Millisecond)
	if pn := e.perNode(); pn["a"] != 0 {
		t.Fatalf("paused scheduler bound %d pods", pn["a"])
	}
	cm = cm.DeepCopy()
	cm.Data["paused"] = "false"
	e.propose(state.Update(cm, 0))
	e.waitFor("all 50 bound", func() bool { return e.perNode()["a"] == 50 })
}
