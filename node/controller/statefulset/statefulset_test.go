package statefulset

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/gc"
	"github.com/shoal-dev/shoal/node/state"
)

// TestOrderedReadyCreation: OrderedReady makes web-0, web-1, web-2 one at
// a time, each only once the previous one is running, ready and
// available (minReadySeconds); the pods carry their identity.
func TestOrderedReadyCreation(t *testing.T) {
	h := newHarness(t)
	set := newSet("web", 3)
	set.Spec.MinReadySeconds = 10
	h.create(set)

	h.mustSync("web")
	h.expectPods("first sync", "web-0")
	h.mustSync("web")
	h.expectPods("web-0 pending", "web-0")
	h.run("web-0", false)
	h.mustSync("web")
	h.expectPods("web-0 running, not ready", "web-0")
	h.run("web-0", true)
	h.mustSync("web")
	h.expectPods("web-0 ready, not yet available", "web-0")
	if n := h.sc.queue.Len(); n != 0 {
		t.Fatalf("queue has %d keys before minReadySeconds passed", n)
	}
	h.clock.Step(11 * time.Second)
	waitFor(t, "the requeue once web-0 is available", func() bool { return h.sc.queue.Len() == 1 })
	h.mustSync("web")
	h.expectPods("web-0 available", "web-0 web-1")
	h.run("web-1", true)
	h.clock.Step(11 * time.Second)
	h.mustSync("web")
	h.expectPods("web-1 available", "web-0 web-1 web-2")

	set = h.get("web")
	rev := set.Status.UpdateRevision
	if !strings.HasPrefix(rev, "web-") || rev != "web-"+templateHash(&set.Spec.Template, ptr(int32(0))) {
		t.Fatalf("updateRevision %q", rev)
	}
	for i, p := range h.pods() {
		name := fmt.Sprintf("web-%d", i)
		if p.Name != name || p.Spec.Hostname != name || p.Spec.Subdomain != "web-svc" {
			t.Errorf("pod %s: hostname %q subdomain %q", p.Name, p.Spec.Hostname, p.Spec.Subdomain)
		}
		want := map[string]string{"app": "web", "tier": "db", PodNameLabel: name, PodIndexLabel: fmt.Sprint(i), RevisionLabel: rev}
		if fmt.Sprint(p.Labels) != fmt.Sprint(want) {
			t.Errorf("pod %s labels %v, want %v", p.Name, p.Labels, want)
		}
		if !controller.IsControlledBy(p, set) || p.OwnerReferences[0].Kind != "StatefulSet" || p.OwnerReferences[0].APIVersion != "apps/v1" {
			t.Errorf("pod %s owner references %+v", p.Name, p.OwnerReferences)
		}
		if p.Generation != 1 || p.Status.Phase == "" || p.CreationTimestamp.IsZero() || p.UID == "" || p.GenerateName != "web-" {
			t.Errorf("pod %s metadata %+v phase %q", p.Name, p.ObjectMeta, p.Status.Phase)
		}
		// Defaults the API server would have applied.
		if p.Spec.RestartPolicy != corev1.RestartPolicyAlways || p.Spec.DNSPolicy == "" || p.Spec.Containers[0].ImagePullPolicy == "" {
			t.Errorf("pod %s not defaulted: %+v", p.Name, p.Spec)
		}
	}
	st := h.get("web").Status
	want := appsv1.StatefulSetStatus{ObservedGeneration: 1, Replicas: 3, ReadyReplicas: 2, AvailableReplicas: 2,
		CurrentReplicas: 3, UpdatedReplicas: 3, CurrentRevision: rev, UpdateRevision: rev, CollisionCount: ptr(int32(0))}
	if !equality.Semantic.DeepEqual(st, want) {
		t.Errorf("status\n %+v, want\n %+v", st, want)
	}
}

// TestOrderedReadyWaitsForEarlierOrdinals: a predecessor that stops being
// ready holds back creation of the next ordinal.
func TestOrderedReadyWaitsForEarlierOrdinals(t *testing.T) {
	h := newHarness(t)
	h.create(newSet("web", 3))
	h.mustSync("web")
	h.run("web-0", true)
	h.mustSync("web")
	h.expectPods("web-0 ready", "web-0 web-1")
	h.run("web-1", true)
	h.run("web-0", false) // web-0 lost readiness
	h.mustSync("web")
	h.expectPods("web-0 not ready", "web-0 web-1")
	h.run("web-0", true)
	h.mustSync("web")
	h.expectPods("web-0 ready again", "web-0 web-1 web-2")
}

// TestScaleDownReverseOrder: OrderedReady scale-down deletes the highest
// ordinal first and waits for each pod to be gone before the next.
func TestScaleDownReverseOrder(t *testing.T) {
	h := newHarness(t)
	h.create(newSet("web", 4))
	for i := range 4 {
		h.mustSync("web")
		h.run(fmt.Sprintf("web-%d", i), true)
	}
	h.mustSync("web")
	h.expectPods("scaled up", "web-0 web-1 web-2 web-3")

	h.scale("web", 1)
	h.mustSync("web")
	h.expectPods("first scale-down step", "web-0 web-1 web-2 web-3(T)")
	if p := h.pod("web-3"); *p.DeletionGracePeriodSeconds != 30 {
		t.Errorf("web-3 grace %d, want 30 (graceful, as the API deletes)", *p.DeletionGracePeriodSeconds)
	}
	h.mustSync("web")
	h.expectPods("waiting for web-3 to terminate", "web-0 web-1 web-2 web-3(T)")
	h.terminate("web-3")
	h.mustSync("web")
	h.expectPods("second step", "web-0 web-1 web-2(T)")
	// An unhealthy predecessor holds the scale-down back.
	h.terminate("web-2")
	h.run("web-0", false)
	h.mustSync("web")
	h.expectPods("web-0 not ready", "web-0 web-1")
	h.run("web-0", true)
	h.mustSync("web")
	h.expectPods("web-0 ready again", "web-0 web-1(T)")
	h.terminate("web-1")
	h.mustSync("web")
	h.expectPods("done", "web-0")
	if st := h.get("web").Status; st.Replicas != 1 || st.ReadyReplicas != 1 || st.CurrentReplicas != 1 {
		t.Errorf("status %+v", st)
	}
}

// TestScaleDownUnhealthyCondemned: the lowest unhealthy condemned pod
// does not wait for itself to become ready.
func TestScaleDownUnhealthyCondemned(t *testing.T) {
	h := newHarness(t)
	h.create(newSet("web", 3))
	for i := range 3 {
		h.mustSync("web")
		h.run(fmt.Sprintf("web-%d", i), true)
	}
	h.run("web-2", false)
	h.scale("web", 2)
	h.mustSync("web")
	h.expectPods("unhealthy web-2 deleted", "web-0 web-1 web-2(T)")
}

// TestParallel: Parallel creates every identity at once, does not wait
// for readiness, and scales down all at once too.
func TestParallel(t *testing.T) {
	h := newHarness(t)
	set := newSet("web", 5)
	set.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
	h.create(set)
	h.mustSync("web")
	h.expectPods("created", "web-0 web-1 web-2 web-3 web-4")

	// A terminating pod is still not replaced before it is gone, even in
	// parallel.
	h.run("web-1", true)
	h.userDelete("web-1")
	h.mustSync("web")
	h.expectPods("web-1 terminating", "web-0 web-1(T) web-2 web-3 web-4")
	h.terminate("web-1")
	h.mustSync("web")
	h.expectPods("web-1 back", "web-0 web-1 web-2 web-3 web-4")

	for _, n := range []string{"web-0", "web-2", "web-3", "web-4"} {
		h.run(n, n != "web-3")
	}
	h.scale("web", 1)
	h.mustSync("web")
	// web-1 (made again, never bound) goes at once; the others terminate.
	h.expectPods("scaled down", "web-0 web-2(T) web-3(T) web-4(T)")
}

// TestRollingUpdatePartition: a template change with partition 1 replaces
// web-2 then web-1 (highest first, one at a time, each waiting for the
// previous to be ready) and keeps web-0 at the current revision — also
// when web-0 is remade. Dropping the partition finishes the rollout.
func TestRollingUpdatePartition(t *testing.T) {
	h := newHarness(t)
	h.create(newSet("web", 4))
	for i := range 4 {
		h.mustSync("web")
		h.run(fmt.Sprintf("web-%d", i), true)
	}
	h.mustSync("web")
	oldRev := h.get("web").Status.CurrentRevision
	h.update("web", func(s *appsv1.StatefulSet) {
		s.Spec.Template.Spec.Containers[0].Image = "app:v2"
		s.Spec.UpdateStrategy.RollingUpdate.Partition = ptr(int32(2))
	})
	newRev := revisionName(h.get("web"))
	if newRev == oldRev {
		t.Fatal("revision did not change with the template")
	}

	h.mustSync("web")
	h.expectPods("first update step", "web-0 web-1 web-2 web-3(T)")
	h.mustSync("web")
	h.expectPods("waiting for web-3 to go", "web-0 web-1 web-2 web-3(T)")
	st := h.get("web").Status
	if st.CurrentRevision != oldRev || st.UpdateRevision != newRev || st.CurrentReplicas != 3 || st.UpdatedReplicas != 0 {
		t.Errorf("status during update %+v", st)
	}
	h.terminate("web-3")
	h.mustSync("web")
	h.expectPods("web-3 remade", "web-0 web-1 web-2 web-3")
	if p := h.pod("web-3"); revisionOf(p) != newRev || p.Spec.Containers[0].Image != "app:v2" {
		t.Fatalf("web-3 at %s with %s, want the update revision", revisionOf(p), p.Spec.Containers[0].Image)
	}
	h.mustSync("web")
	h.expectPods("web-3 not ready yet: web-2 waits", "web-0 web-1 web-2 web-3")
	h.run("web-3", true)
	h.mustSync("web")
	h.expectPods("second update step", "web-0 web-1 web-2(T) web-3")
	h.terminate("web-2")
	h.mustSync("web")
	h.run("web-2", true)
	h.mustSync("web")
	h.expectPods("partition reached", "web-0 web-1 web-2 web-3")
	st = h.get("web").Status
	if st.CurrentRevision != oldRev || st.UpdateRevision != newRev || st.CurrentReplicas != 2 || st.UpdatedReplicas != 2 || st.ReadyReplicas != 4 {
		t.Errorf("status at the partition %+v", st)
	}
	if msg, done := rolloutStatus(h.get("web")); !done {
		t.Errorf("kubectl rollout status: %q, want a finished partitioned rollout", msg)
	}

	// web-0 fails: it comes back at the current revision, below the
	// partition.
	h.setPod("web-0", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed })
	h.mustSync("web")
	if p := h.pod("web-0"); revisionOf(p) != oldRev || p.Spec.Containers[0].Image != "app:v1" {
		t.Fatalf("remade web-0 at %s with %s, want the current revision %s", revisionOf(p), p.Spec.Containers[0].Image, oldRev)
	}
	h.run("web-0", true)

	// No partition: web-1 then web-0, and the update revision becomes
	// the current one.
	h.update("web", func(s *appsv1.StatefulSet) { s.Spec.UpdateStrategy.RollingUpdate.Partition = ptr(int32(0)) })
	if msg, done := rolloutStatus(h.get("web")); done {
		t.Errorf("kubectl rollout status before the sync: %q, want waiting", msg)
	}
	for _, n := range []string{"web-1", "web-0"} {
		h.mustSync("web")
		if p := h.pod(n); p.DeletionTimestamp == nil {
			t.Fatalf("%s not being replaced: %s", n, h.podNames())
		}
		h.terminate(n)
		h.mustSync("web")
		h.run(n, true)
	}
	h.mustSync("web")
	st = h.get("web").Status
	if st.CurrentRevision != newRev || st.UpdateRevision != newRev || st.CurrentReplicas != 4 || st.UpdatedReplicas != 4 || st.ObservedGeneration != 3 {
		t.Errorf("status after the rollout %+v", st)
	}
	if msg, done := rolloutStatus(h.get("web")); !done {
		t.Errorf("kubectl rollout status: %q", msg)
	}
}

// rolloutStatus is kubectl rollout status for a StatefulSet
// (kubectl/pkg/polymorphichelpers/rollout_status.go).
func rolloutStatus(sts *appsv1.StatefulSet) (string, bool) {
	if sts.Spec.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType {
		return "rollout status is only available for RollingUpdate", true
	}
	if sts.Status.ObservedGeneration == 0 || sts.Generation > sts.Status.ObservedGeneration {
		return "Waiting for statefulset spec update to be observed...", false
	}
	if sts.Spec.Replicas != nil && sts.Status.ReadyReplicas < *sts.Spec.Replicas {
		return fmt.Sprintf("Waiting for %d pods to be ready...", *sts.Spec.Replicas-sts.Status.ReadyReplicas), false
	}
	if ru := sts.Spec.UpdateStrategy.RollingUpdate; ru != nil {
		if sts.Spec.Replicas != nil && ru.Partition != nil && sts.Status.UpdatedReplicas < *sts.Spec.Replicas-*ru.Partition {
			return fmt.Sprintf("Waiting for partitioned roll out to finish: %d out of %d new pods have been updated...",
				sts.Status.UpdatedReplicas, *sts.Spec.Replicas-*ru.Partition), false
		}
		return "partitioned roll out complete", true
	}
	if sts.Status.UpdateRevision != sts.Status.CurrentRevision {
		return "waiting for statefulset rolling update to complete", false
	}
	return "statefulset rolling update complete", true
}

// TestRollingUpdateMaxUnavailable: with maxUnavailable 2 (Parallel), two
// pods are replaced at once, highest first, and the budget counts
// unavailable pods wherever they are.
func TestRollingUpdateMaxUnavailable(t *testing.T) {
	h := newHarness(t)
	set := newSet("web", 4)
	set.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
	set.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromInt32(2))
	h.create(set)
	h.mustSync("web")
	for i := range 4 {
		h.run(fmt.Sprintf("web-%d", i), true)
	}
	h.setImage("web", "app:v2")
	h.mustSync("web")
	h.expectPods("two at a time", "web-0 web-1 web-2(T) web-3(T)")
	h.terminate("web-3")
	h.terminate("web-2")
	h.mustSync("web")
	h.expectPods("remade, not ready: no budget left", "web-0 web-1 web-2 web-3")
	h.run("web-3", true)
	h.mustSync("web")
	h.expectPods("one back: one more", "web-0 web-1(T) web-2 web-3")
}

// TestRollingUpdateReplacesBrokenPodsFirst: in Parallel, an outdated pod
// that is not ready is replaced without waiting for readiness.
func TestRollingUpdateReplacesBrokenPods(t *testing.T) {
	h := newHarness(t)
	set := newSet("web", 3)
	set.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
	h.create(set)
	h.mustSync("web")
	h.run("web-0", true)
	h.run("web-1", false) // crash-looping at the old revision
	h.run("web-2", true)
	h.setImage("web", "app:v2")
	h.mustSync("web")
	h.expectPods("the broken pod goes, the budget is spent", "web-0 web-1(T) web-2")
}

// TestOnDelete: with OnDelete a template change replaces nothing; a pod
// deleted by someone comes back at the update revision.
func TestOnDelete(t *testing.T) {
	h := newHarness(t)
	set := newSet("web", 2)
	set.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}
	h.create(set)
	for i := range 2 {
		h.mustSync("web")
		h.run(fmt.Sprintf("web-%d", i), true)
	}
	h.setImage("web", "app:v2")
	for range 3 {
		h.mustSync("web")
	}
	h.expectPods("nothing replaced", "web-0 web-1")
	st := h.get("web").Status
	if st.UpdatedReplicas != 0 || st.CurrentReplicas != 2 || st.CurrentRevision == st.UpdateRevision {
		t.Errorf("status %+v", st)
	}
	h.userDelete("web-0")
	h.mustSync("web")
	h.terminate("web-0")
	h.mustSync("web")
	if p := h.pod("web-0"); p.Spec.Containers[0].Image != "app:v2" || revisionOf(p) != st.UpdateRevision {
		t.Errorf("web-0 remade with %s at %s", p.Spec.Containers[0].Image, revisionOf(p))
	}
	if p := h.pod("web-1"); p.Spec.Containers[0].Image != "app:v1" {
		t.Errorf("web-1 was touched")
	}
}

// TestRecreatedOnlyAfterGone: a deleted pod is made again under the same
// name, but only once the old one is gone from the store — never while it
// terminates (no two copies of one identity).
func TestRecreatedOnlyAfterGone(t *testing.T) {
	h := newHarness(t)
	h.create(newSet("web", 2))
	for i := range 2 {
		h.mustSync("web")
		h.run(fmt.Sprintf("web-%d", i), true)
	}
	old := h.pod("web-0").UID
	h.userDelete("web-0")
	for range 3 {
		h.mustSync("web")
		h.clock.Step(time.Minute)
	}
	h.expectPods("terminating", "web-0(T) web-1")
	if h.pod("web-0").UID != old {
		t.Fatal("web-0 replaced while terminating")
	}
	h.terminate("web-0")
	h.mustSync("web")
	h.expectPods("remade", "web-0 web-1")
	if p := h.pod("web-0"); p.UID == old || p.DeletionTimestamp != nil {
		t.Fatalf("web-0 not remade: uid %s", p.UID)
	}
}

// TestFailedPodRecreated: a failed pod is deleted and made again under
// its name in the same sync (a finished pod goes at once); a succeeded
// one too.
func TestFailedPodRecreated(t *testing.T) {
	h := newHarness(t)
	h.withEvents()
	h.create(newSet("web", 2))
	for i := range 2 {
		h.mustSync("web")
		h.run(fmt.Sprintf("web-%d", i), true)
	}
	old0, old1 := h.pod("web-0").UID, h.pod("web-1").UID
	h.setPod("web-0", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed })
	h.setPod("web-1", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })
	h.mustSync("web")
	h.expectPods("web-0 remade", "web-0 web-1")
	if p := h.pod("web-0"); p.UID == old0 || p.Status.Phase != corev1.PodPending {
		t.Fatalf("web-0 not remade: %s %s", p.UID, p.Status.Phase)
	}
	// OrderedReady: web-1 waits for the new web-0.
	if h.pod("web-1").UID != old1 {
		t.Fatal("web-1 replaced before web-0 is ready")
	}
	h.run("web-0", true)
	h.mustSync("web")
	if p := h.pod("web-1"); p.UID == old1 {
		t.Fatal("succeeded web-1 not remade")
	}
	waitFor(t, "events", func() bool {
		return slices.Contains(h.eventMessages(), "RecreatingFailedPod: StatefulSet default/web is recreating failed Pod web-0")
	})
}

// TestClaims: claims are made from the templates before their pod, named
// <template>-<set>-<ordinal> and labelled with the selector's labels; the
// pod mounts them; scale-down keeps them and scale-up reuses them.
func TestClaims(t *testing.T) {
	h := newHarness(t)
	h.withEvents()
	set := newSet("web", 2)
	set.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{claimTemplate("data", "1Gi"), claimTemplate("scratch", "2Gi")}
	h.create(set)
	h.mustSync("web")
	if log := h.prop.takeLog(); len(log) < 3 || !slices.Equal(log[:3], []string{
		"create persistentvolumeclaims/data-web-0", "create persistentvolumeclaims/scratch-web-0", "create pods/web-0"}) {
		t.Fatalf("writes %v: claims must come before the pod", log)
	}
	c, ok := h.claim("data-web-0")
	if !ok {
		t.Fatal("no claim data-web-0")
	}
	if fmt.Sprint(c.Labels) != "map[app:web volume:data]" || len(c.OwnerReferences) != 0 || c.Status.Phase != corev1.ClaimPending ||
		c.Spec.Resources.Requests.Storage().String() != "1Gi" || c.Spec.VolumeMode == nil || c.UID == "" || c.Generation != 1 {
		t.Errorf("claim %+v", c)
	}
	pod := h.pod("web-0")
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	// Three: the two claims and the service-account token volume admission adds.
	if len(pod.Spec.Volumes) != 3 || vols["data"].PersistentVolumeClaim.ClaimName != "data-web-0" ||
		vols["scratch"].PersistentVolumeClaim == nil || vols["scratch"].PersistentVolumeClaim.ClaimName != "scratch-web-0" {
		t.Errorf("pod volumes %+v (the template's scratch volume is replaced by the claim)", pod.Spec.Volumes)
	}
	h.run("web-0", true)
	h.mustSync("web")
	h.run("web-1", true)
	h.mustSync("web")
	if got := h.claimNames(); got != "data-web-0 data-web-1 scratch-web-0 scratch-web-1" {
		t.Fatalf("claims %s", got)
	}
	uid := func(n string) string { c, _ := h.claim(n); return string(c.UID) }
	kept := uid("data-web-1")

	h.scale("web", 0)
	h.mustSync("web")
	h.terminate("web-1")
	h.mustSync("web")
	h.terminate("web-0")
	h.mustSync("web")
	h.expectPods("scaled to 0", "")
	if got := h.claimNames(); got != "data-web-0 data-web-1 scratch-web-0 scratch-web-1" {
		t.Fatalf("claims after scale-down %s, want all kept", got)
	}
	h.scale("web", 2)
	h.mustSync("web")
	h.run("web-0", true)
	h.mustSync("web")
	if uid("data-web-1") != kept {
		t.Error("data-web-1 was made again")
	}
	waitFor(t, "events", func() bool {
		evs := h.eventMessages()
		return slices.Contains(evs, "SuccessfulCreate: create Claim data-web-0 Pod web-0 in StatefulSet web success") &&
			slices.Contains(evs, "SuccessfulCreate: create Pod web-0 in StatefulSet web successful") &&
			slices.Contains(evs, "SuccessfulDelete: delete Pod web-1 in StatefulSet web successful")
	})
}

// TestClaimBeingDeletedBlocksPod: a pod is not made while one of its
// claims is being deleted; once the claim is gone, both are made again.
func TestClaimBeingDeletedBlocksPod(t *testing.T) {
	h := newHarness(t)
	set := newSet("web", 1)
	set.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{claimTemplate("data", "1Gi")}
	h.create(set)
	h.mustSync("web")
	c, _ := h.claim("data-web-0")
	next := c.DeepCopy()
	now := metav1.NewTime(t0)
	next.DeletionTimestamp, next.Finalizers = &now, []string{"kubernetes.io/pvc-protection"}
	h.propose(state.Update(next, controller.RV(c)))
	h.run("web-0", true)
	h.userDelete("web-0")
	h.terminate("web-0")
	if err := h.sync("web"); err == nil || !strings.Contains(err.Error(), "pvc data-web-0 is being deleted") {
		t.Fatalf("sync: %v, want the claim being deleted", err)
	}
	h.expectPods("blocked", "")
	c, _ = h.claim("data-web-0")
	h.propose(state.Delete(mustKind(resourceClaims), ns, "data-web-0", controller.RV(c), ""))
	h.mustSync("web")
	h.expectPods("unblocked", "web-0")
	if c, ok := h.claim("data-web-0"); !ok || c.DeletionTimestamp != nil {
		t.Fatal("claim not made again")
	}
}

func mustKind(resource string) *state.Kind { k, _ := state.KindFor(resource); return k }

// TestClaimRetentionPolicy: whenDeleted=Delete makes the set own its
// claims; whenScaled=Delete hands a condemned pod's claims to the pod
// before deleting it, so the garbage collector removes them with the pod,
// and a scale-up waits until they are gone before making new ones.
func TestClaimRetentionPolicy(t *testing.T) {
	h := newHarness(t)
	set := newSet("web", 2)
	set.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{claimTemplate("data", "1Gi")}
	set.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
		WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType,
		WhenScaled:  appsv1.DeletePersistentVolumeClaimRetentionPolicyType,
	}
	h.create(set)
	for i := range 2 {
		h.mustSync("web")
		h.run(fmt.Sprintf("web-%d", i), true)
	}
	h.mustSync("web")
	set = h.get("web")
	for _, n := range []string{"data-web-0", "data-web-1"} {
		c, _ := h.claim(n)
		if len(c.OwnerReferences) != 1 || c.OwnerReferences[0].UID != set.UID || !*c.OwnerReferences[0].Controller {
			t.Fatalf("claim %s owners %+v, want the set", n, c.OwnerReferences)
		}
	}

	h.scale("web", 1)
	h.mustSync("web")
	pod1 := h.pod("web-1")
	c, _ := h.claim("data-web-1")
	if len(c.OwnerReferences) != 1 || c.OwnerReferences[0].UID != pod1.UID || c.OwnerReferences[0].Kind != "Pod" {
		t.Fatalf("condemned claim owners %+v, want pod web-1 only", c.OwnerReferences)
	}
	h.expectPods("web-1 going", "web-0 web-1(T)")
	// Scale back up before the old claim is gone: web-1 waits for it.
	h.scale("web", 2)
	h.terminate("web-1")
	h.mustSync("web")
	h.expectPods("web-1 waits for its old claim to go", "web-0")

	ctx, cancel := context.WithCancel(context.Background())
	collector := gc.New(h.c)
	done := make(chan struct{})
	go func() { collector.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the garbage collector to remove data-web-1", func() bool { _, ok := h.claim("data-web-1"); return !ok })
	h.mustSync("web")
	h.expectPods("web-1 back", "web-0 web-1")
	c, _ = h.claim("data-web-1")
	if len(c.OwnerReferences) != 1 || c.OwnerReferences[0].UID != set.UID {
		t.Errorf("new claim owners %+v, want the set", c.OwnerReferences)
	}
	if c.UID == "" || h.pod("web-1").UID == pod1.UID {
		t.Error("web-1 not made anew")
	}
}

// TestLeaderChange: a new controller (a new leader term) carries a
// partitioned rollout on from the store alone: it neither repeats nor
// loses a step, and still knows the current revision's template.
func TestLeaderChange(t *testing.T) {
	h := newHarness(t)
	h.create(newSet("web", 3))
	for i := range 3 {
		h.mustSync("web")
		h.run(fmt.Sprintf("web-%d", i), true)
	}
	h.mustSync("web")
	h.update("web", func(s *appsv1.StatefulSet) {
		s.Spec.Template.Spec.Containers[0].Image = "app:v2"
		s.Spec.UpdateStrategy.RollingUpdate.Partition = ptr(int32(1))
	})
	h.mustSync("web")
	h.expectPods("old leader deleted web-2", "web-0 web-1 web-2(T)")

	h.newLeader()
	h.mustSync("web")
	h.expectPods("new leader waits for the same pod", "web-0 web-1 web-2(T)")
	h.terminate("web-2")
	h.mustSync("web")
	h.run("web-2", true)
	h.newLeader()
	h.mustSync("web")
	h.expectPods("next step", "web-0 web-1(T) web-2")
	h.terminate("web-1")
	h.mustSync("web")
	h.run("web-1", true)
	h.newLeader()
	h.mustSync("web")
	h.expectPods("partition reached", "web-0 web-1 web-2")
	// Below the partition, a new leader remakes web-0 from the current
	// revision's template, which only the revision records remember.
	h.userDelete("web-0")
	h.terminate("web-0")
	h.newLeader()
	h.mustSync("web")
	if p := h.pod("web-0"); p.Spec.Containers[0].Image != "app:v1" {
		t.Fatalf("web-0 remade with %s, want app:v1", p.Spec.Containers[0].Image)
	}
}

// TestAdoption: an orphan pod with one of the set's identities and its
// labels is adopted and kept; other orphans are not.
func TestAdoption(t *testing.T) {
	h := newHarness(t)
	orphan := func(name string, lbls map[string]string) {
		h.propose(state.Create(&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: ktypes.UID("o-" + name), Labels: lbls},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "x"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodPending},
		}))
	}
	orphan("web-0", map[string]string{"app": "web"})
	orphan("web-x", map[string]string{"app": "web"})
	orphan("webby-1", map[string]string{"app": "web"})
	h.create(newSet("web", 1))
	h.mustSync("web")
	set := h.get("web")
	if !controller.IsControlledBy(h.pod("web-0"), set) || h.pod("web-0").UID != "o-web-0" {
		t.Fatal("web-0 not adopted")
	}
	for _, n := range []string{"web-x", "webby-1"} {
		if len(h.pod(n).OwnerReferences) != 0 {
			t.Errorf("%s adopted", n)
		}
	}
	// The adopted pod gets its identity labels.
	h.run("web-0", true)
	h.mustSync("web")
	if l := h.pod("web-0").Labels; l[PodNameLabel] != "web-0" || l[PodIndexLabel] != "0" {
		t.Errorf("adopted pod labels %v", l)
	}
}

// TestRevisionHistory: the revision records are trimmed to
// revisionHistoryLimit (live revisions kept) and dropped with the set.
func TestRevisionHistory(t *testing.T) {
	h := newHarness(t)
	set := newSet("web", 1)
	set.Spec.RevisionHistoryLimit = ptr(int32(1))
	set.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
	h.create(set)
	h.mustSync("web")
	for i := 2; i <= 5; i++ {
		h.setImage("web", fmt.Sprintf("app:v%d", i))
		h.mustSync("web")
	}
	recs := h.store.ListKV(historyPrefix + "default/web/")
	// Live: the current revision (web-0 was never ready, so v1 stays
	// current), the update revision (v5) and web-0's; plus one old.
	if len(recs) != 3 {
		t.Fatalf("%d revision records, want 3: %v", len(recs), keys(recs))
	}
	st := h.get("web").Status
	for _, want := range []string{st.CurrentRevision, st.UpdateRevision, revisionOf(h.pod("web-0"))} {
		if _, ok := recs[historyKey(ns, "web", want)]; !ok {
			t.Errorf("live revision %s dropped: %v", want, keys(recs))
		}
	}
	// Going back to an earlier template reuses its name.
	h.setImage("web", "app:v1")
	h.mustSync("web")
	if got := h.get("web").Status.UpdateRevision; got != st.CurrentRevision {
		t.Errorf("update revision %s after going back, want %s", got, st.CurrentRevision)
	}

	h.propose(state.Delete(mustKind(Resource), ns, "web", 0, ""))
	h.mustSync("web")
	if recs := h.store.ListKV(historyPrefix); len(recs) != 0 {
		t.Fatalf("records left after the set is gone: %v", keys(recs))
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestDeletingSetIsLeftAlone: a StatefulSet being deleted makes and
// deletes nothing; its status still follows its pods.
func TestDeletingSetIsLeftAlone(t *testing.T) {
	h := newHarness(t)
	set := newSet("web", 2)
	now := metav1.NewTime(t0)
	set.DeletionTimestamp = &now
	set.Finalizers = []string{metav1.FinalizerDeleteDependents}
	h.create(set)
	h.mustSync("web")
	h.expectPods("nothing made", "")
	if st := h.get("web").Status; st.ObservedGeneration != 1 || st.Replicas != 0 {
		t.Errorf("status %+v", st)
	}
}

// TestStartOrdinal: spec.ordinals.start numbers the identities.
func TestStartOrdinal(t *testing.T) {
	h := newHarness(t)
	set := newSet("web", 2)
	set.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 5}
	set.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
	h.create(set)
	h.mustSync("web")
	h.expectPods("created", "web-5 web-6")
	if l := h.pod("web-6").Labels[PodIndexLabel]; l != "6" {
		t.Errorf("pod-index %q", l)
	}
}

// TestRun: with Run, the controller follows the store's events: an
// OrderedReady set grows as its pods become ready.
func TestRun(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.sc.Run(ctx); close(done) }()
	h.create(newSet("web", 3))
	for i := range 3 {
		name := fmt.Sprintf("web-%d", i)
		waitFor(t, name, func() bool { _, ok := h.store.Get(controller.ResourcePods, ns, name); return ok })
		h.run(name, true)
	}
	waitFor(t, "status", func() bool { st := h.get("web").Status; return st.ReadyReplicas == 3 && st.CurrentReplicas == 3 })
	h.setPod("web-1", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed })
	waitFor(t, "web-1 remade", func() bool {
		o, ok := h.store.Get(controller.ResourcePods, ns, "web-1")
		return ok && o.(*corev1.Pod).Status.Phase == corev1.PodPending
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

// TestGoneSet: syncing a key whose StatefulSet is gone is success.
func TestGoneSet(t *testing.T) {
	h := newHarness(t)
	if err := h.sync("nothing"); err != nil {
		t.Fatal(err)
	}
}

func TestParentAndOrdinal(t *testing.T) {
	for _, c := range []struct {
		name, parent string
		ord          int
	}{
		{"web-0", "web", 0}, {"web-12", "web", 12}, {"my-web-3", "my-web", 3},
		{"web", "", -1}, {"web-", "", -1}, {"-1", "", -1}, {"web-01", "", -1}, {"web-x", "", -1}, {"web--1", "web-", 1},
		{"web-99999999999", "", -1},
	} {
		p, o := parentAndOrdinal(c.name)
		if p != c.parent || o != c.ord {
			t.Errorf("%q: %q %d, want %q %d", c.name, p, o, c.parent, c.ord)
		}
	}
}
