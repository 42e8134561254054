package node

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/state"
)

// Reasons a pod bound to a node that cannot run it waits with.
const (
	reasonNodeNotFound = "NodeNotFound"
	reasonNodeNotReady = "NodeNotReady"
)

// watchPodBindings (a leader duty) explains pods that wait for a node no
// agent will serve: a pod bound to a node that does not exist, or is not
// Ready, before any agent took it up stays Pending with a reason and a
// message saying why. The node's agent takes over (and clears them) as soon
// as it runs the pod.
func (n *Node) watchPodBindings(ctx context.Context) {
	_, _, pw := n.store.ListAndWatch(state.WatchOptions{Resource: "pods"})
	_, _, nw := n.store.ListAndWatch(state.WatchOptions{Resource: "nodes"})
	defer func() { pw.Stop(); nw.Stop() }()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		n.checkPodBindings(ctx)
		select {
		case <-ctx.Done():
			return
		case _, ok := <-pw.Events():
			if !ok {
				_, _, pw = n.store.ListAndWatch(state.WatchOptions{Resource: "pods"})
			}
		case _, ok := <-nw.Events():
			if !ok {
				_, _, nw = n.store.ListAndWatch(state.WatchOptions{Resource: "nodes"})
			}
		case <-t.C:
		}
		// Coalesce bursts of events into one pass.
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (n *Node) checkPodBindings(ctx context.Context) {
	pods, _ := n.store.List("pods", "")
	for _, o := range pods {
		pod := o.(*corev1.Pod)
		if pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil || len(pod.Status.ContainerStatuses) > 0 ||
			(pod.Status.Phase != "" && pod.Status.Phase != corev1.PodPending) {
			continue // unscheduled (the scheduler's), or an agent has it
		}
		reason, msg := "", ""
		if no, ok := n.store.Get("nodes", "", pod.Spec.NodeName); !ok {
			reason, msg = reasonNodeNotFound, fmt.Sprintf("node %q does not exist: the pod waits for a node of that name to join", pod.Spec.NodeName)
		} else if !nodeReady(no.(*corev1.Node)) {
			reason, msg = reasonNodeNotReady, fmt.Sprintf("node %q is not Ready: the pod waits for it", pod.Spec.NodeName)
		}
		if reason == pod.Status.Reason && msg == pod.Status.Message {
			continue
		}
		upd := pod.DeepCopy()
		upd.Status.Phase = corev1.PodPending
		upd.Status.Reason, upd.Status.Message = reason, msg
		setPodCondition(&upd.Status, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, n.now())
		if equality.Semantic.DeepEqual(upd.Status, pod.Status) {
			continue
		}
		if _, err := n.proposer.Propose(ctx, state.Update(upd, rvOf(pod))); err != nil && ctx.Err() == nil {
			n.log.Debug("pod binding status", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		}
	}
}

// setPodCondition sets a condition, keeping its transition time when its
// status is unchanged.
func setPodCondition(st *corev1.PodStatus, c corev1.PodCondition, now time.Time) {
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
