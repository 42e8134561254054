package consensus

import (
	"math/rand/v2"
	"sync"
	"time"
)

// notifier is a broadcast: wait returns a channel that is closed by the next
// notify. The zero value is ready to use.
type notifier struct {
	mu sync.Mutex
	ch chan struct{} // guarded by mu; nil until someone waits
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// backoff yields jittered, doubling delays for retry loops.
type backoff struct {
	next time.Duration
}

const (
	backoffMin = 5 * time.Millisecond
	backoffMax = 100 * time.Millisecond
)

func (b *backoff) delay() time.Duration {
	if b.next == 0 {
		b.next = backoffMin
	}
	d := b.next/2 + rand.N(b.next/2+1)
	b.next = min(2*b.next, backoffMax)
	return d
}
