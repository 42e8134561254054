package admission

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/scheduler"
)

// TestAdmittedPolicyReachesScheduler: the preemption policy admission
// copies from a class is what node/scheduler acts on. On a full node a pod
// of a high class that preempts evicts the low pod; the same priority with
// preemptionPolicy Never evicts nothing and waits.
func TestAdmittedPolicyReachesScheduler(t *testing.T) {
	store := newStore(t,
		class("low", 1, false, corev1.PreemptLowerPriority),
		class("high", 1000, false, corev1.PreemptLowerPriority),
		class("high-never", 1000, false, corev1.PreemptNever))
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{corev1.LabelHostname: "n1"}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi"),
				corev1.ResourcePods: resource.MustParse("10")},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	admitted := func(name, class string) *corev1.Pod {
		t.Helper()
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name)},
			Spec: corev1.PodSpec{PriorityClassName: class, Containers: []corev1.Container{{Name: "c", Image: "i",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("800m")}}}}},
		}
		if err := PodPriority(store, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	victim := admitted("victim", "low")
	victim.Spec.NodeName = "n1"
	for _, tc := range []struct {
		class       string
		wantVictims int
	}{{"high", 1}, {"high-never", 0}} {
		snap, err := scheduler.NewSnapshot([]*corev1.Node{node}, []*corev1.Pod{victim}, scheduler.Options{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := snap.Schedule(admitted("p-"+tc.class, tc.class))
		if err != nil {
			t.Fatal(err)
		}
		if res.Scheduled() || len(res.Victims) != tc.wantVictims {
			t.Fatalf("class %s: scheduled on %q, %d victims; want not scheduled, %d victims (%s)", tc.class, res.NodeName, len(res.Victims), tc.wantVictims, res.Message)
		}
		if nominated := res.NominatedNodeName != ""; nominated != (tc.wantVictims > 0) {
			t.Errorf("class %s: nominated %q", tc.class, res.NominatedNodeName)
		}
	}
}
