package controller

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

func TestKeys(t *testing.T) {
	for _, c := range []struct{ ns, name string }{{"default", "web"}, {"", "n1"}} {
		if ns, name := SplitKey(Key(c.ns, c.name)); ns != c.ns || name != c.name {
			t.Errorf("SplitKey(Key(%q, %q)) = %q, %q", c.ns, c.name, ns, name)
		}
	}
}

// TestWatchAndRun: objects present and added later reach sync through the
// queue; a failing sync is retried until it succeeds.
func TestWatchAndRun(t *testing.T) {
	store := state.NewStore(0)
	p := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mk := func(name string) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: "u-" + "name"}}
		if _, err := p.Propose(ctx, state.Create(cm)); err != nil {
			t.Fatal(err)
		}
	}
	mk("before")
	q := NewQueue("test", clock.RealClock{})
	go Watch(ctx, store, "configmaps", func(ev state.Event) { q.Add(Key(ev.Object.GetNamespace(), ev.Object.GetName())) })
	var mu sync.Mutex
	seen := map[string]int{}
	var failures atomic.Int32
	done := make(chan struct{})
	go func() {
		Run(ctx, q, 2, nil, func(ctx context.Context, key string) error {
			mu.Lock()
			defer mu.Unlock()
			seen[key]++
			if key == "default/flaky" && failures.Add(1) < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		close(done)
	}()
	mk("after")
	mk("flaky")
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		ok := seen["default/before"] >= 1 && seen["default/after"] >= 1 && seen["default/flaky"] >= 3
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("syncs seen: %v", seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
