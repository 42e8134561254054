package scheduler

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// cycle is everything derived from the pod being scheduled, computed once per
// Schedule call (kube-scheduler's PreFilter/PreScore state). The Snapshot
// keeps one and reuses its slices, so scheduling a simple pod allocates
// nothing.
type cycle struct {
	pod      *corev1.Pod
	req      podRequest
	priority int32

	tolerations            []corev1.Toleration
	toleratesUnschedulable bool

	// Node affinity: spec.nodeSelector and the required terms (both must
	// match); nodeNames restricts the nodes to look at when every required
	// term names nodes with matchFields metadata.name In.
	nodeSelector map[string]string
	reqAffinity  *nodeSelector
	nodeNames    []*nodeInfo
	restricted   bool
	prefNode     []weightedNodeTerm

	ports   []hostPort
	volumes []*nodeSelector // node affinity of the bound PersistentVolumes

	preFilterMsg string // the pod fits no node whatever their state

	hard, soft spreadSet
	owner      *ownerCount // default spreading of a controller's pods

	affinity     []affinityTerm // required pod affinity (all must match one pod)
	affCounter   *counter
	selfAffinity bool
	anti         []affinityTerm // required pod anti-affinity
	existingAnti []*termGroup   // placed pods' required anti-affinity that matches this pod
	prefAffinity []weightedAffinityTerm
	scoreGroups  []*termGroup // placed pods' scoring terms that match this pod

	images        []*imageState
	numContainers int

	// Scratch, reused across calls.
	counterScratch []*counter
	groupScratch   []*termGroup
	feasible       []*nodeInfo
	total, raw     []int64
	ints           [][]int32
	seen           []uint32 // per zone: stamp of the last scoring pass that saw it
	valSeen        []uint32 // per topology value id: likewise
	stamp          uint32
	perNode        []int32 // per node idx, zero between uses
	reasons        []string
	codes          []code // per node idx, filled by a failed cycle's diagnosis
}

type weightedNodeTerm struct {
	term   nodeSelectorTerm
	weight int64
}

type affinityTerm struct {
	dc *domainCounts // matching pods per domain of the term's topology key
}

type weightedAffinityTerm struct {
	affinityTerm
	weight int64 // negative for anti-affinity
}

// prepare fills c for pod. An error means the pod's spec cannot be
// evaluated (a malformed selector the API should have refused).
func (s *Snapshot) prepare(c *cycle, pod *corev1.Pod) error {
	c.reset()
	c.pod = pod
	c.req = computePodRequest(pod)
	c.priority = s.Priority(pod)
	spec := &pod.Spec

	c.tolerations = spec.Tolerations
	c.toleratesUnschedulable = tolerated(spec.Tolerations, &corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule})

	c.nodeSelector = spec.NodeSelector
	if a := spec.Affinity; a != nil && a.NodeAffinity != nil {
		na := a.NodeAffinity
		if r := na.RequiredDuringSchedulingIgnoredDuringExecution; r != nil {
			c.reqAffinity = compileNodeSelector(r)
			s.restrictNodeNames(c, r)
		}
		for i := range na.PreferredDuringSchedulingIgnoredDuringExecution {
			p := &na.PreferredDuringSchedulingIgnoredDuringExecution[i]
			if p.Weight != 0 {
				c.prefNode = append(c.prefNode, weightedNodeTerm{compileNodeSelectorTerm(&p.Preference), int64(p.Weight)})
			}
		}
	}

	c.ports = append(c.ports[:0], podHostPorts(pod)...)
	s.prepareVolumes(c, pod)
	if err := s.prepareSpread(c, pod); err != nil {
		return err
	}
	if err := s.preparePodAffinity(c, pod); err != nil {
		return err
	}
	s.prepareImages(c, pod)
	return nil
}

func (c *cycle) reset() {
	*c = cycle{
		ports:          c.ports[:0],
		volumes:        c.volumes[:0],
		hard:           spreadSet{constraints: c.hard.constraints[:0]},
		soft:           spreadSet{constraints: c.soft.constraints[:0]},
		affinity:       c.affinity[:0],
		anti:           c.anti[:0],
		existingAnti:   c.existingAnti[:0],
		prefAffinity:   c.prefAffinity[:0],
		scoreGroups:    c.scoreGroups[:0],
		images:         c.images[:0],
		prefNode:       c.prefNode[:0],
		nodeNames:      c.nodeNames[:0],
		counterScratch: c.counterScratch[:0],
		groupScratch:   c.groupScratch[:0],
		feasible:       c.feasible[:0],
		total:          c.total[:0],
		raw:            c.raw[:0],
		ints:           c.ints,
		seen:           c.seen,
		valSeen:        c.valSeen,
		perNode:        c.perNode,
		stamp:          c.stamp,
		reasons:        c.reasons[:0],
		codes:          c.codes,
	}
}

// matchesNodeAffinity reports whether n satisfies the pod's nodeSelector and
// required node affinity.
func (c *cycle) matchesNodeAffinity(n *nodeInfo) bool {
	if c.reqAffinity == nil && len(c.nodeSelector) == 0 {
		return true
	}
	for k, v := range c.nodeSelector {
		if nv, ok := n.labels[k]; !ok || nv != v {
			return false
		}
	}
	return c.reqAffinity == nil || c.reqAffinity.matches(n)
}

func (c *cycle) hasNodeAffinity() bool { return len(c.nodeSelector) > 0 || c.reqAffinity != nil }

// restrictNodeNames implements NodeAffinity's PreFilter: when every required
// term pins node names (matchFields metadata.name In, as DaemonSet pods do),
// only those nodes are evaluated.
func (s *Snapshot) restrictNodeNames(c *cycle, r *corev1.NodeSelector) {
	var names map[string]bool
	for i := range r.NodeSelectorTerms {
		var term map[string]bool
		for _, f := range r.NodeSelectorTerms[i].MatchFields {
			if f.Key != metav1.ObjectNameField || f.Operator != corev1.NodeSelectorOpIn {
				continue
			}
			this := make(map[string]bool, len(f.Values))
			for _, v := range f.Values {
				if term == nil || term[v] {
					this[v] = true
				}
			}
			term = this
		}
		if term == nil {
			return // this term does not pin names: every node is a candidate
		}
		if names == nil {
			names = map[string]bool{}
		}
		for n := range term {
			names[n] = true
		}
	}
	if names == nil {
		return
	}
	if len(names) == 0 {
		c.preFilterMsg = "pod affinity terms conflict"
		return
	}
	c.restricted = true
	for name := range names {
		if n := s.byName[name]; n != nil {
			c.nodeNames = append(c.nodeNames, n)
		}
	}
	slices.SortFunc(c.nodeNames, func(a, b *nodeInfo) int { return int(a.idx - b.idx) }) // snapshot order
}

// prepareVolumes resolves the pod's claims (VolumeBinding's PreFilter).
func (s *Snapshot) prepareVolumes(c *cycle, pod *corev1.Pod) {
	if s.opts.Volumes == nil {
		return
	}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		var claim string
		switch {
		case v.PersistentVolumeClaim != nil:
			claim = v.PersistentVolumeClaim.ClaimName
		case v.Ephemeral != nil:
			claim = pod.Name + "-" + v.Name
		default:
			continue
		}
		pv, found := s.opts.Volumes(pod.Namespace, claim)
		if !found {
			if c.preFilterMsg == "" {
				c.preFilterMsg = fmt.Sprintf("persistentvolumeclaim %q not found", claim)
			}
			continue
		}
		if pv != nil && pv.Spec.NodeAffinity != nil && pv.Spec.NodeAffinity.Required != nil {
			c.volumes = append(c.volumes, compileNodeSelector(pv.Spec.NodeAffinity.Required))
		}
	}
}

// preparePodAffinity compiles the pod's own inter-pod terms against the
// counters and finds the placed pods' terms that match it.
func (s *Snapshot) preparePodAffinity(c *cycle, pod *corev1.Pod) error {
	if a := pod.Spec.Affinity; a != nil {
		if pa := a.PodAffinity; pa != nil {
			if req := pa.RequiredDuringSchedulingIgnoredDuringExecution; len(req) > 0 {
				ms := make([]podMatcher, 0, len(req))
				c.selfAffinity = true
				for i := range req {
					m, err := newPodMatcher(pod.Namespace, pod.Labels, &req[i])
					if err != nil {
						return fmt.Errorf("pod affinity term %d: %w", i, err)
					}
					ms = append(ms, m)
					c.selfAffinity = c.selfAffinity && m.matches(s, pod.Namespace, pod.Labels)
				}
				c.affCounter = s.counterFor(ms, false)
				for i := range req {
					c.affinity = append(c.affinity, affinityTerm{c.affCounter.domain(s, req[i].TopologyKey)})
				}
			}
			for i := range pa.PreferredDuringSchedulingIgnoredDuringExecution {
				t := &pa.PreferredDuringSchedulingIgnoredDuringExecution[i]
				if err := s.addPreferredTerm(c, pod, &t.PodAffinityTerm, int64(t.Weight)); err != nil {
					return err
				}
			}
		}
		if pa := a.PodAntiAffinity; pa != nil {
			for i := range pa.RequiredDuringSchedulingIgnoredDuringExecution {
				t := &pa.RequiredDuringSchedulingIgnoredDuringExecution[i]
				m, err := newPodMatcher(pod.Namespace, pod.Labels, t)
				if err != nil {
					return fmt.Errorf("pod anti-affinity term %d: %w", i, err)
				}
				cnt := s.counterFor([]podMatcher{m}, false)
				c.anti = append(c.anti, affinityTerm{cnt.domain(s, t.TopologyKey)})
			}
			for i := range pa.PreferredDuringSchedulingIgnoredDuringExecution {
				t := &pa.PreferredDuringSchedulingIgnoredDuringExecution[i]
				if err := s.addPreferredTerm(c, pod, &t.PodAffinityTerm, -int64(t.Weight)); err != nil {
					return err
				}
			}
		}
	}
	if !s.groupIdx.empty() {
		c.groupScratch = s.groupIdx.collect(c.groupScratch[:0], pod.Namespace, pod.Labels)
		for _, g := range c.groupScratch {
			if g.refs == 0 || !g.m.matches(s, pod.Namespace, pod.Labels) {
				continue
			}
			if g.required {
				c.existingAnti = append(c.existingAnti, g)
			} else {
				c.scoreGroups = append(c.scoreGroups, g)
			}
		}
	}
	return nil
}

func (s *Snapshot) addPreferredTerm(c *cycle, pod *corev1.Pod, t *corev1.PodAffinityTerm, w int64) error {
	if w == 0 {
		return nil
	}
	m, err := newPodMatcher(pod.Namespace, pod.Labels, t)
	if err != nil {
		return fmt.Errorf("preferred pod affinity term: %w", err)
	}
	cnt := s.counterFor([]podMatcher{m}, false)
	c.prefAffinity = append(c.prefAffinity, weightedAffinityTerm{affinityTerm{cnt.domain(s, t.TopologyKey)}, w})
	return nil
}

func (s *Snapshot) prepareImages(c *cycle, pod *corev1.Pod) {
	c.numContainers = len(pod.Spec.InitContainers) + len(pod.Spec.Containers)
	if len(s.images) == 0 {
		return
	}
	add := func(ctr *corev1.Container) {
		if st := s.images[normalizedImageName(ctr.Image)]; st != nil {
			c.images = append(c.images, st)
		}
	}
	for i := range pod.Spec.InitContainers {
		add(&pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		add(&pod.Spec.Containers[i])
	}
}

// intScratch returns the i-th scratch slice of the cycle's pool, n long,
// every element set to fill.
func (c *cycle) intScratch(i, n int, fill int32) []int32 {
	for len(c.ints) <= i {
		c.ints = append(c.ints, nil)
	}
	b := c.ints[i]
	if cap(b) < n {
		b = make([]int32, n)
	}
	b = b[:n]
	for j := range b {
		b[j] = fill
	}
	c.ints[i] = b
	return b
}

// stamped returns a per-value stamp slice at least n long and a fresh stamp,
// for counting distinct values without clearing anything.
func (c *cycle) stamped(n int) ([]uint32, uint32) {
	if len(c.valSeen) < n {
		c.valSeen = make([]uint32, n)
	}
	c.stamp++
	return c.valSeen, c.stamp
}
