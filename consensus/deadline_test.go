package consensus

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDeadlines(t *testing.T) {
	const granule = 50 * time.Millisecond
	c := NewDeadlines(granule)
	now := time.Now()
	want := now.Add(200 * time.Millisecond)
	a := c.Before(want)
	dl, ok := a.Deadline()
	if !ok {
		t.Fatal("shared context has no deadline")
	}
	if dl.After(want) || !dl.After(want.Add(-granule)) {
		t.Fatalf("deadline %v for a request of %v: want within one granule before it", dl.Sub(now), want.Sub(now))
	}
	// Every deadline in the same granule shares the context; the next
	// granule gets its own.
	k := want.UnixNano() / int64(granule)
	first, last := time.Unix(0, k*int64(granule)), time.Unix(0, (k+1)*int64(granule)-1)
	if c.Before(first) != a || c.Before(last) != a {
		t.Fatal("deadlines in one granule got different contexts")
	}
	b := c.Before(last.Add(1))
	if b == a {
		t.Fatal("the next granule shares the previous one's context")
	}
	<-a.Done()
	if !errors.Is(a.Err(), context.DeadlineExceeded) {
		t.Fatalf("shared context ended with %v, want DeadlineExceeded", a.Err())
	}
	if time.Now().Before(dl) {
		t.Fatalf("shared context ended before its deadline")
	}
	<-b.Done()
	// Expired contexts leave the table (the cleanup runs right after Done).
	for i := 0; ; i++ {
		c.mu.Lock()
		n := len(c.byEnd)
		c.mu.Unlock()
		if n == 0 {
			break
		}
		if i == 100 {
			t.Fatalf("%d expired contexts still held", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A deadline already past gives a context that is already done.
	if err := c.Before(time.Now().Add(-time.Second)).Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("past deadline: Err %v", err)
	}
}
