package state

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/state/statetest"
)

// TestBind: a binding sets the node, clears the nomination and makes
// PodScheduled True (new transition time, reason gone) as the scheduler's
// whole-pod update did, through the log's encoding; it refuses a stale
// version, a bound pod, a missing pod and a binding without a node, and
// its log entry is a fraction of the pod's.
func TestBind(t *testing.T) {
	f, p := newTestFSM(t)
	s := f.Store()
	then := metav1.NewTime(time.Unix(1_700_000_000, 0).UTC())
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", UID: "uid-web"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, NominatedNodeName: "n9", Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/3 nodes", LastTransitionTime: then}}}}
	rv := mustPropose(t, p, Create(pod))[0].RV
	w, err := s.Watch(WatchOptions{Resource: "pods", SinceRV: rv})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	if _, err := p.Propose(context.Background(), Bind("default", "web", "n1", rv+5, 1_800_000_000)); !IsCode(err, CodeConflict) {
		t.Fatalf("stale binding: %v", err)
	}
	rs := mustPropose(t, p, Bind("default", "web", "n1", rv, 1_800_000_000))
	o, _ := s.Get("pods", "default", "web")
	got := o.(*corev1.Pod)
	want := pod.DeepCopy()
	want.Spec.NodeName = "n1"
	want.Status.NominatedNodeName = ""
	want.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue,
		LastTransitionTime: metav1.NewTime(time.Unix(1_800_000_000, 0).UTC())}}
	if got.Spec.NodeName != "n1" || got.Status.NominatedNodeName != "" || len(got.Status.Conditions) != 1 ||
		got.Status.Conditions[0] != want.Status.Conditions[0] || got.ResourceVersion == pod.ResourceVersion ||
		rs[0].RV != rv+1 || got.Status.Phase != corev1.PodPending || got.Spec.Containers[0].Image != "busybox" {
		t.Fatalf("bound pod: %+v\nstatus %+v", got.Spec, got.Status)
	}
	select {
	case ev := <-w.Events():
		if ev.Type != Modified || ev.Object.(*corev1.Pod).Spec.NodeName != "n1" || ev.Prev.(*corev1.Pod).Spec.NodeName != "" {
			t.Fatalf("watch event: %v", ev.Type)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event for the binding")
	}

	for _, c := range []struct {
		what string
		op   Op
		code Code
	}{
		{"a bound pod", Bind("default", "web", "n2", 0, 1), CodeConflict},
		{"a missing pod", Bind("default", "nope", "n1", 0, 1), CodeNotFound},
		{"no node", Bind("default", "web", "", 0, 1), CodeInvalid},
		{"not a pod", Op{Type: OpBind, Resource: "configmaps", Namespace: "default", Name: "web", Key: "n1"}, CodeInvalid},
	} {
		if _, err := p.Propose(context.Background(), c.op); !IsCode(err, c.code) {
			t.Errorf("binding %s: %v, want code %d", c.what, err, c.code)
		}
	}
	if o, _ := s.Get("pods", "default", "web"); o.(*corev1.Pod).Spec.NodeName != "n1" {
		t.Fatal("a refused binding changed the pod")
	}

	bind, _ := EncodeOps([]Op{Bind("default", "web", "n1", rv, 1_800_000_000)}, statetest.Sealer{})
	whole, _ := EncodeOps([]Op{Update(got, rv)}, statetest.Sealer{})
	if len(bind)*4 > len(whole) {
		t.Errorf("a binding takes %d bytes in the log, the whole pod %d", len(bind), len(whole))
	}
}
