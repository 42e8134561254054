package main

import (
	"context"
	"net"
	"runtime"
	"sync"
)

// coalesceConn makes the load generator's HTTP/2 connection write the way
// gRPC's transport does: a Write only queues its bytes, and one writer
// goroutine sends everything queued in one system call after letting the
// other runnable goroutines add theirs (grpc-go's loopy writer yields before
// it flushes). Go's HTTP/2 client flushes the HEADERS and then the DATA of
// every request on its own, two socket writes per request, which on this
// machine's two cores take CPU from the cluster under test. TLS runs above
// this conn, so what it coalesces are whole TLS records, in order.
//
// A write error is returned by the next Write (and closes the conn); the
// request that queued the lost bytes fails when its response never comes
// and the conn is closed.
type coalesceConn struct {
	net.Conn
	mu      sync.Mutex
	pending []byte
	err     error
	kick    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func newCoalesceConn(c net.Conn) *coalesceConn {
	cc := &coalesceConn{Conn: c, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go cc.writeLoop()
	return cc
}

func (c *coalesceConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.pending = append(c.pending, p...)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *coalesceConn) writeLoop() {
	var spare []byte
	for {
		select {
		case <-c.kick:
		case <-c.done:
			return
		}
		runtime.Gosched()
		c.mu.Lock()
		b := c.pending
		c.pending = spare[:0]
		c.mu.Unlock()
		if len(b) == 0 {
			spare = b
			continue
		}
		if _, err := c.Conn.Write(b); err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			c.Close()
			return
		}
		spare = b
	}
}

func (c *coalesceConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.Conn.Close()
}

// coalescingDial wraps dial's connections in coalesceConn.
func coalescingDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newCoalesceConn(c), nil
	}
}
