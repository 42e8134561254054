package scheduler

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// huge makes a node so large that the resource scores of small pods tie,
// leaving the decision to the score under test.
func huge(n *corev1.Node) {
	alloc("cpu", "100000", "memory", "100000Gi")(n)
}

func TestScores(t *testing.T) {
	tests := []struct {
		name  string
		nodes []*corev1.Node
		pods  []*corev1.Pod
		pod   *corev1.Pod
		want  string
	}{
		{name: "least allocated",
			nodes: nodes("a", "b"),
			pods:  []*corev1.Pod{mkPod("x", on("a"), req("cpu", "2", "memory", "4Gi"))},
			pod:   mkPod("p", req("cpu", "1", "memory", "1Gi")), want: "b"},
		{name: "balanced allocation breaks a least-allocated tie",
			nodes: nodes("a", "b"),
			pods: []*corev1.Pod{mkPod("x", on("a"), req("cpu", "2", "memory", "0")),
				mkPod("y", on("b"), req("cpu", "1", "memory", "2Gi"))},
			// Both end at 50 least-allocated; b ends balanced (cpu and memory half used).
			pod: mkPod("p", req("cpu", "1", "memory", "2Gi")), want: "b"},
		{name: "PreferNoSchedule is avoided",
			nodes: []*corev1.Node{mkNode("a", taint("k", "v", corev1.TaintEffectPreferNoSchedule)), mkNode("b")},
			pods:  []*corev1.Pod{mkPod("x", on("b"), req("cpu", "1"))},
			pod:   mkPod("p"), want: "b"},
		{name: "PreferNoSchedule tolerated",
			nodes: []*corev1.Node{mkNode("a", taint("k", "v", corev1.TaintEffectPreferNoSchedule)), mkNode("b")},
			pods:  []*corev1.Pod{mkPod("x", on("b"), req("cpu", "1"))},
			pod:   mkPod("p", tolerate("k", corev1.TolerationOpExists, "", corev1.TaintEffectPreferNoSchedule)), want: "a"},
		{name: "preferred node affinity",
			nodes: []*corev1.Node{mkNode("a"), mkNode("b", label("disk", "ssd"))},
			pods:  []*corev1.Pod{mkPod("x", on("b"), req("cpu", "1"))},
			pod:   mkPod("p", preferredNode(10, expr("disk", corev1.NodeSelectorOpIn, "ssd"))), want: "b"},
		{name: "image locality",
			nodes: []*corev1.Node{mkNode("a", huge), mkNode("b", huge, image(800*mb, "registry.example/app:1")), mkNode("c", huge)},
			pod:   mkPod("p", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "registry.example/app:1" }), want: "b"},
		{name: "image locality normalizes the implicit tag",
			nodes: []*corev1.Node{mkNode("a", huge), mkNode("b", huge, image(800*mb, "app:latest"))},
			pod:   mkPod("p", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "app" }), want: "b"},
		{name: "preferred pod affinity",
			nodes: []*corev1.Node{mkNode("a", huge), mkNode("b", huge), mkNode("c", huge)},
			pods:  []*corev1.Pod{mkPod("db", on("c"), plabel("app", "db"))},
			pod:   mkPod("p", preferredPodAffinity(50, podTerm(corev1.LabelHostname, "app", "db"), false)), want: "c"},
		{name: "preferred pod anti-affinity",
			nodes: []*corev1.Node{mkNode("a", huge), mkNode("b", huge)},
			pods:  []*corev1.Pod{mkPod("db", on("a"), plabel("app", "db")), mkPod("x", on("b"), req("cpu", "100"))},
			pod:   mkPod("p", preferredPodAffinity(100, podTerm(corev1.LabelHostname, "app", "db"), true)), want: "b"},
		{name: "a placed pod's preferred affinity attracts the pod (symmetry)",
			nodes: []*corev1.Node{mkNode("a", huge), mkNode("b", huge)},
			pods: []*corev1.Pod{mkPod("friend", on("b"), preferredPodAffinity(100, podTerm(corev1.LabelHostname, "app", "web"), false)),
				mkPod("x", on("b"), req("cpu", "100"))},
			pod: mkPod("p", plabel("app", "web")), want: "b"},
		{name: "a placed pod's required affinity attracts the pod",
			nodes: []*corev1.Node{mkNode("a", huge), mkNode("b", huge)},
			pods: []*corev1.Pod{mkPod("friend", on("b"), podAffinity(podTerm(corev1.LabelHostname, "app", "web"))),
				mkPod("x", on("b"), req("cpu", "100"))},
			pod: mkPod("p", plabel("app", "web")), want: "b"},
		{name: "ScheduleAnyway spread",
			nodes: []*corev1.Node{mkNode("a1", huge, zone("a")), mkNode("a2", huge, zone("a")), mkNode("b1", huge, zone("b"))},
			pods: []*corev1.Pod{mkPod("w1", on("a1"), plabel("app", "web")), mkPod("w2", on("a2"), plabel("app", "web")),
				mkPod("x", on("b1"), req("cpu", "100"))},
			pod: mkPod("p", plabel("app", "web"), spread(corev1.LabelTopologyZone, 1, corev1.ScheduleAnyway, "app", "web")), want: "b1"},
		{name: "pods of one controller spread over zones",
			nodes: []*corev1.Node{mkNode("a1", huge, zone("a")), mkNode("a2", huge, zone("a")), mkNode("b1", huge, zone("b"))},
			pods: []*corev1.Pod{mkPod("r1", on("a1"), owner("rs")), mkPod("r2", on("b1"), owner("rs")),
				mkPod("x", on("a2"), req("cpu", "100"))},
			pod: mkPod("p", owner("rs")), want: "a2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(0); seed < 8; seed++ { // ties would show up as flapping
				s := newSnap(t, tc.nodes, tc.pods, func(o *Options) { o.Seed = seed })
				res, err := s.Schedule(tc.pod)
				if err != nil {
					t.Fatal(err)
				}
				if res.NodeName != tc.want {
					t.Fatalf("seed %d: scheduled on %q, want %q (%+v)", seed, res.NodeName, tc.want, res)
				}
			}
		})
	}
}

// TestOwnerSpread schedules the replicas of one controller on identical
// nodes: they end up evenly spread over nodes and zones.
func TestOwnerSpread(t *testing.T) {
	var ns []*corev1.Node
	for i := range 6 {
		ns = append(ns, mkNode(fmt.Sprintf("n%d", i), huge, zone(fmt.Sprintf("z%d", i%3))))
	}
	s := newSnap(t, ns, nil)
	for i := range 12 {
		res := schedule(t, s, mkPod(fmt.Sprintf("p%d", i), owner("rs")))
		if !res.Scheduled() {
			t.Fatalf("p%d not scheduled: %s", i, res.Message)
		}
	}
	oc := s.owners["rs"]
	for _, n := range s.nodes {
		if got := oc.perNode[n.idx]; got != 2 {
			t.Errorf("%s runs %d replicas, want 2", n.name, got)
		}
	}
	for z, got := range oc.perZone {
		if got != 4 {
			t.Errorf("zone %s runs %d replicas, want 4", s.zones[z], got)
		}
	}
}

func TestSampling(t *testing.T) {
	for _, tc := range []struct{ pct, nodes, want int }{
		{0, 50, 50}, {0, 100, 100}, {0, 200, 100}, {0, 1000, 420}, {0, 5000, 500}, {0, 10000, 500}, {30, 1000, 300}, {1, 1000, 100},
	} {
		if got := numFeasibleNodesToFind(int32(tc.pct), tc.nodes); got != tc.want {
			t.Errorf("numFeasibleNodesToFind(%d, %d) = %d, want %d", tc.pct, tc.nodes, got, tc.want)
		}
	}
	// With 1000 nodes and 42% to find, successive pods start where the
	// previous stopped.
	var ns []*corev1.Node
	for i := range 1000 {
		ns = append(ns, mkNode(fmt.Sprintf("n%04d", i)))
	}
	s := newSnap(t, ns, nil)
	res, err := s.Schedule(mkPod("p"))
	if err != nil || res.FeasibleNodes != 420 || res.EvaluatedNodes != 420 {
		t.Fatalf("first pod: %+v, %v", res, err)
	}
	if s.next != 420 {
		t.Errorf("next start = %d, want 420", s.next)
	}
}
