package nodelifecycle

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// isConditionTaint reports whether t is one of the NoExecute taints this
// controller derives from the Ready condition.
func isConditionTaint(t *corev1.Taint) bool {
	return t.Effect == corev1.TaintEffectNoExecute && (t.Key == corev1.TaintNodeUnreachable || t.Key == corev1.TaintNodeNotReady)
}

// conditionTaintKey is the NoExecute taint node's Ready condition asks
// for: unreachable for Unknown, not-ready for False, none for True. ok is
// false when the node has no Ready condition (nothing is decided for it).
func conditionTaintKey(node *corev1.Node) (key string, ok bool) {
	c := readyCondition(node)
	switch {
	case c == nil:
		return "", false
	case c.Status == corev1.ConditionTrue:
		return "", true
	case c.Status == corev1.ConditionFalse:
		return corev1.TaintNodeNotReady, true
	default:
		return corev1.TaintNodeUnreachable, true
	}
}

// nextTaints returns the taints node should carry, and whether they differ
// from its current ones: the condition taint its Ready condition asks for
// (added only when mayAdd), no other condition taint, and every NoExecute
// taint with a timeAdded (now when it had none).
func nextTaints(node *corev1.Node, mayAdd bool, now metav1.Time) ([]corev1.Taint, bool) {
	want, decided := conditionTaintKey(node)
	out := make([]corev1.Taint, 0, len(node.Spec.Taints)+1)
	changed, have := false, false
	for _, t := range node.Spec.Taints {
		if decided && isConditionTaint(&t) {
			if t.Key != want || have {
				changed = true // the condition changed (or a duplicate)
				continue
			}
			have = true
		}
		if t.Effect == corev1.TaintEffectNoExecute && t.TimeAdded == nil {
			t.TimeAdded = &now
			changed = true
		}
		out = append(out, t)
	}
	if want != "" && !have && mayAdd {
		out = append(out, corev1.Taint{Key: want, Effect: corev1.TaintEffectNoExecute, TimeAdded: &now})
		changed = true
	}
	if len(out) == 0 {
		out = nil
	}
	return out, changed
}

// syncNode brings node's condition taints in line with its Ready condition
// (adding none during a mass disruption) and requeues its pods when it
// carries NoExecute taints.
func (lc *Controller) syncNode(ctx context.Context, name string) error {
	o, ok := lc.c.Store.Get(controller.ResourceNodes, "", name)
	if !ok {
		return nil
	}
	node := o.(*corev1.Node)
	mayAdd := true
	if !isReady(node) {
		mayAdd = !lc.massDisruption()
	}
	now := lc.c.MetaNow()
	if _, changed := nextTaints(node, mayAdd, now); changed {
		uid := node.UID
		out, err := controller.Modify(ctx, lc.c, controller.ResourceNodes, "", name, func(obj state.Object) error {
			n := obj.(*corev1.Node)
			if n.UID != uid {
				return controller.ErrUnchanged
			}
			taints, changed := nextTaints(n, mayAdd, now)
			if !changed {
				return controller.ErrUnchanged
			}
			n.Spec.Taints = taints
			return nil
		})
		switch {
		case state.IsCode(err, state.CodeNotFound):
			return nil
		case err != nil:
			return fmt.Errorf("tainting node %s: %w", name, err)
		}
		node = out.(*corev1.Node)
		lc.c.Log.Info("nodelifecycle: node taints", "node", name, "taints", taintKeys(node.Spec.Taints))
	}
	for i := range node.Spec.Taints {
		if node.Spec.Taints[i].Effect == corev1.TaintEffectNoExecute {
			lc.enqueuePodsOf(name)
			break
		}
	}
	return nil
}

func taintKeys(taints []corev1.Taint) []string {
	out := make([]string, len(taints))
	for i, t := range taints {
		out[i] = t.ToString()
	}
	return out
}
