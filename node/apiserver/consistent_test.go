package apiserver

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestConsistentReads: reads of the latest state wait for the replica to be
// current; resourceVersion=0 and continued lists do not; when the check
// fails the replica still answers, with a warning.
func TestConsistentReads(t *testing.T) {
	calls := 0
	var fail error
	e := newEnv(t, func(c *Config) {
		c.ConsistentRead = func(context.Context) error { calls++; return fail }
	})
	for _, tc := range []struct {
		path  string
		waits bool
	}{
		{"/api/v1/namespaces/default", true},
		{"/api/v1/namespaces/default/configmaps", true},
		{"/api/v1/namespaces/default/configmaps?resourceVersion=0", false},
		{"/api/v1/namespaces?resourceVersion=0", false},
	} {
		before := calls
		w := e.do(req{method: "GET", path: tc.path})
		if w.Code != 200 {
			t.Fatalf("%s: %d %s", tc.path, w.Code, w.Body)
		}
		if waited := calls > before; waited != tc.waits {
			t.Errorf("%s: consistent read called %v, want %v", tc.path, waited, tc.waits)
		}
		if w.Header().Get("Warning") != "" {
			t.Errorf("%s: unexpected warning %q", tc.path, w.Header().Get("Warning"))
		}
	}
	fail = errors.New("no quorum")
	w := e.do(req{method: "GET", path: "/api/v1/namespaces/default"})
	if w.Code != 200 || !strings.Contains(w.Header().Get("Warning"), "may be stale") {
		t.Fatalf("read without quorum: %d, warning %q", w.Code, w.Header().Get("Warning"))
	}
}
