package consensus

// Request connections (kinds F, B, I and S) carry multiplexed frames so that many
// concurrent callers share one connection per peer and kind:
//
//	frame    = id uint64 | length uint32 | payload          (big endian)
//	request  = budget-ms uint32 | sent-at-ms int64 | body    (0 = no deadline)
//
// sent-at is the sender's wall clock. The server never trusts it alone
// (clocks differ between machines): it tracks the smallest (receive − sent-at)
// seen on the connection — skew plus the fastest transit — and treats any
// excess as time the request spent in transit. A request that sat in a
// partitioned network past its budget is refused instead of being applied
// after its caller gave up.
//	response = status byte | body
//
// A response carries the id of its request; responses may come out of order.
// Request ids start at 1. A frame with id 0 from the server is a GOAWAY:
//
//	goaway   = statusGoAway | last-id uint64
//
// sent before the server stops reading (shutdown, idle timeout). The server
// has not read, and never will act on, any request with an id above last-id,
// so the client may safely retry those elsewhere. Responses to requests up to
// last-id may still follow before the connection closes.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	frameHeaderLen = 12
	// maxFrame bounds a frame's payload: commands up to MaxCommandSize and
	// generous room for FSM responses.
	maxFrame = 64 << 20
	// rpcWriteTimeout bounds writing one frame.
	rpcWriteTimeout = 10 * time.Second
	// serverIdleTimeout closes request connections with no requests. It must
	// exceed clientIdleTimeout so that clients always close first and never
	// send on a connection the server is about to drop.
	serverIdleTimeout = 10 * time.Minute
	clientIdleTimeout = 2 * time.Minute
	// silentConnTimeout: a call that times out after waiting this long
	// without any frame arriving on its connection marks the connection dead.
	silentConnTimeout = 2 * time.Second
	// rpcDialTimeout bounds dialing a peer.
	rpcDialTimeout = 2 * time.Second
	// maxRequestsPerConn bounds concurrent requests served per connection.
	maxRequestsPerConn = 1024
)

// Response status bytes.
const (
	statusOK        byte = iota
	statusNotLeader      // body: id length uint16 | id | address; nothing was done
	statusRetry          // body: message; certainly not applied
	statusUnknown        // body: message; may have been applied
	statusFailed         // body: message; definitive failure

	statusGoAway byte = 0xff // only in frames with id 0
)

// errGoAway means the peer stopped reading the connection before our
// request: it certainly did not act on it.
var errGoAway = errors.New("peer closed the connection before reading the request")

func appendFrame(buf []byte, id uint64, payload []byte) []byte {
	buf = binary.BigEndian.AppendUint64(buf, id)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(payload)))
	return append(buf, payload...)
}

func readFrame(r io.Reader) (uint64, []byte, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	id := binary.BigEndian.Uint64(hdr[:8])
	n := binary.BigEndian.Uint32(hdr[8:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds limit", n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return id, payload, nil
}

// requestHeaderLen is the size of budget-ms and sent-at-ms.
const requestHeaderLen = 12

// encodeRequest prefixes body with the time left until ctx's deadline.
func encodeRequest(ctx context.Context, body []byte) []byte {
	var budget uint32
	if dl, ok := ctx.Deadline(); ok {
		ms := time.Until(dl).Milliseconds()
		budget = uint32(min(max(ms, 1), math.MaxUint32))
	}
	buf := make([]byte, requestHeaderLen, requestHeaderLen+len(body))
	binary.BigEndian.PutUint32(buf, budget)
	binary.BigEndian.PutUint64(buf[4:], uint64(time.Now().UnixMilli()))
	return append(buf, body...)
}

func encodeNotLeader(e *NotLeaderError) []byte {
	buf := []byte{statusNotLeader}
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(e.LeaderID)))
	buf = append(buf, e.LeaderID...)
	return append(buf, e.LeaderAddr...)
}

func decodeNotLeader(body []byte) (*NotLeaderError, error) {
	if len(body) < 2 {
		return nil, errors.New("short not-leader response")
	}
	n := int(binary.BigEndian.Uint16(body))
	body = body[2:]
	if n > len(body) {
		return nil, errors.New("bad not-leader response")
	}
	return &NotLeaderError{LeaderID: string(body[:n]), LeaderAddr: string(body[n:])}, nil
}

func encodeStatus(status byte, msg string) []byte {
	return append([]byte{status}, msg...)
}

// remoteError is an error reported by a peer.
type remoteError struct {
	addr, msg string
}

func (e *remoteError) Error() string { return fmt.Sprintf("consensus: %s: %s", e.addr, e.msg) }

// reply is a decoded response.
type reply struct {
	status  byte
	body    []byte
	refused bool // the server went away without reading the request
}

func encodeGoAway(last uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{statusGoAway}, last)
}

// muxConn is one client connection carrying concurrent requests.
type muxConn struct {
	conn  net.Conn
	w     *frameWriter
	reads atomic.Uint64 // frames read so far

	mu       sync.Mutex
	nextID   uint64                // guarded by mu
	pending  map[uint64]chan reply // guarded by mu; closed (unanswered) when the conn breaks
	err      error                 // guarded by mu; set once the conn is broken
	lastUsed time.Time             // guarded by mu
}

func newMuxConn(conn net.Conn) *muxConn {
	return &muxConn{conn: conn, w: newFrameWriter(conn), pending: make(map[uint64]chan reply), lastUsed: time.Now()}
}

// usable reports whether new requests may be sent on m.
func (m *muxConn) usable() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err == nil && (len(m.pending) > 0 || time.Since(m.lastUsed) < clientIdleTimeout)
}

// fail breaks the connection and releases every waiting caller.
func (m *muxConn) fail(err error) {
	m.mu.Lock()
	if m.err == nil {
		m.err = err
	}
	for id, ch := range m.pending {
		close(ch)
		delete(m.pending, id)
	}
	m.mu.Unlock()
	_ = m.conn.Close()
}

// goAway stops new requests on m and releases the requests the server never
// read; responses to the others may still arrive until the server closes.
func (m *muxConn) goAway(last uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = errGoAway
	}
	for id, ch := range m.pending {
		if id > last {
			ch <- reply{refused: true}
			delete(m.pending, id)
		}
	}
}

func (m *muxConn) readLoop() {
	br := bufio.NewReaderSize(m.conn, 64<<10)
	for {
		id, payload, err := readFrame(br)
		if err == nil && len(payload) == 0 {
			err = errors.New("empty response frame")
		}
		if err != nil {
			m.fail(fmt.Errorf("connection lost: %w", err))
			return
		}
		m.reads.Add(1)
		if id == 0 {
			if payload[0] != statusGoAway || len(payload) != 9 {
				m.fail(errors.New("malformed control frame"))
				return
			}
			m.goAway(binary.BigEndian.Uint64(payload[1:]))
			continue
		}
		m.mu.Lock()
		ch := m.pending[id]
		delete(m.pending, id)
		m.mu.Unlock()
		if ch != nil {
			ch <- reply{status: payload[0], body: payload[1:]}
		}
	}
}

// call sends one request and waits for its response. sent reports whether
// the peer may have acted on the request: it is false when the frame was not
// completely written or the peer's GOAWAY shows it never read it.
func (m *muxConn) call(ctx context.Context, payload []byte) (r reply, sent bool, err error) {
	m.mu.Lock()
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return reply{}, false, err // nothing sent
	}
	m.nextID++
	id := m.nextID
	ch := make(chan reply, 1)
	m.pending[id] = ch
	m.lastUsed = time.Now()
	m.mu.Unlock()

	if err := m.w.write(id, payload, rpcWriteTimeout); err != nil {
		// A partly written frame is never acted on; the connection is unusable.
		m.fail(fmt.Errorf("sending request: %w", err))
		return reply{}, false, err
	}
	start, reads := time.Now(), m.reads.Load()

	select {
	case r, ok := <-ch:
		return m.answer(r, ok)
	case <-ctx.Done():
	}
	m.mu.Lock()
	delete(m.pending, id)
	m.mu.Unlock()
	select {
	case r, ok := <-ch: // the answer raced with ctx
		return m.answer(r, ok)
	default:
	}
	if m.reads.Load() == reads && time.Since(start) > silentConnTimeout {
		m.fail(errors.New("peer silent; assuming the connection is dead"))
	}
	return reply{}, true, ctx.Err()
}

// answer interprets what arrived on a pending channel (ok=false: closed
// because the connection broke).
func (m *muxConn) answer(r reply, ok bool) (reply, bool, error) {
	switch {
	case !ok:
		m.mu.Lock()
		defer m.mu.Unlock()
		return reply{}, true, m.err
	case r.refused:
		return reply{}, false, errGoAway
	default:
		return r, true, nil
	}
}

// rpcClient keeps one multiplexed connection per peer address and kind.
type rpcClient struct {
	stream *streamLayer

	mu     sync.Mutex
	conns  map[rpcKey]*rpcEntry // guarded by mu
	closed bool                 // guarded by mu

	wg sync.WaitGroup // read loops
}

type rpcKey struct {
	addr string
	kind byte
}

// rpcEntry is a connection being dialed (ready open) or dialed.
type rpcEntry struct {
	ready chan struct{} // closed when mc or err is set
	mc    *muxConn
	err   error
}

func newRPCClient(s *streamLayer) *rpcClient {
	return &rpcClient{stream: s, conns: make(map[rpcKey]*rpcEntry)}
}

// call sends one request of the given kind to addr. See muxConn.call for sent.
func (c *rpcClient) call(ctx context.Context, addr string, kind byte, body []byte) (reply, bool, error) {
	mc, err := c.get(ctx, addr, kind)
	if err != nil {
		return reply{}, false, err
	}
	return mc.call(ctx, encodeRequest(ctx, body))
}

// get returns a usable connection, dialing at most once at a time per key.
func (c *rpcClient) get(ctx context.Context, addr string, kind byte) (*muxConn, error) {
	key := rpcKey{addr, kind}
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrShutdown
		}
		e := c.conns[key]
		if e == nil {
			e = &rpcEntry{ready: make(chan struct{})}
			c.conns[key] = e
			c.mu.Unlock()
			c.dial(ctx, key, e)
		} else {
			c.mu.Unlock()
		}
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err != nil {
			return nil, e.err
		}
		if e.mc.usable() {
			return e.mc, nil
		}
		c.mu.Lock()
		if c.conns[key] == e {
			delete(c.conns, key)
		}
		c.mu.Unlock()
		e.mc.fail(errors.New("idle connection retired"))
	}
}

// dial fills e; on failure it removes e so the next caller dials again.
func (c *rpcClient) dial(ctx context.Context, key rpcKey, e *rpcEntry) {
	defer close(e.ready)
	ctx, cancel := context.WithTimeout(ctx, rpcDialTimeout)
	defer cancel()
	conn, err := c.stream.dial(ctx, key.addr, key.kind)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && c.closed {
		_ = conn.Close()
		err = ErrShutdown
	}
	if err != nil {
		e.err = fmt.Errorf("dialing %s: %w", key.addr, err)
		if c.conns[key] == e {
			delete(c.conns, key)
		}
		return
	}
	mc := newMuxConn(conn)
	e.mc = mc
	c.wg.Go(func() {
		mc.readLoop()
		c.mu.Lock()
		if c.conns[key] == e {
			delete(c.conns, key)
		}
		c.mu.Unlock()
	})
}

// close breaks every connection and waits for the read loops.
func (c *rpcClient) close() {
	c.mu.Lock()
	c.closed = true
	var mcs []*muxConn
	for _, e := range c.conns {
		select {
		case <-e.ready:
			if e.mc != nil {
				mcs = append(mcs, e.mc)
			}
		default: // a dial in progress sees closed when it completes
		}
	}
	c.mu.Unlock()
	for _, mc := range mcs {
		mc.fail(ErrShutdown)
	}
	c.wg.Wait()
}
