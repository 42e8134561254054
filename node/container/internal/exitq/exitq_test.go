package exitq

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/container"
)

func TestQueueOrderNoBlockClose(t *testing.T) {
	q := New()
	done := make(chan struct{})
	go func() {
		for i := 0; i < 10000; i++ { // nobody reads yet: must not block
			q.Push(container.Exit{ExitCode: i})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Push blocked")
	}
	for i := 0; i < 10000; i++ {
		if e := <-q.C(); e.ExitCode != i {
			t.Fatalf("got %d, want %d", e.ExitCode, i)
		}
	}
	q.Push(container.Exit{ExitCode: 1})
	q.Close()
	q.Close()
	for range q.C() { // drains at most the one pending, then closed
	}
	q.Push(container.Exit{}) // after Close: dropped, no panic
}
