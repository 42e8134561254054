// Package exitq is the unbounded queue behind container.Runtime.Exits:
// Push never blocks, C delivers in order, Close drains nothing and closes C.
//
// Push and Close may be called from any goroutine; C has one consumer.
package exitq

import (
	"sync"

	"github.com/shoal-dev/shoal/node/container"
)

// Queue buffers exits without bound between producers and one consumer.
type Queue struct {
	out  chan container.Exit
	wake chan struct{}
	done chan struct{}

	mu     sync.Mutex
	buf    []container.Exit // guarded by mu: pushed, not yet handed to out
	closed bool             // guarded by mu
}

// New starts a queue; Close stops its goroutine.
func New() *Queue {
	q := &Queue{out: make(chan container.Exit), wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run()
	return q
}

// C is the consumer's channel; closed after Close.
func (q *Queue) C() <-chan container.Exit { return q.out }

// Push appends e; it never blocks. Pushes after Close are dropped.
func (q *Queue) Push(e container.Exit) {
	q.mu.Lock()
	if !q.closed {
		q.buf = append(q.buf, e)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Close drops what is still buffered and closes C. It is idempotent.
func (q *Queue) Close() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	q.buf = nil
	q.mu.Unlock()
	close(q.done)
}

func (q *Queue) run() {
	defer close(q.out)
	for {
		q.mu.Lock()
		var next *container.Exit
		if len(q.buf) > 0 {
			e := q.buf[0]
			next = &e
		}
		q.mu.Unlock()
		if next == nil {
			select {
			case <-q.wake:
				continue
			case <-q.done:
				return
			}
		}
		select {
		case q.out <- *next:
			q.mu.Lock()
			if len(q.buf) > 0 {
				q.buf = q.buf[1:]
			}
			q.mu.Unlock()
		case <-q.done:
			return
		}
	}
}
