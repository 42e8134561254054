package scheduler

import (
	corev1 "k8s.io/api/core/v1"
)

// code is a filter's verdict on a node, kube-scheduler's status codes.
type code uint8

const (
	success       code = iota
	unschedulable      // might fit after preemption
	unresolvable       // UnschedulableAndUnresolvable: preemption cannot help
)

// The reasons, worded exactly as kube-scheduler's plugins word them, since
// users (and tools) read them in `kubectl describe pod`.
const (
	reasonUnschedulable        = "node(s) were unschedulable"                                 // NodeUnschedulable
	reasonNodeAffinity         = "node(s) didn't match Pod's node affinity/selector"          // NodeAffinity
	reasonNodeNames            = "node(s) didn't satisfy plugin(s) [NodeAffinity]"            // NodeAffinity PreFilter
	reasonPorts                = "node(s) didn't have free ports for the requested pod ports" // NodePorts
	reasonTooManyPods          = "Too many pods"                                              // NodeResourcesFit
	reasonVolumeConflict       = "node(s) had volume node affinity conflict"                  // VolumeBinding
	reasonSpreadSkew           = "node(s) didn't match pod topology spread constraints"       // PodTopologySpread
	reasonSpreadMissingLabel   = reasonSpreadSkew + " (missing required label)"               // PodTopologySpread
	reasonAffinity             = "node(s) didn't match pod affinity rules"                    // InterPodAffinity
	reasonAntiAffinity         = "node(s) didn't match pod anti-affinity rules"               // InterPodAffinity
	reasonExistingAnti         = "node(s) didn't satisfy existing pods anti-affinity rules"   // InterPodAffinity
	reasonNoVictims            = "No preemption victims found for incoming pod"               // DefaultPreemption
	reasonPreemptionNotHelpful = "Preemption is not helpful for scheduling"                   // DefaultPreemption
)

func insufficient(name corev1.ResourceName) string {
	switch name {
	case corev1.ResourceCPU:
		return "Insufficient cpu"
	case corev1.ResourceMemory:
		return "Insufficient memory"
	case corev1.ResourceEphemeralStorage:
		return "Insufficient ephemeral-storage"
	}
	return "Insufficient " + string(name)
}

func taintReason(t *corev1.Taint) string {
	return "node(s) had untolerated taint {" + t.Key + ": " + t.Value + "}"
}

// filter runs the filters, in kube-scheduler's default plugin order, on one
// node, stopping at the first plugin that rejects it. With diag nil it only
// returns the verdict, allocating nothing; otherwise it appends the reasons
// (one plugin can give several, as NodeResourcesFit does) to *diag.
func (s *Snapshot) filter(c *cycle, n *nodeInfo, diag *[]string) code {
	// NodeUnschedulable.
	if n.unschedulable && !c.toleratesUnschedulable {
		return fail(diag, unresolvable, reasonUnschedulable)
	}
	// TaintToleration: the first NoSchedule/NoExecute taint not tolerated.
	for i := range n.taints {
		if !tolerated(c.tolerations, &n.taints[i]) {
			if diag != nil {
				*diag = append(*diag, taintReason(&n.taints[i]))
			}
			return unresolvable
		}
	}
	// NodeAffinity.
	if !c.matchesNodeAffinity(n) {
		return fail(diag, unresolvable, reasonNodeAffinity)
	}
	// NodePorts.
	for _, want := range c.ports {
		for _, used := range n.ports {
			if want.conflicts(used) {
				return fail(diag, unschedulable, reasonPorts)
			}
		}
	}
	// NodeResourcesFit.
	if v := fitsResources(c, n, diag); v != success {
		return v
	}
	// VolumeBinding: bound volumes' node affinity.
	for _, vs := range c.volumes {
		if !vs.matches(n) {
			return fail(diag, unresolvable, reasonVolumeConflict)
		}
	}
	// PodTopologySpread.
	if len(c.hard.constraints) > 0 {
		if v, reason := s.spreadFilter(c, n); v != success {
			return fail(diag, v, reason)
		}
	}
	// InterPodAffinity.
	if len(c.affinity)+len(c.anti)+len(c.existingAnti) > 0 {
		if v, reason := s.podAffinityFilter(c, n); v != success {
			return fail(diag, v, reason)
		}
	}
	return success
}

func fail(diag *[]string, v code, reason string) code {
	if diag != nil {
		*diag = append(*diag, reason)
	}
	return v
}

// fitsResources is NodeResourcesFit's Filter. It reports every insufficient
// resource; a request larger than the node's whole allocatable makes the
// verdict unresolvable (no preemption can free that much).
func fitsResources(c *cycle, n *nodeInfo, diag *[]string) code {
	r := &c.req
	if diag == nil { // the hot path: a verdict, no reasons
		if int64(len(n.pods)) >= n.allowedPods ||
			(r.milliCPU > 0 && r.milliCPU > n.alloc.milliCPU-n.requested.milliCPU) ||
			(r.memory > 0 && r.memory > n.alloc.memory-n.requested.memory) ||
			(r.storage > 0 && r.storage > n.alloc.storage-n.requested.storage) {
			return unschedulable
		}
		for _, sa := range r.scalar {
			if sa.value > 0 && sa.value > n.alloc.scalarValue(sa.name)-n.requested.scalarValue(sa.name) {
				return unschedulable
			}
		}
		return success
	}
	verdict := success
	bad := func(v code, reason string) bool {
		verdict = max(verdict, v)
		if diag != nil {
			*diag = append(*diag, reason)
			return false
		}
		return true // fast mode: stop at the first
	}
	if int64(len(n.pods))+1 > n.allowedPods {
		if bad(unschedulable, reasonTooManyPods) {
			return verdict
		}
	}
	if r.milliCPU == 0 && r.memory == 0 && r.storage == 0 && len(r.scalar) == 0 {
		return verdict
	}
	check := func(want, alloc, used int64, name corev1.ResourceName) bool {
		if want <= 0 || want <= alloc-used {
			return false
		}
		v := unschedulable
		if want > alloc {
			v = unresolvable
		}
		return bad(v, insufficient(name))
	}
	if check(r.milliCPU, n.alloc.milliCPU, n.requested.milliCPU, corev1.ResourceCPU) ||
		check(r.memory, n.alloc.memory, n.requested.memory, corev1.ResourceMemory) ||
		check(r.storage, n.alloc.storage, n.requested.storage, corev1.ResourceEphemeralStorage) {
		return verdict
	}
	for _, sa := range r.scalar {
		if check(sa.value, n.alloc.scalarValue(sa.name), n.requested.scalarValue(sa.name), sa.name) {
			return verdict
		}
	}
	return verdict
}

// podAffinityFilter is InterPodAffinity's Filter: the pod's required
// affinity, its required anti-affinity, then the placed pods' required
// anti-affinity against it.
func (s *Snapshot) podAffinityFilter(c *cycle, n *nodeInfo) (code, string) {
	if len(c.affinity) > 0 {
		podsExist := true
		for _, t := range c.affinity {
			cnt, ok := t.dc.count(n.idx)
			if !ok {
				return unresolvable, reasonAffinity // every topology key must exist
			}
			if cnt <= 0 {
				podsExist = false
			}
		}
		if !podsExist {
			// The first pod of a group with affinity to itself may go
			// anywhere, when no pod matches the terms yet.
			anyMatch := false
			for _, t := range c.affinity {
				anyMatch = anyMatch || t.dc.nonzero > 0
			}
			if anyMatch || !c.selfAffinity {
				return unresolvable, reasonAffinity
			}
		}
	}
	for _, t := range c.anti {
		if cnt, ok := t.dc.count(n.idx); ok && cnt > 0 {
			return unschedulable, reasonAntiAffinity
		}
	}
	for _, g := range c.existingAnti {
		if id := g.topo.ids[n.idx]; id >= 0 && g.counts[id] > 0 {
			return unschedulable, reasonExistingAnti
		}
	}
	return success, ""
}
