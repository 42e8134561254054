package node

import (
	"net"
	"runtime"
)

// yieldListener hands out connections whose writes first yield the
// processor once (see yieldConn).
type yieldListener struct{ net.Listener }

func (l yieldListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return yieldConn{c}, nil
}

// yieldConn lets the goroutines that are ready to run go first before it
// writes: an HTTP/2 connection flushes when its write queue is empty, and
// the handlers of one committed batch, woken together, then add their
// answers to the next flush instead of each paying a write of its own.
type yieldConn struct{ net.Conn }

func (c yieldConn) Write(p []byte) (int, error) {
	runtime.Gosched()
	return c.Conn.Write(p)
}
