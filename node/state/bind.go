package state

import (
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Bind returns an op that binds the pod namespace/name to nodeName, as the
// scheduler decides it: spec.nodeName set, status.nominatedNodeName
// cleared, the PodScheduled condition True (its transition time now, in
// unix seconds, when it changes). It fails with CodeConflict unless the
// stored pod has resourceVersion expectRV (0 = any) and is not bound yet.
// The log carries the decision, not the pod: a few dozen bytes instead of
// the whole object, which every replica would otherwise decode.
func Bind(namespace, name, nodeName string, expectRV uint64, now int64) Op {
	return Op{Type: OpBind, Resource: "pods", Namespace: namespace, Name: name, Key: nodeName, ExpectRV: expectRV, Time: now}
}

// bind applies an OpBind.
func (t *txn) bind(op *decodedOp) Result {
	s := t.s
	if op.Resource != "pods" || op.Key == "" {
		return Result{Code: CodeInvalid, Message: "a binding names a pod and a node"}
	}
	key := objKey(op.Namespace, op.Name)
	prev, exists := s.objs[op.Resource][key]
	if !exists {
		return Result{Code: CodeNotFound, Message: fmt.Sprintf("pods %q not found", op.Name)}
	}
	if op.ExpectRV != 0 && rvOf(prev) != op.ExpectRV {
		return Result{Code: CodeConflict, Message: fmt.Sprintf("the object has been modified; please apply your changes to the latest version and try again (stored %s, expected %d)", prev.GetResourceVersion(), op.ExpectRV)}
	}
	pod := prev.(*corev1.Pod).DeepCopy()
	if pod.Spec.NodeName != "" {
		return Result{Code: CodeConflict, Message: fmt.Sprintf("pod %s is already assigned to node %q", op.Name, pod.Spec.NodeName)}
	}
	pod.Spec.NodeName = op.Key
	pod.Status.NominatedNodeName = ""
	SetPodCondition(&pod.Status, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, time.Unix(op.Time, 0).UTC())
	s.rev++
	pod.SetResourceVersion(strconv.FormatUint(s.rev, 10))
	t.setObj(op.Resource, key, pod)
	t.events = append(t.events, Event{Type: Modified, Resource: op.Resource, Object: pod, Prev: prev, RV: s.rev})
	return Result{RV: s.rev}
}

// SetPodCondition sets a condition, keeping its transition time when its
// status is unchanged (now, to the second, when it changes or is new).
func SetPodCondition(st *corev1.PodStatus, c corev1.PodCondition, now time.Time) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == c.Type {
			if st.Conditions[i].Status != c.Status {
				c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
			} else {
				c.LastTransitionTime = st.Conditions[i].LastTransitionTime
			}
			st.Conditions[i] = c
			return
		}
	}
	c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
	st.Conditions = append(st.Conditions, c)
}
