package daemonset

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestVerdict: shouldRun and shouldContinue for each kind of node, as
// Kubernetes' nodeShouldRunDaemonPod gives them.
func TestVerdict(t *testing.T) {
	ds := newDS("agent")
	ds.Spec.Template.Spec.NodeSelector = map[string]string{"role": "edge"}
	p := newPlacement(ds)
	edge := func(mutate func(n *corev1.Node)) *corev1.Node {
		n := newNode("n", map[string]string{"role": "edge"})
		if mutate != nil {
			mutate(n)
		}
		return n
	}
	taint := func(effect corev1.TaintEffect) func(n *corev1.Node) {
		return func(n *corev1.Node) { n.Spec.Taints = []corev1.Taint{{Key: "k", Value: "v", Effect: effect}} }
	}
	for _, tc := range []struct {
		name string
		node *corev1.Node
		want verdict
	}{
		{"eligible", edge(nil), verdict{true, true}},
		{"selector mismatch", newNode("n", nil), verdict{}},
		{"selector mismatch beats taints", func() *corev1.Node { n := newNode("n", nil); taint(corev1.TaintEffectNoSchedule)(n); return n }(), verdict{}},
		{"NoSchedule: keep, do not add", edge(taint(corev1.TaintEffectNoSchedule)), verdict{false, true}},
		{"NoExecute: evict", edge(taint(corev1.TaintEffectNoExecute)), verdict{}},
		{"PreferNoSchedule: no matter", edge(taint(corev1.TaintEffectPreferNoSchedule)), verdict{true, true}},
		{"not ready: keep, do not add", edge(func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }), verdict{false, true}},
		{"unreachable with its NoExecute taint: keep", edge(func(n *corev1.Node) {
			n.Status.Conditions[0].Status = corev1.ConditionUnknown
			n.Spec.Taints = []corev1.Taint{{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute}}
		}), verdict{false, true}},
		{"cordoned", edge(func(n *corev1.Node) { n.Spec.Unschedulable = true }), verdict{true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.verdict(tc.node)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("verdict %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestAddDaemonTolerations: the daemon tolerations are added once; one
// the template has already is replaced in place; the template's slice is
// not written to.
func TestAddDaemonTolerations(t *testing.T) {
	own := []corev1.Toleration{
		{Key: "dedicated", Operator: corev1.TolerationOpExists},
		{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	}
	saved := append([]corev1.Toleration(nil), own...)
	spec := corev1.PodSpec{Tolerations: own}
	addDaemonTolerations(&spec)
	if !reflect.DeepEqual(own, saved) {
		t.Fatal("the template's tolerations were changed")
	}
	if len(spec.Tolerations) != 7 || spec.Tolerations[0].Key != "dedicated" || spec.Tolerations[1].Key != corev1.TaintNodeUnschedulable {
		t.Fatalf("tolerations %+v", spec.Tolerations)
	}
	again := spec
	addDaemonTolerations(&again)
	if !reflect.DeepEqual(again.Tolerations, spec.Tolerations) {
		t.Fatal("adding twice changed the tolerations")
	}
	hostNet := corev1.PodSpec{HostNetwork: true}
	addDaemonTolerations(&hostNet)
	if last := hostNet.Tolerations[len(hostNet.Tolerations)-1]; len(hostNet.Tolerations) != 7 || last.Key != corev1.TaintNodeNetworkUnavailable {
		t.Fatalf("hostNetwork tolerations %+v", hostNet.Tolerations)
	}
}

// TestPinToNode: the required node affinity becomes the single name term;
// preferred terms and pod affinity stay; targetNode reads it back.
func TestPinToNode(t *testing.T) {
	preferred := []corev1.PreferredSchedulingTerm{{Weight: 1, Preference: corev1.NodeSelectorTerm{
		MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "fast", Operator: corev1.NodeSelectorOpExists}},
	}}}
	podAff := &corev1.PodAffinity{}
	spec := corev1.PodSpec{Affinity: &corev1.Affinity{
		PodAffinity: podAff,
		NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{
				{MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"a", "b"}}}},
				{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"z"}}}},
			}},
			PreferredDuringSchedulingIgnoredDuringExecution: preferred,
		},
	}}
	pinToNode(&spec, "b")
	terms := spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) != 1 || len(terms[0].MatchExpressions) != 0 || !reflect.DeepEqual(terms[0].MatchFields,
		[]corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"b"}}}) {
		t.Fatalf("terms %+v", terms)
	}
	if !reflect.DeepEqual(spec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution, preferred) || spec.Affinity.PodAffinity != podAff {
		t.Fatal("the rest of the affinity was lost")
	}
	if n, ok := targetNode(&corev1.Pod{Spec: spec}); !ok || n != "b" {
		t.Fatalf("targetNode %q %v", n, ok)
	}
	var empty corev1.PodSpec
	pinToNode(&empty, "c")
	if n, ok := targetNode(&corev1.Pod{Spec: empty}); !ok || n != "c" {
		t.Fatalf("targetNode of a pinned bare spec %q %v", n, ok)
	}
	if n, ok := targetNode(&corev1.Pod{Spec: corev1.PodSpec{NodeName: "d", Affinity: spec.Affinity}}); !ok || n != "d" {
		t.Fatalf("targetNode of a bound pod %q %v", n, ok)
	}
	if _, ok := targetNode(&corev1.Pod{}); ok {
		t.Fatal("a pod naming no node has a target")
	}
}
