package keylock

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSerializesPerKeyOnly(t *testing.T) {
	var m Map
	ctx := context.Background()
	var inA atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := m.Lock(ctx, "a")
			if err != nil {
				t.Error(err)
				return
			}
			if inA.Add(1) != 1 {
				t.Error("two holders of key a")
			}
			time.Sleep(time.Millisecond)
			inA.Add(-1)
			unlock()
		}()
	}
	// Another key is never held up by a.
	unlockA, _ := m.Lock(ctx, "a")
	unlockB, err := m.Lock(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	unlockB()
	unlockA()
	wg.Wait()

	unlock, _ := m.Lock(ctx, "c")
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := m.Lock(cctx, "c"); err == nil {
		t.Fatal("locked a held key")
	}
	unlock()
	if len(m.locks) != 0 {
		t.Errorf("entries leaked: %v", m.locks)
	}
}
