package scheduler

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// The property tests schedule random pods onto random clusters, preempting
// when the scheduler says so, and check the outcome from scratch with code
// that shares nothing with the scheduler's filters.

const spreadPriority = 1000 // pods of the spread group are never victims

func randomCluster(r *rand.Rand) []*corev1.Node {
	n := 3 + r.IntN(23)
	out := make([]*corev1.Node, 0, n)
	for i := range n {
		node := mkNode(fmt.Sprintf("n%02d", i), alloc(
			"cpu", fmt.Sprint(1+r.IntN(8)),
			"memory", fmt.Sprintf("%dGi", 2+r.IntN(15)),
			"pods", fmt.Sprint(3+r.IntN(18)),
			"example.com/gpu", fmt.Sprint(r.IntN(3)),
		))
		node.Labels[corev1.LabelTopologyZone] = fmt.Sprintf("z%d", r.IntN(3))
		if r.IntN(2) == 0 {
			node.Labels["disk"] = "ssd"
		}
		if r.IntN(5) == 0 {
			effects := []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute, corev1.TaintEffectPreferNoSchedule}
			keys := []string{"dedicated", "gpu"}
			taint(keys[r.IntN(2)], "yes", effects[r.IntN(3)])(node)
		}
		switch r.IntN(20) {
		case 0:
			node.Spec.Unschedulable = true
		case 1:
			node.Status.Conditions[0].Status = corev1.ConditionFalse
		}
		out = append(out, node)
	}
	return out
}

func randomPod(r *rand.Rand, i int) *corev1.Pod {
	pick := func(vs ...string) string { return vs[r.IntN(len(vs))] }
	apps := []string{"a", "b", "c", "d"}
	ns := "default"
	if r.IntN(10) == 0 {
		ns = "other"
	}
	p := mkPod(fmt.Sprintf("%s/p%03d", ns, i), plabel("app", apps[r.IntN(len(apps))]), prio(int32(10*r.IntN(4))),
		owner(fmt.Sprintf("rs%d", r.IntN(3))))
	reqs := corev1.ResourceList{}
	if c := pick("0", "100m", "250m", "500m", "1", "2"); c != "0" {
		reqs[corev1.ResourceCPU] = resource.MustParse(c)
	}
	if m := pick("0", "128Mi", "512Mi", "1Gi", "3Gi"); m != "0" {
		reqs[corev1.ResourceMemory] = resource.MustParse(m)
	}
	if r.IntN(8) == 0 {
		reqs["example.com/gpu"] = resource.MustParse("1")
	}
	p.Spec.Containers[0].Resources.Requests = reqs
	if r.IntN(5) == 0 {
		key := pick(corev1.LabelHostname, corev1.LabelTopologyZone)
		podAntiAffinity(podTerm(key, "app", apps[r.IntN(len(apps))]))(p)
	}
	if r.IntN(20) == 0 {
		podAffinity(podTerm(corev1.LabelTopologyZone, "app", apps[r.IntN(len(apps))]))(p)
	}
	if r.IntN(10) == 0 {
		preferredPodAffinity(int32(1+r.IntN(100)), podTerm(corev1.LabelHostname, "app", apps[r.IntN(len(apps))]), r.IntN(2) == 0)(p)
	}
	if r.IntN(10) == 0 {
		// The spread group: maxSkew 1 over zones, never preempted.
		p.Labels["app"] = "spread"
		prio(spreadPriority)(p)
		spread(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule, "app", "spread")(p)
	}
	if r.IntN(3) == 0 {
		tolerate(pick("dedicated", "gpu", ""), corev1.TolerationOpExists, "",
			corev1.TaintEffect(pick("", string(corev1.TaintEffectNoSchedule), string(corev1.TaintEffectNoExecute))))(p)
	}
	if r.IntN(10) == 0 {
		hostPortOpt(corev1.ProtocolTCP, "", int32(80+r.IntN(2)))(p)
	}
	if r.IntN(10) == 0 && p.Labels["app"] != "spread" { // a selector narrows the spread domains (Honor)
		nodeSel("disk", "ssd")(p)
	}
	return p
}

type placement struct{ pod, node string }

// runRandom schedules the pods in order, preempting when told to, and
// returns the final placements, the snapshot and the pods by name.
func runRandom(t *testing.T, seed uint64) ([]placement, *Snapshot, []*corev1.Node, map[string]*corev1.Pod) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 42))
	nodes := randomCluster(r)
	s := newSnap(t, nodes, nil, func(o *Options) { o.Seed = seed })
	byName := map[string]*corev1.Pod{}
	or := &oracle{nodes: nodes, pods: byName, placed: map[string]string{}}
	var log []placement
	n := 20 + r.IntN(130)
	for i := range n {
		pod := randomPod(r, i)
		byName[podKey(pod)] = pod
		res, err := s.Schedule(pod)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if !res.Scheduled() && res.NominatedNodeName != "" {
			prio := s.Priority(pod)
			for _, v := range res.Victims {
				if s.Priority(v) >= prio {
					t.Fatalf("seed %d: %s (priority %d) preempts %s of priority %d", seed, pod.Name, prio, v.Name, s.Priority(v))
				}
				if pi := s.pods[podKey(v)]; pi == nil || pi.node.name != res.NominatedNodeName {
					t.Fatalf("seed %d: victim %s is not on the nominated node %s", seed, v.Name, res.NominatedNodeName)
				}
				if err := s.Forget(v); err != nil {
					t.Fatal(err)
				}
				delete(or.placed, podKey(v))
				log = append(log, placement{podKey(v), ""})
			}
			pod.Status.NominatedNodeName = res.NominatedNodeName // as the leader records it
			nominated := res.NominatedNodeName
			if res, err = s.Schedule(pod); err != nil {
				t.Fatal(err)
			}
			if res.NodeName != nominated {
				t.Fatalf("seed %d: %s does not go to %s after its victims left: %+v", seed, pod.Name, nominated, res)
			}
		}
		if res.Scheduled() {
			if why := or.fits(pod, res.NodeName); why != "" {
				t.Fatalf("seed %d: %s placed on %s, which the oracle rejects: %s", seed, pod.Name, res.NodeName, why)
			}
			if err := s.Assume(pod, res.NodeName); err != nil {
				t.Fatal(err)
			}
			or.placed[podKey(pod)] = res.NodeName
			log = append(log, placement{podKey(pod), res.NodeName})
		} else if res.NominatedNodeName == "" {
			for _, n := range nodes {
				if or.fits(pod, n.Name) == "" {
					t.Fatalf("seed %d: %s unschedulable (%s) but fits %s", seed, pod.Name, res.Message, n.Name)
				}
			}
		}
	}
	return log, s, nodes, byName
}

func TestPropertyScheduling(t *testing.T) {
	iterations := 300
	if testing.Short() || raceEnabled {
		iterations = 50
	}
	if v, err := strconv.Atoi(os.Getenv("SCHEDULER_PROPERTY_ITERATIONS")); err == nil {
		iterations = v // for longer hunts
	}
	for i := range iterations {
		seed := uint64(i)
		log, s, nodes, pods := runRandom(t, seed)
		placed := map[string]string{} // pod → node
		for _, p := range log {
			if p.node == "" {
				delete(placed, p.pod)
			} else {
				placed[p.pod] = p.node
			}
		}
		checkInvariants(t, seed, nodes, pods, placed)

		// Same seed, same placements.
		again, _, _, _ := runRandom(t, seed)
		if !slices.Equal(log, again) {
			t.Fatalf("seed %d: scheduling is not deterministic", seed)
		}

		// The incremental state equals one built from scratch.
		var bound []*corev1.Pod
		for _, key := range sortedKeys(placed) {
			p := pods[key].DeepCopy()
			p.Spec.NodeName = placed[key]
			bound = append(bound, p)
		}
		fresh := newSnap(t, nodes, bound)
		for _, c := range s.counters {
			fc := fresh.counterFor(c.ms, c.skipTerminating)
			for _, dc := range c.domains {
				fc.domain(fresh, dc.topo.key)
			}
		}
		if got, want := fingerprint(s), fingerprint(fresh); got != want {
			t.Fatalf("seed %d: incremental snapshot differs from a rebuilt one:\n%s\nrebuilt:\n%s", seed, got, want)
		}
	}
}

func checkInvariants(t *testing.T, seed uint64, nodes []*corev1.Node, pods map[string]*corev1.Pod, placed map[string]string) {
	t.Helper()
	byNode := map[string][]*corev1.Pod{}
	for key, n := range placed {
		byNode[n] = append(byNode[n], pods[key])
	}
	nodeByName := map[string]*corev1.Node{}
	for _, n := range nodes {
		nodeByName[n.Name] = n
		ps := byNode[n.Name]
		// Never over-committed.
		sum := corev1.ResourceList{}
		for _, p := range ps {
			for name, q := range p.Spec.Containers[0].Resources.Requests {
				cur := sum[name]
				cur.Add(q)
				sum[name] = cur
			}
		}
		for name, q := range sum {
			if a := n.Status.Allocatable[name]; q.Cmp(a) > 0 {
				t.Fatalf("seed %d: %s over-committed on %s: %s > %s", seed, n.Name, name, q.String(), a.String())
			}
		}
		if a := n.Status.Allocatable[corev1.ResourcePods]; int64(len(ps)) > a.Value() {
			t.Fatalf("seed %d: %s runs %d pods, allows %d", seed, n.Name, len(ps), a.Value())
		}
		// Taints, cordon and readiness are honoured.
		for _, p := range ps {
			tolerates := func(t corev1.Taint) bool {
				for _, tol := range p.Spec.Tolerations {
					if tol.ToleratesTaint(&t) {
						return true
					}
				}
				return false
			}
			for _, tn := range n.Spec.Taints {
				if tn.Effect != corev1.TaintEffectPreferNoSchedule && !tolerates(tn) {
					t.Fatalf("seed %d: %s on %s does not tolerate %v", seed, p.Name, n.Name, tn)
				}
			}
			if n.Spec.Unschedulable && !tolerates(corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}) {
				t.Fatalf("seed %d: %s on cordoned %s", seed, p.Name, n.Name)
			}
			if n.Status.Conditions[0].Status != corev1.ConditionTrue && !tolerates(corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}) {
				t.Fatalf("seed %d: %s on not-ready %s", seed, p.Name, n.Name)
			}
			for k, v := range p.Spec.NodeSelector {
				if n.Labels[k] != v {
					t.Fatalf("seed %d: %s on %s ignores its node selector", seed, p.Name, n.Name)
				}
			}
		}
		// Host ports are not shared.
		seen := map[int32]string{}
		for _, p := range ps {
			for _, cp := range p.Spec.Containers[0].Ports {
				if other, ok := seen[cp.HostPort]; ok {
					t.Fatalf("seed %d: %s and %s both bind port %d on %s", seed, p.Name, other, cp.HostPort, n.Name)
				}
				seen[cp.HostPort] = p.Name
			}
		}
	}
	// Required anti-affinity is never violated, in either direction.
	for key, nodeName := range placed {
		p := pods[key]
		if p.Spec.Affinity == nil || p.Spec.Affinity.PodAntiAffinity == nil {
			continue
		}
		for _, term := range p.Spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
			if err != nil {
				t.Fatal(err)
			}
			dom, ok := nodeByName[nodeName].Labels[term.TopologyKey]
			if !ok {
				continue
			}
			for okey, onode := range placed {
				o := pods[okey]
				if okey == key || o.Namespace != p.Namespace || !sel.Matches(labels.Set(o.Labels)) {
					continue
				}
				if od, ok := nodeByName[onode].Labels[term.TopologyKey]; ok && od == dom {
					t.Fatalf("seed %d: %s on %s and %s on %s share %s=%s against %s's anti-affinity",
						seed, p.Name, nodeName, o.Name, onode, term.TopologyKey, dom, p.Name)
				}
			}
		}
	}
	// The spread group stays within maxSkew 1 over the zones.
	counts := map[string]int{}
	for _, n := range nodes {
		counts[n.Labels[corev1.LabelTopologyZone]] += 0
	}
	for key, nodeName := range placed {
		if p := pods[key]; p.Namespace == "default" && p.Labels["app"] == "spread" {
			counts[nodeByName[nodeName].Labels[corev1.LabelTopologyZone]]++
		}
	}
	lo, hi := 1<<30, 0
	for _, c := range counts {
		lo, hi = min(lo, c), max(hi, c)
	}
	if hi-lo > 1 {
		t.Fatalf("seed %d: spread group skew %d > 1: %v", seed, hi-lo, counts)
	}
}

// TestPropertyForgetRestores: assuming pods and forgetting them again leaves
// the snapshot as it was.
func TestPropertyForgetRestores(t *testing.T) {
	for seed := uint64(0); seed < 50; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		nodes := randomCluster(r)
		s := newSnap(t, nodes, nil, func(o *Options) { o.Seed = seed })
		var keep []*corev1.Pod
		for i := range 40 {
			p := randomPod(r, i)
			res, err := s.Schedule(p)
			if err != nil {
				t.Fatal(err)
			}
			if res.Scheduled() {
				if err := s.Assume(p, res.NodeName); err != nil {
					t.Fatal(err)
				}
				keep = append(keep, p)
			}
		}
		before := fingerprint(s)
		var extra []*corev1.Pod
		for i := 40; i < 80; i++ {
			p := randomPod(r, i)
			if res, _ := s.Schedule(p); res.Scheduled() {
				if err := s.Assume(p, res.NodeName); err != nil {
					t.Fatal(err)
				}
				extra = append(extra, p)
			}
		}
		// Counters created by the extra pods exist now; compare only what
		// existed before by rebuilding the "before" view with them.
		for _, p := range extra {
			if err := s.Forget(p); err != nil {
				t.Fatal(err)
			}
		}
		fresh := newSnap(t, nodes, placedCopies(s, keep))
		for _, c := range s.counters {
			fc := fresh.counterFor(c.ms, c.skipTerminating)
			for _, dc := range c.domains {
				fc.domain(fresh, dc.topo.key)
			}
		}
		if got, want := fingerprint(s), fingerprint(fresh); got != want {
			t.Fatalf("seed %d: after Forget:\n%s\nrebuilt:\n%s\nbefore the extra pods:\n%s", seed, got, want, before)
		}
		if err := s.Forget(extra[0]); err == nil && len(extra) > 0 {
			t.Fatalf("Forget of a forgotten pod succeeded")
		}
	}
}

func placedCopies(s *Snapshot, pods []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		c := p.DeepCopy()
		c.Spec.NodeName = s.pods[podKey(p)].node.name
		out = append(out, c)
	}
	return out
}

// oracle decides whether a pod fits a node the slow, obvious way, from the
// objects alone, for the constraints the random pods use.
type oracle struct {
	nodes  []*corev1.Node
	pods   map[string]*corev1.Pod
	placed map[string]string // pod key → node
	byName map[string]*corev1.Node
}

func (o *oracle) node(name string) *corev1.Node {
	if o.byName == nil {
		o.byName = map[string]*corev1.Node{}
		for _, n := range o.nodes {
			o.byName[n.Name] = n
		}
	}
	return o.byName[name]
}

func (o *oracle) fits(pod *corev1.Pod, nodeName string) string {
	n := o.node(nodeName)
	tolerates := func(t corev1.Taint) bool {
		for _, tol := range pod.Spec.Tolerations {
			if tol.ToleratesTaint(&t) {
				return true
			}
		}
		return false
	}
	if n.Spec.Unschedulable && !tolerates(corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}) {
		return "cordoned"
	}
	if n.Status.Conditions[0].Status != corev1.ConditionTrue && !tolerates(corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}) {
		return "not ready"
	}
	for _, t := range n.Spec.Taints {
		if t.Effect != corev1.TaintEffectPreferNoSchedule && !tolerates(t) {
			return "taint"
		}
	}
	for k, v := range pod.Spec.NodeSelector {
		if n.Labels[k] != v {
			return "selector"
		}
	}
	var here []*corev1.Pod
	for key, on := range o.placed {
		if on == nodeName {
			here = append(here, o.pods[key])
		}
	}
	for _, cp := range pod.Spec.Containers[0].Ports {
		for _, q := range here {
			for _, qp := range q.Spec.Containers[0].Ports {
				if qp.HostPort == cp.HostPort {
					return "port"
				}
			}
		}
	}
	if a := n.Status.Allocatable[corev1.ResourcePods]; int64(len(here)+1) > a.Value() {
		return "pods"
	}
	for name, want := range pod.Spec.Containers[0].Resources.Requests {
		if want.IsZero() {
			continue
		}
		used := want.DeepCopy()
		for _, q := range here {
			if v, ok := q.Spec.Containers[0].Resources.Requests[name]; ok {
				used.Add(v)
			}
		}
		if a := n.Status.Allocatable[name]; used.Cmp(a) > 0 {
			return "insufficient " + string(name)
		}
	}
	matches := func(term corev1.PodAffinityTerm, termNS string, q *corev1.Pod) bool {
		sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
		if err != nil {
			panic(err)
		}
		return q.Namespace == termNS && sel.Matches(labels.Set(q.Labels))
	}
	sameDomain := func(key, other string) bool {
		a, ok1 := n.Labels[key]
		b, ok2 := o.node(other).Labels[key]
		return ok1 && ok2 && a == b
	}
	if a := pod.Spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			for key, on := range o.placed {
				if matches(term, pod.Namespace, o.pods[key]) && sameDomain(term.TopologyKey, on) {
					return "anti-affinity"
				}
			}
		}
	}
	for key, on := range o.placed {
		q := o.pods[key]
		if a := q.Spec.Affinity; a != nil && a.PodAntiAffinity != nil {
			for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
				if matches(term, q.Namespace, pod) && sameDomain(term.TopologyKey, on) {
					return "existing anti-affinity"
				}
			}
		}
	}
	if a := pod.Spec.Affinity; a != nil && a.PodAffinity != nil {
		for _, term := range a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			if _, ok := n.Labels[term.TopologyKey]; !ok {
				return "affinity key"
			}
			found, anywhere := false, false
			for key, on := range o.placed {
				if !matches(term, pod.Namespace, o.pods[key]) {
					continue
				}
				if _, ok := o.node(on).Labels[term.TopologyKey]; ok {
					anywhere = true
				}
				found = found || sameDomain(term.TopologyKey, on)
			}
			if !found && (anywhere || !matches(term, pod.Namespace, pod)) {
				return "affinity"
			}
		}
	}
	for _, c := range pod.Spec.TopologySpreadConstraints {
		counts := map[string]int{}
		for _, m := range o.nodes {
			if v, ok := m.Labels[c.TopologyKey]; ok {
				counts[v] += 0
			}
		}
		for key, on := range o.placed {
			if matches(corev1.PodAffinityTerm{LabelSelector: c.LabelSelector}, pod.Namespace, o.pods[key]) {
				counts[o.node(on).Labels[c.TopologyKey]]++
			}
		}
		lo := 1 << 30
		for _, v := range counts {
			lo = min(lo, v)
		}
		if counts[n.Labels[c.TopologyKey]]+1-lo > int(c.MaxSkew) {
			return "spread"
		}
	}
	return ""
}
