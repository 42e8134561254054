// Command bench drives a real 3-node `shoal local` cluster and prints a table:
// API write throughput and latency through the leader and a follower at 1,
// 16 and 100 concurrent clients, leader kill → next committed write, idle
// RSS and idle disk writes, and this machine's fdatasync latency measured in
// the same run; then, on a fresh cluster, pod start, teardown, burst and
// agent RSS with pods (pods.go; -pods=false skips them, -pods-only runs only
// them); then issue 4's scheduling (hollow nodes), leader memory/snapshot
// and node-kill benchmarks (sched.go; -sched=false skips them, -sched-only
// and -nodekill-only run only them). It needs root (network namespaces).
// All traffic stays inside the namespaces the clusters create.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/node/localcluster"
)

func main() {
	shoal := flag.String("shoal", "bin/shoal", "shoal binary")
	dur := flag.Duration("duration", 5*time.Second, "how long each throughput run lasts")
	kills := flag.Int("kills", 10, "leader kills to time")
	idle := flag.Duration("idle", 30*time.Second, "idle window for RSS and disk writes")
	loadDir := flag.String("load", "", "only drive writes at an existing `shoal local` cluster in this dir (for profiling)")
	clients := flag.Int("clients", 100, "clients for -load")
	flag.Var(&agentArgs, "agent-arg", "extra argument for every agent (repeatable)")
	flag.BoolVar(&viaFollower, "follower", false, "with -load: write through a follower")
	flag.BoolVar(&loadPods, "load-pods", false, "with -load: create pods (for another scheduler, so they stay unbound) instead of ConfigMaps")
	flag.BoolVar(&withEtcd, "etcd", true, "also benchmark etcd 3.4 (apt etcd-server) in the same namespaces")
	flag.IntVar(&loadConns, "conns", loadConns, "connections the write load spreads its clients over")
	flag.BoolVar(&loadClient.coalesce, "coalesce", loadClient.coalesce, "HTTP/2: the load generator coalesces its socket writes as gRPC clients do (false: Go's HTTP/2 client as client-go uses it)")
	flag.IntVar(&loadProcs, "load-procs", loadProcs, "GOMAXPROCS of the load generator while it runs a write load (0: unchanged)")
	flag.BoolVar(&loadClient.h2, "http2", loadClient.h2, "HTTP/2 like client-go (false: HTTP/1.1 keep-alive)")
	pods := flag.Bool("pods", true, "also run the pod benchmarks (start, teardown, burst, agent RSS) on a fresh cluster")
	podsOnly := flag.Bool("pods-only", false, "run only the pod benchmarks")
	sched := flag.Bool("sched", true, "also run the scheduling (hollow nodes), leader memory/snapshot and node-kill benchmarks (sched.go)")
	schedOnly := flag.Bool("sched-only", false, "run only the scheduling and leader memory/snapshot benchmarks")
	killOnly := flag.Bool("nodekill-only", false, "run only the node-kill benchmarks")
	svc := flag.Bool("svc", true, "also run the service benchmarks: nftables programming (netproxy vs iptables-restore), endpoint change → rules on every node, DNS with dnsperf")
	svcOnly := flag.Bool("svc-only", false, "run only the service benchmarks")
	flag.BoolVar(&withNFT, "nft", true, "with the service benchmarks: also time nftables programming at 1k/10k services against iptables-restore")
	flag.IntVar(&schedNodes, "sched-nodes", schedNodes, "hollow nodes for the scheduling benchmark")
	flag.IntVar(&schedPods, "sched-pods", schedPods, "pods for the scheduling benchmark")
	flag.IntVar(&nodeKillRounds, "nodekill-rounds", nodeKillRounds, "node kills to time per toleration setting")
	flag.Parse()
	if *schedOnly || *killOnly {
		if err := runSchedOnly(*shoal, *schedOnly, *killOnly); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if *svcOnly {
		if err := runSvcOnly(*shoal); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if *podsOnly {
		if err := runPodsOnly(*shoal); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if *loadDir != "" {
		if err := loadOnly(*loadDir, *clients, *dur); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*shoal, *dur, *kills, *idle, *pods, *sched, *svc); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func loadOnly(dir string, clients int, dur time.Duration) error {
	c, err := localcluster.Load(dir)
	if err != nil {
		return err
	}
	hc, err := c.HTTPClient()
	if err != nil {
		return err
	}
	leader, follower, err := roles(context.Background(), c, hc)
	if err != nil {
		return err
	}
	if viaFollower {
		leader = follower
	}
	n, _ := c.Node(leader)
	res, err := writeLoad(context.Background(), hc, n.IP, fmt.Sprintf("load-%d", time.Now().UnixNano()), clients, dur)
	if err != nil {
		return err
	}
	fmt.Printf("via %s (follower=%v), %d clients: %.0f/s p50 %s p99 %s errors %d\n", leader, viaFollower, clients, res.rate, ms(res.p50), ms(res.p99), res.errors)
	return nil
}

type row struct{ what, value, target string }

// table collects the rows of the printed table; add also reports each row
// on stderr as it comes.
type table struct{ rows []row }

func (t *table) add(what, value, target string) {
	t.rows = append(t.rows, row{what, value, target})
	fmt.Fprintf(os.Stderr, "  %s: %s\n", what, value)
}

func (t *table) print() error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCHMARK\tRESULT\tTARGET / PEER")
	for _, r := range t.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.what, r.value, r.target)
	}
	return tw.Flush()
}

func run(bin string, dur time.Duration, kills int, idle time.Duration, pods, sched, svc bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces)")
	}
	bin, _ = filepath.Abs(bin)
	var t table
	add := t.add

	p50, p99, err := fdatasync(os.TempDir(), 2000)
	if err != nil {
		return err
	}
	add("fdatasync 4k (this machine)", fmt.Sprintf("p50 %s  p99 %s", ms(p50), ms(p99)), "etcd host: p50 0.13 ms")

	dir, err := os.MkdirTemp("", "shoal-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	c, err := localcluster.Up(ctx, localcluster.Config{Name: "shoal-bench", Dir: filepath.Join(dir, "c"), Nodes: 3, Binary: bin, Stdout: os.Stderr, AgentArgs: agentArgs})
	if err != nil {
		return err
	}
	defer c.Down()
	hc, err := c.HTTPClient()
	if err != nil {
		return err
	}
	leader, follower, err := roles(ctx, c, hc)
	if err != nil {
		return err
	}

	// Idle first, before the benchmark fills the log.
	time.Sleep(3 * time.Second)
	ln, _ := c.Node(leader)
	w0 := procWriteBytes(ln.PID)
	time.Sleep(idle)
	w1 := procWriteBytes(ln.PID)
	add("idle RSS, leader agent", rssSplit(ln.PID), "≤ 64 MiB")
	add("idle disk writes, leader agent", fmt.Sprintf("%.1f MiB/hour", float64(w1-w0)/idle.Hours()/(1<<20)), "")

	// The nodes the write runs go through, in the order they run.
	var targets []struct{ role, ip string }
	for _, via := range [...]struct{ role, name string }{{"leader", leader}, {"follower", follower}} {
		n, _ := c.Node(via.name)
		targets = append(targets, struct{ role, ip string }{via.role, n.IP})
	}

	termBefore := raftTerm(ctx, hc, c)
	for _, tg := range targets {
		role := tg.role
		for _, clients := range []int{1, 16, 100} {
			settle(fmt.Sprintf("writes via %s, %d clients", role, clients))
			res, err := writeLoad(ctx, hc, tg.ip, fmt.Sprintf("b-%s-%d", role, clients), clients, dur)
			if err != nil {
				return err
			}
			target := ""
			switch {
			case clients == 100:
				target = "≥ 13,000/s (etcd 3.4 here: 8,850/s via leader, 7,823/s via follower)"
			case clients == 1:
				target = "p50 ≤ 0.8 ms (etcd 3.4 here: 0.86 ms)"
			case clients == 16:
				target = "(etcd 3.4 here: 4,787/s)"
			}
			add(fmt.Sprintf("ConfigMap creates via %s, %d clients", role, clients),
				fmt.Sprintf("%.0f/s  p50 %s  p99 %s  errors %d", res.rate, ms(res.p50), ms(res.p99), res.errors), target)
		}
	}

	// The same 100 clients with other clients: Go's HTTP/2 client as
	// client-go uses it (two socket writes per request, which the load
	// generator pays on the cluster's cores), and HTTP/1.1 clients (curl,
	// most non-Go client libraries) with a kept-alive connection each.
	for _, other := range []struct {
		kind         clientKind
		prefix, what string
	}{
		{goHTTP2, "b-goh2", "Go's HTTP/2 client as client-go uses it"},
		{http1, "b-h1", "HTTP/1.1 (a connection each)"},
	} {
		for _, tg := range targets {
			role := tg.role
			settle(fmt.Sprintf("writes via %s, 100 clients, %s", role, other.what))
			res, err := writeLoadWith(ctx, hc, tg.ip, other.prefix+"-"+role, 100, dur, other.kind)
			if err != nil {
				return err
			}
			add(fmt.Sprintf("ConfigMap creates via %s, 100 clients, %s", role, other.what),
				fmt.Sprintf("%.0f/s  p50 %s  p99 %s  errors %d", res.rate, ms(res.p50), ms(res.p99), res.errors), "≥ 13,000/s")
		}
	}

	termAfter := raftTerm(ctx, hc, c)
	add("raft elections during the write runs", electionsResult(c, "the write runs", termBefore, termAfter), "0: no spurious elections")

	var failover []time.Duration
	for i := 0; i < kills; i++ {
		d, err := killLeader(ctx, c, hc, i)
		if err != nil {
			return fmt.Errorf("leader kill %d: %w", i, err)
		}
		failover = append(failover, d)
	}
	sort.Slice(failover, func(i, j int) bool { return failover[i] < failover[j] })
	if len(failover) > 0 {
		add(fmt.Sprintf("leader kill -9 → next committed write (%d kills)", len(failover)),
			fmt.Sprintf("p50 %s  p99 %s", ms(pct(failover, 50)), ms(pct(failover, 99))), "p99 ≤ 1 s (etcd 3.4 here: median 1.38 s)")
	}

	if withEtcd {
		for _, n := range c.Nodes() {
			_ = c.Kill(n.Name)
		}
		e, err := startEtcd(ctx, c, dir)
		if err != nil {
			add("etcd 3.4 side by side", "not run: "+err.Error(), "")
		} else {
			ips, _ := e.leader(ctx, e.client(1))
			runs := []struct {
				role    string
				ip      string
				clients int
			}{{"leader", ips[0], 1}, {"leader", ips[0], 16}, {"leader", ips[0], 100}, {"follower", ips[1], 100}}
			for _, v := range runs {
				res, err := e.load(ctx, v.ip, v.clients, dur)
				if err != nil {
					add(fmt.Sprintf("etcd 3.4 puts via %s, %d clients", v.role, v.clients), "failed: "+err.Error(), "")
					continue
				}
				add(fmt.Sprintf("etcd 3.4 puts via %s, %d clients (HTTP gateway, no TLS)", v.role, v.clients),
					fmt.Sprintf("%.0f/s  p50 %s  p99 %s  errors %d", res.rate, ms(res.p50), ms(res.p99), res.errors), "same machine, same run")
			}
			for _, v := range runs {
				name := fmt.Sprintf("etcd 3.4 puts via %s, %d clients (gRPC, no TLS)", v.role, v.clients)
				res, err := e.loadGRPC(ctx, v.ip, v.clients, dur)
				if err != nil {
					add(name, "failed: "+err.Error(), "")
					continue
				}
				add(name, fmt.Sprintf("%.0f/s  p50 %s  p99 %s  errors %d", res.rate, ms(res.p50), ms(res.p99), res.errors),
					"the protocol of the issue's etcd figures")
			}
			e.stop()
		}
	}

	var podErr error
	if pods {
		if err := c.Down(); err != nil { // done with it: free the machine
			fmt.Fprintln(os.Stderr, "bench: cluster down:", err)
		}
		if podErr = runPods(ctx, bin, &t); podErr != nil {
			first, _, _ := strings.Cut(podErr.Error(), "\n")
			add("pod benchmarks", "failed: "+first, "")
		}
	}
	if sched {
		_ = c.Down()
		if err := runSchedBenches(ctx, bin, &t); err != nil && podErr == nil {
			podErr = err
		}
	}
	if svc {
		_ = c.Down()
		if err := runSvcBenches(ctx, bin, &t); err != nil && podErr == nil {
			podErr = err
		}
	}
	if err := t.print(); err != nil {
		return err
	}
	return podErr
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := (len(ds)*p + 99) / 100
	if i > 0 {
		i--
	}
	return ds[min(i, len(ds)-1)]
}

// fdatasync measures 4 KiB write+fdatasync latency in dir.
func fdatasync(dir string, n int) (p50, p99 time.Duration, err error) {
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := bytes.Repeat([]byte{'x'}, 4096)
	ds := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := f.Write(buf); err != nil {
			return 0, 0, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, 0, err
		}
		ds = append(ds, time.Since(start))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return pct(ds, 50), pct(ds, 99), nil
}

func get(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return b, nil
}

// roles returns the current leader's and one follower's node names.
func roles(ctx context.Context, c *localcluster.Cluster, hc *http.Client) (leader, follower string, err error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, n := range c.Nodes() {
			b, err := get(ctx, hc, fmt.Sprintf("https://%s:6443/internal/v1/members", n.IP))
			if err != nil {
				continue
			}
			leader, follower = "", ""
			for _, line := range strings.Split(string(b), "},{") {
				name := field(line, "name")
				if strings.Contains(line, `"role":"leader"`) {
					leader = name
				} else if strings.Contains(line, `"role":"voter"`) && follower == "" {
					follower = name
				}
			}
			if leader != "" && follower != "" {
				return leader, follower, nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", "", fmt.Errorf("no leader with a voter follower")
}

func field(s, name string) string {
	i := strings.Index(s, `"`+name+`":"`)
	if i < 0 {
		return ""
	}
	s = s[i+len(name)+4:]
	return s[:strings.IndexByte(s, '"')]
}

// loadConns is how many connections (HTTP/2: each carrying many clients'
// streams) the write load spreads its clients over.
var loadConns = 1

// clientKind is how the write load's clients talk to the API.
type clientKind struct {
	// h2: HTTP/2, every client a stream on shared connections, as client-go
	// does; otherwise HTTP/1.1 with a kept-alive connection per client.
	h2 bool
	// coalesce (HTTP/2): the connection queues its writes and sends what
	// is queued in one system call, as gRPC clients do (coalesceConn).
	coalesce bool
}

var (
	// goHTTP2 is Go's HTTP/2 client as client-go uses it: it flushes every
	// request's HEADERS and DATA frames in two socket writes.
	goHTTP2 = clientKind{h2: true}
	// http1 is an HTTP/1.1 client with a connection per client.
	http1 = clientKind{}
	// loadClient is the client of the main write rows and of -load: HTTP/2
	// writing like etcd's benchmark tool (gRPC) does, so that the load
	// generator, which shares this machine's two cores with the cluster,
	// costs the cluster as little as the etcd runs' one does.
	loadClient = clientKind{h2: true, coalesce: true}
)

// agentArgs are passed to every agent (e.g. raft tuning experiments).
var agentArgs stringList

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// withEtcd runs Debian's etcd in the same namespaces after the Shoal runs.
var withEtcd = true

// viaFollower makes -load write through a follower.
var viaFollower bool

// loadPods makes -load create pods instead of ConfigMaps.
var loadPods bool

type loadResult struct {
	rate     float64
	p50, p99 time.Duration
	errors   int64
}

// writeLoad creates ConfigMaps through one node from `clients` goroutines.
func writeLoad(ctx context.Context, hc *http.Client, ip, prefix string, clients int, dur time.Duration) (loadResult, error) {
	return writeLoadWith(ctx, hc, ip, prefix, clients, dur, loadClient)
}

// writeLoadWith is writeLoad with the given kind of client.
func writeLoadWith(ctx context.Context, hc *http.Client, ip, prefix string, clients int, dur time.Duration, kind clientKind) (loadResult, error) {
	// Kept-alive connections, as a real client pool has: the benchmark
	// measures writes, not TLS handshakes. Over HTTP/1.1 each client holds a
	// connection; over HTTP/2 the clients' streams share loadConns of them.
	var hcs []*http.Client
	for range max(1, min(clients, loadConns)) {
		tr := hc.Transport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 2*clients, 2*clients
		tr.ForceAttemptHTTP2 = kind.h2 // as client-go does: streams share connections
		if kind.h2 && kind.coalesce {
			tr.DialContext = coalescingDial(tr.DialContext)
		}
		defer tr.CloseIdleConnections()
		hcs = append(hcs, &http.Client{Transport: tr, Timeout: 30 * time.Second})
	}
	url := fmt.Sprintf("https://%s:6443/api/v1/namespaces/default/configmaps", ip)
	payload := strings.Repeat("x", 200)
	if loadPods {
		url = fmt.Sprintf("https://%s:6443/api/v1/namespaces/default/pods", ip)
	}
	return runLoad(clients, dur, func(seq int64) error {
		body := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"` + prefix + "-" + strconv.FormatInt(seq, 10) +
			`"},"data":{"payload":"` + payload + `"}}`
		if loadPods {
			body = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"` + prefix + "-" + strconv.FormatInt(seq, 10) +
				`","labels":{"app":"load"}},"spec":{"schedulerName":"load-bench","containers":[{"name":"main","image":"busybox:latest",` +
				`"resources":{"requests":{"cpu":"10m","memory":"16Mi"}}}]}}`
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hcs[int(seq)%len(hcs)].Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	})
}

// loadProcs is the GOMAXPROCS of this process while it generates load (0:
// unchanged). The load generator shares this machine's two cores with the
// cluster under test; on one P its goroutines hand work to each other
// instead of waking a second thread for it. Four alternated pairs of
// 100-client runs through the leader: 25–28 µs of its CPU per write on one
// P against 32–37 µs on two, and the cluster wrote 2–23% more. Shoal's and
// etcd's runs get the same.
var loadProcs = 1

// runLoad calls op (with a unique sequence number) from clients goroutines
// for dur, and reports the rate and latency of the calls that succeeded.
func runLoad(clients int, dur time.Duration, op func(seq int64) error) (loadResult, error) {
	if loadProcs > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(loadProcs))
	}
	var (
		mu      sync.Mutex
		lats    []time.Duration
		errs    atomic.Int64
		seq     atomic.Int64
		wg      sync.WaitGroup
		lastErr atomic.Value
	)
	start := time.Now()
	stop := start.Add(dur)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for time.Now().Before(stop) {
				t0 := time.Now()
				if err := op(seq.Add(1)); err != nil {
					errs.Add(1)
					lastErr.Store(err)
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(lats) == 0 {
		return loadResult{errors: errs.Load()}, fmt.Errorf("no call succeeded (%d errors, last: %v)", errs.Load(), lastErr.Load())
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	return loadResult{rate: float64(len(lats)) / elapsed.Seconds(), p50: pct(lats, 50), p99: pct(lats, 99), errors: errs.Load()}, nil
}

// killLeader kills the leader with SIGKILL and times until a write through a
// survivor commits; then it restarts the old leader and waits for it.
func killLeader(ctx context.Context, c *localcluster.Cluster, hc *http.Client, i int) (time.Duration, error) {
	leader, survivor, err := roles(ctx, c, hc)
	if err != nil {
		return 0, err
	}
	sn, _ := c.Node(survivor)
	url := fmt.Sprintf("https://%s:6443/api/v1/namespaces/default/configmaps", sn.IP)
	body := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"failover-%d"}}`, i)
	start := time.Now()
	if err := c.Kill(leader); err != nil {
		return 0, err
	}
	var took time.Duration
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		cancel()
		if err == nil && (resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusConflict) {
			took = time.Since(start)
			break
		}
		if time.Since(start) > 30*time.Second {
			return 0, fmt.Errorf("no write committed 30s after killing %s", leader)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.Start(leader); err != nil {
		return 0, err
	}
	if err := c.WaitReady(ctx, leader); err != nil {
		return 0, err
	}
	// The next kill must find a healthy cluster: the restarted node re-applies
	// the log since the last snapshot (hundreds of thousands of objects after
	// the write runs), and a failover timed while it still does measures its
	// replay competing for the two cores, not the failover.
	if err := waitCaughtUp(ctx, c, hc, time.Minute); err != nil {
		return 0, err
	}
	time.Sleep(time.Second)
	return took, nil
}

// waitCaughtUp waits until every node has applied what some node reported
// as committed when the wait began.
func waitCaughtUp(ctx context.Context, c *localcluster.Cluster, hc *http.Client, limit time.Duration) error {
	var target float64
	for _, n := range c.Nodes() {
		if v, err := metricValue(ctx, hc, n.IP, "shoal_raft_commit_index"); err == nil {
			target = max(target, v)
		}
	}
	deadline := time.Now().Add(limit)
	for _, n := range c.Nodes() {
		for {
			v, err := metricValue(ctx, hc, n.IP, "shoal_raft_applied_index")
			if err == nil && v >= target {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s has not applied index %.0f after %v (applied %.0f, %v)", n.Name, target, limit, v, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// raftTerm is the highest raft term any node reports in /metrics.
// metricValue reads one unlabelled metric of a node.
func metricValue(ctx context.Context, hc *http.Client, ip, name string) (float64, error) {
	b, err := get(ctx, hc, fmt.Sprintf("https://%s:6443/metrics", ip))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in the metrics of %s", name, ip)
}

// electionsResult reports the elections between two raft terms. When there
// were some, it keeps what the agents logged about leadership in a file of
// its own and names it: the bench removes the cluster's directory, and with
// it the only record of why.
func electionsResult(c *localcluster.Cluster, stage string, before, after int64) string {
	res := fmt.Sprintf("%d (term %d → %d)", after-before, before, after)
	if after == before {
		return res
	}
	f, err := os.CreateTemp("", "shoal-bench-elections-*.log")
	if err != nil {
		return res
	}
	defer f.Close()
	fmt.Fprintf(f, "raft elections during %s: term %d → %d\n", stage, before, after)
	for _, n := range c.Nodes() {
		b, err := os.ReadFile(n.LogPath)
		if err != nil {
			fmt.Fprintf(f, "%s: %v\n", n.Name, err)
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if leadershipLine(l) {
				fmt.Fprintf(f, "%s: %s\n", n.Name, l)
			}
		}
	}
	return res + "; agents' leadership log lines kept in " + f.Name()
}

// leadershipLine reports whether an agent log line is about raft
// leadership: elections, votes, heartbeats, step-downs, the leader probe.
func leadershipLine(l string) bool {
	l = strings.ToLower(l)
	for _, w := range []string{"election", "candidate", "vote", "leader", "heartbeat", "stepping down", "quorum", "probe"} {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}

func raftTerm(ctx context.Context, hc *http.Client, c *localcluster.Cluster) int64 {
	var term int64
	for _, n := range c.Nodes() {
		b, err := get(ctx, hc, fmt.Sprintf("https://%s:6443/metrics", n.IP))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "shoal_raft_term "); ok {
				f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				term = max(term, int64(f))
			}
		}
	}
	return term
}

func rssBytes(pid int) int64 { return procStatusBytes(pid, "VmRSS") }

// procStatusBytes reads a kB field of /proc/PID/status in bytes.
func procStatusBytes(pid int, field string) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// rssSplit is a process's RSS with its private part (anonymous memory: the
// heap, stacks) and the pages of its files (the binary's code and data,
// shared with every process that maps them and reclaimable).
func rssSplit(pid int) string {
	return fmt.Sprintf("%.1f MiB (private %.1f MiB + files %.1f MiB)", float64(rssBytes(pid))/(1<<20),
		float64(procStatusBytes(pid, "RssAnon"))/(1<<20), float64(procStatusBytes(pid, "RssFile"))/(1<<20))
}

func procWriteBytes(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// withNFT runs the nftables programming benchmark with the service ones.
var withNFT = true

// runSvcOnly runs the service benchmarks alone and prints their table.
func runSvcOnly(bin string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces)")
	}
	var t table
	err := runSvcBenches(context.Background(), bin, &t)
	if perr := t.print(); err == nil {
		err = perr
	}
	return err
}

// runSvcBenches runs the nftables programming benchmark (netproxy against
// iptables-restore, in a namespace of its own), then the cluster's
// endpoint-change and DNS benchmarks.
func runSvcBenches(ctx context.Context, bin string, t *table) error {
	var errs []error
	if !withNFT {
	} else if err := benchNFT(t); err != nil {
		t.add("nftables programming", "failed: "+firstLine(err), "")
		errs = append(errs, err)
	}
	if err := benchDNSStandalone(t); err != nil {
		t.add("DNS server alone", "failed: "+firstLine(err), "")
		errs = append(errs, err)
	}
	if err := runSvc(ctx, bin, t); err != nil {
		t.add("service benchmarks (cluster)", "failed: "+firstLine(err), "")
		errs = append(errs, err)
	}
	if err := runDNSOneNode(ctx, bin, t); err != nil {
		t.add("DNS of a 1-node cluster", "failed: "+firstLine(err), "")
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func firstLine(err error) string {
	first, _, _ := strings.Cut(err.Error(), "\n")
	return first
}
