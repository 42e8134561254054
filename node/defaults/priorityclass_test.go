package defaults

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
)

// TestPriorityClassPreemptionPolicy: an unset preemptionPolicy becomes
// PreemptLowerPriority, as in Kubernetes; a set one is kept.
func TestPriorityClassPreemptionPolicy(t *testing.T) {
	pc := &schedulingv1.PriorityClass{Value: 10}
	Apply(pc)
	if pc.PreemptionPolicy == nil || *pc.PreemptionPolicy != corev1.PreemptLowerPriority {
		t.Errorf("unset policy defaulted to %v, want PreemptLowerPriority", pc.PreemptionPolicy)
	}
	never := corev1.PreemptNever
	pc = &schedulingv1.PriorityClass{Value: 10, PreemptionPolicy: &never}
	Apply(pc)
	if *pc.PreemptionPolicy != corev1.PreemptNever {
		t.Errorf("Never became %v", *pc.PreemptionPolicy)
	}
}
