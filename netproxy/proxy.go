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
	// perShard sizes the shard tables (service ports per table);
	// fixedShards > 0 overrides the sizing (tests).
	perShard, fixedShards int
	// udp bounds the sessions of the least-conn UDP proxies started from
	// now on (tests shorten the idle timeout).
	udp udpLimits

	mu         sync.Mutex
	state      *state    // the desired dataplane, as of the last Set
	inSync     bool      // the kernel holds state; false: the next Set is a full resync
	shards     int       // shard tables built by the last full resync
	touched    int       // shard tables the last transaction touched
	pendingUDP *udpFlush // conntrack cleanup not yet done
	logged     map[string]struct{}
	dials      *socketMaker
	lc         map[string]leastConnProxy // least-conn proxies by svc chain name
	ct         *vnl.Handle
	closed     bool

	stats Stats
}

// Stats describes the last Set, for logs and benchmarks.
type Stats struct {
	Full     bool          // it was a full resync
	Messages int           // netlink messages in the transaction (0: nothing changed)
	Render   time.Duration // rendering and diffing
	Kernel   time.Duration // encoding, sending and the kernel's commit (full resync: and listing the tables)
}

// New opens the namespace (Options.NetNS) and a netfilter socket in it. It
// does not touch the kernel's rules: the first Set does.
func New(opts Options) (*Proxy, error) {
	if opts.Table == "" {
		opts.Table = DefaultTable
	}
	if len(opts.Table) > maxTableName {
		return nil, fmt.Errorf("netproxy: table name %q too long (at most %d bytes: shard tables add a suffix)", opts.Table, maxTableName)
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
		opts: opts, log: log, nsfd: nsfd, sock: sock, schema: newSchema(opts.Table, opts.NoTrack...), perShard: portsPerShard,
		udp:    udpLimits{idle: defaultUDPIdle, maxSessions: defaultUDPMaxSessions},
		logged: map[string]struct{}{}, lc: map[string]leastConnProxy{}, state: newState(), pendingUDP: newUDPFlush(),
	}, nil
}

// Set converges the kernel to cfg. The first call (and the first after a
// failure or Resync) replaces all of netproxy's tables in one transaction;
// later calls send only what changed since the last successful call, to
// the tables that hold it. It is cheap when nothing changed and safe to
// call often. When the services outgrow the shard tables, Set rebuilds
// everything over twice as many.
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

	want := p.shardsFor(len(p.state.ports))
	full := !p.inSync || c.CIDR || want > p.shards
	if !full && c.empty() {
		p.stats = Stats{Render: time.Since(start)}
		p.touched = 0
		p.afterApply()
		return nil
	}
	b := newTxn()
	n, touched := p.shards, 0
	var listing time.Duration
	var err error
	if full {
		n, touched = want, want
		var stale []string
		listStart := time.Now()
		stale, err = p.staleTables(n)
		listing = time.Since(listStart)
		if err == nil {
			err = p.schema.buildFull(b, p.state.view(), n, stale)
		}
	} else {
		touched, err = p.schema.buildIncremental(b, p.state, c, n)
	}
	rendered := time.Now()
	var msgs []netlink.Message
	if err == nil {
		msgs, err = b.batch()
	}
	if err == nil {
		err = p.sock.send(msgs)
	}
	p.stats = Stats{Full: full, Messages: max(len(msgs)-2, 0), Render: rendered.Sub(start) - listing,
		Kernel: time.Since(rendered) + listing}
	if err != nil {
		p.inSync = false // the next Set starts over with a full resync
		kind := "incremental update"
		if full {
			kind = "full resync"
		}
		return fmt.Errorf("netproxy: %s of tables %s*: %w", kind, p.opts.Table, err)
	}
	p.inSync, p.touched = true, touched
	if full && n != p.shards {
		p.log.Info("netproxy: service chains sharded", "tables", n, "servicePorts", len(p.state.ports))
	}
	if full {
		p.shards = n
	}
	p.afterApply()
	p.log.Debug("netproxy: applied", "full", full, "messages", p.stats.Messages, "shardTables", touched,
		"render", p.stats.Render, "kernel", p.stats.Kernel)
	return nil
}

// shardsFor is the shard count for the given number of service ports.
func (p *Proxy) shardsFor(ports int) int {
	if p.fixedShards > 0 {
		return p.fixedShards
	}
	return shardCount(ports, p.perShard)
}

// staleTables lists the shard tables in the kernel that a full resync
// over n shards must delete.
func (p *Proxy) staleTables(n int) ([]string, error) {
	names, err := listShardTables(p.nsfd, p.opts.Table)
	if err != nil {
		return nil, err
	}
	current := make(map[string]bool, n)
	for i := 0; i < n; i++ {
		current[shardTableName(p.opts.Table, i)] = true
	}
	var stale []string
	for _, name := range names {
		if !current[name] {
			stale = append(stale, name)
		}
	}
	return stale, nil
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
// the rules in the kernel: a restarted agent keeps serving meanwhile,
// except least-conn service ports, whose rules redirect to the proxies
// that Close stopped: their connections fail until the next Proxy's first
// Set starts new proxies.
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

// Remove deletes netproxy's tables, the base table and every shard table
// (for `shoal leave` and tests), and stops the least-conn proxies. A later
// Set builds everything again.
func (p *Proxy) Remove() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	p.stopAllLeastConn()
	p.inSync = false
	shards, err := listShardTables(p.nsfd, p.opts.Table)
	if err == nil {
		b := newTxn()
		p.schema.buildRemove(b, shards)
		var msgs []netlink.Message
		msgs, err = b.batch()
		if err == nil {
			err = p.sock.send(msgs)
		}
	}
	if err != nil {
		return fmt.Errorf("netproxy: removing tables %s*: %w", p.opts.Table, err)
	}
	p.shards = 0
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
// a least-conn service port (TCP or UDP: the chain name includes the
// protocol, so a chain's proxy keeps its kind) and returns its port (0 on
// failure: the port then falls back to round robin).
func (p *Proxy) leastConnPort(chain string, spec leastConnPort) uint16 {
	if lp := p.lc[chain]; lp != nil {
		lp.update(spec)
		return lp.listenPort()
	}
	if p.dials == nil {
		d, err := newSocketMaker(p.nsfd)
		if err != nil {
			p.log.Error("netproxy: least-conn proxy unavailable, using round robin", "service", spec.Name, "err", err)
			return 0
		}
		p.dials = d
	}
	lp, err := p.startLeastConn(spec)
	if err != nil {
		p.log.Error("netproxy: least-conn proxy unavailable, using round robin", "service", spec.Name, "err", err)
		return 0
	}
	p.lc[chain] = lp
	return lp.listenPort()
}

// startLeastConn starts the proxy for spec's protocol.
func (p *Proxy) startLeastConn(spec leastConnPort) (leastConnProxy, error) {
	if spec.Protocol == UDP {
		lp, err := startUDPLeastConn(p.nsfd, p.dials, spec, p.udp, p.log)
		if err != nil {
			return nil, err
		}
		return lp, nil
	}
	lp, err := startLeastConn(p.nsfd, p.dials, spec, p.log)
	if err != nil {
		return nil, err
	}
	return lp, nil
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
