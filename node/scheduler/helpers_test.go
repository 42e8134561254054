package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Builders for the objects the tests feed the scheduler.

type nodeOpt func(*corev1.Node)

func mkNode(name string, opts ...nodeOpt) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("4"),
				corev1.ResourceMemory:           resource.MustParse("8Gi"),
				corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
				corev1.ResourcePods:             resource.MustParse("110"),
			},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func zone(z string) nodeOpt { return label(corev1.LabelTopologyZone, z) }

func label(k, v string) nodeOpt { return func(n *corev1.Node) { n.Labels[k] = v } }

func taint(k, v string, e corev1.TaintEffect) nodeOpt {
	return func(n *corev1.Node) { n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: k, Value: v, Effect: e}) }
}

func cordoned(n *corev1.Node) { n.Spec.Unschedulable = true }

func ready(s corev1.ConditionStatus) nodeOpt {
	return func(n *corev1.Node) { n.Status.Conditions[0].Status = s }
}

func alloc(kv ...string) nodeOpt {
	return func(n *corev1.Node) {
		for i := 0; i < len(kv); i += 2 {
			n.Status.Allocatable[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
	}
}

func image(size int64, names ...string) nodeOpt {
	return func(n *corev1.Node) {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{Names: names, SizeBytes: size})
	}
}

type podOpt func(*corev1.Pod)

var podCreated = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// mkPod makes a pod "ns/name" (or "name" in namespace default) with one
// container requesting nothing.
func mkPod(name string, opts ...podOpt) *corev1.Pod {
	ns := "default"
	for i := range name {
		if name[i] == '/' {
			ns, name = name[:i], name[i+1:]
			break
		}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(ns + "-" + name),
			Labels: map[string]string{}, CreationTimestamp: metav1.NewTime(podCreated)},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1"}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// req sets the first container's requests: "cpu", "500m", "memory", "1Gi"...
func req(kv ...string) podOpt {
	return func(p *corev1.Pod) { p.Spec.Containers[0].Resources.Requests = resList(kv...) }
}

func resList(kv ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

func on(node string) podOpt { return func(p *corev1.Pod) { p.Spec.NodeName = node } }

func plabel(k, v string) podOpt { return func(p *corev1.Pod) { p.Labels[k] = v } }

func prio(v int32) podOpt { return func(p *corev1.Pod) { p.Spec.Priority = &v } }

func started(minutes int) podOpt {
	return func(p *corev1.Pod) {
		t := metav1.NewTime(podCreated.Add(time.Duration(minutes) * time.Minute))
		p.Status.StartTime = &t
	}
}

func owner(uid string) podOpt {
	return func(p *corev1.Pod) {
		yes := true
		p.OwnerReferences = append(p.OwnerReferences, metav1.OwnerReference{
			APIVersion: "apps/v1", Kind: "ReplicaSet", Name: uid, UID: types.UID(uid), Controller: &yes})
	}
}

func tolerate(k string, op corev1.TolerationOperator, v string, e corev1.TaintEffect) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, corev1.Toleration{Key: k, Operator: op, Value: v, Effect: e})
	}
}

func hostPortOpt(proto corev1.Protocol, ip string, port int32) podOpt {
	return func(p *corev1.Pod) {
		c := &p.Spec.Containers[0]
		c.Ports = append(c.Ports, corev1.ContainerPort{ContainerPort: port, HostPort: port, Protocol: proto, HostIP: ip})
	}
}

func nodeSel(kv ...string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.NodeSelector = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			p.Spec.NodeSelector[kv[i]] = kv[i+1]
		}
	}
}

func affinity(p *corev1.Pod) *corev1.Affinity {
	if p.Spec.Affinity == nil {
		p.Spec.Affinity = &corev1.Affinity{}
	}
	return p.Spec.Affinity
}

func requiredNode(terms ...corev1.NodeSelectorTerm) podOpt {
	return func(p *corev1.Pod) {
		a := affinity(p)
		a.NodeAffinity = &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}
	}
}

func preferredNode(w int32, term corev1.NodeSelectorTerm) podOpt {
	return func(p *corev1.Pod) {
		a := affinity(p)
		if a.NodeAffinity == nil {
			a.NodeAffinity = &corev1.NodeAffinity{}
		}
		a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution = append(
			a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution, corev1.PreferredSchedulingTerm{Weight: w, Preference: term})
	}
}

func expr(key string, op corev1.NodeSelectorOperator, values ...string) corev1.NodeSelectorTerm {
	return corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func nameIn(names ...string) corev1.NodeSelectorTerm {
	return corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: names}}}
}

func podTerm(topoKey string, kv ...string) corev1.PodAffinityTerm {
	ml := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		ml[kv[i]] = kv[i+1]
	}
	return corev1.PodAffinityTerm{TopologyKey: topoKey, LabelSelector: &metav1.LabelSelector{MatchLabels: ml}}
}

func podAffinity(t corev1.PodAffinityTerm) podOpt {
	return func(p *corev1.Pod) {
		a := affinity(p)
		if a.PodAffinity == nil {
			a.PodAffinity = &corev1.PodAffinity{}
		}
		a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution = append(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution, t)
	}
}

func podAntiAffinity(t corev1.PodAffinityTerm) podOpt {
	return func(p *corev1.Pod) {
		a := affinity(p)
		if a.PodAntiAffinity == nil {
			a.PodAntiAffinity = &corev1.PodAntiAffinity{}
		}
		a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution = append(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution, t)
	}
}

func preferredPodAffinity(w int32, t corev1.PodAffinityTerm, anti bool) podOpt {
	return func(p *corev1.Pod) {
		a := affinity(p)
		wt := corev1.WeightedPodAffinityTerm{Weight: w, PodAffinityTerm: t}
		if anti {
			if a.PodAntiAffinity == nil {
				a.PodAntiAffinity = &corev1.PodAntiAffinity{}
			}
			a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution = append(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, wt)
			return
		}
		if a.PodAffinity == nil {
			a.PodAffinity = &corev1.PodAffinity{}
		}
		a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution = append(a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution, wt)
	}
}

func spread(key string, maxSkew int32, when corev1.UnsatisfiableConstraintAction, kv ...string) podOpt {
	return func(p *corev1.Pod) {
		ml := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			ml[kv[i]] = kv[i+1]
		}
		p.Spec.TopologySpreadConstraints = append(p.Spec.TopologySpreadConstraints, corev1.TopologySpreadConstraint{
			MaxSkew: maxSkew, TopologyKey: key, WhenUnsatisfiable: when, LabelSelector: &metav1.LabelSelector{MatchLabels: ml}})
	}
}

func claim(name string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: name,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}})
	}
}

func newSnap(t testing.TB, nodes []*corev1.Node, pods []*corev1.Pod, opts ...func(*Options)) *Snapshot {
	t.Helper()
	var o Options
	for _, f := range opts {
		f(&o)
	}
	s, err := NewSnapshot(nodes, pods, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// feasible returns the names of the nodes the filters accept for pod,
// sorted, by running every filter on every node.
func feasible(t testing.TB, s *Snapshot, pod *corev1.Pod) []string {
	t.Helper()
	if err := s.prepare(&s.cyc, pod); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range s.nodes {
		if s.filter(&s.cyc, n, nil) == success {
			out = append(out, n.name)
		}
	}
	slices.Sort(out)
	return out
}

// schedule schedules and assumes pod, failing the test on an error.
func schedule(t testing.TB, s *Snapshot, pod *corev1.Pod) Result {
	t.Helper()
	res, err := s.Schedule(pod)
	if err != nil {
		t.Fatal(err)
	}
	if res.Scheduled() {
		if err := s.Assume(pod, res.NodeName); err != nil {
			t.Fatal(err)
		}
	}
	return res
}

func nodes(names ...string) []*corev1.Node {
	out := make([]*corev1.Node, len(names))
	for i, n := range names {
		out[i] = mkNode(n)
	}
	return out
}

func itoa(v int64) string { return fmt.Sprint(v) }

func stringsJoin(s []string) string { return strings.Join(s, ",") }

func formatRes(r *resources) string {
	sc := slices.Clone(r.scalar)
	slices.SortFunc(sc, func(a, b scalarAmount) int { return strings.Compare(string(a.name), string(b.name)) })
	var parts []string
	for _, s := range sc {
		if s.value != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", s.name, s.value))
		}
	}
	return fmt.Sprintf("cpu=%d mem=%d eph=%d %v", r.milliCPU, r.memory, r.storage, parts)
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func formatCounts[K cmp.Ordered, V int32 | int64](m map[K]V) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		if m[k] != 0 {
			parts = append(parts, fmt.Sprintf("%v=%d", k, m[k]))
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func formatSlice(s []int32) string { return fmt.Sprint(s) }

// formatDense renders per-value counts by value name.
func formatDense(t *topology, counts []int32) string {
	m := map[string]int32{}
	for id, v := range counts {
		m[t.values[id]] = v
	}
	return formatCounts(m)
}
