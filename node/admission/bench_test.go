package admission

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkPodPriority: the admission cost a pod create pays, with the two
// built-ins and a few user classes stored.
func BenchmarkPodPriority(b *testing.B) {
	store := newStore(b,
		class(SystemClusterCritical, SystemCriticalPriority, false, corev1.PreemptLowerPriority),
		class(SystemNodeCritical, SystemCriticalPriority+1000, false, corev1.PreemptLowerPriority),
		class("high", 1000, false, corev1.PreemptLowerPriority), class("batch", 10, false, corev1.PreemptNever),
		class("standard", 100, true, corev1.PreemptLowerPriority))
	for _, name := range []string{"high", ""} {
		b.Run("class="+name, func(b *testing.B) {
			for b.Loop() {
				p := pod(name)
				if err := PodPriority(store, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
