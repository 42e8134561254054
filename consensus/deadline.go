package consensus

import (
	"context"
	"sync"
	"time"
)

// Deadlines hands out contexts that end at coarse instants: every caller
// whose deadline falls in the same granule shares one context and one timer.
// A context.WithTimeout per write costs a timer and a registration with its
// parent each; at thousands of writes a second those were ~4% of the
// leader's CPU. The shared contexts carry no values and are not cancelled
// with any caller's context: use them where only the deadline matters.
type Deadlines struct {
	granule time.Duration
	mu      sync.Mutex
	byEnd   map[int64]context.Context // granule index → context ending at its start
}

// NewDeadlines returns Deadlines rounding to granule.
func NewDeadlines(granule time.Duration) *Deadlines {
	return &Deadlines{granule: granule, byEnd: map[int64]context.Context{}}
}

// defaultDeadlines serves the budgets of forwarded requests.
var defaultDeadlines = NewDeadlines(10 * time.Millisecond)

// Before returns a context that is done at d or at most one granule earlier.
func (c *Deadlines) Before(d time.Time) context.Context {
	k := d.UnixNano() / int64(c.granule)
	c.mu.Lock()
	defer c.mu.Unlock()
	if ctx, ok := c.byEnd[k]; ok {
		return ctx
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, k*int64(c.granule)))
	c.byEnd[k] = ctx
	context.AfterFunc(ctx, func() {
		cancel()
		c.mu.Lock()
		delete(c.byEnd, k)
		c.mu.Unlock()
	})
	return ctx
}
