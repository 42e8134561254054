package netproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The least-connections proxy of a UDP service port. UDP has no
// connections, so it balances sessions: every client address:port is one,
// with a socket of its own connected to the endpoint pick() chose, active
// until nothing has passed either way for the idle timeout (as conntrack
// forgets a UDP flow).

const (
	// defaultUDPIdle is how long a UDP session without datagrams stays
	// active: conntrack's timeout for a UDP flow that saw no reply.
	defaultUDPIdle = 30 * time.Second
	// defaultUDPMaxSessions bounds the sessions of one service port (each
	// holds a socket and a goroutine). A new client over the bound ends
	// the least recently active session: new clients always get through
	// (clients that pick a new source port for every query, as resolvers
	// do, would otherwise lock a busy service out for the idle timeout).
	defaultUDPMaxSessions = 4096
	// maxDatagram is the largest UDP payload (65,535 − 8 bytes of UDP
	// header, rounded up).
	maxDatagram = 65536
	// evictLogEvery spaces the log lines about sessions ended early.
	evictLogEvery = 10 * time.Second
)

// udpLimits configure the UDP proxies of a Proxy.
type udpLimits struct {
	idle        time.Duration
	maxSessions int
}

// replyBufs holds the buffers the sessions read replies into: a session
// takes one only while a reply is ready, so idle sessions hold none.
var replyBufs = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// udpProxy is the least-connections proxy of one UDP service port. The
// svc chain redirects the port's datagrams to its socket; replies leave
// through the same socket, from the address the client's datagrams were
// redirected to, so conntrack turns their source back into the service
// address.
type udpProxy struct {
	balancer
	name   string // namespace/name:port/protocol, for logs
	ln     *net.UDPConn
	port   uint16
	dials  *socketMaker
	log    *slog.Logger
	limits udpLimits
	epoch  time.Time // session clocks count from here (monotonic)

	// Under mu:
	sessions map[netip.AddrPort]*udpSession
	stopped  bool
	evicted  int       // sessions ended over the bound since the last log line
	evictLog time.Time // when that line was written

	wg sync.WaitGroup
}

// udpSession is one client address:port and its socket to the endpoint.
type udpSession struct {
	client  netip.AddrPort
	backend *lcBackend
	up      *net.UDPConn
	raw     syscall.RawConn
	oob     []byte       // IP_PKTINFO of replies: their source address
	last    atomic.Int64 // time since the epoch of the last datagram, either way
	ended   bool         // under the proxy's mu

	// The write to the endpoint, prepared once so that forwarding a
	// datagram allocates nothing; used by the serving goroutine only.
	out     []byte
	outErr  error
	writeFn func(fd uintptr) bool
}

// startUDPLeastConn listens on 0.0.0.0:0 (UDP) inside the namespace and
// serves spec.
func startUDPLeastConn(nsfd int, dials *socketMaker, spec leastConnPort, limits udpLimits, log *slog.Logger) (*udpProxy, error) {
	var ln *net.UDPConn
	err := inNetNS(nsfd, func() error {
		var err error
		ln, err = net.ListenUDP("udp4", &net.UDPAddr{})
		return err
	})
	if err == nil {
		// The destination of each datagram (after the redirect) is where
		// its replies must come from.
		err = setSockopt(ln, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		if err != nil {
			ln.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("least-conn UDP proxy for %s: %w", spec.Name, err)
	}
	if limits.idle <= 0 {
		limits.idle = defaultUDPIdle
	}
	if limits.maxSessions <= 0 {
		limits.maxSessions = defaultUDPMaxSessions
	}
	p := &udpProxy{name: spec.Name, ln: ln, port: uint16(ln.LocalAddr().(*net.UDPAddr).Port), dials: dials, log: log,
		limits: limits, epoch: time.Now(), sessions: map[netip.AddrPort]*udpSession{}}
	p.update(spec)
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func setSockopt(c syscall.Conn, level, opt, value int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, value) }); err != nil {
		return err
	}
	return serr
}

func (p *udpProxy) listenPort() uint16 { return p.port }

// now is the session clock: monotonic, cheap to store atomically.
func (p *udpProxy) now() int64 { return int64(time.Since(p.epoch)) }

// update replaces the endpoints (live) and ends the sessions of endpoints
// that left: their clients' next datagrams open sessions to the others.
func (p *udpProxy) update(spec leastConnPort) {
	p.balancer.update(spec)
	p.mu.Lock()
	var gone []*udpSession
	for _, s := range p.sessions {
		if p.byAddr[s.backend.addr] != s.backend {
			gone = append(gone, s)
		}
	}
	p.mu.Unlock()
	for _, s := range gone {
		p.end(s)
	}
}

// serve reads the clients' datagrams into one buffer and forwards each.
func (p *udpProxy) serve() {
	defer p.wg.Done()
	buf := make([]byte, maxDatagram)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	for {
		n, oobn, _, client, err := p.ln.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("least-conn UDP proxy: read", "service", p.name, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.forward(buf[:n], oob[:oobn], netip.AddrPortFrom(client.Addr().Unmap(), client.Port()))
	}
}

// forward sends a client's datagram on its session, opening one first if
// needed. A datagram that cannot be sent is dropped, as the network would.
func (p *udpProxy) forward(b, oob []byte, client netip.AddrPort) {
	for range 2 {
		s := p.session(client, oob)
		if s == nil {
			return
		}
		if err := s.send(b); !errors.Is(err, net.ErrClosed) {
			return
		}
		// An update ended the session between the lookup and the write
		// (its endpoint left): open another.
	}
}

// session returns client's session, opening it if there is none (nil: no
// endpoint, or stopped).
func (p *udpProxy) session(client netip.AddrPort, oob []byte) *udpSession {
	now := p.now()
	p.mu.Lock()
	if s := p.sessions[client]; s != nil {
		// Stored under mu, so an expiry (which looks under mu) never
		// ends a session that has just been used.
		s.last.Store(now)
		p.mu.Unlock()
		return s
	}
	if p.stopped {
		p.mu.Unlock()
		return nil
	}
	var evicted *udpSession
	if len(p.sessions) >= p.limits.maxSessions {
		evicted = p.oldestLocked()
		p.endLocked(evicted)
	}
	n, logNow := p.noteEvicted(evicted != nil)
	p.mu.Unlock()
	if evicted != nil {
		evicted.up.Close()
		if logNow {
			p.log.Warn("least-conn UDP proxy: at the session bound, ending the least recently active sessions for new clients",
				"service", p.name, "limit", p.limits.maxSessions, "ended", n)
		}
	}
	return p.open(client, oob)
}

// oldestLocked returns the least recently active session (a scan: it runs
// only at the bound, once per new client). Called with mu held and at
// least one session.
func (p *udpProxy) oldestLocked() *udpSession {
	var oldest *udpSession
	for _, s := range p.sessions {
		if oldest == nil || s.last.Load() < oldest.last.Load() {
			oldest = s
		}
	}
	return oldest
}

// noteEvicted counts a session ended over the bound (when evicted) and says
// whether to log now (at most once per evictLogEvery) and how many ended
// since the last line. Called with mu held.
func (p *udpProxy) noteEvicted(evicted bool) (int, bool) {
	if !evicted {
		return 0, false
	}
	p.evicted++
	if now := time.Now(); p.evictLog.IsZero() || now.Sub(p.evictLog) >= evictLogEvery {
		n := p.evicted
		p.evictLog, p.evicted = now, 0
		return n, true
	}
	return 0, false
}

// open starts client's session: the endpoint pick() chooses (the next one
// when a socket cannot be connected), a socket connected to it and the
// goroutine relaying its replies. Only the serving goroutine opens
// sessions, so a client never gets two.
func (p *udpProxy) open(client netip.AddrPort, oob []byte) *udpSession {
	local, ok := pktinfoDst(oob)
	if !ok {
		p.log.Warn("least-conn UDP proxy: datagram without its destination address", "service", p.name, "client", client)
		return nil
	}
	var failed map[netip.AddrPort]bool
	for {
		b := p.pick(client.Addr(), failed)
		if b == nil {
			p.log.Debug("least-conn UDP proxy: no endpoint for a new session", "service", p.name, "client", client)
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		up, err := p.dials.dialUDP(ctx, b.addr)
		cancel()
		if err != nil {
			p.release(b)
			if failed == nil {
				failed = map[netip.AddrPort]bool{}
			}
			failed[b.addr] = true
			p.log.Debug("least-conn UDP proxy: endpoint unreachable", "service", p.name, "endpoint", b.addr, "err", err)
			continue
		}
		s, err := newUDPSession(client, local, b, up)
		if err != nil {
			up.Close()
			p.release(b)
			p.log.Warn("least-conn UDP proxy: session socket", "service", p.name, "err", err)
			return nil
		}
		p.mu.Lock()
		switch {
		case p.stopped:
			p.mu.Unlock()
			up.Close()
			p.release(b)
			return nil
		case p.byAddr[b.addr] != b:
			// An update removed the endpoint while the socket was made.
			p.mu.Unlock()
			up.Close()
			p.release(b)
			continue
		}
		s.last.Store(p.now())
		p.sessions[client] = s
		p.wg.Add(1) // under mu, before stop can wait
		p.mu.Unlock()
		go p.relay(s)
		return s
	}
}

func newUDPSession(client netip.AddrPort, local netip.Addr, b *lcBackend, up *net.UDPConn) (*udpSession, error) {
	raw, err := up.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &udpSession{client: client, backend: b, up: up, raw: raw,
		oob: unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: local.As4()})}
	s.writeFn = func(fd uintptr) bool {
		_, s.outErr = unix.Write(int(fd), s.out)
		return true // never wait: a full socket drops the datagram
	}
	return s, nil
}

// send writes a datagram to the endpoint without blocking the serving
// goroutine (a congested endpoint must not stall the other sessions).
func (s *udpSession) send(b []byte) error {
	s.out = b
	err := s.raw.Write(s.writeFn)
	s.out = nil
	if err != nil {
		return err
	}
	return s.outErr
}

// relay sends the endpoint's replies to the client until the session
// ends: idle past the timeout, or ended by an update or stop.
func (p *udpProxy) relay(s *udpSession) {
	defer p.wg.Done()
	defer p.end(s)
	var werr error
	read := func(fd uintptr) bool {
		bp := replyBufs.Get().(*[]byte)
		defer replyBufs.Put(bp)
		n, err := unix.Read(int(fd), *bp)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return false // wait until readable
		case err != nil:
			// ECONNREFUSED: an ICMP error from the endpoint, reported
			// on the connected socket; the session goes on.
			return true
		}
		s.last.Store(p.now())
		_, _, werr = p.ln.WriteMsgUDPAddrPort((*bp)[:n], s.oob, s.client)
		return true
	}
	if err := s.up.SetReadDeadline(time.Now().Add(p.limits.idle)); err != nil {
		return
	}
	for {
		err := s.raw.Read(read)
		switch {
		case err == nil:
			if werr != nil && !errors.Is(werr, net.ErrClosed) {
				p.log.Debug("least-conn UDP proxy: reply to client", "service", p.name, "client", s.client, "err", werr)
			}
			werr = nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			left, expired := p.expire(s)
			if expired {
				return
			}
			if s.up.SetReadDeadline(time.Now().Add(left)) != nil {
				return
			}
		default:
			return // closed by update or stop
		}
	}
}

// expire ends s if it has been idle for the timeout, or returns how long
// it may stay idle still. The test and the removal share one critical
// section with session(), so a datagram either refreshes s in time or
// finds it gone and opens another session.
func (p *udpProxy) expire(s *udpSession) (time.Duration, bool) {
	p.mu.Lock()
	idle := time.Duration(p.now() - s.last.Load())
	if left := p.limits.idle - idle; left > 0 {
		p.mu.Unlock()
		return left, false
	}
	p.endLocked(s)
	p.mu.Unlock()
	s.up.Close()
	return 0, true
}

// end removes the session, releases its endpoint and closes its socket
// (which ends its relay goroutine); twice is fine.
func (p *udpProxy) end(s *udpSession) {
	p.mu.Lock()
	p.endLocked(s)
	p.mu.Unlock()
	s.up.Close()
}

func (p *udpProxy) endLocked(s *udpSession) {
	if s.ended {
		return
	}
	s.ended = true
	if p.sessions[s.client] == s {
		delete(p.sessions, s.client)
	}
	s.backend.active--
}

// sessionCount returns the number of sessions (for tests).
func (p *udpProxy) sessionCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sessions)
}

// stop closes the socket and every session, and waits for the goroutines.
func (p *udpProxy) stop() {
	p.ln.Close()
	p.mu.Lock()
	p.stopped = true
	all := make([]*udpSession, 0, len(p.sessions))
	for _, s := range p.sessions {
		all = append(all, s)
	}
	p.mu.Unlock()
	for _, s := range all {
		p.end(s)
	}
	p.wg.Wait()
}

// pktinfoDst returns a datagram's destination address from its IP_PKTINFO
// control message.
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return netip.Addr{}, false
		}
		if h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo {
			// struct in_pktinfo: ifindex, spec_dst, addr (the header's
			// destination, which the redirect set).
			return netip.AddrFrom4([4]byte(data[8:12])), true
		}
		oob = rest
	}
	return netip.Addr{}, false
}
