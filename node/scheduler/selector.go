package scheduler

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Label and node selectors are compiled once per pod into these types, which
// match a label map without allocating (apimachinery's labels.Selector wants a
// labels.Set and allocates on the way in).

type op uint8

const (
	opIn op = iota
	opNotIn
	opExists
	opDoesNotExist
	opGt
	opLt
)

var opNames = [...]string{opIn: "in", opNotIn: "notin", opExists: "exists", opDoesNotExist: "!", opGt: "gt", opLt: "lt"}

// requirement is one compiled label requirement.
type requirement struct {
	key    string
	op     op
	values []string // opIn, opNotIn
	num    int64    // opGt, opLt
}

func (r *requirement) matches(labels map[string]string) bool {
	v, ok := labels[r.key]
	switch r.op {
	case opIn:
		return ok && slices.Contains(r.values, v)
	case opNotIn:
		return !ok || !slices.Contains(r.values, v)
	case opExists:
		return ok
	case opDoesNotExist:
		return !ok
	case opGt, opLt:
		if !ok {
			return false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return false
		}
		if r.op == opGt {
			return n > r.num
		}
		return n < r.num
	}
	return false
}

// labelSelector is a compiled metav1.LabelSelector. The zero value matches
// everything (an empty selector); nothing is set for a nil selector, which in
// Kubernetes matches no object.
type labelSelector struct {
	reqs    []requirement
	nothing bool
}

func (s *labelSelector) matches(labels map[string]string) bool {
	if s.nothing {
		return false
	}
	for i := range s.reqs {
		if !s.reqs[i].matches(labels) {
			return false
		}
	}
	return true
}

// hint returns a key=value pair every matching object carries, for indexing.
func (s *labelSelector) hint() (key, value string, ok bool) {
	if s.nothing {
		return "", "", false
	}
	for i := range s.reqs {
		if r := &s.reqs[i]; r.op == opIn && len(r.values) == 1 {
			return r.key, r.values[0], true
		}
	}
	return "", "", false
}

// canonical writes a stable representation, equal for equal selectors.
func (s *labelSelector) canonical(b *strings.Builder) {
	if s.nothing {
		b.WriteString("<none>")
		return
	}
	for i := range s.reqs {
		r := &s.reqs[i]
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(r.key))
		b.WriteByte(' ')
		b.WriteString(opNames[r.op])
		for _, v := range r.values {
			b.WriteByte(' ')
			b.WriteString(strconv.Quote(v))
		}
	}
}

// compileLabelSelector compiles ls; extra requirements (matchLabelKeys and
// mismatchLabelKeys resolved against a pod) are ANDed in.
func compileLabelSelector(ls *metav1.LabelSelector, extra ...requirement) (labelSelector, error) {
	if ls == nil {
		return labelSelector{nothing: true}, nil
	}
	var sel labelSelector
	for k, v := range ls.MatchLabels {
		sel.reqs = append(sel.reqs, requirement{key: k, op: opIn, values: []string{v}})
	}
	for _, e := range ls.MatchExpressions {
		r := requirement{key: e.Key}
		switch e.Operator {
		case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
			if len(e.Values) == 0 {
				return labelSelector{}, fmt.Errorf("label selector: operator %q on key %q needs values", e.Operator, e.Key)
			}
			r.op = opIn
			if e.Operator == metav1.LabelSelectorOpNotIn {
				r.op = opNotIn
			}
			r.values = slices.Clone(e.Values)
			slices.Sort(r.values)
		case metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist:
			if len(e.Values) != 0 {
				return labelSelector{}, fmt.Errorf("label selector: operator %q on key %q takes no values", e.Operator, e.Key)
			}
			r.op = opExists
			if e.Operator == metav1.LabelSelectorOpDoesNotExist {
				r.op = opDoesNotExist
			}
		default:
			return labelSelector{}, fmt.Errorf("label selector: unknown operator %q", e.Operator)
		}
		sel.reqs = append(sel.reqs, r)
	}
	sel.reqs = append(sel.reqs, extra...)
	sortRequirements(sel.reqs)
	return sel, nil
}

func sortRequirements(reqs []requirement) {
	slices.SortFunc(reqs, func(a, b requirement) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		if a.op != b.op {
			return int(a.op) - int(b.op)
		}
		return slices.Compare(a.values, b.values)
	})
}

// labelKeyRequirements turns matchLabelKeys (In) and mismatchLabelKeys
// (NotIn) into requirements on the values the pod carries; keys the pod does
// not carry are ignored, as in Kubernetes.
func labelKeyRequirements(podLabels map[string]string, match, mismatch []string) []requirement {
	var out []requirement
	for _, k := range match {
		if v, ok := podLabels[k]; ok {
			out = append(out, requirement{key: k, op: opIn, values: []string{v}})
		}
	}
	for _, k := range mismatch {
		if v, ok := podLabels[k]; ok {
			out = append(out, requirement{key: k, op: opNotIn, values: []string{v}})
		}
	}
	return out
}

// nodeSelectorTerm is one compiled NodeSelectorTerm: its expressions and
// fields are ANDed.
type nodeSelectorTerm struct {
	exprs  []requirement
	fields []requirement // metadata.name only
	valid  bool          // an empty or malformed term matches no node
}

func (t *nodeSelectorTerm) matches(n *nodeInfo) bool {
	if !t.valid {
		return false
	}
	for i := range t.exprs {
		if !t.exprs[i].matches(n.labels) {
			return false
		}
	}
	for i := range t.fields {
		f := &t.fields[i]
		in := slices.Contains(f.values, n.name)
		if (f.op == opIn) != in {
			return false
		}
	}
	return true
}

// nodeSelector is a compiled corev1.NodeSelector: its terms are ORed.
type nodeSelector struct {
	terms []nodeSelectorTerm
}

func (s *nodeSelector) matches(n *nodeInfo) bool {
	for i := range s.terms {
		if s.terms[i].matches(n) {
			return true
		}
	}
	return false
}

// compileNodeSelectorTerm compiles t. Like Kubernetes' lazy-error node
// selector, a malformed term is not an error: it simply matches nothing.
func compileNodeSelectorTerm(t *corev1.NodeSelectorTerm) nodeSelectorTerm {
	out := nodeSelectorTerm{valid: len(t.MatchExpressions)+len(t.MatchFields) > 0}
	for _, e := range t.MatchExpressions {
		r := requirement{key: e.Key}
		switch e.Operator {
		case corev1.NodeSelectorOpIn, corev1.NodeSelectorOpNotIn:
			r.op = opIn
			if e.Operator == corev1.NodeSelectorOpNotIn {
				r.op = opNotIn
			}
			r.values = e.Values
			if len(e.Values) == 0 {
				out.valid = false
			}
		case corev1.NodeSelectorOpExists, corev1.NodeSelectorOpDoesNotExist:
			r.op = opExists
			if e.Operator == corev1.NodeSelectorOpDoesNotExist {
				r.op = opDoesNotExist
			}
			if len(e.Values) != 0 {
				out.valid = false
			}
		case corev1.NodeSelectorOpGt, corev1.NodeSelectorOpLt:
			r.op = opGt
			if e.Operator == corev1.NodeSelectorOpLt {
				r.op = opLt
			}
			var err error
			if len(e.Values) != 1 {
				out.valid = false
			} else if r.num, err = strconv.ParseInt(e.Values[0], 10, 64); err != nil {
				out.valid = false
			}
		default:
			out.valid = false
		}
		out.exprs = append(out.exprs, r)
	}
	for _, f := range t.MatchFields {
		if f.Key != metav1.ObjectNameField || len(f.Values) == 0 ||
			(f.Operator != corev1.NodeSelectorOpIn && f.Operator != corev1.NodeSelectorOpNotIn) {
			out.valid = false
			continue
		}
		r := requirement{key: f.Key, op: opIn, values: f.Values}
		if f.Operator == corev1.NodeSelectorOpNotIn {
			r.op = opNotIn
		}
		out.fields = append(out.fields, r)
	}
	return out
}

func compileNodeSelector(ns *corev1.NodeSelector) *nodeSelector {
	if ns == nil {
		return nil
	}
	out := &nodeSelector{terms: make([]nodeSelectorTerm, 0, len(ns.NodeSelectorTerms))}
	for i := range ns.NodeSelectorTerms {
		out.terms = append(out.terms, compileNodeSelectorTerm(&ns.NodeSelectorTerms[i]))
	}
	return out
}

// tolerated reports whether one of tols tolerates t.
func tolerated(tols []corev1.Toleration, t *corev1.Taint) bool {
	for i := range tols {
		if tols[i].ToleratesTaint(t) {
			return true
		}
	}
	return false
}
