package daemonset

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/deployment"
	"github.com/shoal-dev/shoal/node/state"
)

// TestPodOnEveryReadyNode: a new DaemonSet gets one pod per Ready node,
// made as Kubernetes makes them — unbound, pinned to its node by node
// affinity, with the daemon tolerations and revision labels — and the
// scheduler puts each on its node.
func TestPodOnEveryReadyNode(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2", "n3")
	notReady := newNode("n4", nil)
	notReady.Status.Conditions[0].Status = corev1.ConditionFalse
	h.addNode(notReady)
	ds := newDS("agent")
	ds.Spec.Template.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "x", Effect: corev1.TaintEffectNoSchedule}}
	h.create(ds)
	h.mustSync("agent")

	if got := h.liveNodes("agent"); !reflect.DeepEqual(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("pods on %v, want n1 n2 n3", got)
	}
	hash := computeHash(&h.get("agent").Spec.Template, nil)
	for node, pods := range h.live("agent") {
		p := pods[0]
		if p.Spec.NodeName != "" {
			t.Errorf("pod %s is bound (%s); the scheduler binds daemon pods", p.Name, p.Spec.NodeName)
		}
		want := &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{
			{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}},
		}}}}
		if got := p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution; !reflect.DeepEqual(got, want) {
			t.Errorf("pod %s required affinity %+v, want %+v", p.Name, got, want)
		}
		if p.Labels[HashLabel] != hash || p.Labels[TemplateGenerationLabel] != "1" || p.Labels["app"] != "agent" {
			t.Errorf("pod %s labels %v", p.Name, p.Labels)
		}
		if !strings.HasPrefix(p.Name, "agent-") || p.GenerateName != "agent-" {
			t.Errorf("pod name %q generateName %q", p.Name, p.GenerateName)
		}
		refs := p.OwnerReferences
		if len(refs) != 1 || refs[0].Kind != "DaemonSet" || refs[0].APIVersion != "apps/v1" || refs[0].Name != "agent" || refs[0].Controller == nil || !*refs[0].Controller {
			t.Errorf("pod %s ownerReferences %+v", p.Name, refs)
		}
		var keys []string
		for _, tol := range p.Spec.Tolerations {
			keys = append(keys, tol.Key+":"+string(tol.Effect))
		}
		wantKeys := []string{"dedicated:NoSchedule",
			"node.kubernetes.io/not-ready:NoExecute", "node.kubernetes.io/unreachable:NoExecute",
			"node.kubernetes.io/disk-pressure:NoSchedule", "node.kubernetes.io/memory-pressure:NoSchedule",
			"node.kubernetes.io/pid-pressure:NoSchedule", "node.kubernetes.io/unschedulable:NoSchedule"}
		if !reflect.DeepEqual(keys, wantKeys) {
			t.Errorf("pod %s tolerations %v, want %v", p.Name, keys, wantKeys)
		}
	}
	// The template stored is untouched.
	if tols := h.get("agent").Spec.Template.Spec.Tolerations; len(tols) != 1 {
		t.Errorf("template tolerations changed: %v", tols)
	}

	h.schedule()
	for node, pods := range h.live("agent") {
		if pods[0].Spec.NodeName != node {
			t.Errorf("scheduler put the pod for %s on %q", node, pods[0].Spec.NodeName)
		}
	}
	h.mustSync("agent")
	st := h.get("agent").Status
	if st.DesiredNumberScheduled != 3 || st.CurrentNumberScheduled != 3 || st.NumberMisscheduled != 0 || st.NumberReady != 0 ||
		st.NumberAvailable != 0 || st.NumberUnavailable != 3 || st.UpdatedNumberScheduled != 3 || st.ObservedGeneration != 1 {
		t.Errorf("status %+v", st)
	}
	// Syncing again changes nothing.
	rev := h.store.Revision()
	h.mustSync("agent")
	h.mustSync("agent")
	if h.store.Revision() != rev || h.created.Load() != 3 {
		t.Errorf("idle syncs wrote (revision %d → %d), %d pods created", rev, h.store.Revision(), h.created.Load())
	}

	// The node that becomes Ready gets its pod.
	h.updateNode("n4", func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionTrue })
	h.mustSync("agent")
	if got := h.liveNodes("agent"); len(got) != 4 {
		t.Fatalf("pods on %v after n4 became ready", got)
	}
}

// TestEligibleNodes: nodeSelector, required node affinity, taints and
// tolerations, cordon and hostNetwork decide which nodes get a pod.
func TestEligibleNodes(t *testing.T) {
	taint := func(key string, effect corev1.TaintEffect) func(n *corev1.Node) {
		return func(n *corev1.Node) {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Value: "v", Effect: effect})
		}
	}
	for _, tc := range []struct {
		name  string
		nodes map[string]func(n *corev1.Node)
		ds    func(ds *appsv1.DaemonSet)
		want  []string
	}{
		{
			name: "nodeSelector",
			nodes: map[string]func(n *corev1.Node){
				"ssd1": func(n *corev1.Node) { n.Labels["disk"] = "ssd" }, "ssd2": func(n *corev1.Node) { n.Labels["disk"] = "ssd" },
				"hdd": func(n *corev1.Node) { n.Labels["disk"] = "hdd" }, "none": nil,
			},
			ds:   func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.NodeSelector = map[string]string{"disk": "ssd"} },
			want: []string{"ssd1", "ssd2"},
		},
		{
			name: "required node affinity, terms ORed",
			nodes: map[string]func(n *corev1.Node){
				"a": func(n *corev1.Node) { n.Labels["zone"] = "a" }, "b": func(n *corev1.Node) { n.Labels["zone"] = "b" },
				"c": func(n *corev1.Node) { n.Labels["zone"] = "c" }, "named": nil,
			},
			ds: func(ds *appsv1.DaemonSet) {
				ds.Spec.Template.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
					RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{
						{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a", "b"}}},
							MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"b"}}}},
						{MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"named"}}}},
					}},
				}}
			},
			want: []string{"a", "named"},
		},
		{
			name: "taints: NoSchedule and NoExecute repel, PreferNoSchedule does not, tolerations let through",
			nodes: map[string]func(n *corev1.Node){
				"plain": nil, "noschedule": taint("gpu", corev1.TaintEffectNoSchedule), "noexecute": taint("gpu", corev1.TaintEffectNoExecute),
				"prefer": taint("gpu", corev1.TaintEffectPreferNoSchedule), "tolerated": taint("dedicated", corev1.TaintEffectNoExecute),
			},
			ds: func(ds *appsv1.DaemonSet) {
				ds.Spec.Template.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}
			},
			want: []string{"plain", "prefer", "tolerated"},
		},
		{
			name: "cordoned and pressured nodes still run daemons; network-unavailable only with hostNetwork",
			nodes: map[string]func(n *corev1.Node){
				"cordoned": func(n *corev1.Node) { n.Spec.Unschedulable = true },
				"memory":   taint(corev1.TaintNodeMemoryPressure, corev1.TaintEffectNoSchedule),
				"network":  taint(corev1.TaintNodeNetworkUnavailable, corev1.TaintEffectNoSchedule),
			},
			want: []string{"cordoned", "memory"},
		},
		{
			name: "hostNetwork tolerates network-unavailable",
			nodes: map[string]func(n *corev1.Node){
				"network": taint(corev1.TaintNodeNetworkUnavailable, corev1.TaintEffectNoSchedule),
			},
			ds:   func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.HostNetwork = true },
			want: []string{"network"},
		},
		{
			name: "not ready or unreachable nodes get no new pod, unless the template tolerates it",
			nodes: map[string]func(n *corev1.Node){
				"ready": nil, "notready": func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse },
				"unreachable": func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionUnknown },
				"new":         func(n *corev1.Node) { n.Status.Conditions = nil },
			},
			want: []string{"ready"},
		},
		{
			name: "a full node still wants its daemon pod",
			nodes: map[string]func(n *corev1.Node){
				"full": func(n *corev1.Node) {
					n.Status.Allocatable = corev1.ResourceList{corev1.ResourcePods: resourceQuantity("0")}
				},
			},
			want: []string{"full"},
		},
		{
			name:  "template nodeName",
			nodes: map[string]func(n *corev1.Node){"x": nil, "y": nil},
			ds:    func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.NodeName = "y" },
			want:  []string{"y"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			for name, mutate := range tc.nodes {
				n := newNode(name, nil)
				if mutate != nil {
					mutate(n)
				}
				h.addNode(n)
			}
			ds := newDS("agent")
			if tc.ds != nil {
				tc.ds(ds)
			}
			h.create(ds)
			h.mustSync("agent")
			if got := h.liveNodes("agent"); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("pods on %v, want %v", got, tc.want)
			}
			if st := h.get("agent").Status; int(st.DesiredNumberScheduled) != len(tc.want) {
				t.Errorf("desiredNumberScheduled %d, want %d", st.DesiredNumberScheduled, len(tc.want))
			}
		})
	}
}

// TestNodesComeAndGo: a node that joins gets a pod; a node that stops
// matching loses its pod gracefully; a NoSchedule taint keeps the pod (and
// counts it misscheduled), a NoExecute one evicts it; a node that is
// deleted loses its pods at once, even one already terminating.
func TestNodesComeAndGo(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2", "n3", "n4")
	h.create(newDS("agent"))
	h.converge("agent", nil)
	if got := h.liveNodes("agent"); len(got) != 4 {
		t.Fatalf("pods on %v", got)
	}

	h.addNodes("n5")
	h.mustSync("agent")
	if got := h.live("agent")["n5"]; len(got) != 1 {
		t.Fatalf("the new node has %d pods", len(got))
	}

	// n1 stops matching the (new) selector: its pod goes gracefully.
	h.update("agent", func(ds *appsv1.DaemonSet) {
		ds.Spec.Template.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "retired", Operator: corev1.NodeSelectorOpDoesNotExist}},
			}}},
		}}
	})
	h.converge("agent", nil)
	h.updateNode("n1", func(n *corev1.Node) { n.Labels["retired"] = "yes" })
	h.mustSync("agent")
	old := h.live("agent")["n1"]
	if len(old) != 0 {
		t.Fatalf("n1 still has live pods %v", old)
	}
	h.kubelet()

	// NoSchedule: the pod stays but is misscheduled.
	h.updateNode("n2", func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: "maintenance", Effect: corev1.TaintEffectNoSchedule}}
	})
	h.mustSync("agent")
	if len(h.live("agent")["n2"]) != 1 {
		t.Fatal("a NoSchedule taint evicted the daemon pod")
	}
	st := h.get("agent").Status
	if st.DesiredNumberScheduled != 3 || st.NumberMisscheduled != 1 || st.CurrentNumberScheduled != 3 {
		t.Errorf("status with a misscheduled pod: %+v", st)
	}
	// NoExecute: it goes.
	h.updateNode("n2", func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: "maintenance", Effect: corev1.TaintEffectNoExecute}}
	})
	h.mustSync("agent")
	if len(h.live("agent")["n2"]) != 0 {
		t.Fatal("a NoExecute taint did not evict the daemon pod")
	}
	h.kubelet()

	// n3 is deleted: its running pod is removed at once (no grace: no
	// agent is left to finish it). n4's pod was already terminating when
	// n4 went: removed as well.
	p3 := h.live("agent")["n3"][0]
	p4 := h.live("agent")["n4"][0]
	h.setPod(p4.Name, func(p *corev1.Pod) {
		now := metav1.NewTime(t0)
		p.DeletionTimestamp = &now
		p.DeletionGracePeriodSeconds = ptr(int64(30))
	})
	h.deleteNode("n3")
	h.deleteNode("n4")
	h.mustSync("agent")
	for _, p := range []*corev1.Pod{p3, p4} {
		if _, ok := h.store.Get(controller.ResourcePods, ns, p.Name); ok {
			t.Errorf("pod %s of a deleted node still exists", p.Name)
		}
	}
	if got := h.liveNodes("agent"); !reflect.DeepEqual(got, []string{"n5"}) {
		t.Errorf("pods on %v, want n5", got)
	}
	st = h.get("agent").Status
	if st.DesiredNumberScheduled != 1 || st.CurrentNumberScheduled != 1 || st.NumberMisscheduled != 0 {
		t.Errorf("status %+v", st)
	}
}

// TestUnscheduledPodOfGoneNode: a pod created for a node that is deleted
// before the scheduler binds it goes too.
func TestUnscheduledPodOfGoneNode(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2")
	h.create(newDS("agent"))
	h.mustSync("agent")
	victim := h.live("agent")["n2"][0]
	h.deleteNode("n2")
	h.mustSync("agent")
	if _, ok := h.store.Get(controller.ResourcePods, ns, victim.Name); ok {
		t.Fatal("the pod pinned to a deleted node survived")
	}
	if got := h.liveNodes("agent"); !reflect.DeepEqual(got, []string{"n1"}) {
		t.Fatalf("pods on %v", got)
	}
}

// TestStatusAndMinReadySeconds: ready and available counts (available
// minReadySeconds after ready, with a requeue when due), numberUnavailable,
// observedGeneration, and what `kubectl rollout status` concludes.
func TestStatusAndMinReadySeconds(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2", "n3")
	ds := newDS("agent")
	ds.Spec.MinReadySeconds = 10
	h.create(ds)
	h.mustSync("agent")
	h.schedule()
	live := h.live("agent")
	h.setPod(live["n1"][0].Name, running(true, t0))
	h.setPod(live["n2"][0].Name, running(true, t0))
	h.setPod(live["n3"][0].Name, running(false, t0))
	h.mustSync("agent")
	st := h.get("agent").Status
	if st.DesiredNumberScheduled != 3 || st.CurrentNumberScheduled != 3 || st.NumberReady != 2 || st.NumberAvailable != 0 ||
		st.NumberUnavailable != 3 || st.UpdatedNumberScheduled != 3 || st.ObservedGeneration != 1 {
		t.Fatalf("status %+v", st)
	}
	if done, _ := rolloutStatus(h.get("agent")); done {
		t.Fatal("rollout status done before pods are available")
	}
	if n := h.dc.queue.Len(); n != 0 {
		t.Fatalf("queue has %d items before the delay", n)
	}
	h.clock.Step(11 * time.Second)
	waitFor(t, "the requeue after minReadySeconds", func() bool { return h.dc.queue.Len() == 1 })
	h.mustSync("agent")
	st = h.get("agent").Status
	if st.NumberAvailable != 2 || st.NumberUnavailable != 1 {
		t.Fatalf("after minReadySeconds: %+v", st)
	}
	h.setPod(live["n3"][0].Name, running(true, t0))
	h.mustSync("agent")
	if done, msg := rolloutStatus(h.get("agent")); !done {
		t.Fatalf("rollout status: %s", msg)
	}
	// A spec change is observed.
	h.update("agent", func(ds *appsv1.DaemonSet) { ds.Spec.MinReadySeconds = 0 })
	if done, _ := rolloutStatus(h.get("agent")); done {
		t.Fatal("rollout status done before the new generation is observed")
	}
	h.mustSync("agent")
	if st := h.get("agent").Status; st.ObservedGeneration != 2 || st.UpdatedNumberScheduled != 3 {
		t.Errorf("status %+v: a change outside the template keeps pods up to date", st)
	}
}

// TestFailedPodReplacedWithBackoff: a failed pod is deleted (event
// FailedDaemonPod) and replaced; a node whose pods keep failing has its
// replacements spaced out, 1 s doubling.
func TestFailedPodReplacedWithBackoff(t *testing.T) {
	h := newHarness(t)
	h.withEvents()
	h.addNodes("n1", "n2")
	h.create(newDS("agent"))
	h.converge("agent", nil)

	fail := func() *corev1.Pod {
		t.Helper()
		p := h.live("agent")["n1"][0]
		h.setPod(p.Name, func(p *corev1.Pod) { running(false, h.clock.Now())(p); p.Status.Phase = corev1.PodFailed })
		return p
	}
	gone := func(p *corev1.Pod) bool { _, ok := h.store.Get(controller.ResourcePods, ns, p.Name); return !ok }

	p := fail()
	h.mustSync("agent")
	if !gone(p) {
		t.Fatal("the failed pod was not deleted")
	}
	h.waitEvent("Warning FailedDaemonPod: Found failed daemon pod default/" + p.Name + " on node n1, will try to kill it")
	h.mustSync("agent")
	if len(h.live("agent")["n1"]) != 1 {
		t.Fatal("the failed pod was not replaced")
	}
	h.converge("agent", nil)

	// It fails again at once: in back-off (1 s) it stays, and the sync
	// asks to come back.
	p = fail()
	h.mustSync("agent")
	if gone(p) {
		t.Fatal("a pod failing again was deleted inside the back-off")
	}
	if st := h.get("agent").Status; st.NumberAvailable != 1 || st.CurrentNumberScheduled != 2 {
		t.Errorf("status with a failed pod: %+v", st)
	}
	h.clock.Step(time.Second)
	waitFor(t, "the requeue after the back-off", func() bool { return h.dc.queue.Len() == 1 })
	h.mustSync("agent")
	if !gone(p) {
		t.Fatal("the failed pod was not deleted after the back-off")
	}
	h.converge("agent", nil)
	// The next back-off is 2 s.
	p = fail()
	h.clock.Step(time.Second)
	h.mustSync("agent")
	if gone(p) {
		t.Fatal("deleted after 1 s; the back-off should have doubled to 2 s")
	}
	h.clock.Step(time.Second)
	h.mustSync("agent")
	if !gone(p) {
		t.Fatal("not deleted after 2 s")
	}
	// Other nodes are not held back.
	q := h.live("agent")["n2"][0]
	h.setPod(q.Name, func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed })
	h.mustSync("agent")
	if !gone(q) {
		t.Fatal("n2's failed pod waited for n1's back-off")
	}
	// Succeeded pods are replaced too, without back-off.
	h.converge("agent", nil)
	r := h.live("agent")["n2"][0]
	h.setPod(r.Name, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })
	h.mustSync("agent")
	if !gone(r) {
		t.Fatal("a succeeded daemon pod was not deleted")
	}
	h.converge("agent", nil)
	if got := h.liveNodes("agent"); len(got) != 2 {
		t.Fatalf("pods on %v", got)
	}
}

// TestEvents: creations and deletions are recorded on the DaemonSet.
func TestEvents(t *testing.T) {
	h := newHarness(t)
	h.withEvents()
	h.addNodes("n1")
	h.create(newDS("agent"))
	h.mustSync("agent")
	p := h.live("agent")["n1"][0]
	h.waitEvent("Normal SuccessfulCreate: Created pod: " + p.Name)
	h.updateNode("n1", func(n *corev1.Node) { n.Labels["x"] = "y" })
	h.update("agent", func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.NodeSelector = map[string]string{"x": "z"} })
	h.mustSync("agent")
	h.waitEvent("Normal SuccessfulDelete: Deleted pod: " + p.Name)

	h.prop.setHook(func(ops []state.Op) (bool, []state.Result, error) {
		if ops[0].Type == state.OpCreate && ops[0].Resource == controller.ResourcePods {
			return true, nil, &state.ResultError{Code: state.CodeInvalid, Message: "exceeded quota"}
		}
		return false, nil, nil
	})
	h.update("agent", func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.NodeSelector = nil })
	if err := h.sync("agent"); err == nil || !strings.Contains(err.Error(), "exceeded quota") {
		t.Fatalf("sync error %v, want the create failure", err)
	}
	h.waitEvent("Warning FailedCreate: Error creating: ")
}

// TestSelectingAll: an empty selector is refused with an event.
func TestSelectingAll(t *testing.T) {
	h := newHarness(t)
	h.withEvents()
	h.addNodes("n1")
	ds := newDS("agent")
	ds.Spec.Selector = &metav1.LabelSelector{}
	h.create(ds)
	h.mustSync("agent")
	if len(h.pods()) != 0 {
		t.Fatal("pods created for a DaemonSet selecting everything")
	}
	h.waitEvent("Warning SelectingAll: This daemon set is selecting all pods. A non-empty selector is required.")
}

// TestAdoptionAndExcessPods: an orphan daemon pod on a node is adopted in
// place of a new one; a second pod for one node is deleted, the oldest
// stays; a pod that no longer matches is released.
func TestAdoptionAndExcessPods(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2")
	orphan := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "orphan", Namespace: ns, UID: "pod-orphan", CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour)),
			// Left behind by an earlier DaemonSet of the same template.
			Labels: map[string]string{"app": "agent", HashLabel: computeHash(&newDS("agent").Spec.Template, nil)}},
		Spec:   corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "main", Image: "agent:1"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	h.propose(state.Create(orphan))
	h.create(newDS("agent"))
	h.mustSync("agent")
	live := h.live("agent")
	if len(live["n1"]) != 1 || live["n1"][0].Name != "orphan" || len(live["n2"]) != 1 {
		t.Fatalf("live pods %v", live)
	}
	// A duplicate for n2 (as a write in doubt might leave): the younger
	// goes.
	first := live["n2"][0]
	dup := first.DeepCopy()
	dup.Name, dup.UID, dup.ResourceVersion = "dup", "pod-dup", ""
	dup.CreationTimestamp = metav1.NewTime(t0.Add(time.Minute))
	h.propose(state.Create(dup))
	h.mustSync("agent")
	if got := h.live("agent")["n2"]; len(got) != 1 || got[0].Name != first.Name {
		t.Fatalf("n2 keeps %v, want %s", got, first.Name)
	}
	// Release: the orphan's label changes; n1 gets a pod of its own.
	h.setPod("orphan", func(p *corev1.Pod) { p.Labels["app"] = "other" })
	h.mustSync("agent")
	if refs := h.pod("orphan").OwnerReferences; len(refs) != 0 {
		t.Errorf("a pod that no longer matches was kept: %+v", refs)
	}
	if got := h.live("agent")["n1"]; len(got) != 1 || got[0].Name == "orphan" {
		t.Errorf("n1 pods %v", got)
	}
}

// TestExpectations: a create whose outcome is unknown is not repeated
// while in doubt; when it commits late, nothing is duplicated.
func TestExpectations(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1")
	h.create(newDS("agent"))
	var mu sync.Mutex
	var held [][]state.Op
	var attempts atomic.Int64
	h.prop.setHook(func(ops []state.Op) (bool, []state.Result, error) {
		if ops[0].Type != state.OpCreate || ops[0].Resource != controller.ResourcePods {
			return false, nil, nil
		}
		attempts.Add(1)
		mu.Lock()
		held = append(held, ops)
		mu.Unlock()
		return true, nil, fmt.Errorf("%w: timed out", state.ErrUnavailable)
	})
	if err := h.sync("agent"); err == nil {
		t.Fatal("sync should report the failed create")
	}
	h.prop.setHook(nil)
	for range 3 {
		h.mustSync("agent")
	}
	if n := attempts.Load(); n != 1 || len(h.pods()) != 0 {
		t.Fatalf("%d create attempts, %d pods while one is in doubt; want 1, 0", n, len(h.pods()))
	}
	if st := h.get("agent").Status; st.DesiredNumberScheduled != 1 || st.CurrentNumberScheduled != 0 {
		t.Errorf("status while in doubt %+v", st)
	}
	mu.Lock()
	for _, ops := range held {
		h.propose(ops...)
	}
	mu.Unlock()
	h.mustSync("agent")
	if got := h.live("agent")["n1"]; len(got) != 1 {
		t.Fatalf("n1 has %d pods, want 1", len(got))
	}

	// A create in doubt that never commits expires.
	h.addNodes("n2")
	h.prop.setHook(func(ops []state.Op) (bool, []state.Result, error) {
		if ops[0].Type == state.OpCreate && ops[0].Resource == controller.ResourcePods {
			return true, nil, context.DeadlineExceeded
		}
		return false, nil, nil
	})
	_ = h.sync("agent")
	h.prop.setHook(nil)
	h.mustSync("agent")
	if len(h.live("agent")["n2"]) != 0 {
		t.Fatal("created while a create is in doubt")
	}
	h.clock.Step(ExpectationsTimeout + time.Second)
	h.mustSync("agent")
	if len(h.live("agent")["n2"]) != 1 {
		t.Fatal("not created after the expectation expired")
	}
}

// TestDeletingDaemonSetIsLeftAlone: a DaemonSet being deleted creates,
// deletes and adopts nothing.
func TestDeletingDaemonSetIsLeftAlone(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1")
	ds := newDS("agent")
	now := metav1.NewTime(t0)
	ds.DeletionTimestamp = &now
	ds.Finalizers = []string{metav1.FinalizerDeleteDependents}
	h.create(ds)
	h.mustSync("agent")
	if n := len(h.pods()); n != 0 {
		t.Fatalf("%d pods created for a DaemonSet being deleted", n)
	}
	if err := h.sync("gone"); err != nil {
		t.Fatalf("syncing a DaemonSet that does not exist: %v", err)
	}
}

// TestRun: with Run, a DaemonSet gets its pods, a node that joins later
// gets one, and a deleted node's pod goes.
func TestRun(t *testing.T) {
	h := newHarness(t)
	h.addNodes("n1", "n2")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.dc.Run(ctx); close(done) }()
	h.create(newDS("agent"))
	waitFor(t, "2 pods", func() bool { return len(h.liveNodes("agent")) == 2 })
	h.addNodes("n3")
	waitFor(t, "a pod on the new node", func() bool { return len(h.live("agent")["n3"]) == 1 })
	h.deleteNode("n1")
	waitFor(t, "n1's pod gone", func() bool { return slices.Equal(h.liveNodes("agent"), []string{"n2", "n3"}) })
	waitFor(t, "status", func() bool {
		st := h.get("agent").Status
		return st.DesiredNumberScheduled == 2 && st.CurrentNumberScheduled == 2
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func resourceQuantity(s string) resource.Quantity { return resource.MustParse(s) }

// TestHashIsKubernetes: the hash label is what Kubernetes computes for the
// template (the same function as a Deployment's pod-template-hash).
func TestHashIsKubernetes(t *testing.T) {
	ds := newDS("agent")
	if a, b := computeHash(&ds.Spec.Template, nil), deployment.ComputeHash(&ds.Spec.Template, nil); a != b {
		t.Fatalf("hash %s, deployment.ComputeHash %s", a, b)
	}
	c := int32(2)
	if a, b := computeHash(&ds.Spec.Template, &c), deployment.ComputeHash(&ds.Spec.Template, &c); a != b {
		t.Fatalf("hash with collisions %s, deployment.ComputeHash %s", a, b)
	}
}
