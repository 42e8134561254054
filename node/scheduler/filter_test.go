package scheduler

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type filterCase struct {
	name  string
	nodes []*corev1.Node
	pods  []*corev1.Pod // placed already
	pod   *corev1.Pod
	opts  func(*Options)
	want  []string // feasible nodes
}

func runFilterCases(t *testing.T, cases []filterCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var opts []func(*Options)
			if tc.opts != nil {
				opts = append(opts, tc.opts)
			}
			s := newSnap(t, tc.nodes, tc.pods, opts...)
			got := feasible(t, s, tc.pod)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("feasible nodes = %v, want %v", got, want)
			}
		})
	}
}

func TestFilterNodeState(t *testing.T) {
	runFilterCases(t, []filterCase{
		{name: "cordoned node is skipped",
			nodes: []*corev1.Node{mkNode("a", cordoned), mkNode("b")},
			pod:   mkPod("p"), want: []string{"b"}},
		{name: "toleration of the unschedulable taint passes a cordon",
			nodes: []*corev1.Node{mkNode("a", cordoned)},
			pod:   mkPod("p", tolerate(corev1.TaintNodeUnschedulable, corev1.TolerationOpExists, "", corev1.TaintEffectNoSchedule)),
			want:  []string{"a"}},
		{name: "not ready and unknown nodes are skipped",
			nodes: []*corev1.Node{mkNode("a", ready(corev1.ConditionFalse)), mkNode("b", ready(corev1.ConditionUnknown)), mkNode("c")},
			pod:   mkPod("p"), want: []string{"c"}},
		{name: "a node with no Ready condition yet is skipped",
			nodes: []*corev1.Node{mkNode("a", func(n *corev1.Node) { n.Status.Conditions = nil })},
			pod:   mkPod("p"), want: nil},
		{name: "NoExecute toleration of not-ready does not pass the NoSchedule taint",
			nodes: []*corev1.Node{mkNode("a", ready(corev1.ConditionFalse))},
			pod:   mkPod("p", tolerate(corev1.TaintNodeNotReady, corev1.TolerationOpExists, "", corev1.TaintEffectNoExecute)),
			want:  nil},
		{name: "tolerating not-ready passes",
			nodes: []*corev1.Node{mkNode("a", ready(corev1.ConditionFalse))},
			pod:   mkPod("p", tolerate(corev1.TaintNodeNotReady, corev1.TolerationOpExists, "", "")),
			want:  []string{"a"}},
	})
}

func TestFilterTaints(t *testing.T) {
	ns := corev1.TaintEffectNoSchedule
	nodes := []*corev1.Node{
		mkNode("plain"),
		mkNode("gpu", taint("dedicated", "gpu", ns)),
		mkNode("evict", taint("dedicated", "gpu", corev1.TaintEffectNoExecute)),
		mkNode("prefer", taint("dedicated", "gpu", corev1.TaintEffectPreferNoSchedule)),
		mkNode("two", taint("dedicated", "gpu", ns), taint("zone", "x", ns)),
	}
	runFilterCases(t, []filterCase{
		{name: "no tolerations", nodes: nodes, pod: mkPod("p"), want: []string{"plain", "prefer"}},
		{name: "Equal toleration with matching effect",
			nodes: nodes, pod: mkPod("p", tolerate("dedicated", corev1.TolerationOpEqual, "gpu", ns)),
			want: []string{"plain", "prefer", "gpu"}},
		{name: "empty effect tolerates every effect",
			nodes: nodes, pod: mkPod("p", tolerate("dedicated", "", "gpu", "")),
			want: []string{"plain", "prefer", "gpu", "evict"}},
		{name: "wrong value",
			nodes: nodes, pod: mkPod("p", tolerate("dedicated", corev1.TolerationOpEqual, "cpu", "")),
			want: []string{"plain", "prefer"}},
		{name: "Exists on the key",
			nodes: nodes, pod: mkPod("p", tolerate("dedicated", corev1.TolerationOpExists, "", corev1.TaintEffectNoExecute)),
			want: []string{"plain", "prefer", "evict"}},
		{name: "Exists without a key tolerates everything",
			nodes: nodes, pod: mkPod("p", tolerate("", corev1.TolerationOpExists, "", "")),
			want: []string{"plain", "prefer", "gpu", "evict", "two"}},
		{name: "every taint must be tolerated",
			nodes: nodes, pod: mkPod("p", tolerate("dedicated", corev1.TolerationOpExists, "", "")),
			want: []string{"plain", "prefer", "gpu", "evict"}},
	})
}

func TestFilterNodeAffinity(t *testing.T) {
	nodes := []*corev1.Node{
		mkNode("a", label("disk", "ssd"), label("cores", "8")),
		mkNode("b", label("disk", "hdd"), label("cores", "32")),
		mkNode("c", label("cores", "x")),
	}
	runFilterCases(t, []filterCase{
		{name: "nodeSelector", nodes: nodes, pod: mkPod("p", nodeSel("disk", "ssd")), want: []string{"a"}},
		{name: "nodeSelector on a missing label", nodes: nodes, pod: mkPod("p", nodeSel("gpu", "yes")), want: nil},
		{name: "In", nodes: nodes, pod: mkPod("p", requiredNode(expr("disk", corev1.NodeSelectorOpIn, "ssd", "nvme"))), want: []string{"a"}},
		{name: "NotIn matches nodes without the label", nodes: nodes,
			pod: mkPod("p", requiredNode(expr("disk", corev1.NodeSelectorOpNotIn, "ssd"))), want: []string{"b", "c"}},
		{name: "Exists", nodes: nodes, pod: mkPod("p", requiredNode(expr("disk", corev1.NodeSelectorOpExists))), want: []string{"a", "b"}},
		{name: "DoesNotExist", nodes: nodes, pod: mkPod("p", requiredNode(expr("disk", corev1.NodeSelectorOpDoesNotExist))), want: []string{"c"}},
		{name: "Gt skips non-integers", nodes: nodes, pod: mkPod("p", requiredNode(expr("cores", corev1.NodeSelectorOpGt, "8"))), want: []string{"b"}},
		{name: "Lt", nodes: nodes, pod: mkPod("p", requiredNode(expr("cores", corev1.NodeSelectorOpLt, "9"))), want: []string{"a"}},
		{name: "terms are ORed", nodes: nodes,
			pod: mkPod("p", requiredNode(expr("disk", corev1.NodeSelectorOpIn, "ssd"), expr("cores", corev1.NodeSelectorOpIn, "x"))), want: []string{"a", "c"}},
		{name: "expressions in a term are ANDed", nodes: nodes,
			pod: mkPod("p", requiredNode(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: "disk", Operator: corev1.NodeSelectorOpExists},
				{Key: "cores", Operator: corev1.NodeSelectorOpGt, Values: []string{"10"}}}})),
			want: []string{"b"}},
		{name: "an empty term matches nothing", nodes: nodes, pod: mkPod("p", requiredNode(corev1.NodeSelectorTerm{})), want: nil},
		{name: "matchFields metadata.name", nodes: nodes, pod: mkPod("p", requiredNode(nameIn("b", "c", "zz"))), want: []string{"b", "c"}},
		{name: "nodeSelector and affinity both apply", nodes: nodes,
			pod: mkPod("p", nodeSel("disk", "hdd"), requiredNode(expr("disk", corev1.NodeSelectorOpExists))), want: []string{"b"}},
	})
}

func TestFilterHostPorts(t *testing.T) {
	nodes := nodes("a")
	placed := func(opts ...podOpt) []*corev1.Pod { return []*corev1.Pod{mkPod("old", append(opts, on("a"))...)} }
	runFilterCases(t, []filterCase{
		{name: "same port", nodes: nodes, pods: placed(hostPortOpt("", "", 80)), pod: mkPod("p", hostPortOpt(corev1.ProtocolTCP, "", 80)), want: nil},
		{name: "other protocol", nodes: nodes, pods: placed(hostPortOpt("", "", 80)), pod: mkPod("p", hostPortOpt(corev1.ProtocolUDP, "", 80)), want: []string{"a"}},
		{name: "other port", nodes: nodes, pods: placed(hostPortOpt("", "", 80)), pod: mkPod("p", hostPortOpt("", "", 81)), want: []string{"a"}},
		{name: "distinct host IPs", nodes: nodes, pods: placed(hostPortOpt("", "10.0.0.1", 80)), pod: mkPod("p", hostPortOpt("", "10.0.0.2", 80)), want: []string{"a"}},
		{name: "wildcard against a host IP", nodes: nodes, pods: placed(hostPortOpt("", "10.0.0.1", 80)), pod: mkPod("p", hostPortOpt("", "0.0.0.0", 80)), want: nil},
		{name: "finished pods free their ports", nodes: nodes,
			pods: placed(hostPortOpt("", "", 80), func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
			pod:  mkPod("p", hostPortOpt("", "", 80)), want: []string{"a"}},
	})
}

func TestFilterResources(t *testing.T) {
	small := []*corev1.Node{mkNode("a", alloc("cpu", "2", "memory", "4Gi", "pods", "3", "example.com/gpu", "1")), mkNode("b")}
	placed := []*corev1.Pod{mkPod("x", on("a"), req("cpu", "1500m", "memory", "1Gi")), mkPod("y", on("a"))}
	initPod := func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Resources: corev1.ResourceRequirements{Requests: resList("cpu", "3")}}}
	}
	always := corev1.ContainerRestartPolicyAlways
	sidecar := func(cpu string) podOpt {
		return func(p *corev1.Pod) {
			p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "side" + cpu, RestartPolicy: &always,
				Resources: corev1.ResourceRequirements{Requests: resList("cpu", cpu)}})
		}
	}
	runFilterCases(t, []filterCase{
		{name: "fits", nodes: small, pods: placed, pod: mkPod("p", req("cpu", "500m")), want: []string{"a", "b"}},
		{name: "insufficient cpu", nodes: small, pods: placed, pod: mkPod("p", req("cpu", "501m")), want: []string{"b"}},
		{name: "insufficient memory", nodes: small, pods: placed, pod: mkPod("p", req("memory", "3073Mi")), want: []string{"b"}},
		{name: "zero request fits a full node", nodes: small,
			pods: []*corev1.Pod{mkPod("x", on("a"), req("cpu", "2", "memory", "4Gi"))}, pod: mkPod("p"), want: []string{"a", "b"}},
		{name: "pod count", nodes: small, pods: append(slices.Clone(placed), mkPod("z", on("a"))), pod: mkPod("p"), want: []string{"b"}},
		{name: "finished pods do not count", nodes: small,
			pods: []*corev1.Pod{mkPod("x", on("a"), req("cpu", "2"), func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed })},
			pod:  mkPod("p", req("cpu", "2")), want: []string{"a", "b"}},
		{name: "terminating pods still count", nodes: small,
			pods: []*corev1.Pod{mkPod("x", on("a"), req("cpu", "2"), func(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now })},
			pod:  mkPod("p", req("cpu", "1")), want: []string{"b"}},
		{name: "extended resource", nodes: small, pod: mkPod("p", req("example.com/gpu", "1")), want: []string{"a"}},
		{name: "extended resource exhausted", nodes: small,
			pods: []*corev1.Pod{mkPod("x", on("a"), req("example.com/gpu", "1"))}, pod: mkPod("p", req("example.com/gpu", "1")), want: nil},
		{name: "ephemeral storage", nodes: small, pod: mkPod("p", req("ephemeral-storage", "101Gi")), want: nil},
		{name: "init container max counts", nodes: small, pod: mkPod("p", req("cpu", "1"), initPod), want: []string{"b"}},
		{name: "sidecars add up", nodes: small, pod: mkPod("p", req("cpu", "1"), sidecar("600m"), sidecar("500m")), want: []string{"b"}},
		{name: "sidecars fit", nodes: small, pod: mkPod("p", req("cpu", "1"), sidecar("500m"), sidecar("500m")), want: []string{"a", "b"}},
		{name: "overhead counts", nodes: small, pod: mkPod("p", req("cpu", "1500m"), func(p *corev1.Pod) { p.Spec.Overhead = resList("cpu", "501m") }), want: []string{"b"}},
	})
}

func TestFilterVolumes(t *testing.T) {
	nodes := nodes("a", "b")
	pv := &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{NodeAffinity: &corev1.VolumeNodeAffinity{
		Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{expr(corev1.LabelHostname, corev1.NodeSelectorOpIn, "b")}}}}}
	vols := func(o *Options) {
		o.Volumes = func(ns, claim string) (*corev1.PersistentVolume, bool) {
			switch ns + "/" + claim {
			case "default/bound":
				return pv, true
			case "default/unbound":
				return nil, true
			}
			return nil, false
		}
	}
	runFilterCases(t, []filterCase{
		{name: "bound local volume pins the node", nodes: nodes, opts: vols, pod: mkPod("p", claim("bound")), want: []string{"b"}},
		{name: "unbound claim goes anywhere", nodes: nodes, opts: vols, pod: mkPod("p", claim("unbound")), want: []string{"a", "b"}},
		{name: "without a lookup volumes are ignored", nodes: nodes, pod: mkPod("p", claim("bound")), want: []string{"a", "b"}},
	})
}

func TestFilterTopologySpread(t *testing.T) {
	dns := corev1.DoNotSchedule
	zoned := []*corev1.Node{mkNode("a1", zone("a")), mkNode("a2", zone("a")), mkNode("b1", zone("b")), mkNode("nz")}
	web := func(name, node string) *corev1.Pod { return mkPod(name, on(node), plabel("app", "web")) }
	runFilterCases(t, []filterCase{
		{name: "skew within maxSkew", nodes: zoned, pods: []*corev1.Pod{web("w1", "a1")},
			pod:  mkPod("p", plabel("app", "web"), spread(corev1.LabelTopologyZone, 1, dns, "app", "web")),
			want: []string{"b1"}},
		{name: "maxSkew 2", nodes: zoned, pods: []*corev1.Pod{web("w1", "a1")},
			pod:  mkPod("p", plabel("app", "web"), spread(corev1.LabelTopologyZone, 2, dns, "app", "web")),
			want: []string{"a1", "a2", "b1"}},
		{name: "pod not matching its own selector", nodes: zoned, pods: []*corev1.Pod{web("w1", "a1")},
			pod:  mkPod("p", spread(corev1.LabelTopologyZone, 1, dns, "app", "web")),
			want: []string{"a1", "a2", "b1"}},
		{name: "other namespaces do not count", nodes: zoned, pods: []*corev1.Pod{mkPod("other/w1", on("a1"), plabel("app", "web"))},
			pod:  mkPod("p", plabel("app", "web"), spread(corev1.LabelTopologyZone, 1, dns, "app", "web")),
			want: []string{"a1", "a2", "b1"}},
		{name: "hostname", nodes: zoned, pods: []*corev1.Pod{web("w1", "a1"), web("w2", "a2"), web("w3", "b1")},
			pod:  mkPod("p", plabel("app", "web"), spread(corev1.LabelHostname, 1, dns, "app", "web")),
			want: []string{"nz"}},
		{name: "minDomains above the domain count forces the minimum to 0", nodes: zoned, pods: []*corev1.Pod{web("w1", "a1"), web("w2", "b1")},
			pod: mkPod("p", plabel("app", "web"), spread(corev1.LabelTopologyZone, 1, dns, "app", "web"), func(p *corev1.Pod) {
				three := int32(3)
				p.Spec.TopologySpreadConstraints[0].MinDomains = &three
			}),
			want: nil},
		{name: "node affinity limits the domains (Honor)", nodes: zoned, pods: []*corev1.Pod{web("w1", "a1")},
			pod:  mkPod("p", plabel("app", "web"), nodeSel(corev1.LabelTopologyZone, "a"), spread(corev1.LabelTopologyZone, 1, dns, "app", "web")),
			want: []string{"a1", "a2"}},
		{name: "two constraints", nodes: zoned, pods: []*corev1.Pod{web("w1", "a1"), web("w2", "b1")},
			pod: mkPod("p", plabel("app", "web"), spread(corev1.LabelTopologyZone, 1, dns, "app", "web"),
				spread(corev1.LabelHostname, 1, dns, "app", "web")),
			want: []string{"a2"}},
	})
}

func TestFilterPodAffinity(t *testing.T) {
	zoned := []*corev1.Node{mkNode("a1", zone("a")), mkNode("a2", zone("a")), mkNode("b1", zone("b")), mkNode("nz")}
	db := mkPod("db", on("a1"), plabel("app", "db"))
	nsLabels := func(o *Options) {
		o.NamespaceLabels = map[string]map[string]string{"prod": {"env": "prod"}, "default": {}}
	}
	runFilterCases(t, []filterCase{
		{name: "affinity to a zone", nodes: zoned, pods: []*corev1.Pod{db},
			pod: mkPod("p", podAffinity(podTerm(corev1.LabelTopologyZone, "app", "db"))), want: []string{"a1", "a2"}},
		{name: "no matching pod anywhere and not self-matching", nodes: zoned,
			pod: mkPod("p", podAffinity(podTerm(corev1.LabelTopologyZone, "app", "db"))), want: nil},
		{name: "first of a self-affine group goes to nodes with the key", nodes: zoned,
			pod: mkPod("p", plabel("app", "db"), podAffinity(podTerm(corev1.LabelTopologyZone, "app", "db"))), want: []string{"a1", "a2", "b1"}},
		{name: "anti-affinity by host", nodes: zoned, pods: []*corev1.Pod{db},
			pod: mkPod("p", podAntiAffinity(podTerm(corev1.LabelHostname, "app", "db"))), want: []string{"a2", "b1", "nz"}},
		{name: "anti-affinity by zone; nodes without the key pass", nodes: zoned, pods: []*corev1.Pod{db},
			pod: mkPod("p", podAntiAffinity(podTerm(corev1.LabelTopologyZone, "app", "db"))), want: []string{"b1", "nz"}},
		{name: "existing pod's anti-affinity (symmetry)", nodes: zoned,
			pods: []*corev1.Pod{mkPod("lonely", on("a1"), podAntiAffinity(podTerm(corev1.LabelTopologyZone, "app", "web")))},
			pod:  mkPod("p", plabel("app", "web")), want: []string{"b1", "nz"}},
		{name: "existing pod's anti-affinity in another namespace does not match", nodes: zoned,
			pods: []*corev1.Pod{mkPod("prod/lonely", on("a1"), podAntiAffinity(podTerm(corev1.LabelTopologyZone, "app", "web")))},
			pod:  mkPod("p", plabel("app", "web")), want: []string{"a1", "a2", "b1", "nz"}},
		{name: "namespaces list", nodes: zoned, pods: []*corev1.Pod{mkPod("prod/db", on("b1"), plabel("app", "db"))},
			pod: mkPod("p", podAffinity(func() corev1.PodAffinityTerm {
				t := podTerm(corev1.LabelTopologyZone, "app", "db")
				t.Namespaces = []string{"prod"}
				return t
			}())), want: []string{"b1"}},
		{name: "namespaceSelector", nodes: zoned, opts: nsLabels,
			pods: []*corev1.Pod{mkPod("prod/db", on("b1"), plabel("app", "db")), db},
			pod: mkPod("p", podAntiAffinity(func() corev1.PodAffinityTerm {
				t := podTerm(corev1.LabelTopologyZone, "app", "db")
				t.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}
				return t
			}())), want: []string{"a1", "a2", "nz"}},
		{name: "empty namespaceSelector means every namespace", nodes: zoned,
			pods: []*corev1.Pod{mkPod("prod/db", on("b1"), plabel("app", "db")), db},
			pod: mkPod("p", podAntiAffinity(func() corev1.PodAffinityTerm {
				t := podTerm(corev1.LabelTopologyZone, "app", "db")
				t.NamespaceSelector = &metav1.LabelSelector{}
				return t
			}())), want: []string{"nz"}},
		{name: "matchLabelKeys", nodes: zoned,
			pods: []*corev1.Pod{mkPod("old", on("a1"), plabel("app", "web"), plabel("rev", "1")), mkPod("new", on("b1"), plabel("app", "web"), plabel("rev", "2"))},
			pod: mkPod("p", plabel("app", "web"), plabel("rev", "2"), podAntiAffinity(func() corev1.PodAffinityTerm {
				t := podTerm(corev1.LabelHostname, "app", "web")
				t.MatchLabelKeys = []string{"rev"}
				return t
			}())), want: []string{"a1", "a2", "nz"}},
	})
}

func TestMalformedSelectorIsAnError(t *testing.T) {
	s := newSnap(t, nodes("a"), nil)
	bad := mkPod("p", podAntiAffinity(corev1.PodAffinityTerm{TopologyKey: corev1.LabelHostname,
		LabelSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}}}))
	if _, err := s.Schedule(bad); err == nil {
		t.Fatal("Schedule accepted a malformed selector")
	}
	if _, err := s.Schedule(mkPod("q", on("a"))); err == nil {
		t.Fatal("Schedule accepted a bound pod")
	}
}
