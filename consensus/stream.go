package consensus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Connection kinds: the first byte a client sends after the TLS handshake.
const (
	connRaft         byte = 'R' // raft NetworkTransport
	connForward      byte = 'F' // forwarded proposals, one per request (served for older followers)
	connForwardBatch byte = 'B' // forwarded proposals, a batch per request (forwarder)
	connReadIndex    byte = 'I' // read-index requests
	connStats        byte = 'S' // stats requests
)

// maxPendingHandshakes bounds concurrent unauthenticated connections.
const maxPendingHandshakes = 256

// streamLayer is a raft.StreamLayer over mutual TLS on one TCP listener. Raft
// connections are handed to raft through Accept; request connections (F, I,
// S) are served by serveRPC.
type streamLayer struct {
	ln               net.Listener
	addr             net.Addr // advertised address
	serverTLS        *tls.Config
	clientTLS        *tls.Config
	handshakeTimeout time.Duration
	logger           hclog.Logger
	serveRPC         func(kind byte, conn net.Conn) // must close conn

	raftConns  chan net.Conn
	handshakes chan struct{} // semaphore of maxPendingHandshakes
	closed     chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup // accept loop and per-connection goroutines

	mu       sync.Mutex
	conns    map[*trackedConn]struct{} // guarded by mu: every open connection
	isClosed bool                      // guarded by mu

	rejected     atomic.Uint64 // connections refused before reaching a handler
	acceptedRaft atomic.Uint64 // connections handed to raft
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(ln net.Listener, advertise net.Addr, base *tls.Config, handshakeTimeout time.Duration,
	logger hclog.Logger, serveRPC func(byte, net.Conn)) *streamLayer {
	return &streamLayer{
		ln:               ln,
		addr:             advertise,
		serverTLS:        serverTLS(base),
		clientTLS:        clientTLS(base),
		handshakeTimeout: handshakeTimeout,
		logger:           logger,
		serveRPC:         serveRPC,
		raftConns:        make(chan net.Conn),
		handshakes:       make(chan struct{}, maxPendingHandshakes),
		closed:           make(chan struct{}),
		conns:            make(map[*trackedConn]struct{}),
	}
}

// start begins accepting connections.
func (s *streamLayer) start() { s.wg.Go(s.acceptLoop) }

// Accept implements net.Listener for raft: it returns authenticated raft
// connections.
func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.raftConns:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

// Addr implements net.Listener; it is the advertised address.
func (s *streamLayer) Addr() net.Addr { return s.addr }

// Close stops the listener and closes every open connection. It does not
// wait; see wait.
func (s *streamLayer) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		_ = s.ln.Close()
		s.mu.Lock()
		s.isClosed = true
		conns := make([]*trackedConn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return nil
}

// wait blocks until all goroutines of the stream layer have returned.
func (s *streamLayer) wait() { s.wg.Wait() }

// Dial implements raft.StreamLayer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.dial(ctx, string(address), connRaft)
}

// dial opens a mutually authenticated connection of the given kind.
func (s *streamLayer) dial(ctx context.Context, addr string, kind byte) (net.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc, err := s.track(raw)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(s.handshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = tc.SetDeadline(deadline)
	conn := tls.Client(tc, s.clientTLS)
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = tc.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	if _, err := conn.Write([]byte{kind}); err != nil {
		_ = tc.Close()
		return nil, fmt.Errorf("writing to %s: %w", addr, err)
	}
	_ = tc.SetDeadline(time.Time{})
	return conn, nil
}

func (s *streamLayer) acceptLoop() {
	var bo backoff
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			s.logger.Error("accepting connection", "error", err)
			select {
			case <-time.After(bo.delay()):
			case <-s.closed:
				return
			}
			continue
		}
		bo = backoff{}
		select {
		case s.handshakes <- struct{}{}:
		default:
			s.rejected.Add(1)
			s.logger.Warn("too many pending handshakes; dropping connection", "remote", raw.RemoteAddr())
			_ = raw.Close()
			continue
		}
		s.wg.Go(func() { s.handle(raw) })
	}
}

// handle authenticates one incoming connection and routes it by kind.
func (s *streamLayer) handle(raw net.Conn) {
	release := sync.OnceFunc(func() { <-s.handshakes })
	defer release()
	tc, err := s.track(raw)
	if err != nil {
		return
	}
	_ = tc.SetDeadline(time.Now().Add(s.handshakeTimeout))
	conn := tls.Server(tc, s.serverTLS)
	if err := conn.Handshake(); err != nil {
		if errors.Is(err, io.EOF) {
			// Closed before a byte was sent: a follower's leader probe
			// (see watchLeader) or a port scan, not a refused client.
			s.logger.Debug("connection closed before the TLS handshake", "remote", raw.RemoteAddr())
		} else {
			s.rejected.Add(1)
			s.logger.Warn("refusing connection: TLS handshake failed", "remote", raw.RemoteAddr(), "error", err)
		}
		_ = tc.Close()
		return
	}
	var kind [1]byte
	if _, err := io.ReadFull(conn, kind[:]); err != nil {
		s.rejected.Add(1)
		s.logger.Debug("connection closed before its kind byte", "remote", raw.RemoteAddr(), "error", err)
		_ = tc.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	release()

	switch kind[0] {
	case connRaft:
		s.acceptedRaft.Add(1)
		select {
		case s.raftConns <- conn:
		case <-s.closed:
			_ = tc.Close()
		}
	case connForward, connForwardBatch, connReadIndex, connStats:
		s.serveRPC(kind[0], conn)
	default:
		s.rejected.Add(1)
		s.logger.Warn("refusing connection of unknown kind", "remote", raw.RemoteAddr(), "kind", kind[0])
		_ = tc.Close()
	}
}

// track registers a raw connection so Close can break it.
func (s *streamLayer) track(c net.Conn) (*trackedConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isClosed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, s: s}
	s.conns[tc] = struct{}{}
	return tc, nil
}

// trackedConn removes itself from the stream layer when closed.
type trackedConn struct {
	net.Conn
	s      *streamLayer
	once   sync.Once
	closed atomic.Bool
}

// Read reports a read cut short by our own Close as a clean io.EOF, so raft's
// transport does not log an error for every connection at shutdown.
func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && c.closed.Load() {
		err = io.EOF
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.closed.Store(true)
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}
