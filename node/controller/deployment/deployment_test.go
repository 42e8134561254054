package deployment

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/replicaset"
	"github.com/shoal-dev/shoal/node/state"
)

// TestCreate: a new Deployment gets one ReplicaSet named after its
// template hash, with the hash label, revision and replica annotations,
// and reaches a complete status once its pods are ready.
func TestCreate(t *testing.T) {
	h := newHarness(t)
	h.withEvents()
	d := newDeployment("web", 3, "app:v1")
	h.create(d)
	if err := h.syncD("web"); err != nil {
		t.Fatal(err)
	}
	rss := h.replicaSets("web")
	if len(rss) != 1 {
		t.Fatalf("%d replicasets, want 1", len(rss))
	}
	rs := rss[0]
	hash := ComputeHash(&h.get("web").Spec.Template, nil)
	if rs.Name != "web-"+hash || rs.Labels[TemplateHashLabel] != hash || rs.Spec.Selector.MatchLabels[TemplateHashLabel] != hash ||
		rs.Spec.Selector.MatchLabels["app"] != "web" || rs.Spec.Template.Labels[TemplateHashLabel] != hash {
		t.Errorf("replicaset %s labels %v selector %v template labels %v (hash %s)", rs.Name, rs.Labels, rs.Spec.Selector, rs.Spec.Template.Labels, hash)
	}
	if a := rs.Annotations; a[RevisionAnnotation] != "1" || a[DesiredReplicasAnnotation] != "3" || a[MaxReplicasAnnotation] != "4" {
		t.Errorf("replicaset annotations %v", a)
	}
	if *rs.Spec.Replicas != 3 || rs.Generation != 1 || rs.UID == "" || !controller.IsControlledBy(rs, h.get("web")) {
		t.Errorf("replicaset %+v", rs.ObjectMeta)
	}
	dep := h.get("web")
	if dep.Annotations[RevisionAnnotation] != "1" {
		t.Errorf("deployment revision %q", dep.Annotations[RevisionAnnotation])
	}
	if c := condOf(dep, appsv1.DeploymentProgressing); c == nil || c.Reason != ReasonNewRSCreated || c.Status != corev1.ConditionTrue {
		t.Errorf("Progressing %+v", c)
	}

	h.rollout("web")
	dep = h.get("web")
	st := dep.Status
	if st.ObservedGeneration != 1 || st.Replicas != 3 || st.UpdatedReplicas != 3 || st.ReadyReplicas != 3 || st.AvailableReplicas != 3 || st.UnavailableReplicas != 0 {
		t.Errorf("status %+v", st)
	}
	if c := condOf(dep, appsv1.DeploymentAvailable); c == nil || c.Status != corev1.ConditionTrue || c.Reason != ReasonMinimumReplicasAvail {
		t.Errorf("Available %+v", c)
	}
	if c := condOf(dep, appsv1.DeploymentProgressing); c == nil || c.Status != corev1.ConditionTrue || c.Reason != ReasonNewRSAvailable ||
		c.Message != fmt.Sprintf("ReplicaSet %q has successfully progressed.", rs.Name) {
		t.Errorf("Progressing %+v", c)
	}
	if done, err := rolloutStatus(dep); !done || err != nil {
		t.Errorf("rollout status: done %v err %v", done, err)
	}
	h.waitEvent(fmt.Sprintf("ScalingReplicaSet: Scaled up replica set %s from 0 to 3", rs.Name))
}

// TestComputeHash: the hash is stable, depends on the template and the
// collision count, and uses the safe alphabet.
func TestComputeHash(t *testing.T) {
	a := newDeployment("web", 1, "app:v1").Spec.Template
	b := newDeployment("web", 1, "app:v2").Spec.Template
	ha, hb := ComputeHash(&a, nil), ComputeHash(&b, nil)
	if ha != ComputeHash(a.DeepCopy(), nil) || ha == hb || ha == ComputeHash(&a, ptr(int32(1))) {
		t.Errorf("hashes %s %s", ha, hb)
	}
	if strings.ContainsAny(ha, "aeiou") || len(ha) < 6 {
		t.Errorf("hash %q", ha)
	}
}

func TestFenceposts(t *testing.T) {
	for _, c := range []struct {
		replicas     int32
		surge, unav  intstr.IntOrString
		wantS, wantU int32
	}{
		{3, intstr.FromString("25%"), intstr.FromString("25%"), 1, 0 + 0},
		{10, intstr.FromString("25%"), intstr.FromString("25%"), 3, 2},
		{4, intstr.FromString("25%"), intstr.FromString("25%"), 1, 1},
		{5, intstr.FromInt32(0), intstr.FromInt32(0), 0, 1},
		{5, intstr.FromString("0%"), intstr.FromString("10%"), 0, 1},
		{2, intstr.FromInt32(0), intstr.FromInt32(5), 0, 2},
		{0, intstr.FromInt32(1), intstr.FromInt32(1), 1, 0},
	} {
		d := newDeployment("x", c.replicas, "i")
		d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: &c.surge, MaxUnavailable: &c.unav}
		if s, u := MaxSurge(d), MaxUnavailable(d); s != c.wantS || u != c.wantU {
			t.Errorf("replicas %d surge %s unavailable %s: got %d/%d, want %d/%d", c.replicas, c.surge.String(), c.unav.String(), s, u, c.wantS, c.wantU)
		}
	}
}

// TestRollingUpdateInvariants is a property test: a rolling update driven
// by a random interleaving of ReplicaSet syncs, Deployment syncs, pods
// becoming ready, terminations finishing and time passing never has
// fewer than replicas - maxUnavailable pods available nor more than
// replicas + maxSurge pods, and always finishes on the new template.
func TestRollingUpdateInvariants(t *testing.T) {
	cases := []struct {
		replicas    int32
		surge, unav intstr.IntOrString
		minReady    int32
	}{
		{3, intstr.FromString("25%"), intstr.FromString("25%"), 0},
		{10, intstr.FromInt32(3), intstr.FromInt32(2), 0},
		{5, intstr.FromInt32(0), intstr.FromInt32(1), 0},
		{5, intstr.FromInt32(1), intstr.FromInt32(0), 0},
		{4, intstr.FromString("50%"), intstr.FromInt32(0), 2},
		{10, intstr.FromString("30%"), intstr.FromString("30%"), 3},
		{1, intstr.FromInt32(1), intstr.FromInt32(0), 0},
		{7, intstr.FromString("10%"), intstr.FromString("40%"), 1},
	}
	for _, c := range cases {
		for seed := uint64(1); seed <= 4; seed++ {
			name := fmt.Sprintf("r%d-s%s-u%s-m%d-seed%d", c.replicas, c.surge.String(), c.unav.String(), c.minReady, seed)
			t.Run(name, func(t *testing.T) {
				h := newHarness(t)
				d := newDeployment("web", c.replicas, "app:v1")
				d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: &c.surge, MaxUnavailable: &c.unav}
				d.Spec.MinReadySeconds = c.minReady
				h.create(d)
				h.rollout("web")
				h.clock.Step(time.Duration(c.minReady+1) * time.Second)
				h.rollout("web")
				maxTotal := c.replicas + MaxSurge(d)
				minAvail := c.replicas - MaxUnavailable(d)
				check := func(step int, what string) {
					t.Helper()
					var spec int32
					for _, rs := range h.replicaSets("web") {
						spec += *rs.Spec.Replicas
					}
					var active, available int32
					for _, p := range h.pods() {
						if controller.IsPodActive(p) {
							active++
							if controller.IsPodAvailable(p, c.minReady, h.clock.Now()) {
								available++
							}
						}
					}
					if spec > maxTotal || active > maxTotal || available < minAvail {
						t.Fatalf("step %d (%s): spec %d active %d available %d; want spec, active <= %d and available >= %d; pods by rs %v",
							step, what, spec, active, available, maxTotal, minAvail, h.podsByRS())
					}
				}
				check(0, "before the update")
				h.setImage("web", "app:v2")
				rng := rand.New(rand.NewPCG(seed, uint64(c.replicas)))
				for step := 1; ; step++ {
					if step > 5000 {
						t.Fatalf("rollout did not finish: %v", h.podsByRS())
					}
					var what string
					switch k := rng.IntN(10); {
					case k < 3:
						rss := h.replicaSets("web")
						rs := rss[rng.IntN(len(rss))]
						what = "sync " + rs.Name
						_ = h.rc.Sync(h.ctx, controller.Key(ns, rs.Name))
					case k < 5:
						what = "sync deployment"
						_ = h.syncD("web")
					case k < 8:
						what = "kubelet"
						h.kubelet(func(*corev1.Pod) bool { return rng.IntN(2) == 0 })
					default:
						what = "time passes"
						h.clock.Step(time.Duration(rng.IntN(3)) * time.Second)
					}
					check(step, what)
					dep := h.get("web")
					if done, _ := rolloutStatus(dep); done && dep.Status.Replicas == c.replicas && len(h.podsByRS()) == 1 {
						break
					}
				}
				h.rollout("web")
				rss := h.replicaSets("web")
				if len(rss) != 2 || *rss[0].Spec.Replicas != 0 || *rss[1].Spec.Replicas != c.replicas ||
					rss[1].Spec.Template.Spec.Containers[0].Image != "app:v2" || Revision(rss[1]) != 2 {
					t.Fatalf("final replicasets: %v", describe(rss))
				}
			})
		}
	}
}

func describe(rss []*appsv1.ReplicaSet) []string {
	var out []string
	for _, rs := range rss {
		out = append(out, fmt.Sprintf("%s rev %d replicas %d image %s", rs.Name, Revision(rs), *rs.Spec.Replicas, rs.Spec.Template.Spec.Containers[0].Image))
	}
	return out
}

// TestRecreate: every old pod is gone before a new one is created.
func TestRecreate(t *testing.T) {
	h := newHarness(t)
	d := newDeployment("web", 3, "app:v1")
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	h.create(d)
	h.rollout("web")
	h.setImage("web", "app:v2")
	for step := 0; step < 50; step++ {
		h.settle("web")
		byRS := h.podsByRS()
		// Old pods terminating still count: they may run.
		var oldPods, newPods int
		v2 := ""
		for _, rs := range h.replicaSets("web") {
			if rs.Spec.Template.Spec.Containers[0].Image == "app:v2" {
				v2 = rs.Name
			}
		}
		for _, p := range h.pods() {
			ref := controller.ControllerOf(p)
			if ref != nil && ref.Name == v2 {
				newPods++
			} else {
				oldPods++
			}
		}
		if oldPods > 0 && newPods > 0 {
			t.Fatalf("step %d: old and new pods at once: %v", step, byRS)
		}
		if oldPods > 0 && v2 != "" {
			t.Fatalf("step %d: new replicaset %s created while old pods run", step, v2)
		}
		if done, _ := rolloutStatus(h.get("web")); done && newPods == 3 {
			return
		}
		h.kubelet(nil)
	}
	t.Fatalf("recreate did not finish: %v", h.podsByRS())
}

// TestRevisionsAndHistoryLimit: each template gets the next revision; only
// revisionHistoryLimit scaled-down old ReplicaSets are kept.
func TestRevisionsAndHistoryLimit(t *testing.T) {
	h := newHarness(t)
	d := newDeployment("web", 2, "app:v1")
	d.Spec.RevisionHistoryLimit = ptr(int32(2))
	d.Annotations = map[string]string{"kubernetes.io/change-cause": "v1", lastAppliedAnnotation: "{}"}
	h.create(d)
	h.rollout("web")
	for v := 2; v <= 5; v++ {
		h.update("web", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Image = fmt.Sprintf("app:v%d", v)
			d.Annotations["kubernetes.io/change-cause"] = fmt.Sprintf("v%d", v)
		})
		h.rollout("web")
		if got := h.get("web").Annotations[RevisionAnnotation]; got != fmt.Sprint(v) {
			t.Fatalf("deployment revision %s, want %d", got, v)
		}
	}
	rss := h.replicaSets("web")
	var got []string
	for _, rs := range rss {
		got = append(got, fmt.Sprintf("%s:%d:%d:%s", rs.Spec.Template.Spec.Containers[0].Image, Revision(rs), *rs.Spec.Replicas, rs.Annotations["kubernetes.io/change-cause"]))
		if _, ok := rs.Annotations[lastAppliedAnnotation]; ok {
			t.Errorf("%s carries the last-applied annotation", rs.Name)
		}
	}
	want := []string{"app:v3:3:0:v3", "app:v4:4:0:v4", "app:v5:5:2:v5"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("replicasets %v, want %v", got, want)
	}
}

// TestUndo: `kubectl rollout undo` patches an old template back in: its
// ReplicaSet is reused (no new one) and gets the next revision, its old
// one going to revision-history.
func TestUndo(t *testing.T) {
	h := newHarness(t)
	h.create(newDeployment("web", 3, "app:v1"))
	h.rollout("web")
	h.setImage("web", "app:v2")
	h.rollout("web")
	before := h.replicaSets("web")

	h.undo("web", 1)
	h.rollout("web")
	rss := h.replicaSets("web")
	if len(rss) != 2 || rss[0].UID != before[1].UID || rss[1].UID != before[0].UID {
		t.Fatalf("undo created or lost a replicaset: before %v after %v", describe(before), describe(rss))
	}
	v1 := rss[1]
	if Revision(v1) != 3 || v1.Annotations[RevisionHistoryAnnotation] != "1" || *v1.Spec.Replicas != 3 || *rss[0].Spec.Replicas != 0 {
		t.Fatalf("after undo: %v history %q", describe(rss), v1.Annotations[RevisionHistoryAnnotation])
	}
	dep := h.get("web")
	if dep.Annotations[RevisionAnnotation] != "3" {
		t.Errorf("deployment revision %s, want 3", dep.Annotations[RevisionAnnotation])
	}
	if done, err := rolloutStatus(dep); !done || err != nil {
		t.Errorf("rollout status after undo: %v %v", done, err)
	}
	for _, p := range h.pods() {
		if p.Spec.Containers[0].Image != "app:v1" {
			t.Errorf("pod %s runs %s after undo", p.Name, p.Spec.Containers[0].Image)
		}
	}

	h.undo("web", 2)
	h.rollout("web")
	rss = h.replicaSets("web")
	if len(rss) != 2 || Revision(rss[1]) != 4 || rss[1].Annotations[RevisionHistoryAnnotation] != "2" || rss[1].Spec.Template.Spec.Containers[0].Image != "app:v2" {
		t.Fatalf("second undo: %v", describe(rss))
	}
}

// TestPauseResume: a paused Deployment rolls nothing out but still
// reports status and follows scaling; time paused does not count against
// the progress deadline; resuming rolls out.
func TestPauseResume(t *testing.T) {
	h := newHarness(t)
	d := newDeployment("web", 3, "app:v1")
	d.Spec.ProgressDeadlineSeconds = ptr(int32(60))
	h.create(d)
	h.rollout("web")
	h.update("web", func(d *appsv1.Deployment) { d.Spec.Paused = true })
	h.setImage("web", "app:v2")
	h.update("web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(5)) })
	h.rollout("web")
	dep := h.get("web")
	if c := condOf(dep, appsv1.DeploymentProgressing); c == nil || c.Status != corev1.ConditionUnknown || c.Reason != ReasonPaused {
		t.Fatalf("Progressing while paused %+v", c)
	}
	if dep.Status.ObservedGeneration != dep.Generation || dep.Status.Replicas != 5 || dep.Status.UpdatedReplicas != 0 {
		t.Fatalf("status while paused %+v (generation %d)", dep.Status, dep.Generation)
	}
	if rss := h.replicaSets("web"); len(rss) != 1 || *rss[0].Spec.Replicas != 5 {
		t.Fatalf("paused: %v", describe(rss))
	}
	if done, _ := rolloutStatus(dep); done {
		t.Error("rollout status says done while the new template is not out")
	}

	h.clock.Step(time.Hour)
	h.settle("web")
	h.update("web", func(d *appsv1.Deployment) { d.Spec.Paused = false })
	if err := h.syncD("web"); err != nil {
		t.Fatal(err)
	}
	if c := condOf(h.get("web"), appsv1.DeploymentProgressing); c == nil || c.Reason == ReasonProgressDeadline {
		t.Fatalf("Progressing after resume %+v", c)
	}
	h.rollout("web")
	dep = h.get("web")
	if done, err := rolloutStatus(dep); !done || err != nil {
		t.Fatalf("rollout after resume: %v %v (%+v)", done, err, dep.Status)
	}
	if rss := h.replicaSets("web"); len(rss) != 2 || *rss[1].Spec.Replicas != 5 || rss[1].Spec.Template.Spec.Containers[0].Image != "app:v2" {
		t.Fatalf("after resume: %v", describe(rss))
	}
}

// TestProportionalScaling: scaling a Deployment in the middle of a
// rollout spreads the change over the ReplicaSets by size.
func TestProportionalScaling(t *testing.T) {
	h := newHarness(t)
	d := newDeployment("web", 10, "app:v1")
	d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: ptr(intstr.FromInt32(3)), MaxUnavailable: ptr(intstr.FromInt32(2))}
	h.create(d)
	h.rollout("web")
	h.setImage("web", badImage)
	h.rollout("web") // stalls: the new pods never get ready
	sizes := func() []int32 {
		var out []int32
		for _, rs := range h.replicaSets("web") {
			out = append(out, *rs.Spec.Replicas)
		}
		return out
	}
	if got := sizes(); !reflect.DeepEqual(got, []int32{8, 5}) {
		t.Fatalf("stalled rollout sizes %v, want [8 5]", got)
	}
	h.update("web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(20)) })
	if err := h.syncD("web"); err != nil {
		t.Fatal(err)
	}
	// 13 → 23 (20 + maxSurge 3): old 8·23/13 ≈ 14, new 5·23/13 ≈ 9.
	if got := sizes(); !reflect.DeepEqual(got, []int32{14, 9}) {
		t.Fatalf("after scaling to 20: %v, want [14 9]", got)
	}
	for _, rs := range h.replicaSets("web") {
		if rs.Annotations[DesiredReplicasAnnotation] != "20" || rs.Annotations[MaxReplicasAnnotation] != "23" {
			t.Errorf("%s annotations %v", rs.Name, rs.Annotations)
		}
	}
	h.update("web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(5)) })
	if err := h.syncD("web"); err != nil {
		t.Fatal(err)
	}
	// 23 → 8: old 14·8/23 ≈ 5, new 9·8/23 ≈ 3.
	if got := sizes(); !reflect.DeepEqual(got, []int32{5, 3}) {
		t.Fatalf("after scaling to 5: %v, want [5 3]", got)
	}
}

// TestProgressDeadline: a rollout without progress for
// progressDeadlineSeconds is reported as ProgressDeadlineExceeded (the
// controller comes back by itself when the deadline passes); a new
// template starts over.
func TestProgressDeadline(t *testing.T) {
	h := newHarness(t)
	d := newDeployment("web", 3, "app:v1")
	d.Spec.ProgressDeadlineSeconds = ptr(int32(60))
	h.create(d)
	h.rollout("web")
	h.setImage("web", badImage)
	h.rollout("web")
	dep := h.get("web")
	if c := condOf(dep, appsv1.DeploymentProgressing); c == nil || c.Status != corev1.ConditionTrue {
		t.Fatalf("Progressing before the deadline %+v", c)
	}
	for h.dc.queue.Len() > 0 { // drain what the syncs queued
		k, _ := h.dc.queue.Get()
		h.dc.queue.Done(k)
	}
	h.clock.Step(61 * time.Second)
	waitFor(t, "the deadline requeue", func() bool { return h.dc.queue.Len() > 0 })
	if err := h.syncD("web"); err != nil {
		t.Fatal(err)
	}
	dep = h.get("web")
	c := condOf(dep, appsv1.DeploymentProgressing)
	bad := h.replicaSets("web")[1]
	if c == nil || c.Status != corev1.ConditionFalse || c.Reason != ReasonProgressDeadline || c.Message != fmt.Sprintf("ReplicaSet %q has timed out progressing.", bad.Name) {
		t.Fatalf("Progressing after the deadline %+v", c)
	}
	if _, err := rolloutStatus(dep); err == nil || !strings.Contains(err.Error(), "exceeded its progress deadline") {
		t.Errorf("rollout status error %v", err)
	}
	if c := condOf(dep, appsv1.DeploymentAvailable); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("Available %+v", c)
	}
	if dep.Spec.Template.Spec.Containers[0].Image != badImage {
		t.Error("rolled back without shoal.dev/auto-rollback")
	}
	// A fixed template rolls out.
	h.setImage("web", "app:v3")
	h.rollout("web")
	if done, err := rolloutStatus(h.get("web")); !done || err != nil {
		t.Fatalf("after a fix: %v %v", done, err)
	}
}

// TestAutoRollback: with shoal.dev/auto-rollback, a rollout past its
// deadline goes back to the previous revision by itself, says so, and
// completes there.
func TestAutoRollback(t *testing.T) {
	h := newHarness(t)
	h.withEvents()
	d := newDeployment("web", 3, "app:v1")
	d.Spec.ProgressDeadlineSeconds = ptr(int32(60))
	d.Annotations = map[string]string{AutoRollbackAnnotation: "true"}
	h.create(d)
	h.rollout("web")
	h.setImage("web", badImage)
	h.rollout("web")
	gen := h.get("web").Generation
	bad := h.replicaSets("web")[1]
	h.clock.Step(61 * time.Second)
	if err := h.syncD("web"); err != nil {
		t.Fatal(err)
	}
	dep := h.get("web")
	if img := dep.Spec.Template.Spec.Containers[0].Image; img != "app:v1" || dep.Generation != gen+1 {
		t.Fatalf("template image %s generation %d after the deadline, want app:v1 and %d", img, dep.Generation, gen+1)
	}
	if _, ok := dep.Spec.Template.Labels[TemplateHashLabel]; ok {
		t.Error("the rolled-back template carries the hash label")
	}
	c := condOf(dep, appsv1.DeploymentProgressing)
	if c == nil || c.Reason != ReasonProgressDeadline || !strings.Contains(c.Message, "Rolled back automatically to revision 1") {
		t.Fatalf("Progressing %+v", c)
	}
	if dep.Annotations[AutoRolledBackFromAnnotation] != templateHash(bad) {
		t.Errorf("auto-rolled-back-from %q, want %q", dep.Annotations[AutoRolledBackFromAnnotation], templateHash(bad))
	}
	h.waitEvent(fmt.Sprintf("DeploymentRollback: Rolled back deployment \"web\" to revision 1: ReplicaSet %q exceeded its progress deadline", bad.Name))

	h.rollout("web")
	dep = h.get("web")
	if done, err := rolloutStatus(dep); !done || err != nil {
		t.Fatalf("rollout after the automatic rollback: %v %v (%+v)", done, err, dep.Status.Conditions)
	}
	rss := h.replicaSets("web")
	if len(rss) != 2 || rss[1].Spec.Template.Spec.Containers[0].Image != "app:v1" || Revision(rss[1]) != 3 || *rss[0].Spec.Replicas != 0 {
		t.Fatalf("replicasets %v", describe(rss))
	}
	if _, ok := dep.Annotations[AutoRolledBackFromAnnotation]; ok {
		t.Error("auto-rolled-back-from kept after the rollout completed")
	}
	if dep.Annotations[RevisionAnnotation] != "3" {
		t.Errorf("revision %s", dep.Annotations[RevisionAnnotation])
	}
}

// TestAutoRollbackTarget: never back to what an automatic rollback
// abandoned, nor without an earlier revision.
func TestAutoRollbackTarget(t *testing.T) {
	d := newDeployment("web", 1, "app:v2")
	mk := func(image string, rev int) *appsv1.ReplicaSet {
		tmpl := newDeployment("web", 1, image).Spec.Template
		hash := ComputeHash(&tmpl, nil)
		tmpl.Labels[TemplateHashLabel] = hash
		return &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: "web-" + hash, UID: types.UID("u-" + image), Annotations: map[string]string{RevisionAnnotation: fmt.Sprint(rev)}},
			Spec:       appsv1.ReplicaSetSpec{Template: tmpl},
		}
	}
	v1, v0, v2 := mk("app:v1", 2), mk("app:v0", 1), mk("app:v2", 3)
	if got := rollbackTarget(d, []*appsv1.ReplicaSet{v0, v1, v2}, v2); got != v1 {
		t.Errorf("target %v, want the previous revision", got)
	}
	if got := rollbackTarget(d, []*appsv1.ReplicaSet{v2}, v2); got != nil {
		t.Errorf("target %v without history", got.Name)
	}
	d.Annotations = map[string]string{AutoRolledBackFromAnnotation: templateHash(v1)}
	if got := rollbackTarget(d, []*appsv1.ReplicaSet{v0, v1, v2}, v2); got != nil {
		t.Errorf("rolled back to the abandoned template %s", got.Name)
	}
}

// normalized is what a Deployment's rollout produced, without what
// differs between runs (UIDs, pod names, resourceVersions, and how many
// steps a ReplicaSet was scaled in, which depends on how syncs and pods
// interleaved), plus how many objects the controllers ever created.
func (h *harness) normalized(name string) string {
	var b strings.Builder
	dep := h.get(name)
	st := dep.Status.DeepCopy()
	fmt.Fprintf(&b, "deployment gen %d annotations %v status %d/%d/%d/%d/%d obs %d\n", dep.Generation, dep.Annotations,
		st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, st.AvailableReplicas, st.UnavailableReplicas, st.ObservedGeneration)
	for _, c := range st.Conditions {
		fmt.Fprintf(&b, "  condition %s %s %s %q\n", c.Type, c.Status, c.Reason, c.Message)
	}
	objs, _ := h.store.List(replicaset.Resource, ns)
	for _, o := range objs {
		rs := o.(*appsv1.ReplicaSet)
		fmt.Fprintf(&b, "rs %s replicas %d annotations %v status %d/%d/%d observed %v owner %s\n", rs.Name, *rs.Spec.Replicas,
			rs.Annotations, rs.Status.Replicas, rs.Status.ReadyReplicas, rs.Status.AvailableReplicas, rs.Status.ObservedGeneration == rs.Generation, controller.ControllerOf(rs).Name)
	}
	byRS := h.podsByRS()
	keys := make([]string, 0, len(byRS))
	for k := range byRS {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "pods of %s: %d\n", k, byRS[k])
	}
	fmt.Fprintf(&b, "pods stored: %d\n", len(h.pods()))
	fmt.Fprintf(&b, "created: %d replicasets, %d pods\n", h.createdCount(replicaset.Resource), h.createdCount(controller.ResourcePods))
	return b.String()
}

// TestLeaderChange: a rollout that one controller instance starts and a
// fresh one (a new leader, with nothing carried over) finishes ends
// exactly as if one instance had done it all — whatever write the old
// leader was cut off at, even in the middle of a sync.
func TestLeaderChange(t *testing.T) {
	scenario := func(t *testing.T, cutAfter int64, stepsBeforeChange int) string {
		h := newHarness(t)
		h.create(newDeployment("web", 6, "app:v1"))
		h.rollout("web")
		h.setImage("web", "app:v2")
		if cutAfter > 0 {
			h.prop.cutAt.Store(h.prop.writes.Load() + cutAfter)
		}
		// The first leader works the rollout for a while.
		for range stepsBeforeChange {
			_ = h.syncRS()
			_ = h.syncD("web")
			h.kubelet(nil)
		}
		// A new leader takes over with fresh controllers.
		h.newControllers()
		h.rollout("web")
		return h.normalized("web")
	}
	want := scenario(t, 0, 3)
	if !strings.Contains(want, "created: 2 replicasets, 12 pods") || strings.Count(want, "\nrs ") != 2 {
		t.Fatalf("reference run:\n%s", want)
	}
	for cut := int64(1); cut <= 25; cut++ {
		for _, steps := range []int{1, 3} {
			got := scenario(t, cut, steps)
			if got != want {
				t.Fatalf("leader cut off after %d writes (%d steps): final state\n%s\nwant\n%s", cut, steps, got, want)
			}
		}
	}
}

// TestHashCollision: a ReplicaSet of another owner already has the new
// ReplicaSet's name: collisionCount is bumped and the name changes.
func TestHashCollision(t *testing.T) {
	h := newHarness(t)
	d := newDeployment("web", 2, "app:v1")
	hash := ComputeHash(&d.Spec.Template, nil)
	squatter := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-" + hash, Namespace: ns, UID: "squatter", Labels: map[string]string{"app": "other"}},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr(int32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "other"}}},
		},
	}
	h.propose(state.Create(squatter))
	h.create(d)
	if err := h.syncD("web"); err == nil {
		t.Fatal("the colliding sync should fail and retry")
	}
	if cc := h.get("web").Status.CollisionCount; cc == nil || *cc != 1 {
		t.Fatalf("collisionCount %v, want 1", cc)
	}
	h.rollout("web")
	rss := h.replicaSets("web")
	if len(rss) != 1 || rss[0].Name != "web-"+ComputeHash(&d.Spec.Template, ptr(int32(1))) {
		t.Fatalf("replicasets %v", describe(rss))
	}
	if done, _ := rolloutStatus(h.get("web")); !done {
		t.Error("not rolled out")
	}
}

// TestAdoptsOrphanReplicaSet: a ReplicaSet the selector matches, with the
// Deployment's template and no controller, is adopted as the new one.
func TestAdoptsOrphanReplicaSet(t *testing.T) {
	h := newHarness(t)
	d := newDeployment("web", 2, "app:v1")
	tmpl := d.Spec.Template.DeepCopy()
	hash := ComputeHash(tmpl, nil)
	tmpl.Labels[TemplateHashLabel] = hash
	orphan := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-orphan", Namespace: ns, UID: "orphan", Labels: tmpl.Labels, Generation: 1},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr(int32(2)),
			Selector: cloneSelectorWith(d.Spec.Selector, TemplateHashLabel, hash),
			Template: *tmpl,
		},
	}
	h.propose(state.Create(orphan))
	h.create(d)
	// The first sync adopts it and gives it its revision, the second
	// takes it as the new ReplicaSet.
	for range 2 {
		if err := h.syncD("web"); err != nil {
			t.Fatal(err)
		}
	}
	if c := condOf(h.get("web"), appsv1.DeploymentProgressing); c == nil || c.Reason != ReasonFoundNewRS || c.Message != `Found new replica set "web-orphan"` {
		t.Errorf("Progressing %+v", c)
	}
	h.rollout("web")
	rss := h.replicaSets("web")
	if len(rss) != 1 || rss[0].UID != "orphan" || Revision(rss[0]) != 1 {
		t.Fatalf("replicasets %v", describe(rss))
	}
}

// TestSelectingAllAndDeletion: an empty selector is refused (only the
// observed generation is written); a Deployment being deleted gets its
// status but no rollout.
func TestSelectingAllAndDeletion(t *testing.T) {
	h := newHarness(t)
	d := newDeployment("all", 1, "app:v1")
	d.Spec.Selector = &metav1.LabelSelector{}
	h.create(d)
	if err := h.syncD("all"); err != nil {
		t.Fatal(err)
	}
	if got := h.get("all"); got.Status.ObservedGeneration != 1 || len(h.replicaSets("all")) != 0 {
		t.Errorf("selecting all: %+v", got.Status)
	}
	del := newDeployment("gone", 1, "app:v1")
	now := metav1.NewTime(t0)
	del.DeletionTimestamp = &now
	del.Finalizers = []string{metav1.FinalizerDeleteDependents}
	h.create(del)
	h.settle("gone")
	if got := h.get("gone"); got.Status.ObservedGeneration != 1 || len(h.replicaSets("gone")) != 0 {
		t.Errorf("being deleted: %+v rs %d", got.Status, len(h.replicaSets("gone")))
	}
}

// TestRun: both controllers started with Run, a fake kubelet, and a
// Deployment created and then updated through the store reach their
// replicas.
func TestRun(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan struct{}, 3)
	go func() { h.dc.Run(ctx); stopped <- struct{}{} }()
	go func() { h.rc.Run(ctx); stopped <- struct{}{} }()
	go func() { // the kubelet
		defer func() { stopped <- struct{}{} }()
		podKind, _ := state.KindFor("pods")
		for ctx.Err() == nil {
			for _, p := range h.pods() {
				if p.DeletionTimestamp != nil {
					_, _ = h.local.Propose(ctx, state.Delete(podKind, p.Namespace, p.Name, controller.RV(p), string(p.UID)))
				} else if !controller.IsPodReady(p) {
					next := p.DeepCopy()
					next.Spec.NodeName, next.Status.Phase = "n1", corev1.PodRunning
					next.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(t0)}}
					_, _ = h.local.Propose(ctx, state.Update(next, controller.RV(p)))
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	h.create(newDeployment("web", 3, "app:v1"))
	waitFor(t, "3 available replicas", func() bool {
		done, _ := rolloutStatus(h.get("web"))
		return done && h.get("web").Status.AvailableReplicas == 3
	})
	h.setImage("web", "app:v2")
	waitFor(t, "the update to roll out", func() bool {
		dep := h.get("web")
		done, _ := rolloutStatus(dep)
		return done && dep.Status.ObservedGeneration == 2 && dep.Status.Replicas == 3 && len(h.podsByRS()) == 1
	})
	if rss := h.replicaSets("web"); len(rss) != 2 || *rss[1].Spec.Replicas != 3 {
		t.Fatalf("replicasets %v", describe(rss))
	}
	cancel()
	for range 3 {
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not stop")
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
