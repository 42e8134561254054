package node

import (
	"context"
	"fmt"
	"strings"
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
// as it runs the pod. It looks at a pod when the pod changes and at a
// node's waiting pods when the node changes, never at every pod at once
// (except after a lost watch).
func (n *Node) watchPodBindings(ctx context.Context) {
	var in eventInbox
	in.start(ctx, n.store, "pods", "nodes")
	waiting := map[string]map[string]bool{} // node → keys of pods bound to it that no agent took up
	wait := func(pod *corev1.Pod) bool {
		key := pod.Namespace + "/" + pod.Name
		if pod.Spec.NodeName == "" {
			return false
		}
		set := waiting[pod.Spec.NodeName]
		if awaitsAgent(pod) {
			if set == nil {
				set = map[string]bool{}
				waiting[pod.Spec.NodeName] = set
			}
			set[key] = true
			return true
		}
		if set != nil {
			delete(set, key)
			if len(set) == 0 {
				delete(waiting, pod.Spec.NodeName)
			}
		}
		return false
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-in.Kick():
		}
		// Coalesce bursts of events into one pass.
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		evs, resync := in.take()
		if resync {
			clear(waiting)
			pods, _ := n.store.List("pods", "")
			for _, o := range pods {
				if pod := o.(*corev1.Pod); wait(pod) {
					n.explainBinding(ctx, pod)
				}
			}
			continue
		}
		for _, ev := range evs {
			switch ev.Resource {
			case "pods":
				pod := ev.Object.(*corev1.Pod)
				if ev.Type == state.Deleted {
					pod = pod.DeepCopy()
					pod.DeletionTimestamp = &metav1.Time{} // no longer waits
				}
				if wait(pod) {
					n.explainBinding(ctx, pod)
				}
			case "nodes":
				for key := range waiting[ev.Object.GetName()] {
					ns, name, _ := strings.Cut(key, "/")
					if o, ok := n.store.Get("pods", ns, name); ok {
						n.explainBinding(ctx, o.(*corev1.Pod))
					}
				}
			}
		}
	}
}

// awaitsAgent reports whether a bound pod has not been taken up by an
// agent yet.
func awaitsAgent(pod *corev1.Pod) bool {
	return pod.Spec.NodeName != "" && pod.DeletionTimestamp == nil && len(pod.Status.ContainerStatuses) == 0 &&
		(pod.Status.Phase == "" || pod.Status.Phase == corev1.PodPending)
}

// explainBinding sets the reason a waiting pod waits, or clears it.
func (n *Node) explainBinding(ctx context.Context, pod *corev1.Pod) {
	if !awaitsAgent(pod) {
		return
	}
	reason, msg := "", ""
	if no, ok := n.store.Get("nodes", "", pod.Spec.NodeName); !ok {
		reason, msg = reasonNodeNotFound, fmt.Sprintf("node %q does not exist: the pod waits for a node of that name to join", pod.Spec.NodeName)
	} else if !nodeReady(no.(*corev1.Node)) {
		reason, msg = reasonNodeNotReady, fmt.Sprintf("node %q is not Ready: the pod waits for it", pod.Spec.NodeName)
	}
	if reason == pod.Status.Reason && msg == pod.Status.Message {
		return
	}
	upd := pod.DeepCopy()
	upd.Status.Phase = corev1.PodPending
	upd.Status.Reason, upd.Status.Message = reason, msg
	state.SetPodCondition(&upd.Status, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, n.now())
	if equality.Semantic.DeepEqual(upd.Status, pod.Status) {
		return
	}
	if _, err := n.proposer.Propose(ctx, state.Update(upd, rvOf(pod))); err != nil && ctx.Err() == nil {
		n.log.Debug("pod binding status", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	}
}
