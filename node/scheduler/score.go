package scheduler

import (
	"math"

	corev1 "k8s.io/api/core/v1"
)

// Scoring follows kube-scheduler's default profile: every plugin scores each
// feasible node 0..100 (normalized over the feasible nodes where the plugin
// does), the scores are weighted and summed, and the highest sum wins.
const (
	maxNodeScore = 100

	weightTaintToleration   = 3
	weightNodeAffinity      = 2
	weightLeastAllocated    = 1 // NodeResourcesFit, LeastAllocated strategy
	weightPodTopologySpread = 2 // also Shoal's default spreading by controller
	weightInterPodAffinity  = 2
	weightBalanced          = 1
	weightImageLocality     = 1
)

// Image locality thresholds (kube-scheduler's).
const (
	mb                    = 1024 * 1024
	minImageThreshold     = 23 * mb
	maxContainerThreshold = 1000 * mb
)

// selectNode scores c.feasible and returns the best node; ties go to a node
// drawn with the snapshot's seeded generator (kube-scheduler's reservoir
// sampling), so equal nodes share the load yet runs are reproducible.
func (s *Snapshot) selectNode(c *cycle) *nodeInfo {
	feasible := c.feasible
	if len(feasible) == 1 {
		return feasible[0]
	}
	c.total = resize(c.total, len(feasible))
	c.raw = resize(c.raw, len(feasible))
	total := c.total
	s.scoreResources(c, total)
	if s.anyPreferTaint {
		s.scoreTaints(c, total)
	}
	if len(c.prefNode) > 0 {
		s.scoreNodeAffinity(c, total)
	}
	if len(c.soft.constraints) > 0 {
		s.scoreSpread(c, total)
	} else if c.owner != nil && len(c.pod.Spec.TopologySpreadConstraints) == 0 {
		s.scoreOwnerSpread(c, total)
	}
	if len(c.prefAffinity) > 0 || len(c.scoreGroups) > 0 {
		s.scorePodAffinity(c, total)
	}
	if len(c.images) > 0 {
		s.scoreImages(c, total)
	}
	best, ties := 0, 0
	for i, v := range total {
		switch {
		case i == 0 || v > total[best]:
			best, ties = i, 1
		case v == total[best]:
			ties++
			if s.rng.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return feasible[best]
}

func resize(b []int64, n int) []int64 {
	if cap(b) < n {
		return make([]int64, n)
	}
	b = b[:n]
	clear(b)
	return b
}

// scoreResources adds NodeResourcesFit (LeastAllocated over cpu and memory,
// with the non-zero defaults for missing requests) and
// NodeResourcesBalancedAllocation (skipped for best-effort pods).
func (s *Snapshot) scoreResources(c *cycle, total []int64) {
	r := &c.req
	balanced := r.milliCPU != 0 || r.memory != 0
	for i, n := range c.feasible {
		la := (leastAllocated(n.nonZeroCPU+r.nonZeroCPU, n.alloc.milliCPU) +
			leastAllocated(n.nonZeroMem+r.nonZeroMem, n.alloc.memory)) / 2
		total[i] += weightLeastAllocated * la
		if balanced {
			total[i] += weightBalanced * balancedScore(n.requested.milliCPU+r.milliCPU, n.invCPU,
				n.requested.memory+r.memory, n.invMem)
		}
	}
}

func leastAllocated(requested, capacity int64) int64 {
	if capacity == 0 || requested > capacity {
		return 0
	}
	return (capacity - requested) * maxNodeScore / capacity
}

// balancedScore is 100 × (1 − the standard deviation of the cpu and memory
// fractions requested); inv* are 1/allocatable, 0 for a resource the node
// does not offer (which is then left out).
func balancedScore(cpu int64, invCPU float64, mem int64, invMem float64) int64 {
	var fr [2]float64
	k := 0
	if invCPU > 0 {
		fr[k] = min(float64(cpu)*invCPU, 1)
		k++
	}
	if invMem > 0 {
		fr[k] = min(float64(mem)*invMem, 1)
		k++
	}
	std := 0.0
	if k == 2 {
		std = math.Abs((fr[0] - fr[1]) / 2)
	}
	return int64((1 - std) * maxNodeScore)
}

// scoreTaints adds TaintToleration's score: fewer untolerated
// PreferNoSchedule taints is better.
func (s *Snapshot) scoreTaints(c *cycle, total []int64) {
	raw := c.raw
	var most int64
	for i, n := range c.feasible {
		var cnt int64
		for j := range n.preferTaints {
			if !toleratedPreferNoSchedule(c.tolerations, &n.preferTaints[j]) {
				cnt++
			}
		}
		raw[i] = cnt
		most = max(most, cnt)
	}
	if most == 0 {
		return // every node scores 100
	}
	for i := range raw {
		total[i] += weightTaintToleration * (maxNodeScore - raw[i]*maxNodeScore/most)
	}
}

func toleratedPreferNoSchedule(tols []corev1.Toleration, t *corev1.Taint) bool {
	for i := range tols {
		if e := tols[i].Effect; (e == "" || e == corev1.TaintEffectPreferNoSchedule) && tols[i].ToleratesTaint(t) {
			return true
		}
	}
	return false
}

// scoreNodeAffinity adds NodeAffinity's score: the weights of the preferred
// terms a node matches, relative to the best node.
func (s *Snapshot) scoreNodeAffinity(c *cycle, total []int64) {
	raw := c.raw
	var most int64
	for i, n := range c.feasible {
		var sum int64
		for j := range c.prefNode {
			if c.prefNode[j].term.matches(n) {
				sum += c.prefNode[j].weight
			}
		}
		raw[i] = sum
		most = max(most, sum)
	}
	if most == 0 {
		return
	}
	for i := range raw {
		total[i] += weightNodeAffinity * (raw[i] * maxNodeScore / most)
	}
}

// scoreSpread adds PodTopologySpread's score for the ScheduleAnyway
// constraints: a node scores higher the fewer matching pods its domains hold,
// each constraint weighted by log(domains + 2). Nodes lacking a constraint's
// key score 0.
func (s *Snapshot) scoreSpread(c *cycle, total []int64) {
	set := &c.soft
	s.deriveSpread(c, set, len(c.hard.constraints))
	weights := make([]float64, len(set.constraints))
	raw := c.raw
	const ignored = -1
	hasAll := func(n *nodeInfo) bool {
		for i := range set.constraints {
			if set.constraints[i].topo.ids[n.idx] < 0 {
				return false
			}
		}
		return true
	}
	for i := range set.constraints {
		sc := &set.constraints[i]
		size := 0
		if sc.key == corev1.LabelHostname {
			for _, n := range c.feasible {
				if hasAll(n) {
					size++
				}
			}
		} else {
			seen, stamp := c.stamped(len(sc.topo.values))
			for _, n := range c.feasible {
				if id := sc.topo.ids[n.idx]; hasAll(n) && seen[id] != stamp {
					seen[id] = stamp
					size++
				}
			}
		}
		weights[i] = math.Log(float64(size + 2))
	}
	for i, n := range c.feasible {
		if !hasAll(n) {
			raw[i] = ignored
			continue
		}
		var f float64
		for j := range set.constraints {
			sc := &set.constraints[j]
			cnt := max(sc.counts[sc.topo.ids[n.idx]], 0)
			f += float64(cnt)*weights[j] + float64(sc.maxSkew-1)
		}
		raw[i] = int64(math.Round(f))
	}
	addSpreadScores(raw, total, ignored)
}

// scoreOwnerSpread spreads the pods of one controller over nodes and zones
// when the pod has no spread constraints of its own: kube-scheduler's
// default constraints (hostname maxSkew 3, zone maxSkew 5, ScheduleAnyway),
// counting the pods with the same controller.
func (s *Snapshot) scoreOwnerSpread(c *cycle, total []int64) {
	oc := c.owner
	if len(oc.perNode) == 0 {
		return // no pod of this owner placed yet: every node ties
	}
	// Spread the owner's per-node counts into a dense array for the loop
	// below (a map lookup per feasible node costs more than this).
	if len(c.perNode) < len(s.nodes) {
		c.perNode = make([]int32, len(s.nodes))
	}
	for idx, cnt := range oc.perNode {
		c.perNode[idx] = cnt
	}
	hosts, zones := 0, 0
	c.stamp++
	if len(c.seen) < len(s.zones) {
		c.seen = make([]uint32, len(s.zones))
	}
	for _, n := range c.feasible {
		if n.hasHostname {
			hosts++
		}
		if n.zone >= 0 && c.seen[n.zone] != c.stamp {
			c.seen[n.zone] = c.stamp
			zones++
		}
	}
	hw, zw := math.Log(float64(hosts+2)), math.Log(float64(zones+2))
	raw := c.raw
	for i, n := range c.feasible {
		var f float64
		if n.hasHostname {
			f += float64(c.perNode[n.idx])*hw + (3 - 1)
		}
		if n.zone >= 0 {
			f += float64(oc.perZone[n.zone])*zw + (5 - 1)
		}
		raw[i] = int64(math.Round(f))
	}
	for idx := range oc.perNode {
		c.perNode[idx] = 0
	}
	addSpreadScores(raw, total, -1)
}

// addSpreadScores is PodTopologySpread's NormalizeScore: fewer is better,
// relative to the feasible nodes' range; ignored nodes score 0.
func addSpreadScores(raw, total []int64, ignored int64) {
	minS, maxS := int64(math.MaxInt64), int64(0)
	for _, v := range raw {
		if v == ignored {
			continue
		}
		minS, maxS = min(minS, v), max(maxS, v)
	}
	for i, v := range raw {
		var sc int64
		switch {
		case v == ignored:
			sc = 0
		case maxS == 0:
			sc = maxNodeScore
		default:
			sc = maxNodeScore * (maxS + minS - v) / maxS
		}
		total[i] += weightPodTopologySpread * sc
	}
}

// scorePodAffinity adds InterPodAffinity's score: the pod's preferred
// (anti-)affinity terms weighted by the matching pods in each node's domain,
// plus the placed pods' terms that match this pod, min-max normalized.
func (s *Snapshot) scorePodAffinity(c *cycle, total []int64) {
	raw := c.raw
	minS, maxS := int64(math.MaxInt64), int64(math.MinInt64)
	for i, n := range c.feasible {
		var sum int64
		for _, t := range c.prefAffinity {
			if cnt, ok := t.dc.count(n.idx); ok {
				sum += t.weight * int64(cnt)
			}
		}
		for _, g := range c.scoreGroups {
			if id := g.topo.ids[n.idx]; id >= 0 {
				sum += int64(g.counts[id])
			}
		}
		raw[i] = sum
		minS, maxS = min(minS, sum), max(maxS, sum)
	}
	diff := maxS - minS
	if diff <= 0 {
		return
	}
	for i, v := range raw {
		total[i] += weightInterPodAffinity * int64(maxNodeScore*float64(v-minS)/float64(diff))
	}
}

// scoreImages adds ImageLocality's score: the size of the pod's images
// already on the node, each scaled by the share of nodes that have it (so a
// few nodes holding an image do not attract every pod).
func (s *Snapshot) scoreImages(c *cycle, total []int64) {
	numNodes := float64(len(s.nodes))
	maxThreshold := int64(maxContainerThreshold * c.numContainers)
	for i, n := range c.feasible {
		var sum int64
		for _, st := range c.images {
			if st.nodes[n.idx/64]&(1<<(n.idx%64)) != 0 {
				sum += int64(float64(st.size) * (float64(st.numNodes) / numNodes))
			}
		}
		sum = min(max(sum, minImageThreshold), maxThreshold)
		if maxThreshold > minImageThreshold {
			total[i] += weightImageLocality * (maxNodeScore * (sum - minImageThreshold) / (maxThreshold - minImageThreshold))
		}
	}
}
