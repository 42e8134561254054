package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPriorityPreemption: every cluster has the built-in PriorityClasses
// (kubectl prints them as it does from kube-apiserver); a pod naming a class
// that does not exist is forbidden; low-priority pods that take most of
// every node's CPU make room for a pod of a higher class, which preempts one
// of them and runs, while the replacement of the victim stays pending.
func TestPriorityPreemption(t *testing.T) {
	c := newCluster(t, 3)
	importImages(t, c, "n1")
	cs := clientset(t, c)
	ctx := context.Background()

	eventually(t, 30*time.Second, func() error {
		out, err := kubectl(t, c, "get", "priorityclasses")
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !slices.Equal(strings.Fields(lines[0]), []string{"NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"}) {
			return fmt.Errorf("header %q", lines[0])
		}
		want := map[string]string{"system-cluster-critical": "2000000000", "system-node-critical": "2000001000"}
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) == 5 && want[f[0]] == f[1] && f[2] == "false" && f[4] == "PreemptLowerPriority" {
				delete(want, f[0])
			}
		}
		if len(want) > 0 {
			return fmt.Errorf("missing %v in:\n%s", want, out)
		}
		return nil
	})

	// kubectl's typed create posts protobuf.
	if out, err := kubectl(t, c, "create", "priorityclass", "low", "--value=10", "--description=fillers"); err != nil {
		t.Fatalf("kubectl create priorityclass: %v\n%s", err, out)
	}
	high := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "high"}, Value: 1000}
	if _, err := cs.SchedulingV1().PriorityClasses().Create(ctx, high, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ghost := echoPod("ghost", "")
	ghost.Spec.PriorityClassName = "nope"
	if _, err := cs.CoreV1().Pods("default").Create(ctx, ghost, metav1.CreateOptions{}); !apierrors.IsForbidden(err) ||
		!strings.Contains(err.Error(), "no PriorityClass with name nope was found") {
		t.Fatalf("pod of a missing class: %v", err)
	}

	// Three low pods, each asking for three quarters of a node's CPU: one
	// per node, and no room for anything that size.
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	milli := nodes.Items[0].Status.Allocatable.Cpu().MilliValue()
	for _, n := range nodes.Items {
		milli = min(milli, n.Status.Allocatable.Cpu().MilliValue())
	}
	if milli == 0 {
		t.Fatal("nodes report no allocatable CPU")
	}
	share := *resource.NewMilliQuantity(milli*3/4, resource.DecimalSI)
	filler := echoPod("x", "")
	filler.Spec.PriorityClassName = "low"
	filler.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	filler.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: share}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "filler"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(3)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "filler"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "filler"}}, Spec: filler.Spec},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(t, c, "rollout", "status", "deployment/filler", "--timeout=120s"); err != nil {
		t.Fatalf("rollout status: %v\n%s", err, out)
	}
	fillers := func() (running, pending []corev1.Pod) {
		t.Helper()
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=filler"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range l.Items {
			switch {
			case p.DeletionTimestamp != nil:
			case p.Status.Phase == corev1.PodRunning:
				running = append(running, p)
			case p.Spec.NodeName == "":
				pending = append(pending, p)
			}
		}
		return running, pending
	}
	running, _ := fillers()
	if len(running) != 3 {
		t.Fatalf("%d filler pods running, want 3", len(running))
	}
	for _, p := range running {
		if p.Spec.Priority == nil || *p.Spec.Priority != 10 {
			t.Fatalf("filler %s has priority %v, want 10 from class low", p.Name, p.Spec.Priority)
		}
	}

	vip := echoPod("vip", "")
	vip.Spec.PriorityClassName = "high"
	vip.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: share}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, vip, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitPod(t, cs, "default", "vip", 90*time.Second, "Running", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning
	})
	if got.Spec.Priority == nil || *got.Spec.Priority != 1000 || got.Spec.PreemptionPolicy == nil ||
		*got.Spec.PreemptionPolicy != corev1.PreemptLowerPriority {
		t.Errorf("vip priority %v policy %v", got.Spec.Priority, got.Spec.PreemptionPolicy)
	}
	// The victim's replacement cannot preempt the higher pod: it waits.
	eventually(t, 60*time.Second, func() error {
		running, pending := fillers()
		for _, p := range running {
			if p.Spec.NodeName == got.Spec.NodeName {
				return fmt.Errorf("filler %s still runs on %s beside vip", p.Name, p.Spec.NodeName)
			}
		}
		if len(running) != 2 || len(pending) != 1 {
			return fmt.Errorf("%d fillers running, %d pending; want 2 and 1", len(running), len(pending))
		}
		return nil
	})
}
