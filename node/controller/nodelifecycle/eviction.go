package nodelifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

var podKind, _ = state.KindFor(controller.ResourcePods)

// maxWriteAttempts bounds read-modify-write retries on conflicts.
const maxWriteAttempts = 5

var errTooManyConflicts = errors.New("the pod kept changing; giving up for now")

// evictionTime is when pod must leave a node with the NoExecute taints
// taints (kube's taint manager rule): now when one of them is not
// tolerated or tolerated with tolerationSeconds ≤ 0; else the earliest
// timeAdded + tolerationSeconds of the tolerations used (the first that
// matches each taint; a taint without timeAdded counts from now). ok is
// false when every taint is tolerated forever.
func evictionTime(pod *corev1.Pod, taints []corev1.Taint, now time.Time) (at time.Time, ok bool) {
	for i := range taints {
		t := &taints[i]
		var tol *corev1.Toleration
		for j := range pod.Spec.Tolerations {
			if pod.Spec.Tolerations[j].ToleratesTaint(t) {
				tol = &pod.Spec.Tolerations[j]
				break
			}
		}
		if tol == nil {
			return now, true
		}
		if tol.TolerationSeconds == nil {
			continue
		}
		if *tol.TolerationSeconds <= 0 {
			return now, true
		}
		added := now
		if t.TimeAdded != nil {
			added = t.TimeAdded.Time
		}
		due := added.Add(time.Duration(*tol.TolerationSeconds) * time.Second)
		if !ok || due.Before(at) {
			at, ok = due, true
		}
	}
	return at, ok
}

var statefulSetGroup = appsv1.SchemeGroupVersion.Group

// ownedByStatefulSet reports whether a StatefulSet controls pod.
func ownedByStatefulSet(pod *corev1.Pod) bool {
	ref := controller.ControllerOf(pod)
	if ref == nil || ref.Kind != "StatefulSet" {
		return false
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	return err == nil && gv.Group == statefulSetGroup
}

// syncPod evicts the pod namespace/name if the NoExecute taints of its
// node call for it now, or comes back when they will; a pod bound to a
// node that is gone is collected (see collectOrphan).
func (lc *Controller) syncPod(ctx context.Context, namespace, name string) error {
	o, ok := lc.c.Store.Get(controller.ResourcePods, namespace, name)
	if !ok {
		return nil
	}
	pod := o.(*corev1.Pod)
	if pod.Spec.NodeName == "" {
		return nil
	}
	no, ok := lc.c.Store.Get(controller.ResourceNodes, "", pod.Spec.NodeName)
	if !ok {
		return lc.collectOrphan(ctx, pod)
	}
	if controller.IsPodFinished(pod) {
		return nil
	}
	node := no.(*corev1.Node)
	if !isReady(node) {
		// As Kubernetes' node lifecycle controller does: the pods of a node
		// that is not Ready are not Ready either, so Services stop sending
		// them traffic at once rather than at their eviction. The node's
		// agent sets Ready again when it is back.
		if err := lc.markNotReady(ctx, pod); err != nil {
			return err
		}
	}
	var taints []corev1.Taint
	guarded := false
	for _, t := range node.Spec.Taints {
		if t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		if isConditionTaint(&t) {
			if !guarded && lc.massDisruption() {
				// The not-ready/unreachable taints evict nothing now;
				// the end of the disruption requeues the node's pods.
				guarded = true
			}
			if guarded {
				continue
			}
		}
		taints = append(taints, t)
	}
	if len(taints) == 0 {
		return nil
	}
	now := lc.c.Now()
	at, evict := evictionTime(pod, taints, now)
	if !evict {
		return nil
	}
	if wait := at.Sub(now); wait > 0 {
		lc.queue.AddAfter(prefixPod+controller.Key(namespace, name), wait)
		return nil
	}
	return lc.evict(ctx, pod, node)
}

// evict deletes pod from node: gracefully when node is Ready (its agent
// finishes the deletion); at once when it is not, unless a StatefulSet
// controls the pod, which is then only marked for deletion.
func (lc *Controller) evict(ctx context.Context, pod *corev1.Pod, node *corev1.Node) error {
	key := controller.Key(pod.Namespace, pod.Name)
	force := !isReady(node) && !ownedByStatefulSet(pod)
	if !force && pod.DeletionTimestamp != nil {
		return nil // already marked; its agent (or the node's deletion) finishes it
	}
	var err error
	if force {
		err = lc.forceDelete(ctx, pod)
	} else {
		err = controller.DeletePod(ctx, lc.c, pod)
	}
	if err != nil {
		return fmt.Errorf("evicting pod %s from node %s: %w", key, node.Name, err)
	}
	lc.c.Events.Eventf(pod, "Pod", corev1.EventTypeNormal, ReasonTaintManagerEviction, "Marking for deletion Pod %s", key)
	lc.c.Log.Info("nodelifecycle: evicted pod", "pod", key, "node", node.Name, "force", force)
	return nil
}

// forceDelete removes pod (the stored one with pod's UID) from the store
// without waiting for its agent, as a DELETE with gracePeriodSeconds=0
// does: a pod with finalizers is marked (deletionTimestamp now, grace 0)
// and goes when they are removed. A pod that is gone is success.
func (lc *Controller) forceDelete(ctx context.Context, pod *corev1.Pod) error {
	for range maxWriteAttempts {
		o, ok := lc.c.Store.Get(controller.ResourcePods, pod.Namespace, pod.Name)
		if !ok || o.GetUID() != pod.UID {
			return nil
		}
		cur := o.(*corev1.Pod)
		var op state.Op
		if len(cur.Finalizers) == 0 {
			op = state.Delete(podKind, cur.Namespace, cur.Name, controller.RV(cur), string(cur.UID))
		} else {
			if cur.DeletionTimestamp != nil && cur.DeletionGracePeriodSeconds != nil && *cur.DeletionGracePeriodSeconds == 0 {
				return nil
			}
			next := cur.DeepCopy()
			now := lc.c.MetaNow()
			if next.DeletionTimestamp == nil || now.Before(next.DeletionTimestamp) {
				next.DeletionTimestamp = &now
			}
			next.DeletionGracePeriodSeconds = new(int64)
			op = state.Update(next, controller.RV(cur))
		}
		_, err := lc.c.Proposer.Propose(ctx, op)
		switch {
		case err == nil, state.IsCode(err, state.CodeNotFound):
			return nil
		case state.IsCode(err, state.CodeConflict):
			continue
		default:
			return fmt.Errorf("deleting pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
	return fmt.Errorf("deleting pod %s/%s: %w", pod.Namespace, pod.Name, errTooManyConflicts)
}

// wasTakenUp reports whether an agent has had pod: it started, reported
// container states or a final phase, or the pod is being deleted. A pod
// bound to a missing node that was never taken up is waiting for a node of
// that name to join.
func wasTakenUp(pod *corev1.Pod) bool {
	s := &pod.Status
	return pod.DeletionTimestamp != nil || s.StartTime != nil || s.HostIP != "" ||
		len(s.ContainerStatuses) > 0 || len(s.InitContainerStatuses) > 0 ||
		s.Phase == corev1.PodRunning || s.Phase == corev1.PodSucceeded || s.Phase == corev1.PodFailed
}

// collectOrphan removes a pod whose node no longer exists if an agent had
// taken it up (pod GC).
func (lc *Controller) collectOrphan(ctx context.Context, pod *corev1.Pod) error {
	if !wasTakenUp(pod) {
		return nil
	}
	return lc.collect(ctx, pod)
}

func (lc *Controller) collect(ctx context.Context, pod *corev1.Pod) error {
	if err := lc.forceDelete(ctx, pod); err != nil {
		return err
	}
	lc.c.Log.Info("nodelifecycle: deleted pod of a deleted node", "pod", controller.Key(pod.Namespace, pod.Name), "node", pod.Spec.NodeName)
	return nil
}

// syncGoneNode removes every pod still bound to the deleted node name,
// unless a node of that name exists again.
func (lc *Controller) syncGoneNode(ctx context.Context, name string) error {
	if _, ok := lc.c.Store.Get(controller.ResourceNodes, "", name); ok {
		return nil
	}
	objs, _ := lc.c.Store.List(controller.ResourcePods, metav1.NamespaceAll)
	var errs []error
	for _, o := range objs {
		if pod := o.(*corev1.Pod); pod.Spec.NodeName == name {
			if err := lc.collect(ctx, pod); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// markNotReady sets the pod's Ready condition to False (reason
// NodeNotReady) unless it already is.
func (lc *Controller) markNotReady(ctx context.Context, pod *corev1.Pod) error {
	ready := func(p *corev1.Pod) *corev1.PodCondition {
		for i := range p.Status.Conditions {
			if p.Status.Conditions[i].Type == corev1.PodReady {
				return &p.Status.Conditions[i]
			}
		}
		return nil
	}
	if c := ready(pod); c == nil || c.Status == corev1.ConditionFalse {
		return nil
	}
	uid := pod.UID
	now := lc.c.MetaNow()
	_, err := controller.Modify(ctx, lc.c, controller.ResourcePods, pod.Namespace, pod.Name, func(obj state.Object) error {
		p := obj.(*corev1.Pod)
		c := ready(p)
		if p.UID != uid || c == nil || c.Status == corev1.ConditionFalse {
			return controller.ErrUnchanged
		}
		c.Status, c.Reason, c.Message, c.LastTransitionTime = corev1.ConditionFalse, "NodeNotReady", "the pod's node is not ready", now
		return nil
	})
	if err != nil && !state.IsCode(err, state.CodeNotFound) {
		return fmt.Errorf("marking pod %s/%s not ready: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
