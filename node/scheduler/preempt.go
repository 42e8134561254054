package scheduler

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Preemption follows kube-scheduler's DefaultPreemption: among the nodes
// where the pod failed for reasons that evicting pods could fix, it removes
// every pod of lower priority, checks that the pod then fits, and adds back
// as many of them as it can, most important first; the rest are the victims.
// Of the nodes where that works it picks, in order: the lowest priority of
// the most important victim, the lowest sum of victim priorities, the fewest
// victims, the latest start among the most important victims (PodDisruption
// Budgets, kube-scheduler's first criterion, do not exist in Shoal yet).
// Pods of equal or higher priority are never victims.

const (
	minCandidateNodesPercentage = 10
	minCandidateNodesAbsolute   = 100
)

type candidate struct {
	node    *nodeInfo
	victims []*podInfo
}

// preempt returns the node to nominate and the victims, or (nil, nil,
// message) saying why preemption cannot help, worded as kube-scheduler's
// PostFilter message after "preemption: ".
func (s *Snapshot) preempt(c *cycle) (*nodeInfo, []*corev1.Pod, string) {
	pod := c.pod
	if pod.Spec.PreemptionPolicy != nil && *pod.Spec.PreemptionPolicy == corev1.PreemptNever {
		return nil, nil, "not eligible due to preemptionPolicy=Never."
	}
	if nom := pod.Status.NominatedNodeName; nom != "" {
		// The pod preempted already: while its victims terminate, it waits.
		if n := s.byName[nom]; n != nil && c.codes[n.idx] != unresolvable {
			for _, p := range n.pods {
				if p.priority < c.priority && terminatingByPreemption(p.pod) {
					return nil, nil, "not eligible due to a terminating pod on the nominated node."
				}
			}
		}
	}
	var potential []*nodeInfo
	for _, n := range s.nodes {
		if c.codes[n.idx] == unschedulable {
			potential = append(potential, n)
		}
	}
	hist := map[string]int{}
	if len(potential) > 0 {
		want := max(len(potential)*minCandidateNodesPercentage/100, minCandidateNodesAbsolute)
		want = min(want, len(potential))
		offset := s.rng.IntN(len(potential))
		var best *candidate
		found := 0
		for i := 0; i < len(potential) && found < want; i++ {
			n := potential[(offset+i)%len(potential)]
			victims, ok := s.selectVictims(c, n)
			if !ok {
				for _, r := range c.reasons {
					hist[r]++
				}
				continue
			}
			found++
			cand := &candidate{node: n, victims: victims}
			if len(victims) == 0 {
				best = cand
				break
			}
			if best == nil || betterCandidate(cand, best) {
				best = cand
			}
		}
		if best != nil {
			out := make([]*corev1.Pod, len(best.victims))
			for i, v := range best.victims {
				out[i] = v.pod
			}
			return best.node, out, ""
		}
	}
	// Nodes that failed for reasons eviction cannot fix were not tried.
	hist[reasonPreemptionNotHelpful] += len(s.nodes) - len(potential)
	var b strings.Builder
	b.WriteString("0/")
	b.WriteString(strconv.Itoa(len(s.nodes)))
	b.WriteString(" nodes are available: ")
	b.WriteString(histogram(hist))
	b.WriteString(".")
	return nil, nil, b.String()
}

// selectVictims is kube-scheduler's SelectVictimsOnNode. It leaves the
// snapshot as it found it. When the node cannot be made to fit, c.reasons
// holds why.
func (s *Snapshot) selectVictims(c *cycle, n *nodeInfo) ([]*podInfo, bool) {
	var potential []*podInfo
	for _, p := range n.pods {
		if p.priority < c.priority {
			potential = append(potential, p)
		}
	}
	c.reasons = c.reasons[:0]
	if len(potential) == 0 {
		c.reasons = append(c.reasons, reasonNoVictims)
		return nil, false
	}
	for _, p := range potential {
		s.detach(p)
	}
	if s.filter(c, n, &c.reasons) != success {
		for _, p := range potential {
			s.attach(p)
		}
		return nil, false
	}
	// Reprieve the most important first.
	slices.SortStableFunc(potential, func(a, b *podInfo) int {
		if moreImportant(a, b) {
			return -1
		}
		if moreImportant(b, a) {
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
	var victims []*podInfo
	for _, p := range potential {
		s.attach(p)
		if s.filter(c, n, nil) != success {
			s.detach(p)
			victims = append(victims, p)
		}
	}
	for _, p := range victims {
		s.attach(p)
	}
	return victims, true
}

// moreImportant is kube-scheduler's MoreImportantPod: higher priority, then
// started earlier.
func moreImportant(a, b *podInfo) bool {
	if a.priority != b.priority {
		return a.priority > b.priority
	}
	return startTime(a).Before(startTime(b))
}

// notStarted stands for the start time of pods that have not started yet:
// later than any real one (kube-scheduler uses "now").
var notStarted = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// startTime is when the pod started.
func startTime(p *podInfo) time.Time {
	if st := p.pod.Status.StartTime; st != nil {
		return st.Time
	}
	return notStarted
}

// betterCandidate orders candidates by kube-scheduler's criteria (victims
// are sorted most important first).
func betterCandidate(a, b *candidate) bool {
	ha, hb := a.victims[0].priority, b.victims[0].priority
	if ha != hb {
		return ha < hb
	}
	if sa, sb := prioritySum(a.victims), prioritySum(b.victims); sa != sb {
		return sa < sb
	}
	if len(a.victims) != len(b.victims) {
		return len(a.victims) < len(b.victims)
	}
	return earliestStart(a.victims).After(earliestStart(b.victims))
}

// prioritySum sums priorities shifted to be positive (as kube-scheduler
// does), so that an extra victim always adds to the sum, even one of
// negative priority.
func prioritySum(vs []*podInfo) int64 {
	var sum int64
	for _, v := range vs {
		sum += int64(v.priority) + math.MaxInt32 + 1
	}
	return sum
}

// earliestStart is the earliest start among the victims of the highest
// priority.
func earliestStart(vs []*podInfo) time.Time {
	t := startTime(vs[0])
	for _, v := range vs[1:] {
		if v.priority != vs[0].priority {
			break
		}
		if st := startTime(v); st.Before(t) {
			t = st
		}
	}
	return t
}

// terminatingByPreemption reports whether p is being deleted because a
// scheduler preempted it (it carries DisruptionTarget=True with reason
// PreemptionByScheduler, which the caller sets when it evicts victims).
func terminatingByPreemption(p *corev1.Pod) bool {
	if p.DeletionTimestamp == nil {
		return false
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.DisruptionTarget {
			return cond.Status == corev1.ConditionTrue && cond.Reason == corev1.PodReasonPreemptionByScheduler
		}
	}
	return false
}
