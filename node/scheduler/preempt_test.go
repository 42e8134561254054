package scheduler

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPreemption(t *testing.T) {
	small := func(name string) *corev1.Node { return mkNode(name, alloc("cpu", "2", "memory", "4Gi", "pods", "10")) }
	cpu := func(name, node string, c string, p int32, opts ...podOpt) *corev1.Pod {
		return mkPod(name, append([]podOpt{on(node), req("cpu", c), prio(p)}, opts...)...)
	}
	tests := []struct {
		name        string
		nodes       []*corev1.Node
		pods        []*corev1.Pod
		pod         *corev1.Pod
		wantNode    string
		wantVictims []string
		wantMessage string
	}{
		{name: "lowest priority victim wins",
			nodes: []*corev1.Node{small("a"), small("b")},
			pods:  []*corev1.Pod{cpu("a1", "a", "2", 5), cpu("b1", "b", "2", 1)},
			pod:   mkPod("p", req("cpu", "1"), prio(10)), wantNode: "b", wantVictims: []string{"b1"}},
		{name: "only as many victims as needed, least important first",
			nodes: []*corev1.Node{small("a")},
			pods:  []*corev1.Pod{cpu("a1", "a", "500m", 1), cpu("a2", "a", "500m", 3), cpu("a3", "a", "1", 2)},
			pod:   mkPod("p", req("cpu", "1"), prio(10)), wantNode: "a", wantVictims: []string{"a3"}},
		{name: "fewest victims when priorities tie",
			nodes: []*corev1.Node{small("a"), small("b")},
			pods: []*corev1.Pod{cpu("a1", "a", "1", 1), cpu("a2", "a", "1", 1),
				cpu("b1", "b", "2", 1)},
			pod: mkPod("p", req("cpu", "2"), prio(10)), wantNode: "b", wantVictims: []string{"b1"}},
		{name: "lowest sum of priorities",
			nodes: []*corev1.Node{small("a"), small("b")},
			pods: []*corev1.Pod{cpu("a1", "a", "1", 3), cpu("a2", "a", "1", 3),
				cpu("b1", "b", "1", 3), cpu("b2", "b", "1", 2)},
			pod: mkPod("p", req("cpu", "2"), prio(10)), wantNode: "b", wantVictims: []string{"b1", "b2"}},
		{name: "latest start among the most important victims",
			nodes: []*corev1.Node{small("a"), small("b")},
			pods:  []*corev1.Pod{cpu("a1", "a", "2", 1, started(5)), cpu("b1", "b", "2", 1, started(10))},
			pod:   mkPod("p", req("cpu", "1"), prio(10)), wantNode: "b", wantVictims: []string{"b1"}},
		{name: "equal priority is never preempted",
			nodes:       []*corev1.Node{small("a")},
			pods:        []*corev1.Pod{cpu("a1", "a", "2", 10)},
			pod:         mkPod("p", req("cpu", "1"), prio(10)),
			wantMessage: "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."},
		{name: "evicting every lower pod is not enough",
			nodes:       []*corev1.Node{small("a")},
			pods:        []*corev1.Pod{cpu("a1", "a", "1500m", 20), cpu("a2", "a", "500m", 1)},
			pod:         mkPod("p", req("cpu", "1"), prio(10)),
			wantMessage: "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 Insufficient cpu."},
		{name: "anti-affinity victim",
			nodes: []*corev1.Node{mkNode("a"), mkNode("b")},
			pods: []*corev1.Pod{mkPod("web1", on("a"), plabel("app", "web"), prio(1)),
				mkPod("web2", on("b"), plabel("app", "web"), prio(50))},
			pod:      mkPod("p", prio(10), podAntiAffinity(podTerm(corev1.LabelHostname, "app", "web"))),
			wantNode: "a", wantVictims: []string{"web1"}},
		{name: "host port victim",
			nodes:    []*corev1.Node{mkNode("a")},
			pods:     []*corev1.Pod{mkPod("x", on("a"), hostPortOpt("", "", 80), prio(1)), mkPod("y", on("a"), prio(1))},
			pod:      mkPod("p", prio(10), hostPortOpt("", "", 80)),
			wantNode: "a", wantVictims: []string{"x"}},
		{name: "negative priorities count as lower",
			nodes: []*corev1.Node{small("a"), small("b")},
			pods: []*corev1.Pod{cpu("a1", "a", "1", -5), cpu("a2", "a", "1", -5),
				cpu("b1", "b", "2", 0)},
			pod: mkPod("p", req("cpu", "2"), prio(10)), wantNode: "a", wantVictims: []string{"a1", "a2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSnap(t, tc.nodes, tc.pods)
			res, err := s.Schedule(tc.pod)
			if err != nil {
				t.Fatal(err)
			}
			if res.Scheduled() {
				t.Fatalf("scheduled on %s, want preemption", res.NodeName)
			}
			// The first call created the counters the pod needs; a second
			// one must find the snapshot as the first left it.
			before := fingerprint(s)
			if _, err := s.Schedule(tc.pod); err != nil {
				t.Fatal(err)
			}
			if after := fingerprint(s); after != before {
				t.Errorf("the dry run changed the snapshot:\n%s\n%s", before, after)
			}
			if tc.wantMessage != "" {
				if res.Message != tc.wantMessage || res.NominatedNodeName != "" {
					t.Errorf("got %q nominated %q, want %q", res.Message, res.NominatedNodeName, tc.wantMessage)
				}
				return
			}
			var victims []string
			for _, v := range res.Victims {
				victims = append(victims, v.Name)
			}
			slices.Sort(victims)
			if res.NominatedNodeName != tc.wantNode || !slices.Equal(victims, tc.wantVictims) {
				t.Errorf("nominated %q victims %v, want %q %v (%s)", res.NominatedNodeName, victims, tc.wantNode, tc.wantVictims, res.Message)
			}
			if res.Message == "" || res.Reason != ReasonUnschedulable {
				t.Errorf("a preempting pod is still unschedulable now: %+v", res)
			}
		})
	}
}

// TestPreemptionWaitsForVictims: a pod that preempted already does not
// preempt again while its victims terminate.
func TestPreemptionWaitsForVictims(t *testing.T) {
	now := metav1.Now()
	victim := mkPod("v", on("a"), req("cpu", "4"), prio(1), func(p *corev1.Pod) {
		p.DeletionTimestamp = &now
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: corev1.PodReasonPreemptionByScheduler}}
	})
	s := newSnap(t, nodes("a"), []*corev1.Pod{victim, mkPod("w", on("a"), prio(1))})
	pod := mkPod("p", req("cpu", "1"), prio(10), func(p *corev1.Pod) { p.Status.NominatedNodeName = "a" })
	res, err := s.Schedule(pod)
	if err != nil {
		t.Fatal(err)
	}
	want := "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to a terminating pod on the nominated node."
	if res.Message != want || len(res.Victims) != 0 {
		t.Errorf("got %q victims %d, want %q", res.Message, len(res.Victims), want)
	}
}

// fingerprint renders what the filters read of a snapshot, to check that a
// dry run or an Assume/Forget pair leaves it as it was.
func fingerprint(s *Snapshot) string {
	out := ""
	for _, n := range s.nodes {
		names := make([]string, 0, len(n.pods))
		for _, p := range n.pods {
			names = append(names, p.key)
		}
		slices.Sort(names)
		out += n.name + ": " + formatRes(&n.requested) + " nz " + itoa(n.nonZeroCPU) + "/" + itoa(n.nonZeroMem) +
			" ports " + itoa(int64(len(n.ports))) + " pods " + stringsJoin(names) + "\n"
	}
	for _, k := range sortedKeys(s.counters) {
		c := s.counters[k]
		out += "counter " + k + ": " + formatCounts(c.perNode) + "\n"
		doms := slices.Clone(c.domains)
		slices.SortFunc(doms, func(a, b *domainCounts) int { return strings.Compare(a.topo.key, b.topo.key) })
		for _, dc := range doms {
			out += "  " + dc.topo.key + " " + formatDense(dc.topo, dc.counts) + " nonzero " + itoa(int64(dc.nonzero)) + "\n"
		}
	}
	for _, k := range sortedKeys(s.groups) {
		if g := s.groups[k]; g.refs > 0 { // empty groups stay once created
			out += "group " + k + ": " + formatDense(g.topo, g.counts) + " refs " + itoa(int64(g.refs)) + "\n"
		}
	}
	for _, k := range sortedKeys(s.owners) {
		if len(s.owners[k].perNode) > 0 {
			out += "owner " + string(k) + ": " + formatCounts(s.owners[k].perNode) + " zones " + formatSlice(s.owners[k].perZone) + "\n"
		}
	}
	return out
}
