package netproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// dialTimeout bounds the proxy's connect to one endpoint.
const dialTimeout = 5 * time.Second

// socketMaker creates TCP and UDP sockets inside the proxies' namespace: a
// goroutine locked to an OS thread that joined the namespace serves the
// requests (a socket belongs to the namespace of the thread that created it
// and can be used from any thread afterwards).
type socketMaker struct {
	reqs chan sockReq
	stop chan struct{}
	once sync.Once
}

type sockReq struct {
	typ int // unix.SOCK_STREAM or unix.SOCK_DGRAM
	res chan sockResult
}

type sockResult struct {
	fd  int
	err error
}

func newSocketMaker(nsfd int) (*socketMaker, error) {
	m := &socketMaker{reqs: make(chan sockReq), stop: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if nsfd >= 0 {
			if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
				ready <- fmt.Errorf("entering network namespace: %w", err)
				return
			}
		}
		ready <- nil
		for {
			select {
			case r := <-m.reqs:
				fd, err := unix.Socket(unix.AF_INET, r.typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				r.res <- sockResult{fd, err}
			case <-m.stop:
				return
			}
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return m, nil
}

func (m *socketMaker) close() { m.once.Do(func() { close(m.stop) }) }

// socket returns a new non-blocking socket of type typ from inside the
// namespace.
func (m *socketMaker) socket(ctx context.Context, typ int) (int, error) {
	r := sockReq{typ: typ, res: make(chan sockResult, 1)}
	select {
	case m.reqs <- r:
	case <-m.stop:
		return -1, errors.New("proxy stopped")
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	res := <-r.res
	if res.err != nil {
		return -1, fmt.Errorf("socket: %w", res.err)
	}
	return res.fd, nil
}

// dialUDP returns a UDP socket of the namespace connected to addr (a UDP
// connect only sets the peer: nothing waits).
func (m *socketMaker) dialUDP(ctx context.Context, addr netip.AddrPort) (*net.UDPConn, error) {
	fd, err := m.socket(ctx, unix.SOCK_DGRAM)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
		unix.Close(fd)
		return nil, &net.OpError{Op: "dial", Net: "udp", Addr: net.UDPAddrFromAddrPort(addr), Err: err}
	}
	f := os.NewFile(uintptr(fd), "proxy-dial-udp")
	defer f.Close()
	c, err := net.FileConn(f) // dups the descriptor into the runtime poller
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// dial connects to addr (TCP) from inside the namespace.
func (m *socketMaker) dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	fd, err := m.socket(ctx, unix.SOCK_STREAM)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (net.Conn, error) {
		unix.Close(fd)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(addr), Err: err}
	}
	sa := &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	if err := unix.Connect(fd, sa); err == unix.EINPROGRESS {
		// Wait on the descriptor itself (this thread blocks, not the
		// runtime poller: registering a socket whose connect already
		// completed can lose the edge the poller waits for).
		wait := -1
		if dl, ok := ctx.Deadline(); ok {
			wait = max(int(time.Until(dl).Milliseconds()), 1)
		}
		for {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, wait)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fail(err)
			}
			if n == 0 {
				return fail(unix.ETIMEDOUT)
			}
			break
		}
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil {
			return fail(err)
		} else if v != 0 {
			return fail(unix.Errno(v))
		}
	} else if err != nil {
		return fail(err)
	}
	f := os.NewFile(uintptr(fd), "proxy-dial")
	defer f.Close()
	return net.FileConn(f) // dups the descriptor into the runtime poller
}

// leastConnProxy is the running least-connections proxy of one service
// port: lcProxy for TCP, udpProxy for UDP.
type leastConnProxy interface {
	// update replaces the endpoints, live.
	update(spec leastConnPort)
	// listenPort is the local port the svc chain redirects to.
	listenPort() uint16
	// activeCounts returns each endpoint's active connections or sessions.
	activeCounts() map[netip.AddrPort]int
	// stop closes everything and waits for the proxy's goroutines.
	stop()
}

// lcBackend is an endpoint with its active connection (or session) count;
// it survives endpoint updates as long as the endpoint stays.
type lcBackend struct {
	addr   netip.AddrPort
	active int
}

type affEntry struct {
	ep   netip.AddrPort
	seen time.Time
}

// balancer is the choice both proxies make: the endpoint with the fewest
// active connections or sessions, ties in round robin, ClientIP affinity
// honoured. Its mutex also guards what each proxy keeps beside it.
type balancer struct {
	mu       sync.Mutex
	backends []*lcBackend
	byAddr   map[netip.AddrPort]*lcBackend
	next     int // round-robin start among ties
	affinity time.Duration
	aff      map[netip.Addr]affEntry
}

// lcProxy is the least-connections proxy of one TCP service port.
type lcProxy struct {
	balancer
	name  string // namespace/name:port/protocol (the svc chain's), for logs
	ln    net.Listener
	port  uint16
	dials *socketMaker
	log   *slog.Logger

	conns   map[net.Conn]struct{} // under mu
	stopped bool                  // under mu

	wg sync.WaitGroup
}

// startLeastConn listens on 0.0.0.0:0 inside the namespace and serves spec.
func startLeastConn(nsfd int, dials *socketMaker, spec leastConnPort, log *slog.Logger) (*lcProxy, error) {
	var ln net.Listener
	err := inNetNS(nsfd, func() error {
		var err error
		ln, err = net.Listen("tcp4", "0.0.0.0:0")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("least-conn proxy for %s: %w", spec.Name, err)
	}
	p := &lcProxy{name: spec.Name, ln: ln, port: uint16(ln.Addr().(*net.TCPAddr).Port), dials: dials, log: log,
		conns: map[net.Conn]struct{}{}}
	p.update(spec)
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *lcProxy) listenPort() uint16 { return p.port }

// update replaces the endpoints (live); counts of staying endpoints carry on.
func (p *balancer) update(spec leastConnPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.aff == nil {
		p.aff = map[netip.Addr]affEntry{}
	}
	p.affinity = spec.Affinity
	backends := make([]*lcBackend, 0, len(spec.Endpoints))
	byAddr := make(map[netip.AddrPort]*lcBackend, len(spec.Endpoints))
	for _, ep := range spec.Endpoints {
		if _, dup := byAddr[ep]; dup {
			continue
		}
		b := p.byAddr[ep]
		if b == nil {
			b = &lcBackend{addr: ep}
		}
		backends = append(backends, b)
		byAddr[ep] = b
	}
	p.backends, p.byAddr = backends, byAddr
	if p.next >= len(backends) {
		p.next = 0
	}
}

// pick chooses the backend for a new connection or session from client
// (skipping those in failed) and counts it as active.
func (p *balancer) pick(client netip.Addr, failed map[netip.AddrPort]bool) *lcBackend {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.affinity > 0 {
		if e, ok := p.aff[client]; ok && now.Sub(e.seen) < p.affinity && !failed[e.ep] {
			if b := p.byAddr[e.ep]; b != nil {
				b.active++
				p.aff[client] = affEntry{e.ep, now}
				return b
			}
		}
	}
	n := len(p.backends)
	var best *lcBackend
	bestIdx := 0
	for i := 0; i < n; i++ {
		idx := (p.next + i) % n
		b := p.backends[idx]
		if failed[b.addr] {
			continue
		}
		if best == nil || b.active < best.active {
			best, bestIdx = b, idx
		}
	}
	if best == nil {
		return nil
	}
	p.next = (bestIdx + 1) % n
	best.active++
	if p.affinity > 0 {
		if len(p.aff) > 65536 {
			for c, e := range p.aff {
				if now.Sub(e.seen) >= p.affinity {
					delete(p.aff, c)
				}
			}
		}
		p.aff[client] = affEntry{best.addr, now}
	}
	return best
}

func (p *balancer) release(b *lcBackend) {
	p.mu.Lock()
	b.active--
	p.mu.Unlock()
}

// activeCounts returns each endpoint's active connections or sessions.
func (p *balancer) activeCounts() map[netip.AddrPort]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[netip.AddrPort]int, len(p.backends))
	for _, b := range p.backends {
		out[b.addr] = b.active
	}
	return out
}

func (p *lcProxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		if p.stopped {
			return false
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *lcProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("least-conn proxy: accept", "service", p.name, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *lcProxy) handle(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client, true) {
		client.Close()
		return
	}
	defer p.track(client, false)
	defer client.Close()
	caddr := client.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	failed := map[netip.AddrPort]bool{}
	for {
		b := p.pick(caddr, failed)
		if b == nil {
			return // no endpoint reachable: the client sees the connection close
		}
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		up, err := p.dials.dial(ctx, b.addr)
		cancel()
		if err != nil {
			p.release(b)
			failed[b.addr] = true
			p.log.Debug("least-conn proxy: endpoint unreachable", "service", p.name, "endpoint", b.addr, "err", err)
			continue
		}
		if !p.track(up, true) {
			up.Close()
			p.release(b)
			return
		}
		splice(client, up)
		p.track(up, false)
		up.Close()
		p.release(b)
		return
	}
}

// splice copies both ways (the kernel splices TCP to TCP) and half-closes
// each direction when its source ends.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		} else {
			_ = dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}

// stop closes the listener and every proxied connection, and waits.
func (p *lcProxy) stop() {
	p.ln.Close()
	p.mu.Lock()
	p.stopped = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
