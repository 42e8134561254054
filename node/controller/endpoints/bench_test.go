package endpoints

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

const (
	benchServices = 10000
	benchPods     = 5 // per service
)

// benchStore fills a store with benchServices services in one namespace,
// each selecting its own benchPods ready pods (selector app=<svc>,
// tier=web: every service shares tier=web), on 10 nodes.
func benchStore(b *testing.B) *harness {
	b.Helper()
	h := newStore(b)
	for i := range 10 {
		h.node(fmt.Sprintf("n%d", i), fmt.Sprintf("zone-%d", i%3))
	}
	var ops []state.Op
	flush := func() {
		if len(ops) > 0 {
			h.propose(ops...)
			ops = ops[:0]
		}
	}
	for i := range benchServices {
		name := fmt.Sprintf("s%05d", i)
		svc := newService(name)
		svc.Spec.ClusterIP = fmt.Sprintf("10.43.%d.%d", i/250, i%250+1)
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
		svc.UID = types.UID("svc-" + name)
		svc.Spec.Selector = map[string]string{"app": name, "tier": "web"}
		ops = append(ops, state.Create(svc))
		for j := range benchPods {
			n := i*benchPods + j
			p := newPod(fmt.Sprintf("%s-%d", name, j), name, fmt.Sprintf("10.%d.%d.%d", 42+n/62500, n/250%250, n%250+1), true)
			p.Labels["tier"] = "web"
			p.Spec.NodeName = fmt.Sprintf("n%d", n%10)
			ops = append(ops, state.Create(p))
		}
		if len(ops) >= 1200 {
			flush()
		}
	}
	flush()
	return h
}

// runController runs a controller on h's store until the benchmark ends.
func runController(b *testing.B, h *harness) *Controller {
	ec := New(h.c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ec.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return ec
}

// converged reports whether every bench service has its Endpoints and one
// slice.
func converged(h *harness) bool {
	return h.store.Count(ResourceEndpoints) == benchServices && h.store.Count(ResourceEndpointSlices) == benchServices
}

// BenchmarkConverge10k is a new leader's first pass over 10,000 services ×
// 5 pods with nothing written yet (20,000 objects created through the
// proposer, 5 workers): the time until every service has its Endpoints
// and slice.
func BenchmarkConverge10k(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		h := benchStore(b)
		b.StartTimer()
		start := time.Now()
		runController(b, h)
		for !converged(h) {
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/benchServices, "µs/service")
	}
}

// BenchmarkRestartSettled10k is a new leader's first pass over 10,000
// services × 5 pods that are already converged: every service synced,
// nothing written.
func BenchmarkRestartSettled10k(b *testing.B) {
	h := benchStore(b)
	h.startController()
	h.step()
	if !converged(h) {
		b.Fatal("not converged")
	}
	writes := h.writes()
	for b.Loop() {
		h.startController()
		h.step()
	}
	if h.writes() != writes {
		b.Fatalf("a settled restart wrote %d times", h.writes()-writes)
	}
}

// BenchmarkPodEvent10k is the watch handler's cost for one pod readiness
// change among 10,000 services (50,000 pods) sharing a label: index update
// and routing to the one service it matters to.
func BenchmarkPodEvent10k(b *testing.B) {
	h := benchStore(b)
	h.startController()
	cur := h.pod("s04242-3")
	flipped := cur.DeepCopy()
	flipped.Status.Conditions[0].Status = corev1.ConditionFalse
	evs := []state.Event{
		{Type: state.Modified, Resource: controller.ResourcePods, Object: flipped, Prev: cur},
		{Type: state.Modified, Resource: controller.ResourcePods, Object: cur, Prev: flipped},
	}
	h.queued() // the first pass
	i := 0
	for b.Loop() {
		h.ec.onPod(evs[i%2])
		i++
	}
	if q := h.queued(); len(q) != 1 || q[0] != "default/s04242" {
		b.Fatalf("queued %d services (%.3v), want default/s04242", len(q), q)
	}
}

// BenchmarkSyncSettled10k is one sync of a settled service among 10,000
// (what a pod event that changes nothing visible costs).
func BenchmarkSyncSettled10k(b *testing.B) {
	h := benchStore(b)
	h.startController()
	h.step()
	writes := h.writes()
	for b.Loop() {
		if err := h.ec.Sync(h.ctx, "default/s04242"); err != nil {
			b.Fatal(err)
		}
	}
	if h.writes() != writes {
		b.Fatal("a settled sync wrote")
	}
}

// BenchmarkReadinessToEndpoints10k is the time from a pod's readiness
// change being applied to the store to its service's Endpoints and slice
// showing it, with the controller running over 10,000 services (the
// in-memory proposer: no raft round trip).
func BenchmarkReadinessToEndpoints10k(b *testing.B) {
	h := benchStore(b)
	runController(b, h)
	for !converged(h) {
		time.Sleep(time.Millisecond)
	}
	slice := h.slices("s04242")[0].Name
	ready := false
	for b.Loop() {
		h.setPod("s04242-3", setReady(ready))
		for {
			o, _ := h.store.Get(ResourceEndpoints, "default", "s04242")
			ss := o.(*corev1.Endpoints).Subsets
			if len(ss) == 1 && (len(ss[0].NotReadyAddresses) == 0) == ready {
				sl, ok := h.store.Get(ResourceEndpointSlices, "default", slice)
				if ok && sliceReady(sl.(*discoveryv1.EndpointSlice).Endpoints, "s04242-3") == ready {
					break
				}
			}
			time.Sleep(20 * time.Microsecond)
		}
		ready = !ready
	}
}

func sliceReady(eps []discoveryv1.Endpoint, pod string) bool {
	for _, e := range eps {
		if e.TargetRef.Name == pod {
			return *e.Conditions.Ready
		}
	}
	return false
}
