package apiserver

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
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
