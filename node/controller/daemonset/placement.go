package daemonset

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/scheduler"
)

// This file decides which nodes a DaemonSet's pods belong on, and pins a
// pod to its node the way Kubernetes does.
//
// Kubernetes' DaemonSet controller decides with the scheduler's predicates
// (nodeShouldRunDaemonPod: the template's nodeName, nodeSelector and
// required node affinity, then the node's NoSchedule and NoExecute taints
// against the pod's tolerations). Shoal's asks node/scheduler itself, on a
// one-node snapshot, so it never wants a pod where the leader's scheduler
// would refuse to put it on the grounds the DaemonSet controller judges:
// the same selector semantics, the same taints — including the not-ready
// and unreachable NoSchedule taints the scheduler reads from a node's Ready
// condition — and the same cordon rule. Resources, host ports and pod
// affinity are left out, as Kubernetes leaves them out: a node that is full
// still wants its daemon pod, which stays Pending (unavailable) until it
// fits.

// verdict is what one node means to one DaemonSet.
type verdict struct {
	// shouldRun: a daemon pod belongs there; create one if none is.
	shouldRun bool
	// shouldContinue: a daemon pod already there may stay (a node with a
	// NoSchedule taint the pod does not tolerate keeps its pod; a NoExecute
	// one evicts it).
	shouldContinue bool
}

// placement judges nodes for one DaemonSet, for the length of one sync.
type placement struct {
	nodeName string      // the template's spec.nodeName, if any
	probe    *corev1.Pod // a daemon pod as the scheduler needs to see it
	anyTaint *corev1.Pod // probe, tolerating every taint and the cordon
}

// onePod is the allocatable the eligibility check gives every node: room
// for one pod and no other resource to run out of.
var onePod = corev1.ResourceList{corev1.ResourcePods: resource.MustParse("1")}

func newPlacement(ds *appsv1.DaemonSet) *placement {
	t := &ds.Spec.Template.Spec
	spec := corev1.PodSpec{NodeSelector: t.NodeSelector, HostNetwork: t.HostNetwork, Tolerations: t.Tolerations}
	addDaemonTolerations(&spec)
	if t.Affinity != nil && t.Affinity.NodeAffinity != nil {
		spec.Affinity = &corev1.Affinity{NodeAffinity: t.Affinity.NodeAffinity}
	}
	meta := metav1.ObjectMeta{Namespace: ds.Namespace, Name: ds.Name}
	anySpec := spec
	anySpec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	return &placement{
		nodeName: t.NodeName,
		probe:    &corev1.Pod{ObjectMeta: meta, Spec: spec},
		anyTaint: &corev1.Pod{ObjectMeta: meta, Spec: anySpec},
	}
}

// verdict judges node. An error means the template's node affinity cannot
// be evaluated; the node is then not eligible (Kubernetes likewise treats
// a selector it cannot parse as not matching).
func (p *placement) verdict(node *corev1.Node) (verdict, error) {
	if p.nodeName != "" && p.nodeName != node.Name {
		return verdict{}, nil
	}
	snap, err := scheduler.NewSnapshot([]*corev1.Node{schedulingView(node)}, nil, scheduler.Options{})
	if err != nil {
		return verdict{}, err
	}
	// Node name, selector and affinity: no taint can make up for these.
	res, err := snap.Schedule(p.anyTaint)
	if err != nil {
		return verdict{}, fmt.Errorf("judging node %s: %w", node.Name, err)
	}
	if !res.Scheduled() {
		return verdict{}, nil
	}
	if res, err = snap.Schedule(p.probe); err != nil {
		return verdict{}, fmt.Errorf("judging node %s: %w", node.Name, err)
	}
	if res.Scheduled() {
		return verdict{shouldRun: true, shouldContinue: true}, nil
	}
	// A taint keeps new pods away; the pod already there stays unless a
	// NoExecute taint would evict it.
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if t.Effect == corev1.TaintEffectNoExecute && !tolerates(p.probe.Spec.Tolerations, t) {
			return verdict{}, nil
		}
	}
	return verdict{shouldContinue: true}, nil
}

// schedulingView is node as the eligibility check shows it to the
// scheduler: its name, labels, spec (taints, cordon) and Ready condition as
// they are, room for one pod and nothing else. Nothing is copied deeply:
// the scheduler only reads.
func schedulingView(node *corev1.Node) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: node.Name, Labels: node.Labels},
		Spec:       node.Spec,
		Status:     corev1.NodeStatus{Conditions: node.Status.Conditions, Allocatable: onePod},
	}
}

func tolerates(tols []corev1.Toleration, taint *corev1.Taint) bool {
	for i := range tols {
		if tols[i].ToleratesTaint(taint) {
			return true
		}
	}
	return false
}

// daemonTolerations are the tolerations Kubernetes adds to every DaemonSet
// pod (AddOrUpdateDaemonPodTolerations): a daemon pod survives its node
// becoming not ready or unreachable (no taint-based eviction), and goes
// onto nodes under disk, memory or PID pressure and cordoned ones; with
// hostNetwork, onto nodes whose network is not set up yet too.
var daemonTolerations = []corev1.Toleration{
	{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeDiskPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeMemoryPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodePIDPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
}

var hostNetworkToleration = corev1.Toleration{Key: corev1.TaintNodeNetworkUnavailable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}

// addDaemonTolerations adds the daemon tolerations to spec as Kubernetes
// does: one the pod already has (same key, operator, value and effect) is
// replaced, any other appended. spec.Tolerations gets a new slice; the one
// it had is not written to (it may be the stored template's).
func addDaemonTolerations(spec *corev1.PodSpec) {
	tols := append([]corev1.Toleration(nil), spec.Tolerations...)
	add := func(t corev1.Toleration) {
		for i := range tols {
			if tols[i].MatchToleration(&t) {
				tols[i] = t
				return
			}
		}
		tols = append(tols, t)
	}
	for _, t := range daemonTolerations {
		add(t)
	}
	if spec.HostNetwork {
		add(hostNetworkToleration)
	}
	spec.Tolerations = tols
}

// pinToNode makes spec's required node affinity select node alone, as
// Kubernetes' ReplaceDaemonSetPodNodeNameNodeAffinity does: the required
// terms become the single term matchFields metadata.name In [node] (the
// controller has already checked the template's terms against that node),
// and the rest of the affinity stays. The scheduler then places the pod
// on node or nowhere. spec.Affinity must be the caller's own copy.
func pinToNode(spec *corev1.PodSpec, node string) {
	required := &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
		MatchFields: []corev1.NodeSelectorRequirement{{
			Key: metav1.ObjectNameField, Operator: corev1.NodeSelectorOpIn, Values: []string{node},
		}},
	}}}
	if spec.Affinity == nil {
		spec.Affinity = &corev1.Affinity{}
	}
	if spec.Affinity.NodeAffinity == nil {
		spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = required
}

// targetNode is the node a daemon pod is for: its spec.nodeName once
// bound, else the node its required affinity pins it to (Kubernetes'
// GetTargetNodeName). ok is false for a pod that names no single node (an
// adopted pod that was never a daemon pod); the controller leaves it be.
func targetNode(pod *corev1.Pod) (string, bool) {
	if pod.Spec.NodeName != "" {
		return pod.Spec.NodeName, true
	}
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return "", false
	}
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range term.MatchFields {
			if f.Key == metav1.ObjectNameField && f.Operator == corev1.NodeSelectorOpIn {
				if len(f.Values) != 1 {
					return "", false
				}
				return f.Values[0], true
			}
		}
	}
	return "", false
}
