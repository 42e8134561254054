package scheduler

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// spreadConstraint is one compiled topologySpreadConstraint.
type spreadConstraint struct {
	key           string
	maxSkew       int32
	minDomains    int32
	selfMatch     bool
	cnt           *counter
	honorAffinity bool // nodeAffinityPolicy Honor (the default)
	honorTaints   bool // nodeTaintsPolicy Honor (default Ignore)

	topo *topology

	// Derived by deriveSpread.
	counts     []int32 // matching pods per value id of topo; -1 for a value that is not a domain
	numDomains int
	minMatch   int32
}

// spreadSet is the DoNotSchedule (filter) or ScheduleAnyway (score)
// constraints of a pod.
type spreadSet struct {
	constraints []spreadConstraint
	gen         uint64 // Snapshot.gen the derived fields belong to
	derived     bool
}

func (s *Snapshot) prepareSpread(c *cycle, pod *corev1.Pod) error {
	tscs := pod.Spec.TopologySpreadConstraints
	if len(tscs) == 0 {
		// kube-scheduler spreads such pods by default (its PodTopologySpread
		// system defaults); Shoal spreads the pods of one controller.
		for i := range pod.OwnerReferences {
			if r := &pod.OwnerReferences[i]; r.Controller != nil && *r.Controller {
				c.owner = s.owners[r.UID]
				break
			}
		}
		return nil
	}
	for i := range tscs {
		t := &tscs[i]
		sel, err := compileLabelSelector(t.LabelSelector, labelKeyRequirements(pod.Labels, t.MatchLabelKeys, nil)...)
		if err != nil {
			return fmt.Errorf("topology spread constraint %d: %w", i, err)
		}
		m := podMatcher{namespaces: []string{pod.Namespace}, sel: sel}
		sc := spreadConstraint{
			key:           t.TopologyKey,
			topo:          s.topologyOf(t.TopologyKey),
			maxSkew:       t.MaxSkew,
			minDomains:    1,
			selfMatch:     sel.matches(pod.Labels),
			cnt:           s.counterFor([]podMatcher{m}, true),
			honorAffinity: t.NodeAffinityPolicy == nil || *t.NodeAffinityPolicy == corev1.NodeInclusionPolicyHonor,
			honorTaints:   t.NodeTaintsPolicy != nil && *t.NodeTaintsPolicy == corev1.NodeInclusionPolicyHonor,
		}
		if t.MinDomains != nil {
			sc.minDomains = *t.MinDomains
		}
		if t.WhenUnsatisfiable == corev1.ScheduleAnyway {
			c.soft.constraints = append(c.soft.constraints, sc)
		} else {
			c.hard.constraints = append(c.hard.constraints, sc)
		}
	}
	return nil
}

// deriveSpread computes, for each constraint of set, the matching pods per
// domain and the global minimum, over the nodes the constraint counts: nodes
// that carry every key of the set and pass its node inclusion policies. It
// is recomputed only when placed pods changed since (preemption's dry runs
// change them).
//
// When every node counts (no inclusion policy excludes any, and every node
// carries the keys), the counters' own domain totals are used as they are;
// otherwise the nodes are walked once.
func (s *Snapshot) deriveSpread(c *cycle, set *spreadSet, scratchBase int) {
	if set.derived && set.gen == s.gen {
		return
	}
	set.derived, set.gen = true, s.gen
	fast := true
	for i := range set.constraints {
		sc := &set.constraints[i]
		if (sc.honorAffinity && c.hasNodeAffinity()) || (sc.honorTaints && s.anyHardTaint) ||
			(len(set.constraints) > 1 && sc.topo.nodesWithKey != len(s.nodes)) {
			fast = false
		}
	}
	if fast {
		for i := range set.constraints {
			sc := &set.constraints[i]
			dc := sc.cnt.domain(s, sc.key)
			sc.counts = dc.counts
			sc.numDomains = len(sc.topo.values)
			sc.minMatch = 0
			if dc.nonzero >= sc.numDomains { // no empty domain: find the smallest
				sc.minMatch = minDomain(dc.counts)
			}
			if sc.numDomains < int(sc.minDomains) {
				sc.minMatch = 0
			}
		}
		return
	}
	for i := range set.constraints {
		sc := &set.constraints[i]
		sc.counts = c.intScratch(scratchBase+i, len(sc.topo.values), -1)
	}
nodes:
	for _, n := range s.nodes {
		for i := range set.constraints {
			if set.constraints[i].topo.ids[n.idx] < 0 {
				continue nodes
			}
		}
		for i := range set.constraints {
			sc := &set.constraints[i]
			if sc.honorAffinity && !c.matchesNodeAffinity(n) {
				continue
			}
			if sc.honorTaints && !toleratesHardTaints(c, n) {
				continue
			}
			id := sc.topo.ids[n.idx]
			sc.counts[id] = max(sc.counts[id], 0) + sc.cnt.perNode[n.idx]
		}
	}
	for i := range set.constraints {
		sc := &set.constraints[i]
		sc.numDomains = 0
		for _, v := range sc.counts {
			if v >= 0 {
				sc.numDomains++
			}
		}
		sc.minMatch = minDomain(sc.counts)
		if sc.numDomains < int(sc.minDomains) {
			sc.minMatch = 0
		}
	}
}

// minDomain is the smallest count among the domains (values ≥ 0); 0 when
// there are none.
func minDomain(counts []int32) int32 {
	lo := int32(-1)
	for _, v := range counts {
		if v >= 0 && (lo < 0 || v < lo) {
			lo = v
		}
	}
	return max(lo, 0)
}

func toleratesHardTaints(c *cycle, n *nodeInfo) bool {
	for i := range n.taints {
		if !tolerated(c.tolerations, &n.taints[i]) {
			return false
		}
	}
	return true
}

// spreadFilter is PodTopologySpread's Filter for the DoNotSchedule
// constraints.
func (s *Snapshot) spreadFilter(c *cycle, n *nodeInfo) (code, string) {
	s.deriveSpread(c, &c.hard, 0)
	for i := range c.hard.constraints {
		sc := &c.hard.constraints[i]
		id := sc.topo.ids[n.idx]
		if id < 0 {
			return unresolvable, reasonSpreadMissingLabel
		}
		self := int32(0)
		if sc.selfMatch {
			self = 1
		}
		if max(sc.counts[id], 0)+self-sc.minMatch > sc.maxSkew {
			return unschedulable, reasonSpreadSkew
		}
	}
	return success, ""
}
