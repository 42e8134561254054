package scheduler

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Inter-pod affinity, anti-affinity and topology spreading all ask the same
// question: how many pods matching some selector run in each topology domain?
// kube-scheduler answers it by walking every pod in the cluster for every pod
// it schedules; at 50,000 pods that alone would cap throughput in the low
// hundreds per second. Here the answers are kept incrementally instead:
//
//   - a counter counts, per node, the pods that match one selector (created the
//     first time a pod being scheduled asks, then updated on every Assume and
//     Forget), with per-topology-key domain totals derived on demand;
//   - a termGroup sums the affinity terms of the pods already placed that are
//     identical (same namespaces, selector and topology key), per domain, so
//     checking "would this pod violate an existing pod's anti-affinity" costs
//     one lookup per distinct term rather than one per pod.
//
// Both are found through a matcherIndex keyed by the namespace and one
// key=value pair every match must carry, so an Assume only touches the
// counters and groups that might match the pod.

// podMatcher is a compiled PodAffinityTerm (or spread constraint) scope:
// which namespaces and which labels.
type podMatcher struct {
	allNS      bool     // any namespace
	namespaces []string // sorted
	nsSel      *labelSelector
	sel        labelSelector
}

func (m *podMatcher) matches(s *Snapshot, ns string, labels map[string]string) bool {
	if !m.allNS && !slices.Contains(m.namespaces, ns) &&
		(m.nsSel == nil || !m.nsSel.matches(s.opts.NamespaceLabels[ns])) {
		return false
	}
	return m.sel.matches(labels)
}

func (m *podMatcher) canonical(b *strings.Builder) {
	switch {
	case m.allNS:
		b.WriteString("*")
	default:
		b.WriteString(strings.Join(m.namespaces, ","))
		if m.nsSel != nil {
			b.WriteString("+{")
			m.nsSel.canonical(b)
			b.WriteString("}")
		}
	}
	b.WriteString("|")
	m.sel.canonical(b)
}

// hint returns the single namespace and a key=value pair every pod the
// matcher matches has, when there are such.
func (m *podMatcher) hint() (ns, key, value string, nsOnly, ok bool) {
	if m.allNS || m.nsSel != nil || len(m.namespaces) != 1 || m.sel.nothing {
		return "", "", "", false, false
	}
	k, v, ok := m.sel.hint()
	return m.namespaces[0], k, v, !ok, true
}

// newPodMatcher compiles the scope of an affinity term written in a pod of
// namespace ns with labels podLabels.
func newPodMatcher(ns string, podLabels map[string]string, t *corev1.PodAffinityTerm) (podMatcher, error) {
	sel, err := compileLabelSelector(t.LabelSelector, labelKeyRequirements(podLabels, t.MatchLabelKeys, t.MismatchLabelKeys)...)
	if err != nil {
		return podMatcher{}, err
	}
	m := podMatcher{sel: sel}
	if t.NamespaceSelector != nil {
		nsSel, err := compileLabelSelector(t.NamespaceSelector)
		if err != nil {
			return podMatcher{}, err
		}
		if len(nsSel.reqs) == 0 {
			m.allNS = true
		} else {
			m.nsSel = &nsSel
		}
	}
	if !m.allNS {
		m.namespaces = slices.Clone(t.Namespaces)
		if len(m.namespaces) == 0 && t.NamespaceSelector == nil {
			m.namespaces = []string{ns}
		}
		slices.Sort(m.namespaces)
		m.namespaces = slices.Compact(m.namespaces)
	}
	return m, nil
}

type hintKey struct{ ns, key, value string }

// matcherIndex finds the entries whose matchers might match a pod.
type matcherIndex[T any] struct {
	global []T
	byNS   map[string][]T
	byHint map[hintKey][]T
}

func (ix *matcherIndex[T]) add(m *podMatcher, v T) {
	ns, k, val, nsOnly, ok := m.hint()
	switch {
	case !ok:
		ix.global = append(ix.global, v)
	case nsOnly:
		if ix.byNS == nil {
			ix.byNS = make(map[string][]T)
		}
		ix.byNS[ns] = append(ix.byNS[ns], v)
	default:
		if ix.byHint == nil {
			ix.byHint = make(map[hintKey][]T)
		}
		h := hintKey{ns, k, val}
		ix.byHint[h] = append(ix.byHint[h], v)
	}
}

// collect appends to dst the entries that might match a pod in namespace ns
// with labels; callers still check the matcher.
func (ix *matcherIndex[T]) collect(dst []T, ns string, labels map[string]string) []T {
	dst = append(dst, ix.global...)
	if ix.byNS != nil {
		dst = append(dst, ix.byNS[ns]...)
	}
	if len(ix.byHint) > 0 {
		for k, v := range labels {
			dst = append(dst, ix.byHint[hintKey{ns, k, v}]...)
		}
	}
	return dst
}

func (ix *matcherIndex[T]) empty() bool {
	return len(ix.global) == 0 && len(ix.byNS) == 0 && len(ix.byHint) == 0
}

// topology is how the nodes divide by one label key: each value gets a dense
// id, so that per-domain counts are slices indexed by id rather than maps
// keyed by label value (hashing label strings was most of the cost of
// affinity and spreading).
type topology struct {
	key          string
	ids          []int32 // per node idx: value id, -1 without the key
	values       []string
	nodesWithKey int
}

// topologyOf returns the topology of key, built on first use.
func (s *Snapshot) topologyOf(key string) *topology {
	if t, ok := s.topologies[key]; ok {
		return t
	}
	t := &topology{key: key, ids: make([]int32, len(s.nodes))}
	byValue := map[string]int32{}
	for i, n := range s.nodes {
		v, ok := n.labels[key]
		if !ok {
			t.ids[i] = -1
			continue
		}
		id, seen := byValue[v]
		if !seen {
			id = int32(len(t.values))
			byValue[v] = id
			t.values = append(t.values, v)
		}
		t.ids[i] = id
		t.nodesWithKey++
	}
	if s.topologies == nil {
		s.topologies = make(map[string]*topology)
	}
	s.topologies[key] = t
	return t
}

// domainCounts counts pods per value of one topology.
type domainCounts struct {
	topo    *topology
	counts  []int32 // per value id
	nonzero int     // values with a nonzero count
}

func (d *domainCounts) add(id, delta int32) {
	old := d.counts[id]
	d.counts[id] = old + delta
	switch {
	case old == 0 && delta != 0:
		d.nonzero++
	case old != 0 && old+delta == 0:
		d.nonzero--
	}
}

// count returns the count of node idx's domain and whether the node has the
// key at all.
func (d *domainCounts) count(idx int32) (int32, bool) {
	id := d.topo.ids[idx]
	if id < 0 {
		return 0, false
	}
	return d.counts[id], true
}

// counter counts the pods matching all of its matchers, per node, with
// per-topology domain totals derived on first use and kept up to date.
type counter struct {
	ms              []podMatcher
	skipTerminating bool // topology spreading ignores terminating pods
	perNode         map[int32]int32
	domains         []*domainCounts
}

func (c *counter) matches(s *Snapshot, p *podInfo) bool {
	if c.skipTerminating && p.terminating {
		return false
	}
	for i := range c.ms {
		if !c.ms[i].matches(s, p.pod.Namespace, p.pod.Labels) {
			return false
		}
	}
	return true
}

func (c *counter) add(n *nodeInfo, d int32) {
	v := c.perNode[n.idx] + d
	if v == 0 {
		delete(c.perNode, n.idx)
	} else {
		c.perNode[n.idx] = v
	}
	for _, dc := range c.domains {
		if id := dc.topo.ids[n.idx]; id >= 0 {
			dc.add(id, d)
		}
	}
}

// domain returns the matching pods per value of key. It is kept up to date
// and never replaced, so callers may hold on to it.
func (c *counter) domain(s *Snapshot, key string) *domainCounts {
	for _, dc := range c.domains {
		if dc.topo.key == key {
			return dc
		}
	}
	topo := s.topologyOf(key)
	dc := &domainCounts{topo: topo, counts: make([]int32, len(topo.values))}
	for idx, cnt := range c.perNode {
		if id := topo.ids[idx]; id >= 0 {
			dc.add(id, cnt)
		}
	}
	c.domains = append(c.domains, dc)
	return dc
}

// counterFor returns the counter for ms, creating and filling it on first use.
func (s *Snapshot) counterFor(ms []podMatcher, skipTerminating bool) *counter {
	var b strings.Builder
	if skipTerminating {
		b.WriteString("spread:")
	} else {
		b.WriteString("affinity:")
	}
	for i := range ms {
		if i > 0 {
			b.WriteString(" && ")
		}
		ms[i].canonical(&b)
	}
	key := b.String()
	if c, ok := s.counters[key]; ok {
		return c
	}
	c := &counter{ms: ms, skipTerminating: skipTerminating, perNode: make(map[int32]int32)}
	s.counters[key] = c
	s.counterIdx.add(&c.ms[0], c)
	if ns, k, v, nsOnly, ok := ms[0].hint(); ok && !nsOnly {
		for _, p := range s.podsWithLabel(ns, k, v) {
			if p.attached && c.matches(s, p) {
				c.add(p.node, 1)
			}
		}
	} else {
		for _, p := range s.allPods {
			if p.attached && c.matches(s, p) {
				c.add(p.node, 1)
			}
		}
	}
	return c
}

// podsWithLabel returns the pods ever attached in namespace ns with label
// k=v (callers skip detached ones). The index is built on first use.
func (s *Snapshot) podsWithLabel(ns, k, v string) []*podInfo {
	if s.labelIdx == nil {
		s.labelIdx = make(map[hintKey][]*podInfo, len(s.allPods))
		for _, p := range s.allPods {
			s.indexLabels(p)
		}
	}
	return s.labelIdx[hintKey{ns, k, v}]
}

func (s *Snapshot) indexLabels(p *podInfo) {
	for k, v := range p.pod.Labels {
		h := hintKey{p.pod.Namespace, k, v}
		s.labelIdx[h] = append(s.labelIdx[h], p)
	}
}

// termGroup aggregates identical affinity terms of placed pods, per value of
// their topology key: a pod count for required anti-affinity terms, a weight
// sum for the terms that only score.
type termGroup struct {
	m        podMatcher
	topo     *topology
	required bool
	counts   []int32 // per value id of topo
	refs     int     // placed pods carrying the term
}

// termRef is one pod's contribution to a group.
type termRef struct {
	g *termGroup
	w int32
}

func (g *termGroup) add(n *nodeInfo, w, d int32) {
	g.refs += int(d)
	if id := g.topo.ids[n.idx]; id >= 0 {
		g.counts[id] += w * d
	}
}

// groupFor returns the group for a term, creating it on first use.
func (s *Snapshot) groupFor(m podMatcher, topoKey string, required bool) *termGroup {
	var b strings.Builder
	if required {
		b.WriteString("R|")
	} else {
		b.WriteString("S|")
	}
	b.WriteString(topoKey)
	b.WriteString("|")
	m.canonical(&b)
	key := b.String()
	if g, ok := s.groups[key]; ok {
		return g
	}
	topo := s.topologyOf(topoKey)
	g := &termGroup{m: m, topo: topo, required: required, counts: make([]int32, len(topo.values))}
	s.groups[key] = g
	s.groupIdx.add(&g.m, g)
	return g
}

// hardPodAffinityWeight is what an existing pod's required affinity term adds
// to the score of nodes in its domain for a pod it matches (kube-scheduler's
// default).
const hardPodAffinityWeight = 1

// podTerms compiles the affinity terms of a placed pod into group
// contributions. Terms that do not compile are skipped: the pod runs already.
func (s *Snapshot) podTerms(pod *corev1.Pod) []termRef {
	a := pod.Spec.Affinity
	if a == nil || (a.PodAffinity == nil && a.PodAntiAffinity == nil) {
		return nil
	}
	var refs []termRef
	addTerm := func(t *corev1.PodAffinityTerm, required bool, w int32) {
		m, err := newPodMatcher(pod.Namespace, pod.Labels, t)
		if err != nil || w == 0 {
			return
		}
		refs = append(refs, termRef{s.groupFor(m, t.TopologyKey, required), w})
	}
	if pa := a.PodAffinity; pa != nil {
		for i := range pa.RequiredDuringSchedulingIgnoredDuringExecution {
			addTerm(&pa.RequiredDuringSchedulingIgnoredDuringExecution[i], false, hardPodAffinityWeight)
		}
		for i := range pa.PreferredDuringSchedulingIgnoredDuringExecution {
			t := &pa.PreferredDuringSchedulingIgnoredDuringExecution[i]
			addTerm(&t.PodAffinityTerm, false, t.Weight)
		}
	}
	if pa := a.PodAntiAffinity; pa != nil {
		for i := range pa.RequiredDuringSchedulingIgnoredDuringExecution {
			addTerm(&pa.RequiredDuringSchedulingIgnoredDuringExecution[i], true, 1)
		}
		for i := range pa.PreferredDuringSchedulingIgnoredDuringExecution {
			t := &pa.PreferredDuringSchedulingIgnoredDuringExecution[i]
			addTerm(&t.PodAffinityTerm, false, -t.Weight)
		}
	}
	return refs
}
