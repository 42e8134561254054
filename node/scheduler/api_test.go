package scheduler

import (
	"errors"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAssumeAndForget(t *testing.T) {
	s := newSnap(t, []*corev1.Node{mkNode("a", alloc("cpu", "1"))}, nil)
	p := mkPod("p", req("cpu", "1"))
	if err := s.Assume(p, "nowhere"); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("Assume on an unknown node: %v", err)
	}
	if err := s.Assume(p, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Assume(p, "a"); !errors.Is(err, ErrAlreadyPlaced) {
		t.Errorf("second Assume: %v", err)
	}
	if res, _ := s.Schedule(mkPod("q", req("cpu", "1"))); res.Scheduled() {
		t.Errorf("q fits a node p fills: %+v", res)
	}
	if err := s.Forget(p); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget(p); !errors.Is(err, ErrNotPlaced) {
		t.Errorf("second Forget: %v", err)
	}
	if res, _ := s.Schedule(mkPod("q", req("cpu", "1"))); res.NodeName != "a" {
		t.Errorf("q does not fit after p was forgotten: %+v", res)
	}
	if _, err := NewSnapshot(nil, nil, Options{PercentageOfNodesToScore: 101}); err == nil {
		t.Error("NewSnapshot accepted PercentageOfNodesToScore 101")
	}
}

func TestPriorityAndOrder(t *testing.T) {
	s := newSnap(t, nil, nil, func(o *Options) { o.PriorityClasses = map[string]int32{"high": 1000} })
	class := func(name string) podOpt { return func(p *corev1.Pod) { p.Spec.PriorityClassName = name } }
	older := func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(podCreated.Add(-time.Hour)) }
	pods := []*corev1.Pod{
		mkPod("zero"),
		mkPod("b-old", older),
		mkPod("high", class("high")),
		mkPod("explicit", class("high"), prio(5)), // spec.priority wins
		mkPod("critical", class("system-node-critical")),
		mkPod("a-old", older),
	}
	if got := s.Priority(pods[3]); got != 5 {
		t.Errorf("explicit priority = %d", got)
	}
	s.SortPending(pods)
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	want := []string{"critical", "high", "explicit", "a-old", "b-old", "zero"}
	if !slices.Equal(names, want) {
		t.Errorf("order %v, want %v", names, want)
	}
}

func TestDaemonSetPodGoesToItsNode(t *testing.T) {
	s := newSnap(t, nodes("a", "b", "c"), nil)
	for _, n := range []string{"a", "b", "c"} {
		res := schedule(t, s, mkPod("ds-"+n, requiredNode(nameIn(n)), req("cpu", "100m")))
		if res.NodeName != n || res.EvaluatedNodes != 1 {
			t.Errorf("ds-%s: %+v", n, res)
		}
	}
	res, _ := s.Schedule(mkPod("ds-gone", requiredNode(nameIn("gone"))))
	want := "0/3 nodes are available: 3 node(s) didn't satisfy plugin(s) [NodeAffinity]. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
	if res.Message != want {
		t.Errorf("message %q, want %q", res.Message, want)
	}
}

func TestEphemeralVolumeClaim(t *testing.T) {
	var asked []string
	s := newSnap(t, nodes("a"), nil, func(o *Options) {
		o.Volumes = func(ns, claim string) (*corev1.PersistentVolume, bool) {
			asked = append(asked, ns+"/"+claim)
			return nil, true
		}
	})
	pod := mkPod("team/web", func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}}}
	})
	if res := schedule(t, s, pod); !res.Scheduled() {
		t.Fatal(res.Message)
	}
	if !slices.Equal(asked, []string{"team/web-scratch"}) {
		t.Errorf("looked up %v", asked)
	}
}

// TestExistingNamespaceSelector: a placed pod's anti-affinity with a
// namespaceSelector repels pods of the namespaces it selects.
func TestExistingNamespaceSelector(t *testing.T) {
	term := podTerm(corev1.LabelHostname, "app", "web")
	term.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}}
	s := newSnap(t, nodes("a", "b"), []*corev1.Pod{mkPod("guard", on("a"), podAntiAffinity(term))}, func(o *Options) {
		o.NamespaceLabels = map[string]map[string]string{"blue": {"team": "blue"}}
	})
	if got := feasible(t, s, mkPod("blue/w", plabel("app", "web"))); !slices.Equal(got, []string{"b"}) {
		t.Errorf("blue pod: %v", got)
	}
	if got := feasible(t, s, mkPod("red/w", plabel("app", "web"))); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("red pod: %v", got)
	}
}

// TestScheduleAllocatesNothing: scheduling a pod without affinity does not
// allocate once the snapshot is warm.
func TestScheduleAllocatesNothing(t *testing.T) {
	s := newSnap(t, makeBenchNodes(300), nil)
	pod := makeBenchPods(1, 0)[0]
	if res := schedule(t, s, pod); !res.Scheduled() {
		t.Fatal(res.Message)
	}
	next := makeBenchPods(2, 0)[1]
	allocs := testing.AllocsPerRun(100, func() {
		if res, err := s.Schedule(next); err != nil || !res.Scheduled() {
			t.Fatal(res, err)
		}
	})
	if allocs > 0 {
		t.Errorf("Schedule allocates %.1f times per call", allocs)
	}
}

func TestNominatedNodeFirst(t *testing.T) {
	s := newSnap(t, nodes("a", "b"), []*corev1.Pod{mkPod("x", on("b"), req("cpu", "2"))})
	pod := mkPod("p", req("cpu", "1"))
	if res, _ := s.Schedule(pod); res.NodeName != "a" {
		t.Fatalf("without a nomination: %+v", res)
	}
	pod.Status.NominatedNodeName = "b"
	if res, _ := s.Schedule(pod); res.NodeName != "b" {
		t.Errorf("nominated b: %+v", res)
	}
	pod.Spec.Containers[0].Resources.Requests = resList("cpu", "3")
	if res, _ := s.Schedule(pod); res.NodeName != "a" {
		t.Errorf("nominated b, which no longer fits: %+v", res)
	}
}
