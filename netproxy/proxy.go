package netproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrClosed is returned by calls on a closed Proxy.
var ErrClosed = errors.New("netproxy: proxy closed")

// maxLogged bounds the memory of skip messages already logged.
const maxLogged = 10000

// Proxy programs one network namespace. Its methods are safe for
// concurrent use; Set calls are serialized.
type Proxy struct {
	opts   Options
	log    *slog.Logger
	nsfd   int // -1: the caller's namespace
	sock   *nfSocket
	schema *schema

	mu         sync.Mutex
	state      *state    // the desired dataplane, as of the last Set
	inSync     bool      // the kernel holds state; false: the next Set is a full resync
	pendingUDP *udpFlush // conntrack cleanup not yet done
	logged     map[string]struct{}
	dials      *socketMaker
	lc         map[string]*lcProxy // least-conn proxies by svc chain name
	ct         *vnl.Handle
	closed     bool

	stats Stats
}

// Stats describes the last Set, for logs and benchmarks.
type Stats struct {
	Full     bool          // it was a full resync
	Messages int           // netlink messages in the transaction (0: nothing changed)
	Render   time.Duration // rendering and diffing
	Kernel   time.Duration // encoding, sending and the kernel's commit
}

// New opens the namespace (Options.NetNS) and a netfilter socket in it. It
// does not touch the kernel's rules: the first Set does.
func New(opts Options) (*Proxy, error) {
	if opts.Table == "" {
		opts.Table = DefaultTable
	}
	if len(opts.Table) > 255 {
		return nil, fmt.Errorf("netproxy: table name %q too long", opts.Table)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	nsfd, err := openNetNS(opts.NetNS)
	if err != nil {
		return nil, fmt.Errorf("netproxy: %w", err)
	}
	sock, err := dialNetfilter(nsfd)
	if err != nil {
		if nsfd >= 0 {
			unix.Close(nsfd)
		}
		return nil, fmt.Errorf("netproxy: %w", err)
	}
	return &Proxy{
		opts: opts, log: log, nsfd: nsfd, sock: sock, schema: newSchema(opts.Table),
		logged: map[string]struct{}{}, lc: map[string]*lcProxy{}, state: newState(), pendingUDP: newUDPFlush(),
	}, nil
}

// Set converges the kernel to cfg. The first call (and the first after a
// failure or Resync) replaces the whole table in one transaction; later
// calls send only what changed since the last successful call. It is cheap
// when nothing changed and safe to call often.
func (p *Proxy) Set(ctx context.Context, cfg Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	start := time.Now()
	c, skipped := p.state.update(cfg, p.leastConnPort)
	p.logSkipped(skipped)
	p.pendingUDP.merge(c.UDP)

	full := !p.inSync || c.CIDR
	if !full && c.empty() {
		p.stats = Stats{Render: time.Since(start)}
		p.afterApply()
		return nil
	}
	b := newTxn()
	var err error
	if full {
		err = p.schema.buildFull(b, p.state.view())
	} else {
		err = p.schema.buildIncremental(b, p.state, c)
	}
	rendered := time.Now()
	var msgs []netlink.Message
	if err == nil {
		msgs, err = b.batch()
	}
	if err == nil {
		err = p.sock.send(msgs)
	}
	p.stats = Stats{Full: full, Messages: max(len(msgs)-2, 0), Render: rendered.Sub(start), Kernel: time.Since(rendered)}
	if err != nil {
		p.inSync = false // the next Set starts over with a full resync
		kind := "incremental update"
		if full {
			kind = "full resync"
		}
		return fmt.Errorf("netproxy: %s of table %s: %w", kind, p.opts.Table, err)
	}
	p.inSync = true
	p.afterApply()
	p.log.Debug("netproxy: applied", "full", full, "messages", p.stats.Messages,
		"render", p.stats.Render, "kernel", p.stats.Kernel)
	return nil
}

// afterApply runs once the kernel has the state: it stops unused
// least-conn proxies and deletes stale UDP conntrack entries.
func (p *Proxy) afterApply() {
	for chain, lp := range p.lc {
		if e := p.state.byHash[strings.TrimPrefix(chain, "svc-")]; e == nil || e.out.LeastConn == nil {
			lp.stop()
			delete(p.lc, chain)
		}
	}
	f := p.pendingUDP
	if f.empty() {
		return
	}
	p.pendingUDP = newUDPFlush()
	if n, err := p.flushConntrack(f); err != nil {
		p.log.Warn("netproxy: deleting stale UDP conntrack entries", "err", err)
	} else if n > 0 {
		p.log.Debug("netproxy: deleted stale UDP conntrack entries", "count", n)
	}
}

// LastStats describes the last Set.
func (p *Proxy) LastStats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Resync makes the next Set a full resync (e.g. periodically, to undo rules
// someone changed by hand).
func (p *Proxy) Resync() {
	p.mu.Lock()
	p.inSync = false
	p.mu.Unlock()
}

// Close stops the least-conn proxies and releases the sockets. It LEAVES
// the rules in the kernel: a restarted agent keeps serving meanwhile.
func (p *Proxy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.stopAllLeastConn()
	if p.dials != nil {
		p.dials.close()
	}
	err := p.sock.close()
	if p.ct != nil {
		p.ct.Close()
	}
	if p.nsfd >= 0 {
		unix.Close(p.nsfd)
	}
	return err
}

// Remove deletes the table (for `shoal leave` and tests) and stops the
// least-conn proxies. A later Set builds everything again.
func (p *Proxy) Remove() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	p.stopAllLeastConn()
	p.inSync = false
	b := newTxn()
	p.schema.buildRemove(b)
	msgs, err := b.batch()
	if err == nil {
		err = p.sock.send(msgs)
	}
	if err != nil {
		return fmt.Errorf("netproxy: removing table %s: %w", p.opts.Table, err)
	}
	return nil
}

func (p *Proxy) logSkipped(msgs []string) {
	for _, m := range msgs {
		if _, done := p.logged[m]; done {
			continue
		}
		if len(p.logged) >= maxLogged {
			clear(p.logged)
		}
		p.logged[m] = struct{}{}
		p.log.Warn("netproxy: skipped: " + m)
	}
}

// leastConnPort is render's redirectFunc: it starts or updates the proxy of
// a least-conn service port and returns its port (0 on failure: the port
// then falls back to round robin).
func (p *Proxy) leastConnPort(chain string, spec leastConnPort) uint16 {
	if lp := p.lc[chain]; lp != nil {
		lp.update(spec)
		return lp.port
	}
	if p.dials == nil {
		d, err := newSocketMaker(p.nsfd)
		if err != nil {
			p.log.Error("netproxy: least-conn proxy unavailable, using round robin", "service", spec.Name, "err", err)
			return 0
		}
		p.dials = d
	}
	lp, err := startLeastConn(p.nsfd, p.dials, spec, p.log)
	if err != nil {
		p.log.Error("netproxy: least-conn proxy unavailable, using round robin", "service", spec.Name, "err", err)
		return 0
	}
	p.lc[chain] = lp
	return lp.port
}

func (p *Proxy) stopAllLeastConn() {
	for chain, lp := range p.lc {
		lp.stop()
		delete(p.lc, chain)
	}
}

// flushConntrack deletes the selected entries inside the namespace.
func (p *Proxy) flushConntrack(f *udpFlush) (uint, error) {
	if p.ct == nil {
		var h *vnl.Handle
		var err error
		if p.nsfd >= 0 {
			h, err = vnl.NewHandleAt(netns.NsHandle(p.nsfd), unix.NETLINK_NETFILTER)
		} else {
			h, err = vnl.NewHandle(unix.NETLINK_NETFILTER)
		}
		if err != nil {
			return 0, fmt.Errorf("conntrack netlink socket: %w", err)
		}
		p.ct = h
	}
	return p.ct.ConntrackDeleteFilters(vnl.ConntrackTable, unix.AF_INET, f)
}
