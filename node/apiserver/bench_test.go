package apiserver

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkCreateConfigMap drives ConfigMap creates through the handler from
// 100 concurrent clients, as the API benchmark does (the raft part is not in
// this package: the local proposer applies straight to the FSM).
func BenchmarkCreateConfigMap(b *testing.B) {
	e := newEnv(&testing.T{})
	var n atomic.Int64
	b.SetParallelism(50) // × GOMAXPROCS (2) = 100 clients
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			body := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-%d","labels":{"app":"bench"}},"data":{"key":"value-%d","other":"some longer value for the benchmark"}}`, i, i)
			r := httptest.NewRequest("POST", "/api/v1/namespaces/default/configmaps", bytes.NewReader([]byte(body)))
			r.Header.Set("Content-Type", "application/json")
			r.TLS = adminTLS
			w := httptest.NewRecorder()
			e.srv.ServeHTTP(w, r)
			if w.Code != http.StatusCreated {
				b.Fatalf("code %d: %s", w.Code, w.Body.String())
			}
		}
	})
}

// applyConfigMapStep returns the body of BenchmarkApplyConfigMap: apply i
// creates ConfigMap apply-i with the create benchmark's data (sub-benchmark
// "create"), or changes one value of ConfigMap applied (sub-benchmark
// "update": the steady state of a GitOps tool re-applying a changed manifest).
func applyConfigMapStep(e *testEnv, update bool) func(i int64) error {
	return func(i int64) error {
		name := fmt.Sprintf("apply-%d", i)
		if update {
			name = "applied"
		}
		body := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q,"labels":{"app":"bench"}},"data":{"key":"value-%d","other":"some longer value for the benchmark"}}`, name, i)
		r := httptest.NewRequest("PATCH", "/api/v1/namespaces/default/configmaps/"+name+"?fieldManager=bench", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/apply-patch+yaml")
		r.TLS = adminTLS
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r)
		if w.Code != http.StatusCreated && w.Code != http.StatusOK {
			return fmt.Errorf("apply %d: code %d: %s", i, w.Code, w.Body.String())
		}
		return nil
	}
}

// BenchmarkApplyConfigMap is server-side apply of a ConfigMap through the
// handler, one client (an apply is one manager's write; the figure is its
// CPU cost next to BenchmarkCreateConfigMap's).
func BenchmarkApplyConfigMap(b *testing.B) {
	for _, sub := range []struct {
		name   string
		update bool
	}{{"create", false}, {"update", true}} {
		b.Run(sub.name, func(b *testing.B) {
			step := applyConfigMapStep(newEnv(&testing.T{}), sub.update)
			b.ReportAllocs()
			b.ResetTimer()
			for i := int64(0); i < int64(b.N); i++ {
				if err := step(i); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// updateConfigMapStep returns the body of BenchmarkUpdateConfigMap: update i
// PUTs ConfigMap cm with a changed value and no fieldManager, as a
// controller's client-go does. When applied, cm was created by an apply, so
// the update records its manager in managedFields; otherwise it takes the
// fast path.
func updateConfigMapStep(e *testEnv, applied bool) (func(i int64) error, error) {
	create := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","labels":{"app":"bench"}},"data":{"key":"value","other":"some longer value for the benchmark"}}`
	r := httptest.NewRequest("POST", "/api/v1/namespaces/default/configmaps", strings.NewReader(create))
	r.Header.Set("Content-Type", "application/json")
	if applied {
		r = httptest.NewRequest("PATCH", "/api/v1/namespaces/default/configmaps/cm?fieldManager=gitops", strings.NewReader(create))
		r.Header.Set("Content-Type", "application/apply-patch+yaml")
	}
	r.TLS = adminTLS
	w := httptest.NewRecorder()
	e.srv.ServeHTTP(w, r)
	if w.Code != http.StatusCreated {
		return nil, fmt.Errorf("creating cm: code %d: %s", w.Code, w.Body.String())
	}
	return func(i int64) error {
		body := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","labels":{"app":"bench"}},"data":{"key":"value-%d","other":"some longer value for the benchmark"}}`, i)
		r := httptest.NewRequest("PUT", "/api/v1/namespaces/default/configmaps/cm", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("User-Agent", "controller/v1.0")
		r.TLS = adminTLS
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			return fmt.Errorf("update %d: code %d: %s", i, w.Code, w.Body.String())
		}
		return nil
	}, nil
}

// BenchmarkUpdateConfigMap is a plain update (PUT, no fieldManager) of an
// applied ConfigMap ("applied": managedFields recorded) and of one that was
// never applied ("plain": the fast path), one client.
func BenchmarkUpdateConfigMap(b *testing.B) {
	for _, sub := range []struct {
		name    string
		applied bool
	}{{"applied", true}, {"plain", false}} {
		b.Run(sub.name, func(b *testing.B) {
			step, err := updateConfigMapStep(newEnv(&testing.T{}), sub.applied)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := int64(0); i < int64(b.N); i++ {
				if err := step(i); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestBenchmarkSteps runs the steps of the benchmarks above a few times, so
// `go test` keeps them working without running a benchmark, and checks
// they measure what they say: the applied ConfigMap's updates record a
// manager, the plain one's do not.
func TestBenchmarkSteps(t *testing.T) {
	for _, update := range []bool{false, true} {
		e := newEnv(t)
		step := applyConfigMapStep(e, update)
		for i := int64(0); i < 3; i++ {
			if err := step(i); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, applied := range []bool{false, true} {
		e := newEnv(t)
		step, err := updateConfigMapStep(e, applied)
		if err != nil {
			t.Fatal(err)
		}
		for i := int64(0); i < 3; i++ {
			if err := step(i); err != nil {
				t.Fatal(err)
			}
		}
		o, _ := e.store.Get("configmaps", "default", "cm")
		if got := owners(t, o.GetManagedFields()); applied != (len(got["controller Update"]) > 0) {
			t.Fatalf("applied=%v: managedFields %v", applied, got)
		}
	}
}
