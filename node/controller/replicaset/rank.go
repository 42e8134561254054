package replicaset

import (
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/node/controller"
)

// podsToDelete picks the n pods of pods to delete when scaling down,
// preferring pods that are the least far along, as Kubernetes does:
//
//  1. unassigned before assigned to a node;
//  2. Pending before Unknown before Running;
//  3. not ready before ready;
//  4. lower pod-deletion-cost annotation first;
//  5. pods on nodes crowded with related pods (of this ReplicaSet and its
//     siblings under the same controller) first;
//  6. ready for less time before ready for longer;
//  7. more container restarts first;
//  8. newer before older.
//
// Ties are broken by name so the choice is deterministic. related are the
// active pods used for rule 5. (Kubernetes' LogarithmicScaleDown buckets
// rules 6 and 8 by powers of two; here they compare plainly.)
func podsToDelete(pods, related []*corev1.Pod, n int) []*corev1.Pod {
	if n >= len(pods) {
		return pods
	}
	onNode := map[string]int{}
	for _, p := range related {
		if controller.IsPodActive(p) && p.Spec.NodeName != "" {
			onNode[p.Spec.NodeName]++
		}
	}
	ranked := make([]rankedPod, len(pods))
	for i, p := range pods {
		ranked[i] = newRankedPod(p, onNode[p.Spec.NodeName])
	}
	sort.SliceStable(ranked, func(i, j int) bool { return ranked[i].less(&ranked[j]) })
	out := make([]*corev1.Pod, n)
	for i := range out {
		out[i] = ranked[i].pod
	}
	return out
}

type rankedPod struct {
	pod               *corev1.Pod
	phase             int
	ready             bool
	readySince        time.Time
	cost              int32
	colocated         int
	restarts, sidecar int32
}

var phaseOrdinal = map[corev1.PodPhase]int{corev1.PodPending: 0, corev1.PodUnknown: 1, corev1.PodRunning: 2}

func newRankedPod(p *corev1.Pod, colocated int) rankedPod {
	r := rankedPod{pod: p, phase: phaseOrdinal[p.Status.Phase], ready: controller.IsPodReady(p), colocated: colocated}
	if r.ready {
		r.readySince = controller.PodReadyCondition(p).LastTransitionTime.Time
	}
	if v, ok := p.Annotations[controller.PodDeletionCostAnnotation]; ok {
		if c, err := strconv.ParseInt(v, 10, 32); err == nil {
			r.cost = int32(c)
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		r.restarts = max(r.restarts, cs.RestartCount)
	}
	sidecars := map[string]bool{}
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars[c.Name] = true
		}
	}
	for _, cs := range p.Status.InitContainerStatuses {
		if sidecars[cs.Name] {
			r.sidecar = max(r.sidecar, cs.RestartCount)
		}
	}
	return r
}

// less reports whether a should be deleted before b.
func (a *rankedPod) less(b *rankedPod) bool {
	an, bn := a.pod.Spec.NodeName, b.pod.Spec.NodeName
	if an != bn && (an == "" || bn == "") {
		return an == ""
	}
	if a.phase != b.phase {
		return a.phase < b.phase
	}
	if a.ready != b.ready {
		return !a.ready
	}
	if a.cost != b.cost {
		return a.cost < b.cost
	}
	if a.colocated != b.colocated {
		return a.colocated > b.colocated
	}
	if a.ready && b.ready && !a.readySince.Equal(b.readySince) {
		return afterOrZero(a.readySince, b.readySince)
	}
	if a.restarts != b.restarts {
		return a.restarts > b.restarts
	}
	if a.sidecar != b.sidecar {
		return a.sidecar > b.sidecar
	}
	if ac, bc := a.pod.CreationTimestamp.Time, b.pod.CreationTimestamp.Time; !ac.Equal(bc) {
		return afterOrZero(ac, bc)
	}
	return a.pod.Name < b.pod.Name
}

// afterOrZero: a zero time ranks first (unknown is the newest), then later
// before earlier.
func afterOrZero(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero()
	}
	return a.After(b)
}
