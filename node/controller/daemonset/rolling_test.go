package daemonset

import (
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/node/controller"
)

// rolloutWatch checks a rollout's invariants after every step: no node
// has more than maxPods live pods of the DaemonSet, at least minAvailable
// nodes have an available one. It records the lowest availability seen.
type rolloutWatch struct {
	h            *harness
	name         string
	maxPods      int
	minAvailable int
	lowest       int
	doubled      int // most nodes seen with two live pods at once
}

func (w *rolloutWatch) check(step string) {
	w.h.t.Helper()
	available, doubled := 0, 0
	for node, pods := range w.h.live(w.name) {
		if len(pods) > w.maxPods {
			w.h.t.Fatalf("%s: node %s has %d live pods", step, node, len(pods))
		}
		if len(pods) == 2 {
			doubled++
		}
		for _, p := range pods {
			if controller.IsPodAvailable(p, 0, w.h.clock.Now()) {
				available++
				break
			}
		}
	}
	if available < w.minAvailable {
		w.h.t.Fatalf("%s: %d nodes with an available pod, want at least %d", step, available, w.minAvailable)
	}
	w.lowest = min(w.lowest, available)
	w.doubled = max(w.doubled, doubled)
}

// assertRolledOut checks that every node runs one up-to-date, available
// pod and the status says so.
func (h *harness) assertRolledOut(name string, nodes int) {
	h.t.Helper()
	ds := h.get(name)
	hash := computeHash(&ds.Spec.Template, nil)
	live := h.live(name)
	if len(live) != nodes {
		h.t.Fatalf("pods on %d nodes, want %d", len(live), nodes)
	}
	for node, pods := range live {
		if len(pods) != 1 || pods[0].Labels[HashLabel] != hash || pods[0].Spec.Containers[0].Image != ds.Spec.Template.Spec.Containers[0].Image {
			h.t.Fatalf("node %s: pods %v not updated", node, pods)
		}
	}
	if done, msg := rolloutStatus(ds); !done {
		h.t.Fatalf("rollout status: %s (%+v)", msg, ds.Status)
	}
	n := int32(nodes)
	if st := ds.Status; st.DesiredNumberScheduled != n || st.UpdatedNumberScheduled != n || st.NumberAvailable != n || st.NumberUnavailable != 0 {
		h.t.Fatalf("status %+v", st)
	}
}

// TestRollingUpdateMaxUnavailable: an update replaces pods node by node,
// never leaving more than maxUnavailable nodes without an available pod,
// and using the whole budget.
func TestRollingUpdateMaxUnavailable(t *testing.T) {
	for _, tc := range []struct {
		maxUnavailable intstr.IntOrString
		want           int // resolved against 5 nodes
	}{
		{intstr.FromInt32(1), 1},
		{intstr.FromInt32(2), 2},
		{intstr.FromString("40%"), 2},
		{intstr.FromString("1%"), 1}, // rounded up
		{intstr.FromInt32(0), 1},     // both 0: one at a time anyway
		{intstr.FromInt32(10), 5},
	} {
		t.Run(tc.maxUnavailable.String(), func(t *testing.T) {
			h := newHarness(t)
			h.addNodes("n1", "n2", "n3", "n4", "n5")
			ds := newDS("agent")
			ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = &tc.maxUnavailable
			h.create(ds)
			h.converge("agent", nil)
			h.assertRolledOut("agent", 5)

			h.setImage("agent", "agent:2")
			w := &rolloutWatch{h: h, name: "agent", maxPods: 1, minAvailable: 5 - tc.want, lowest: 5}
			h.converge("agent", w.check)
			h.assertRolledOut("agent", 5)
			if w.lowest != 5-tc.want {
				t.Errorf("lowest availability %d, want %d (the budget used in full)", w.lowest, 5-tc.want)
			}
			if n := h.created.Load(); n != 10 {
				t.Errorf("%d pods created, want 10", n)
			}
			if l := h.pods()[0].Labels[TemplateGenerationLabel]; l != "2" {
				t.Errorf("pod-template-generation %q, want 2", l)
			}
		})
	}
}

// TestRollingUpdateBrokenOldPods: old pods that are not available are
// replaced at once, but count as unavailable: available ones are replaced
// only within what is left of the budget.
func TestRollingUpdateBrokenOldPods(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2", "n3", "n4")
	h.create(newDS("agent"))
	h.converge("agent", nil)
	broken := h.live("agent")["n2"][0]
	h.setPod(broken.Name, running(false, h.clock.Now()))

	h.setImage("agent", "agent:2")
	h.mustSync("agent")
	live := h.live("agent")
	if len(live["n2"]) != 0 {
		t.Fatal("the unavailable old pod was not replaced at once")
	}
	if len(live) != 3 {
		t.Fatalf("an available old pod was deleted beside the broken one: live on %v", h.liveNodes("agent"))
	}
	w := &rolloutWatch{h: h, name: "agent", maxPods: 1, minAvailable: 3, lowest: 4}
	h.converge("agent", w.check)
	h.assertRolledOut("agent", 4)
}

// TestRollingUpdateWaitsForNewPods: a new pod that never becomes ready
// holds the rollout (maxUnavailable 1: one node down, the rest untouched),
// and fixing the template resumes it.
func TestRollingUpdateWaitsForNewPods(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2", "n3")
	h.create(newDS("agent"))
	h.converge("agent", nil)
	h.setImage("agent", badImage)
	w := &rolloutWatch{h: h, name: "agent", maxPods: 1, minAvailable: 2, lowest: 3}
	h.converge("agent", w.check)
	bad := 0
	for _, pods := range h.live("agent") {
		if pods[0].Spec.Containers[0].Image == badImage {
			bad++
		}
	}
	if bad != 1 {
		t.Fatalf("%d nodes run the broken image, want 1", bad)
	}
	if done, msg := rolloutStatus(h.get("agent")); done || msg != "1 out of 3 new pods have been updated" {
		t.Errorf("rollout status %q", msg)
	}
	h.setImage("agent", "agent:3")
	h.converge("agent", w.check)
	h.assertRolledOut("agent", 3)
}

// TestRollingUpdateSurge: with maxSurge the new pod starts beside the old
// one, which goes once the new one is available; availability never drops.
func TestRollingUpdateSurge(t *testing.T) {
	for _, tc := range []struct {
		maxSurge intstr.IntOrString
		want     int // resolved against 4 nodes
	}{
		{intstr.FromInt32(1), 1},
		{intstr.FromString("50%"), 2},
	} {
		t.Run(tc.maxSurge.String(), func(t *testing.T) {
			h := newHarness(t)
			h.addNodes("n1", "n2", "n3", "n4")
			ds := newDS("agent")
			ds.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateDaemonSet{
				MaxSurge: &tc.maxSurge, MaxUnavailable: ptr(intstr.FromInt32(0)),
			}
			h.create(ds)
			h.converge("agent", nil)
			h.setImage("agent", "agent:2")
			w := &rolloutWatch{h: h, name: "agent", maxPods: 2, minAvailable: 4, lowest: 4}
			h.converge("agent", w.check)
			h.assertRolledOut("agent", 4)
			if w.doubled != tc.want {
				t.Errorf("at most %d nodes surged at once, want %d", w.doubled, tc.want)
			}
			if n := h.created.Load(); n != 8 {
				t.Errorf("%d pods created, want 8", n)
			}
		})
	}
}

// TestOnDelete: a template change replaces nothing by itself; a pod the
// user deletes comes back from the new template.
func TestOnDelete(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2", "n3")
	ds := newDS("agent")
	ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}
	h.create(ds)
	h.converge("agent", nil)
	before := h.live("agent")
	h.setImage("agent", "agent:2")
	h.converge("agent", nil)
	for node, pods := range h.live("agent") {
		if len(pods) != 1 || pods[0].UID != before[node][0].UID {
			t.Fatalf("node %s: pod replaced under OnDelete", node)
		}
	}
	if st := h.get("agent").Status; st.UpdatedNumberScheduled != 0 || st.NumberAvailable != 3 || st.ObservedGeneration != 2 {
		t.Fatalf("status %+v", st)
	}
	// The user deletes n2's pod (gracefully, as the API does).
	if err := controller.DeletePod(h.ctx, h.c, before["n2"][0]); err != nil {
		t.Fatal(err)
	}
	h.converge("agent", nil)
	p := h.live("agent")["n2"][0]
	if p.Spec.Containers[0].Image != "agent:2" || p.Labels[HashLabel] != computeHash(&h.get("agent").Spec.Template, nil) {
		t.Fatalf("replacement %s runs %s, labels %v", p.Name, p.Spec.Containers[0].Image, p.Labels)
	}
	if st := h.get("agent").Status; st.UpdatedNumberScheduled != 1 || st.NumberAvailable != 3 {
		t.Fatalf("status %+v", st)
	}
}

// TestLeaderChange: a fresh controller on the same store (a new leader)
// creates nothing for a settled DaemonSet and finishes a rollout the old
// one started, within the budget and without duplicates.
func TestLeaderChange(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2", "n3", "n4", "n5", "n6")
	ds := newDS("agent")
	ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromInt32(2))
	h.create(ds)
	h.converge("agent", nil)
	h.newController()
	h.mustSync("agent")
	if n := h.created.Load(); n != 6 {
		t.Fatalf("%d pods created after the leader change, want the 6 of before", n)
	}

	h.setImage("agent", "agent:2")
	w := &rolloutWatch{h: h, name: "agent", maxPods: 1, minAvailable: 4, lowest: 6}
	// The old leader deletes two old pods, their agents finish them, it
	// creates the replacements, and then it is gone.
	h.mustSync("agent")
	w.check("old leader: first deletions")
	h.kubelet()
	h.mustSync("agent")
	w.check("old leader: replacements")
	for i := range 3 {
		h.newController()
		h.mustSync("agent")
		w.check(fmt.Sprintf("leader %d", i))
		h.schedule()
		h.kubelet()
	}
	h.converge("agent", w.check)
	h.assertRolledOut("agent", 6)
	if n := h.created.Load(); n != 12 {
		t.Errorf("%d pods created in all, want 12", n)
	}
}

// TestNodeJoinsDuringRollout: a node that joins mid-rollout gets a pod of
// the new template and the rollout completes.
func TestNodeJoinsDuringRollout(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2", "n3")
	h.create(newDS("agent"))
	h.converge("agent", nil)
	h.setImage("agent", "agent:2")
	h.mustSync("agent")
	h.addNode(newNode("n4", nil))
	h.mustSync("agent")
	if p := h.live("agent")["n4"]; len(p) != 1 || p[0].Spec.Containers[0].Image != "agent:2" {
		t.Fatalf("n4 pods %v", p)
	}
	h.converge("agent", nil)
	h.assertRolledOut("agent", 4)
	// Taint-evicted nodes leave the rollout too.
	h.updateNode("n4", func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: "gone", Effect: corev1.TaintEffectNoExecute}}
	})
	h.converge("agent", nil)
	h.assertRolledOut("agent", 3)
}

// TestRolloutLeavesNodesThatOnlyKeepTheirPod: a node that is down keeps
// its old pod through a rollout (deleting it would never finish), the
// rollout completes on the others, and the node's pod is updated once it
// is back.
func TestRolloutLeavesNodesThatOnlyKeepTheirPod(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2", "n3")
	h.create(newDS("agent"))
	h.converge("agent", nil)
	old := h.live("agent")["n3"][0]
	h.down = map[string]bool{"n3": true}
	h.updateNode("n3", func(n *corev1.Node) {
		n.Status.Conditions[0].Status = corev1.ConditionUnknown
		n.Spec.Taints = []corev1.Taint{{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute}}
	})
	h.setImage("agent", "agent:2")
	h.converge("agent", nil)
	if p := h.live("agent")["n3"]; len(p) != 1 || p[0].UID != old.UID {
		t.Fatalf("n3 pods %v, want the old pod kept", p)
	}
	ds := h.get("agent")
	if done, msg := rolloutStatus(ds); !done {
		t.Fatalf("rollout status: %s", msg)
	}
	if st := ds.Status; st.DesiredNumberScheduled != 2 || st.UpdatedNumberScheduled != 2 || st.NumberMisscheduled != 1 || st.CurrentNumberScheduled != 2 {
		t.Fatalf("status %+v", st)
	}

	h.down = nil
	h.updateNode("n3", func(n *corev1.Node) {
		n.Status.Conditions[0].Status = corev1.ConditionTrue
		n.Spec.Taints = nil
	})
	h.converge("agent", nil)
	h.assertRolledOut("agent", 3)
}
