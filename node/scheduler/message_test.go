package scheduler

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The messages are compared with what kube-scheduler 1.33 writes for the
// same situations.
func TestUnschedulableMessage(t *testing.T) {
	never := corev1.PreemptNever
	tests := []struct {
		name  string
		nodes []*corev1.Node
		pods  []*corev1.Pod
		pod   *corev1.Pod
		opts  func(*Options)
		want  string
	}{
		{
			name: "resources and a taint",
			nodes: []*corev1.Node{mkNode("a", alloc("memory", "2Gi")), mkNode("b", alloc("memory", "2Gi")),
				mkNode("c", taint("dedicated", "gpu", corev1.TaintEffectNoSchedule))},
			pods: []*corev1.Pod{mkPod("x", on("a"), req("memory", "1Gi")), mkPod("y", on("b"), req("memory", "1Gi"))},
			pod:  mkPod("p", req("memory", "2Gi")),
			want: "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient memory. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.",
		},
		{
			name:  "several resources on one node count each",
			nodes: []*corev1.Node{mkNode("a", alloc("cpu", "1", "memory", "1Gi"))},
			pods:  []*corev1.Pod{mkPod("x", on("a"), req("cpu", "500m", "memory", "512Mi"))},
			pod:   mkPod("p", req("cpu", "1", "memory", "1Gi")),
			want:  "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
		},
		{
			name:  "a request above allocatable is not helped by preemption",
			nodes: []*corev1.Node{mkNode("a", alloc("cpu", "1"))},
			pods:  []*corev1.Pod{mkPod("x", on("a"), req("cpu", "500m"))},
			pod:   mkPod("p", req("cpu", "2"), prio(10)),
			want:  "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
		},
		{
			name:  "cordon, not ready, selector",
			nodes: []*corev1.Node{mkNode("a", cordoned), mkNode("b", ready(corev1.ConditionUnknown)), mkNode("c"), mkNode("d")},
			pod:   mkPod("p", nodeSel("disk", "ssd")),
			want:  "0/4 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.",
		},
		{
			name:  "ports and pod count",
			nodes: []*corev1.Node{mkNode("a"), mkNode("b", alloc("pods", "1"))},
			pods:  []*corev1.Pod{mkPod("x", on("a"), hostPortOpt("", "", 80)), mkPod("y", on("b"))},
			pod:   mkPod("p", hostPortOpt("", "", 80)),
			want:  "0/2 nodes are available: 1 Too many pods, 1 node(s) didn't have free ports for the requested pod ports. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.",
		},
		{
			name:  "affinity rules",
			nodes: []*corev1.Node{mkNode("a", zone("z")), mkNode("b", zone("z")), mkNode("c")},
			pods:  []*corev1.Pod{mkPod("x", on("a"), plabel("app", "db")), mkPod("y", on("b"), podAntiAffinity(podTerm(corev1.LabelHostname, "app", "web")))},
			pod:   mkPod("p", plabel("app", "web"), podAntiAffinity(podTerm(corev1.LabelHostname, "app", "db")), podAffinity(podTerm(corev1.LabelTopologyZone, "app", "db"))),
			want:  "0/3 nodes are available: 1 node(s) didn't match pod affinity rules, 1 node(s) didn't match pod anti-affinity rules, 1 node(s) didn't satisfy existing pods anti-affinity rules. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.",
		},
		{
			name:  "spread constraints",
			nodes: []*corev1.Node{mkNode("a", zone("x")), mkNode("b", zone("y")), mkNode("c")},
			pods:  []*corev1.Pod{mkPod("w", on("a"), plabel("app", "web"))},
			pod: mkPod("p", plabel("app", "web"), nodeSel(corev1.LabelTopologyZone, "x"),
				spread(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule, "app", "web"), spread(corev1.LabelHostname, 1, corev1.DoNotSchedule, "app", "web"),
				func(p *corev1.Pod) { // count every node, not only those matching the selector
					ignore := corev1.NodeInclusionPolicyIgnore
					for i := range p.Spec.TopologySpreadConstraints {
						p.Spec.TopologySpreadConstraints[i].NodeAffinityPolicy = &ignore
					}
				}),
			want: "0/3 nodes are available: 1 node(s) didn't match pod topology spread constraints, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.",
		},
		{
			name:  "spread constraint on a missing label",
			nodes: []*corev1.Node{mkNode("a")},
			pod:   mkPod("p", spread("rack", 1, corev1.DoNotSchedule, "app", "web")),
			want:  "0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label). preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
		},
		{
			name:  "DaemonSet pod pinned to a full node",
			nodes: []*corev1.Node{mkNode("a", alloc("cpu", "1")), mkNode("b"), mkNode("c")},
			pods:  []*corev1.Pod{mkPod("x", on("a"), req("cpu", "1"))},
			pod:   mkPod("p", req("cpu", "100m"), requiredNode(nameIn("a"))),
			want:  "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.",
		},
		{
			name:  "preemptionPolicy Never",
			nodes: []*corev1.Node{mkNode("a", alloc("cpu", "1"))},
			pods:  []*corev1.Pod{mkPod("x", on("a"), req("cpu", "1"))},
			pod:   mkPod("p", req("cpu", "1"), prio(100), func(p *corev1.Pod) { p.Spec.PreemptionPolicy = &never }),
			want:  "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.",
		},
		{
			name:  "missing claim",
			nodes: nodes("a", "b"),
			pod:   mkPod("p", claim("data")),
			opts: func(o *Options) {
				o.Volumes = func(string, string) (*corev1.PersistentVolume, bool) { return nil, false }
			},
			want: `0/2 nodes are available: persistentvolumeclaim "data" not found. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.`,
		},
		{
			name:  "volume node affinity",
			nodes: nodes("a", "b"),
			pod:   mkPod("p", claim("data")),
			opts: func(o *Options) {
				o.Volumes = func(string, string) (*corev1.PersistentVolume, bool) {
					return &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{NodeAffinity: &corev1.VolumeNodeAffinity{
						Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{nameIn("gone")}}}}}, true
				}
			},
			want: "0/2 nodes are available: 2 node(s) had volume node affinity conflict. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.",
		},
		{
			name:  "counts sort as strings, as kube-scheduler's do",
			nodes: append(nodes("a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10"), mkNode("b", cordoned), mkNode("c", cordoned)),
			pod:   mkPod("p", requiredNode(expr(corev1.LabelHostname, corev1.NodeSelectorOpIn, "b", "c"))),
			want:  "0/12 nodes are available: 10 node(s) didn't match Pod's node affinity/selector, 2 node(s) were unschedulable. preemption: 0/12 nodes are available: 12 Preemption is not helpful for scheduling.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []func(*Options)
			if tc.opts != nil {
				opts = append(opts, tc.opts)
			}
			s := newSnap(t, tc.nodes, tc.pods, opts...)
			res, err := s.Schedule(tc.pod)
			if err != nil {
				t.Fatal(err)
			}
			if res.Scheduled() || res.Reason != ReasonUnschedulable {
				t.Fatalf("result = %+v, want unschedulable", res)
			}
			if res.Message != tc.want {
				t.Errorf("message:\n got: %s\nwant: %s", res.Message, tc.want)
			}
		})
	}
}

func TestGatedAndEmpty(t *testing.T) {
	s := newSnap(t, nodes("a"), nil)
	res, err := s.Schedule(mkPod("p", func(p *corev1.Pod) {
		p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "wait"}}
	}))
	if err != nil || res.Reason != ReasonSchedulingGated || res.Message != "Scheduling is blocked due to non-empty scheduling gates" {
		t.Errorf("gated: %+v, %v", res, err)
	}
	empty := newSnap(t, nil, nil)
	res, err = empty.Schedule(mkPod("p"))
	if err != nil || res.Reason != ReasonUnschedulable || res.Message != "no nodes available to schedule pods" {
		t.Errorf("no nodes: %+v, %v", res, err)
	}
}
