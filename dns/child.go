package dns

import (
	"bufio"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The child protocol. A node's agent runs its cluster DNS server in a child
// process (RunChild, behind a hidden command of the agent's own binary), so
// that the server has a Go runtime of its own (GOMAXPROCS=1) instead of
// sharing the agent's scheduler. The child is fed over its standard streams:
//
//	stdin  (agent → child): a gob stream of childZone messages, one per zone;
//	                        the child builds each with NewZone and serves it.
//	stdout (child → agent): a gob stream of childStatus messages: the first as
//	                        soon as the server listens (the child is ready),
//	                        then one a second, and a last one when stdin ends.
//	stderr (child → agent): the child's log, one line per record, relayed to
//	                        the agent's log.
//
// The child ends when stdin reaches EOF (the agent closed it, or went away).
// Gob ignores fields it does not know on either side, so both messages can
// gain fields without breaking an agent and a child of different builds.

// childZone is one zone sent to the child.
type childZone struct {
	Zone ZoneConfig
	// NoReverse is set when Zone.ReverseCIDRs is empty but not nil (no
	// reverse zones at all): gob sends no empty slices, so the child would
	// otherwise see nil (DefaultReverseCIDRs).
	NoReverse bool
}

func newChildZone(zc ZoneConfig) childZone {
	return childZone{Zone: zc, NoReverse: zc.ReverseCIDRs != nil && len(zc.ReverseCIDRs) == 0}
}

// config returns the ZoneConfig as the agent had it.
func (m childZone) config() ZoneConfig {
	zc := m.Zone
	if m.NoReverse && zc.ReverseCIDRs == nil {
		zc.ReverseCIDRs = []netip.Prefix{}
	}
	return zc
}

// childStatus is what the child reports.
type childStatus struct {
	Stats Stats
}

// childStatsInterval is how often the child reports its Stats.
const childStatsInterval = time.Second

// RunChild is the body of the cluster DNS child process: it starts a Server
// with cfg, serves each zone read from in (a gob stream sent by Child) and
// writes the server's Stats to out (gob): once when the server listens,
// every second, and once more when in ends. It returns nil when in reaches
// EOF (the agent closed it or went away) or ctx ends, having closed the
// server; an error when the server cannot start or a stream breaks. If ctx
// ends first, a goroutine stays blocked reading in until in is closed.
func RunChild(ctx context.Context, cfg Config, in io.Reader, out io.Writer) error {
	srv, err := NewServer(cfg)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	defer srv.Close()
	enc := gob.NewEncoder(out)
	report := func() error {
		if err := enc.Encode(childStatus{Stats: srv.Stats()}); err != nil {
			return fmt.Errorf("dns: writing stats: %w", err)
		}
		return nil
	}
	if err := report(); err != nil {
		return err
	}

	zones := make(chan ZoneConfig)
	readErr := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		dec := gob.NewDecoder(in)
		for {
			var m childZone
			if err := dec.Decode(&m); err != nil {
				readErr <- err
				return
			}
			select {
			case zones <- m.config():
			case <-done:
				return
			}
		}
	}()
	tick := time.NewTicker(childStatsInterval)
	defer tick.Stop()
	for {
		select {
		case zc := <-zones:
			srv.SetZone(NewZone(zc))
		case <-tick.C:
			if err := report(); err != nil {
				return err
			}
		case err := <-readErr:
			if !errors.Is(err, io.EOF) {
				return fmt.Errorf("dns: reading zones: %w", err)
			}
			return report()
		case <-ctx.Done():
			_ = report() // best effort: the agent may be gone
			return nil
		}
	}
}

// ChildConfig configures a Child.
type ChildConfig struct {
	// Path is the executable to run (the agent's own, os.Executable()).
	Path string
	// Args come first on the command line (the subcommand, "dns-server").
	// The command must accept the flags --listen=ADDR[,ADDR],
	// --upstream=ADDR (repeated) and --udp-sockets=N, and run RunChild on
	// its standard input and output, as `shoal dns-server` does.
	Args []string
	// Env is added to the agent's environment ("GOMAXPROCS=1").
	Env []string
	// Addrs are the listen addresses (Config.Addrs). The child runs in the
	// agent's network namespace.
	Addrs []string
	// Upstreams are the forwarders (Config.Upstreams).
	Upstreams []string
	// UDPSockets is Config.UDPSockets (the server's default when 0).
	UDPSockets int
	// StartTimeout bounds how long StartChild waits for the first child to
	// listen (10 s when 0).
	StartTimeout time.Duration
	// Log receives the child's log and its exits (nothing when nil).
	Log *slog.Logger
}

// Restart back-off of a child that died: doubled after each death, up to
// the maximum; reset by a child that served for childStableAfter.
const (
	childMinBackoff  = 100 * time.Millisecond
	childMaxBackoff  = 10 * time.Second
	childStableAfter = 10 * time.Second
	childStopTimeout = 5 * time.Second // for a child to exit once its stdin is closed
	childStderrTail  = 10              // lines of stderr quoted when a child fails to start
)

// Child runs a cluster DNS server in a child process (see RunChild) and
// feeds it zones. The child gets SIGKILL when the thread that started it
// dies (Pdeathsig; that thread is kept for the child's lifetime), so it never
// outlives the agent, not even a kill -9: a DNS server left over would keep
// answering from a stale zone. A child that dies is restarted with back-off
// and given the current zone. All methods may be called concurrently.
type Child struct {
	cfg  ChildConfig
	log  *slog.Logger
	args []string
	wake chan struct{} // cap 1: a zone is waiting to be sent
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the supervisor has returned
	once sync.Once

	mu      sync.Mutex
	zone    *childZone // the latest zone (nil before the first SetZoneConfig)
	zoneSeq uint64     // bumped by each SetZoneConfig
	base    Stats      // counters of the children that have exited
	cur     Stats      // the running child's last report
	curPID  int        // the running child's process ID (0 between children)
}

// StartChild starts the child and waits until its server listens. An error
// means no DNS server runs (the executable failed, or the server could not
// start: the child's last stderr lines are quoted); after success, children
// that die are restarted until Close.
func StartChild(cfg ChildConfig) (*Child, error) {
	if cfg.Path == "" {
		return nil, errors.New("dns: child: no executable")
	}
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("dns: child: no listen addresses")
	}
	// The child would refuse a bad configuration too, but only in its log.
	check, err := NewServer(Config{Addrs: cfg.Addrs, Upstreams: cfg.Upstreams, UDPSockets: cfg.UDPSockets})
	if err != nil {
		return nil, err
	}
	check.Close()
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	c := &Child{cfg: cfg, log: cfg.Log, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.args = append(append([]string(nil), cfg.Args...), "--listen="+strings.Join(cfg.Addrs, ","))
	for _, u := range cfg.Upstreams {
		c.args = append(c.args, "--upstream="+u)
	}
	if cfg.UDPSockets != 0 {
		c.args = append(c.args, "--udp-sockets="+strconv.Itoa(cfg.UDPSockets))
	}
	started := make(chan error, 1)
	go c.supervise(started)
	if err := <-started; err != nil {
		<-c.done
		return nil, err
	}
	return c, nil
}

// SetZoneConfig hands the child a new zone; the latest one wins. It does
// not wait: a writer sends the newest pending zone when the child has read
// the previous one, and a restarted child gets the current zone first. zc
// must not be modified afterwards.
func (c *Child) SetZoneConfig(zc ZoneConfig) {
	m := newChildZone(zc)
	c.mu.Lock()
	c.zone = &m
	c.zoneSeq++
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters last reported, summed over every child this
// Child has run (a restart does not set them back).
func (c *Child) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return addStats(c.base, c.cur)
}

// Close stops the child (its stdin is closed; it is killed if it has not
// exited after a few seconds) and waits for it. It may be called more than
// once.
func (c *Child) Close() error {
	c.once.Do(func() { close(c.stop) })
	<-c.done
	return nil
}

// pid returns the running child's process ID, or 0.
func (c *Child) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.curPID
}

func addStats(a, b Stats) Stats {
	return Stats{
		Forwarded:        a.Forwarded + b.Forwarded,
		CacheHits:        a.CacheHits + b.CacheHits,
		UpstreamFailures: a.UpstreamFailures + b.UpstreamFailures,
	}
}

func (c *Child) stopping() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// supervise runs children until Close; the result of the first start goes
// to started (and when it failed, supervise returns). Its goroutine stays
// locked to one OS thread: Pdeathsig fires when the thread that forked the
// child exits, and a goroutine that exits while locked to a thread (as
// inNetNS does) takes its thread down with it, so the forking thread must be
// one that no other goroutine runs on.
func (c *Child) supervise(started chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread() // every child has been waited for
	defer close(c.done)
	first := true
	backoff := childMinBackoff
	for {
		t0 := time.Now()
		ready, err := c.run(func() {
			if first {
				started <- nil
			}
		})
		if first && !ready {
			started <- err
			return
		}
		first = false
		if c.stopping() {
			return
		}
		if time.Since(t0) >= childStableAfter {
			backoff = childMinBackoff
		}
		c.log.Error("cluster DNS server exited; restarting it", "err", err, "in", backoff)
		select {
		case <-c.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, childMaxBackoff)
	}
}

// run starts one child, calls onReady once its server listens, and returns
// when the child has exited (stopped by Close, or dead) with whether it
// became ready and why it ended.
func (c *Child) run(onReady func()) (ready bool, err error) {
	var files []*os.File // every pipe end, closed on error
	pipe := func() (r, w *os.File) {
		if err != nil {
			return nil, nil
		}
		r, w, err = os.Pipe()
		files = append(files, r, w)
		return r, w
	}
	inR, inW := pipe()
	outR, outW := pipe()
	errR, errW := pipe()
	if err != nil {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
		return false, fmt.Errorf("dns: child pipes: %w", err)
	}
	cmd := exec.Command(c.cfg.Path, c.args...)
	cmd.Env = append(os.Environ(), c.cfg.Env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	// Pdeathsig: killed with this thread (see supervise). Setpgid: a
	// terminal's ^C reaches the agent, which stops the child in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return false, fmt.Errorf("dns: starting the cluster DNS server: %w", err)
	}
	pid := cmd.Process.Pid
	c.mu.Lock()
	c.curPID = pid
	c.mu.Unlock()

	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	var closeInOnce sync.Once
	closeIn := func() { closeInOnce.Do(func() { inW.Close() }) }
	readyCh := make(chan struct{})
	var tail []string // the child's last stderr lines
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); tail = c.relayLog(errR, pid) }()
	go func() { defer wg.Done(); c.readStatus(outR, readyCh) }()
	go func() { defer wg.Done(); c.writeZones(inW, exited) }()

	kill := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	timeout := time.NewTimer(c.cfg.StartTimeout)
	defer timeout.Stop()
	var why error
	select {
	case <-readyCh:
		ready = true
		c.log.Info("cluster DNS server started", "pid", pid, "listen", strings.Join(c.cfg.Addrs, ","))
		onReady()
	case <-exited:
	case <-timeout.C:
		kill()
		why = fmt.Errorf("not listening after %s", c.cfg.StartTimeout)
	case <-c.stop:
		kill()
		why = errors.New("stopped")
	}
	if ready {
		select {
		case <-exited:
		case <-c.stop:
			// EOF on stdin: the child reports its last stats and exits.
			closeIn()
			t := time.NewTimer(childStopTimeout)
			select {
			case <-exited:
			case <-t.C:
				c.log.Warn("cluster DNS server did not stop; killing it", "pid", pid)
				kill()
			}
			t.Stop()
		}
	}
	closeIn()
	wg.Wait()

	c.mu.Lock()
	c.base, c.cur, c.curPID = addStats(c.base, c.cur), Stats{}, 0
	c.mu.Unlock()

	if why == nil {
		why = waitErr
		if why == nil {
			why = errors.New("exited")
		}
	}
	if ready {
		return true, fmt.Errorf("dns: cluster DNS server (pid %d): %w", pid, why)
	}
	if len(tail) > 0 {
		return false, fmt.Errorf("dns: cluster DNS server failed to start: %w: %s", why, strings.Join(tail, "; "))
	}
	return false, fmt.Errorf("dns: cluster DNS server failed to start: %w", why)
}

// readStatus decodes the child's reports until its stdout ends, closing
// ready at the first.
func (c *Child) readStatus(r *os.File, ready chan<- struct{}) {
	defer r.Close()
	dec := gob.NewDecoder(bufio.NewReader(r))
	for first := true; ; first = false {
		var m childStatus
		if err := dec.Decode(&m); err != nil {
			if !errors.Is(err, io.EOF) && !c.stopping() {
				c.log.Warn("cluster DNS server: reading its reports", "err", err)
			}
			return
		}
		c.mu.Lock()
		c.cur = m.Stats
		c.mu.Unlock()
		if first {
			close(ready)
		}
	}
}

// writeZones sends the child the newest zone whenever there is one it has
// not been sent, until the child exits or its stdin is closed.
func (c *Child) writeZones(w *os.File, exited <-chan struct{}) {
	enc := gob.NewEncoder(w)
	var sent uint64
	for {
		c.mu.Lock()
		z, seq := c.zone, c.zoneSeq
		c.mu.Unlock()
		if z != nil && seq != sent {
			if err := enc.Encode(z); err != nil {
				return // the child is gone, or being stopped
			}
			sent = seq
			continue
		}
		select {
		case <-c.wake:
		case <-exited:
			return
		}
	}
}

// relayLog copies the child's stderr to the log, one record a line, at the
// level the line names (slog's text format: level=WARN), and returns the
// last lines.
func (c *Child) relayLog(r *os.File, pid int) []string {
	defer r.Close()
	var tail []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 256<<10)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		c.log.Log(context.Background(), lineLevel(line), "cluster DNS server", "pid", pid, "log", line)
		if len(tail) == childStderrTail {
			tail = append(tail[:0], tail[1:]...)
		}
		tail = append(tail, line)
	}
	return tail
}

// lineLevel is the level of a line in slog's text format; WARN for lines
// in no such format (a panic).
func lineLevel(line string) slog.Level {
	for _, f := range strings.Fields(line) {
		v, ok := strings.CutPrefix(f, "level=")
		if !ok {
			continue
		}
		var l slog.Level
		if l.UnmarshalText([]byte(v)) == nil {
			return l
		}
		break
	}
	return slog.LevelWarn
}
