package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	miekg "github.com/miekg/dns"
)

// Defaults for Config.
const (
	DefaultUDPSockets      = 2
	DefaultCacheSize       = 10000
	DefaultCacheMaxTTL     = 30 * time.Second
	DefaultUpstreamTimeout = 2 * time.Second
	maxUDPSockets          = 64
)

// Config configures a Server.
type Config struct {
	// Addrs are the listen addresses ("10.43.0.10:53"); the server answers
	// over UDP and TCP on each. With port 0 one free port is picked per
	// address, the same for UDP and TCP (see Server.Addrs).
	Addrs []string
	// NetNS is the path of a network namespace to open the listening
	// sockets in ("" = the caller's). Upstream queries are sent from the
	// caller's namespace.
	NetNS string
	// UDPSockets is the number of SO_REUSEPORT UDP sockets per address
	// (DefaultUDPSockets when 0): the kernel spreads clients over them.
	UDPSockets int
	// Upstreams are "ip:port" forwarders for names outside the zone, tried
	// in order (starting with the last one that answered). Empty: such
	// names are REFUSED.
	Upstreams []string
	// UpstreamTimeout bounds one exchange with one upstream
	// (DefaultUpstreamTimeout when 0).
	UpstreamTimeout time.Duration
	// CacheSize is the number of forwarded answers cached
	// (DefaultCacheSize when 0, no cache when negative).
	CacheSize int
	// CacheMaxTTL caps how long a forwarded answer, positive or negative,
	// is cached (DefaultCacheMaxTTL when 0).
	CacheMaxTTL time.Duration
	// Log receives errors (nothing is logged when nil).
	Log *slog.Logger
}

// Server is a cluster DNS server: answers for the current Zone, forwarding
// with a cache for other names. Its zone is swapped with SetZone while it
// serves; until the first SetZone every query is answered SERVFAIL.
type Server struct {
	cfg   Config
	addrs []netip.AddrPort
	log   *slog.Logger
	zone  atomic.Pointer[Zone]
	fwd   *forwarder // nil without upstreams
	cache *cache     // nil without upstreams or when disabled
	ra    bool       // recursion available: there are upstreams
	now   func() time.Time

	ctx    context.Context // cancelled by Close: aborts upstream queries
	cancel context.CancelFunc

	mu       sync.Mutex
	started  bool
	closed   bool
	servers  []*miekg.Server
	fastUDP  []*net.UDPConn // served by serveUDP
	stopping atomic.Bool    // Close has begun: the fast loops return
	slow     chan struct{}  // semaphore of the UDP queries served off the fast loops
	bound    []netip.AddrPort
	wg       sync.WaitGroup

	stats    serverStats
	lastWarn atomic.Int64 // unix nanos of the last "all upstreams failed" warning
}

// NewServer validates cfg and returns a server that is not yet listening.
func NewServer(cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, log: cfg.Log, now: time.Now, slow: make(chan struct{}, maxSlowQueries)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, a := range cfg.Addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return nil, fmt.Errorf("dns: listen address %q: want ip:port: %w", a, err)
		}
		s.addrs = append(s.addrs, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	switch {
	case s.cfg.UDPSockets == 0:
		s.cfg.UDPSockets = DefaultUDPSockets
	case s.cfg.UDPSockets < 0 || s.cfg.UDPSockets > maxUDPSockets:
		return nil, fmt.Errorf("dns: UDPSockets %d: want 1–%d", s.cfg.UDPSockets, maxUDPSockets)
	}
	var ups []string
	for _, u := range cfg.Upstreams {
		ap, err := netip.ParseAddrPort(u)
		if err != nil || ap.Port() == 0 {
			return nil, fmt.Errorf("dns: upstream %q: want ip:port with a non-zero port", u)
		}
		ups = append(ups, ap.String())
	}
	if s.cfg.UpstreamTimeout == 0 {
		s.cfg.UpstreamTimeout = DefaultUpstreamTimeout
	} else if s.cfg.UpstreamTimeout < 0 {
		return nil, errors.New("dns: negative UpstreamTimeout")
	}
	if s.cfg.CacheMaxTTL == 0 {
		s.cfg.CacheMaxTTL = DefaultCacheMaxTTL
	} else if s.cfg.CacheMaxTTL < time.Second {
		return nil, fmt.Errorf("dns: CacheMaxTTL %s: want at least 1s", s.cfg.CacheMaxTTL)
	}
	if s.cfg.CacheSize == 0 {
		s.cfg.CacheSize = DefaultCacheSize
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if len(ups) > 0 {
		s.ra = true
		s.fwd = newForwarder(ups, s.cfg.UpstreamTimeout)
		if s.cfg.CacheSize > 0 {
			s.cache = newCache(s.cfg.CacheSize)
		}
	}
	return s, nil
}

// SetZone publishes z: queries that arrive after SetZone returns are
// answered from it. A nil zone makes the server answer SERVFAIL.
func (s *Server) SetZone(z *Zone) { s.zone.Store(z) }

// Zone returns the zone currently served (nil before the first SetZone).
func (s *Server) Zone() *Zone { return s.zone.Load() }

// Addrs returns the addresses the server listens on, ports resolved, in
// the order of Config.Addrs (nil before Start).
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.bound...)
}

// Start opens the sockets (inside Config.NetNS when set) and serves them in
// background goroutines. It returns once every socket is served.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("dns: Start after Close")
	case s.started:
		return errors.New("dns: already started")
	case len(s.addrs) == 0:
		return errors.New("dns: no listen addresses")
	}
	socks, err := s.listen()
	if err != nil {
		return err
	}
	// UDP sockets on a specific address get the fast loop; wildcard ones
	// miekg's server, which answers from the address a query came to.
	var servers []*miekg.Server
	var fast []*net.UDPConn
	for _, pc := range socks.udp {
		if uc, ok := pc.(*net.UDPConn); ok && !uc.LocalAddr().(*net.UDPAddr).IP.IsUnspecified() {
			fast = append(fast, uc)
			continue
		}
		servers = append(servers, &miekg.Server{PacketConn: pc, Handler: s, UDPSize: udpReadSize})
	}
	for _, ln := range socks.tcp {
		servers = append(servers, &miekg.Server{Listener: ln, Handler: s})
	}
	var startErr error
	var running []*miekg.Server
	for _, srv := range servers {
		if startErr != nil {
			closeSocket(srv)
			continue
		}
		ready := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(ready) }
		done := make(chan error, 1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			err := srv.ActivateAndServe()
			if err != nil {
				s.log.Error("dns: serving stopped", "err", err)
			}
			done <- err
		}()
		select {
		case <-ready:
			running = append(running, srv)
		case err := <-done:
			closeSocket(srv)
			startErr = fmt.Errorf("dns: serving: %w", err)
		}
	}
	if startErr != nil {
		for _, srv := range running {
			_ = srv.Shutdown()
		}
		for _, uc := range fast {
			uc.Close()
		}
		s.wg.Wait()
		return startErr
	}
	for _, uc := range fast {
		s.wg.Add(1)
		go s.serveUDP(uc)
	}
	s.servers, s.fastUDP, s.bound, s.started = servers, fast, socks.bound, true
	return nil
}

// Close stops serving, closes the sockets, aborts upstream queries and
// waits for every goroutine the server started. It may be called more than
// once, and without Start.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	// Stop the fast loops reading; the sockets stay open until the queries
	// in flight have been answered.
	s.stopping.Store(true)
	for _, uc := range s.fastUDP {
		uc.SetReadDeadline(time.Unix(1, 0))
	}
	var errs []error
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	s.wg.Wait()
	for _, uc := range s.fastUDP {
		if err := uc.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dns: close: %w", err)
	}
	return nil
}

// closeSocket closes the socket of a server that was never activated.
func closeSocket(srv *miekg.Server) {
	if srv.PacketConn != nil {
		srv.PacketConn.Close()
	}
	if srv.Listener != nil {
		srv.Listener.Close()
	}
}

// Stats are counters of the forwarding path.
type Stats struct {
	// Forwarded counts queries sent upstream (cache misses).
	Forwarded uint64
	// CacheHits counts forwarded names answered from the cache.
	CacheHits uint64
	// UpstreamFailures counts queries for which every upstream failed.
	UpstreamFailures uint64
}

type serverStats struct {
	forwarded, cacheHits, upstreamFailures atomic.Uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Forwarded:        s.stats.forwarded.Load(),
		CacheHits:        s.stats.cacheHits.Load(),
		UpstreamFailures: s.stats.upstreamFailures.Load(),
	}
}
