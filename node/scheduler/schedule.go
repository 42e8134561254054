package scheduler

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Reasons a pod is not scheduled, for its PodScheduled=False condition.
const (
	ReasonUnschedulable   = corev1.PodReasonUnschedulable   // "Unschedulable"
	ReasonSchedulingGated = corev1.PodReasonSchedulingGated // "SchedulingGated"
)

// Result is the outcome of scheduling one pod.
type Result struct {
	// NodeName is the chosen node; empty when the pod was not scheduled.
	NodeName string

	// Reason and Message explain why the pod was not scheduled, for its
	// PodScheduled=False condition and a FailedScheduling event. Message is
	// worded as kube-scheduler words it:
	//   0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated
	//   taint {dedicated: gpu}. preemption: 0/3 nodes are available: 3
	//   Preemption is not helpful for scheduling.
	Reason  string
	Message string

	// NominatedNodeName and Victims are set when the pod fits nowhere but
	// would fit on NominatedNodeName once Victims (pods of lower priority,
	// most important first) are gone. The caller evicts the victims and
	// records the nomination in the pod's status.nominatedNodeName; the pod
	// is scheduled in a later round, when the victims have left.
	NominatedNodeName string
	Victims           []*corev1.Pod

	// FeasibleNodes is how many nodes were found to fit and scored;
	// EvaluatedNodes how many were filtered to find them (for an
	// unschedulable pod: before every node was diagnosed).
	FeasibleNodes  int
	EvaluatedNodes int
}

// Scheduled reports whether the pod was placed.
func (r Result) Scheduled() bool { return r.NodeName != "" }

// Schedule picks a node for a pending pod, or explains why there is none. It
// does not record the placement: call Assume with the result once it is
// decided to keep it (normally at once).
//
// Filtering visits the nodes round-robin from where the previous call
// stopped and stops once it has found the number of feasible nodes
// percentageOfNodesToScore asks for; those are scored and the best is
// chosen. When no node fits, every node is diagnosed for the message and
// preemption looks for lower-priority pods whose eviction would make room.
//
// An error means the pod cannot be evaluated at all: it is bound already
// (ErrBound), or a selector in its spec is malformed.
func (s *Snapshot) Schedule(pod *corev1.Pod) (Result, error) {
	if pod == nil {
		return Result{}, errNilPod
	}
	if pod.Spec.NodeName != "" {
		return Result{}, fmt.Errorf("%w: %s/%s on %s", ErrBound, pod.Namespace, pod.Name, pod.Spec.NodeName)
	}
	if len(pod.Spec.SchedulingGates) > 0 {
		return Result{Reason: ReasonSchedulingGated, Message: "Scheduling is blocked due to non-empty scheduling gates"}, nil
	}
	if len(s.nodes) == 0 {
		return Result{Reason: ReasonUnschedulable, Message: errNoNodesMessage}, nil
	}
	c := &s.cyc
	if err := s.prepare(c, pod); err != nil {
		c.pod = nil
		return Result{}, fmt.Errorf("scheduling %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if c.preFilterMsg != "" {
		return s.unschedulable(c, 0), nil
	}

	// A pod that preempted goes to its nominated node when it fits there
	// now (kube-scheduler's evaluateNominatedNode): that is where room was
	// made for it.
	if nom := s.byName[pod.Status.NominatedNodeName]; nom != nil && (!c.restricted || slices.Contains(c.nodeNames, nom)) &&
		s.filter(c, nom, nil) == success {
		return Result{NodeName: nom.name, FeasibleNodes: 1, EvaluatedNodes: 1}, nil
	}

	candidates := s.nodes
	start := s.next
	if c.restricted {
		candidates, start = c.nodeNames, 0
	}
	want := numFeasibleNodesToFind(s.opts.PercentageOfNodesToScore, len(candidates))
	evaluated := 0
	for i := start; evaluated < len(candidates); i++ {
		if i == len(candidates) {
			i = 0
		}
		n := candidates[i]
		evaluated++
		if s.filter(c, n, nil) == success {
			c.feasible = append(c.feasible, n)
			if len(c.feasible) >= want {
				break
			}
		}
	}
	if !c.restricted {
		s.next = (start + evaluated) % len(s.nodes)
	}
	if len(c.feasible) == 0 {
		return s.unschedulable(c, evaluated), nil
	}
	n := s.selectNode(c)
	return Result{NodeName: n.name, FeasibleNodes: len(c.feasible), EvaluatedNodes: evaluated}, nil
}

// numFeasibleNodesToFind is kube-scheduler's: all nodes below 100; else the
// configured percentage, or adaptively 50% minus 1% per 125 nodes with a
// floor of 5%; never fewer than 100.
func numFeasibleNodesToFind(percentage int32, numNodes int) int {
	const minNodes, minPercentage, basePercentage = 100, 5, 50
	if numNodes < minNodes {
		return numNodes
	}
	p := int(percentage)
	if p == 0 {
		p = max(basePercentage-numNodes/125, minPercentage)
	}
	return max(numNodes*p/100, minNodes)
}

// unschedulable diagnoses every node for a pod that fits none, runs
// preemption and builds the result.
func (s *Snapshot) unschedulable(c *cycle, evaluated int) Result {
	if cap(c.codes) < len(s.nodes) {
		c.codes = make([]code, len(s.nodes))
	}
	c.codes = c.codes[:len(s.nodes)]
	hist := map[string]int{}
	if c.preFilterMsg == "" {
		inSet := s.nodes
		if c.restricted {
			for i := range c.codes {
				c.codes[i] = unresolvable
			}
			hist[reasonNodeNames] = len(s.nodes) - len(c.nodeNames)
			inSet = c.nodeNames
		}
		for _, n := range inSet {
			c.reasons = c.reasons[:0]
			c.codes[n.idx] = s.filter(c, n, &c.reasons)
			for _, r := range c.reasons {
				hist[r]++
			}
		}
	} else {
		for i := range c.codes {
			c.codes[i] = unresolvable
		}
	}
	res := Result{Reason: ReasonUnschedulable, EvaluatedNodes: evaluated}
	var b strings.Builder
	b.WriteString("0/")
	b.WriteString(strconv.Itoa(len(s.nodes)))
	b.WriteString(" nodes are available:")
	if c.preFilterMsg != "" {
		b.WriteString(" ")
		b.WriteString(c.preFilterMsg)
		b.WriteString(".")
	} else if len(hist) > 0 {
		b.WriteString(" ")
		b.WriteString(histogram(hist))
		b.WriteString(".")
	}
	nominated, victims, msg := s.preempt(c)
	if nominated != nil {
		res.NominatedNodeName, res.Victims = nominated.name, victims
	} else if msg != "" {
		b.WriteString(" preemption: ")
		b.WriteString(msg)
	}
	res.Message = b.String()
	return res
}

// histogram renders reason counts as kube-scheduler does: "N reason" items,
// sorted as strings, comma-separated.
func histogram(h map[string]int) string {
	items := make([]string, 0, len(h))
	for r, n := range h {
		if n > 0 {
			items = append(items, strconv.Itoa(n)+" "+r)
		}
	}
	sort.Strings(items)
	return strings.Join(items, ", ")
}
