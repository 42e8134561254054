package printers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPriorityClass(t *testing.T) {
	never := corev1.PreemptNever
	lower := corev1.PreemptLowerPriority
	runRows(t, []rowCase{
		{name: "built-in", obj: &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "system-node-critical", CreationTimestamp: at(-7 * time.Minute)},
			Value: 2000001000, PreemptionPolicy: &lower},
			want: []any{"system-node-critical", int64(2000001000), false, "7m", "PreemptLowerPriority"}},
		{name: "global default, never preempts", obj: &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "batch", CreationTimestamp: at(-2 * day)},
			Value: -5, GlobalDefault: true, PreemptionPolicy: &never},
			want: []any{"batch", int64(-5), true, "2d", "Never"}},
		{name: "policy unset", obj: &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "p", CreationTimestamp: soon}, Value: 7},
			want: []any{"p", int64(7), false, "0s", ""}},
	})
}
