package scheduler

import (
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The scheduling benchmark: 5,000 nodes, 50,000 pods. One iteration
// schedules (Schedule + Assume) all 50,000 pods into an empty 5,000-node
// snapshot, as a leader catching up with a burst would.

const (
	benchNodes      = 5000
	benchPods       = 50000
	benchZones      = 10
	benchReplicaSet = 50 // pods per owner
)

func makeBenchNodes(n int) []*corev1.Node {
	out := make([]*corev1.Node, n)
	for i := range out {
		name := fmt.Sprintf("node-%05d", i)
		out[i] = &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
				corev1.LabelHostname:     name,
				corev1.LabelTopologyZone: fmt.Sprintf("zone-%d", i%benchZones),
				"kubernetes.io/os":       "linux",
			}},
			Status: corev1.NodeStatus{
				Allocatable: corev1.ResourceList{
					corev1.ResourceCPU:              resource.MustParse("32"),
					corev1.ResourceMemory:           resource.MustParse("128Gi"),
					corev1.ResourceEphemeralStorage: resource.MustParse("500Gi"),
					corev1.ResourcePods:             resource.MustParse("110"),
				},
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
				Images:     []corev1.ContainerImage{{Names: []string{fmt.Sprintf("registry.example/app-%d:1", i%20)}, SizeBytes: 200 * mb}},
			},
		}
	}
	return out
}

// makeBenchPods makes n pods in ReplicaSets of benchReplicaSet; every
// constrainedEvery-th ReplicaSet (0: none) has required anti-affinity on
// the hostname and a DoNotSchedule zone spread constraint.
func makeBenchPods(n, constrainedEvery int) []*corev1.Pod {
	cpus := []string{"100m", "250m", "500m", "1"}
	mems := []string{"128Mi", "256Mi", "512Mi", "1Gi"}
	out := make([]*corev1.Pod, n)
	yes := true
	for i := range out {
		rs := i / benchReplicaSet
		app := fmt.Sprintf("app-%d", rs)
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("%s-%d", app, i%benchReplicaSet), Namespace: "default", UID: types.UID(fmt.Sprintf("uid-%d", i)),
				Labels:          map[string]string{"app": app},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app, UID: types.UID("rs-" + app), Controller: &yes}},
			},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "app", Image: fmt.Sprintf("registry.example/app-%d:1", rs%40),
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse(cpus[rs%len(cpus)]),
					corev1.ResourceMemory: resource.MustParse(mems[(rs/4)%len(mems)]),
				}},
			}}},
		}
		if constrainedEvery > 0 && rs%constrainedEvery == 0 {
			sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
			p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{TopologyKey: corev1.LabelHostname, LabelSelector: sel}},
			}}
			p.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
				MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: sel,
			}}
		}
		out[i] = p
	}
	return out
}

func BenchmarkSchedule(b *testing.B) {
	nodes := makeBenchNodes(benchNodes)
	for _, bc := range []struct {
		name  string
		every int
	}{
		{"simple", 0},
		{"constrained10pct", 10},
	} {
		b.Run(fmt.Sprintf("%s/nodes=%d/pods=%d", bc.name, benchNodes, benchPods), func(b *testing.B) {
			pods := makeBenchPods(benchPods, bc.every)
			lat := make([]time.Duration, 0, len(pods))
			var elapsed time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				s, err := NewSnapshot(nodes, nil, Options{Seed: uint64(i)})
				if err != nil {
					b.Fatal(err)
				}
				lat = lat[:0]
				b.StartTimer()
				start := time.Now()
				for _, p := range pods {
					t0 := time.Now()
					res, err := s.Schedule(p)
					if err != nil {
						b.Fatal(err)
					}
					if !res.Scheduled() {
						b.Fatalf("%s unschedulable: %s", p.Name, res.Message)
					}
					if err := s.Assume(p, res.NodeName); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
				elapsed += time.Since(start)
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(b.N*len(pods))/elapsed.Seconds(), "pods/s")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs/pod")
			b.ReportMetric(0, "ns/op") // an op is 50,000 pods; pods/s says it better
		})
	}
}

// BenchmarkScheduleOne measures Schedule calls (without Assume) on a
// 5,000-node cluster that runs 50,000 pods: the steady state. An op is 1,000
// calls, so that -benchtime=3x still measures something.
func BenchmarkScheduleOne(b *testing.B) {
	nodes := makeBenchNodes(benchNodes)
	placed := makeBenchPods(benchPods, 0)
	for i, p := range placed {
		p.Spec.NodeName = nodes[i%len(nodes)].Name
	}
	s, err := NewSnapshot(nodes, placed, Options{})
	if err != nil {
		b.Fatal(err)
	}
	pod := makeBenchPods(1, 0)[0]
	pod.Name = "extra"
	const calls = 1000
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for range calls {
			if res, err := s.Schedule(pod); err != nil || !res.Scheduled() {
				b.Fatal(res, err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*calls), "ns/pod")
}

// BenchmarkNewSnapshot is the cost of a scheduling round's view: 5,000
// nodes running 50,000 pods.
func BenchmarkNewSnapshot(b *testing.B) {
	nodes := makeBenchNodes(benchNodes)
	placed := makeBenchPods(benchPods, 10)
	for i, p := range placed {
		p.Spec.NodeName = nodes[i%len(nodes)].Name
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := NewSnapshot(nodes, placed, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
