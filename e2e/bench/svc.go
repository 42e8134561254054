package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/shoal-dev/shoal/node/localcluster"
)

// The service benchmarks: an endpoint change timed until it is in the
// nftables rules of every node of a 3-node cluster, and cluster DNS of one
// node under dnsperf.
const (
	svcClusterNm  = "sbs-" // + pid in base 36
	svcCount      = 1000   // services (names for DNS, rules for every node)
	svcChanges    = 60     // timed endpoint changes
	svcWatchTable = "shoal_svc"
)

// runSvc starts its own 3-node cluster, runs the service benchmarks and adds
// their rows to t.
func runSvc(ctx context.Context, bin string, t *table) (err error) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, _, down, err := startCluster(ctx, bin, svcClusterNm, nil)
	if err != nil {
		return err
	}
	defer down()
	defer func() { failLogs(c, err) }()
	cs, err := servicesClient(ctx, c)
	if err != nil {
		return err
	}
	// svcCount selectorless services, each with a slice of 5 endpoints this
	// benchmark manages itself (the endpoints controller leaves services
	// without a selector alone).
	names := make([]string, svcCount)
	fmt.Fprintf(os.Stderr, "bench: creating %d services with 5 endpoints each\n", svcCount)
	start := time.Now()
	err = parallel(svcCount, 16, func(i int) error {
		name := fmt.Sprintf("s%04d", i)
		names[i] = name + ".default.svc.cluster.local"
		if _, err := cs.CoreV1().Services("default").Create(ctx, benchService(name), metav1.CreateOptions{}); err != nil {
			return err
		}
		_, err := cs.DiscoveryV1().EndpointSlices("default").Create(ctx, benchSlice(name, i, 0), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: %d services created in %s\n", svcCount, time.Since(start).Round(time.Millisecond))

	// Pollers: one per node, in its namespace, looking for an endpoint
	// address in the rules.
	var watchers []*ruleWatcher
	for _, n := range c.Nodes() {
		w, err := newRuleWatcher(n.Namespace)
		if err != nil {
			return err
		}
		defer w.close()
		watchers = append(watchers, w)
	}
	// Warm-up: all nodes have the last service's first endpoint.
	if err := waitAll(ctx, watchers, benchEndpointIP(svcCount-1, 0, 0), 60*time.Second); err != nil {
		return fmt.Errorf("services never reached every node's rules: %w", err)
	}
	// From now on each node's rules are observed through the kernel's
	// nftables notifications: the moment a transaction with the new
	// endpoint's DNAT rule commits. (Polling the chain every millisecond
	// from three goroutines, as this benchmark did first, saw the rules
	// 6–15 ms after the agents' logs had them in place.)
	for _, w := range watchers {
		if err := w.monitor(); err != nil {
			return fmt.Errorf("nftables monitor in %s: %w", w.ns, err)
		}
	}
	var all, worst, writes []time.Duration
	target := "s0500"
	for k := 1; k <= svcChanges; k++ {
		sl, err := cs.DiscoveryV1().EndpointSlices("default").Get(ctx, target, metav1.GetOptions{})
		if err != nil {
			return err
		}
		next := benchSlice(target, 500, k)
		next.ResourceVersion = sl.ResourceVersion
		ip := benchEndpointIP(500, k, 4)
		t0 := time.Now()
		if _, err := cs.DiscoveryV1().EndpointSlices("default").Update(ctx, next, metav1.UpdateOptions{}); err != nil {
			return err
		}
		writes = append(writes, time.Since(t0))
		var mu sync.Mutex
		var maxD time.Duration
		var wg sync.WaitGroup
		var werr error
		for _, w := range watchers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				at, err := w.waitRule(ctx, ip, 10*time.Second)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					werr = err
					return
				}
				d := at.Sub(t0)
				all = append(all, d)
				maxD = max(maxD, d)
			}()
		}
		wg.Wait()
		if werr != nil {
			return werr
		}
		worst = append(worst, maxD)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	sort.Slice(worst, func(i, j int) bool { return worst[i] < worst[j] })
	sort.Slice(writes, func(i, j int) bool { return writes[i] < writes[j] })
	t.add(fmt.Sprintf("endpoint change → rules on every node (3 nodes, %d services)", svcCount),
		fmt.Sprintf("p50 %s  p99 %s  (per node p50 %s; the API write alone p50 %s)", ms(pct(worst, 50)), ms(pct(worst, 99)), ms(pct(all, 50)), ms(pct(writes, 50))), "p99 ≤ 50 ms")

	// DNS against node 1 with dnsperf, over the services' names.
	n1 := c.Nodes()[0]
	if err := benchDNS(t, fmt.Sprintf("node n1 of the 3-node cluster (%d services)", svcCount), "/run/netns/"+n1.Namespace, netip.MustParseAddr("10.43.0.10"), names); err != nil {
		return fmt.Errorf("dns benchmark: %w", err)
	}
	return nil
}

// servicesClient returns a client of the cluster once every node has a pod
// CIDR: the agents program services once their pod network is up.
func servicesClient(ctx context.Context, c *localcluster.Cluster) (kubernetes.Interface, error) {
	cfg, err := restConfig(c)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return cs, waitPodCIDRs(ctx, cs, len(c.Nodes()))
}

// waitPodCIDRs waits until n nodes have a pod CIDR (their agents then run the
// service dataplane).
func waitPodCIDRs(ctx context.Context, cs kubernetes.Interface, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			got := 0
			for _, no := range l.Items {
				if no.Spec.PodCIDR != "" {
					got++
				}
			}
			if got >= n {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes without a pod CIDR after 2 minutes (%v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func benchService(name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
	}}
}

// benchEndpointIP is endpoint j of service i in generation gen: addresses
// outside every real range, never contacted (rules only).
func benchEndpointIP(i, gen, j int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(100 + gen%100), byte(i / 50), byte((i%50)*5 + j)})
}

func benchSlice(name string, i, gen int) *discoveryv1.EndpointSlice {
	port, proto, pname := int32(8080), corev1.ProtocolTCP, "http"
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "shoal-bench"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Protocol: &proto, Port: &port}},
	}
	ready := true
	for j := range 5 {
		g := 0
		if j == 4 {
			g = gen // the last endpoint moves with each change
		}
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{benchEndpointIP(i, g, j).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return sl
}

// ruleWatcher reads a node's service rules over netlink from inside its
// namespace.
type ruleWatcher struct {
	fd    int
	conn  *nftables.Conn
	table *nftables.Table
	chain *nftables.Chain

	ns   string
	mon  *nftables.Monitor
	gens chan ruleGen // committed transactions' new rules, from monitor
	merr chan error   // the monitor's end
}

// ruleGen is one committed nftables transaction: when it was received and
// the rules it added.
type ruleGen struct {
	at    time.Time
	rules []*nftables.Rule
}

func newRuleWatcher(ns string) (*ruleWatcher, error) {
	fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &ruleWatcher{fd: fd, conn: conn, ns: ns}, nil
}

func (w *ruleWatcher) close() {
	if w.mon != nil {
		_ = w.mon.Close()
	}
	_ = w.conn.CloseLasting()
	unix.Close(w.fd)
}

// monitor subscribes to the namespace's nftables notifications (the
// library's per-object filters are not used: every event, then NEWRULE
// picked here) and timestamps each committed transaction as it arrives.
func (w *ruleWatcher) monitor() error {
	w.mon = nftables.NewMonitor(nftables.WithMonitorEventBuffer(1024))
	evs, err := w.conn.AddGenerationalMonitor(w.mon)
	if err != nil {
		return err
	}
	w.gens, w.merr = make(chan ruleGen, 1024), make(chan error, 1)
	go func() {
		defer close(w.merr)
		for ev := range evs {
			at := time.Now()
			if ev.GeneratedBy != nil && ev.GeneratedBy.Error != nil {
				w.merr <- ev.GeneratedBy.Error
				return
			}
			g := ruleGen{at: at}
			for _, c := range ev.Changes {
				if r, ok := c.Data.(*nftables.Rule); ok && c.Type == nftables.MonitorEventTypeNewRule && c.Error == nil {
					g.rules = append(g.rules, r)
				}
			}
			if len(g.rules) > 0 {
				w.gens <- g
			}
		}
	}()
	return nil
}

// waitRule waits (after monitor) for a committed transaction that adds a
// rule with ip in it and returns when that transaction was received.
func (w *ruleWatcher) waitRule(ctx context.Context, ip netip.Addr, timeout time.Duration) (time.Time, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case g := <-w.gens:
			for _, r := range g.rules {
				if ruleHas(r, ip) {
					return g.at, nil
				}
			}
		case err, ok := <-w.merr:
			if !ok {
				err = errors.New("monitor ended")
			}
			return time.Now(), fmt.Errorf("nftables monitor in %s: %w", w.ns, err)
		case <-timer.C:
			return time.Now(), fmt.Errorf("no rule with %s committed in %s within %s", ip, w.ns, timeout)
		case <-ctx.Done():
			return time.Now(), ctx.Err()
		}
	}
}

// ruleHas reports whether r loads ip as an immediate (a DNAT target).
func ruleHas(r *nftables.Rule, ip netip.Addr) bool {
	want := ip.AsSlice()
	for _, e := range r.Exprs {
		if im, ok := e.(*expr.Immediate); ok && bytes.Equal(im.Data, want) {
			return true
		}
	}
	return false
}

// locate finds the service chain with a DNAT rule to ip (scanning every
// service chain of netproxy's tables) and remembers it: chain names are
// stable per service port, so later polls read that one chain only.
func (w *ruleWatcher) locate(ip netip.Addr) (bool, error) {
	tables, err := w.conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, err
	}
	chains, err := w.conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, err
	}
	for _, tb := range tables {
		if !strings.HasPrefix(tb.Name, svcWatchTable) {
			continue
		}
		for _, ch := range chains {
			if ch.Table.Name != tb.Name || !strings.HasPrefix(ch.Name, "svc-") {
				continue
			}
			w.table, w.chain = tb, ch
			if ok, err := w.has(ip); ok || err != nil {
				return ok, err
			}
		}
	}
	w.table, w.chain = nil, nil
	return false, nil
}

// has reports whether the located chain has a rule with ip in it.
func (w *ruleWatcher) has(ip netip.Addr) (bool, error) {
	rules, err := w.conn.GetRules(w.table, w.chain)
	if err != nil {
		return false, err
	}
	for _, r := range rules {
		if ruleHas(r, ip) {
			return true, nil
		}
	}
	return false, nil
}

// waitFor polls (every 100 ms: for warm-up, not timing) until ip is in the
// located chain (or, before locate, in any service chain).
func (w *ruleWatcher) waitFor(ctx context.Context, ip netip.Addr, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		var err error
		if w.chain == nil {
			ok, err = w.locate(ip)
		} else {
			ok, err = w.has(ip)
		}
		now := time.Now()
		if err != nil {
			return now, err
		}
		if ok {
			return now, nil
		}
		if now.After(deadline) {
			return now, fmt.Errorf("%s not in the rules after %s", ip, timeout)
		}
		if ctx.Err() != nil {
			return now, ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitAll waits until every watcher sees ip, locating its chain.
func waitAll(ctx context.Context, ws []*ruleWatcher, ip netip.Addr, timeout time.Duration) error {
	for _, w := range ws {
		if _, err := w.waitFor(ctx, ip, timeout); err != nil {
			return err
		}
	}
	return nil
}

// runDNSOneNode measures the DNS of a 1-node cluster (its agent, its
// containerd, its DNS child and dnsperf on the machine's cores) over the
// names of svcCount ClusterIP services.
func runDNSOneNode(ctx context.Context, bin string, t *table) error {
	c, _, down, err := startClusterN(ctx, bin, "dns1-", 1, nil)
	if err != nil {
		return err
	}
	defer down()
	cs, err := servicesClient(ctx, c)
	if err != nil {
		return err
	}
	names := make([]string, svcCount)
	err = parallel(svcCount, 16, func(i int) error {
		name := fmt.Sprintf("s%04d", i)
		names[i] = name + ".default.svc.cluster.local"
		_, err := cs.CoreV1().Services("default").Create(ctx, benchService(name), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	n1 := c.Nodes()[0]
	ns := "/run/netns/" + n1.Namespace
	if err := waitDNS(ns, "10.43.0.10", names[len(names)-1]); err != nil {
		return err
	}
	return benchDNS(t, fmt.Sprintf("the node of a 1-node cluster (%d services)", svcCount), ns, netip.MustParseAddr("10.43.0.10"), names)
}
