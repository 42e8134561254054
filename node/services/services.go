// Package services feeds a node's service dataplane (netproxy) and cluster
// DNS (dns) from its local replica. It runs on every node, leader or not,
// and needs nothing but the replica: a node cut off from the leader keeps
// resolving names and balancing services with what it last knew.
//
// Every change to a Service, an EndpointSlice, a Pod (IPs, weights) or this
// node's Node object marks what it affects; a loop rebuilds only those
// services and hands netproxy the whole configuration (netproxy diffs it
// and sends the kernel one transaction with only what changed). The DNS zone's
// configuration is rebuilt from the same entries, at most every
// ZoneInterval, and handed to the DNS server, which builds the zone and
// swaps it atomically.
package services

import (
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/shoal-dev/shoal/dns"
	"github.com/shoal-dev/shoal/netproxy"
	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

const sliceResource = "endpointslices.discovery.k8s.io"

// ZoneSetter receives the configuration of each new DNS zone (dns.Child,
// which builds the zone in the DNS server's process). It must not block for
// long, and must not modify the configuration.
type ZoneSetter interface{ SetZoneConfig(dns.ZoneConfig) }

// Config wires the loop.
type Config struct {
	Store       *state.Store
	NodeName    string
	ClusterCIDR netip.Prefix // pod range of the cluster
	Domain      string       // cluster domain, default cluster.local
	Proxy       netproxy.Dataplane
	DNS         ZoneSetter
	// ZoneInterval bounds how often the DNS zone is rebuilt (default 100 ms).
	ZoneInterval time.Duration
	// RetryInterval is how soon a failed dataplane update is retried
	// (default 1 s).
	RetryInterval time.Duration
	// OnSync, if set, is told how long each successful dataplane update
	// took (translation included) and how many services it holds.
	OnSync func(d time.Duration, services int)
	Log    *slog.Logger
}

// Loop is the running translation; see Run.
type Loop struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	services map[string]*corev1.Service                       // ns/name →
	slices   map[string]map[string]*discoveryv1.EndpointSlice // service key → slice name →
	pods     map[string]podInfo                               // ns/name → what DNS and weights need
	nodeIPs  []netip.Addr
	entries  map[string]*entry // service key →
	dirty    map[string]bool   // service keys to rebuild
	podsOf   map[string][]string
	svcsOf   map[string]map[string]bool // pod key → services whose endpoints name it
	zoneDirt bool
	nodeDirt bool
	warned   map[string]bool // services whose strategy annotation is unknown (logged once)

	wake     chan struct{}
	zoneWake chan struct{}
}

type podInfo struct {
	ips    []netip.Addr
	weight int
}

type entry struct {
	proxy    netproxy.Service
	hasProxy bool
	dns      dns.Service
}

// New returns a loop; Run starts it.
func New(cfg Config) *Loop {
	if cfg.Domain == "" {
		cfg.Domain = "cluster.local"
	}
	if cfg.ZoneInterval <= 0 {
		cfg.ZoneInterval = 100 * time.Millisecond
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Loop{
		cfg: cfg, log: cfg.Log.With("component", "services"),
		services: map[string]*corev1.Service{}, slices: map[string]map[string]*discoveryv1.EndpointSlice{},
		pods: map[string]podInfo{}, entries: map[string]*entry{}, dirty: map[string]bool{},
		podsOf: map[string][]string{}, svcsOf: map[string]map[string]bool{}, warned: map[string]bool{},
		wake: make(chan struct{}, 1), zoneWake: make(chan struct{}, 1),
		zoneDirt: true, // the first zone is built as soon as the loop runs, even if empty
	}
}

// Run watches the replica and keeps the dataplane and the zone current
// until ctx ends.
func (l *Loop) Run(ctx context.Context) {
	var wg sync.WaitGroup
	watch := func(res string, h func(state.Event)) {
		wg.Add(1)
		go func() { defer wg.Done(); controller.Watch(ctx, l.cfg.Store, res, h) }()
	}
	watch("services", l.onService)
	watch(sliceResource, l.onSlice)
	watch("pods", l.onPod)
	watch("nodes", l.onNode)
	wg.Add(2)
	go func() { defer wg.Done(); l.proxyLoop(ctx) }()
	go func() { defer wg.Done(); l.zoneLoop(ctx) }()
	wg.Wait()
}

func key(ns, name string) string { return ns + "/" + name }

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (l *Loop) markLocked(svcKey string) {
	l.dirty[svcKey] = true
	poke(l.wake)
}

func (l *Loop) onService(ev state.Event) {
	svc := ev.Object.(*corev1.Service)
	k := key(svc.Namespace, svc.Name)
	l.mu.Lock()
	defer l.mu.Unlock()
	if ev.Type == state.Deleted {
		delete(l.services, k)
	} else {
		l.services[k] = svc
	}
	l.markLocked(k)
}

func (l *Loop) onSlice(ev state.Event) {
	sl := ev.Object.(*discoveryv1.EndpointSlice)
	l.mu.Lock()
	defer l.mu.Unlock()
	if ev.Prev != nil { // a slice relabelled to another service leaves the old one
		if p := ev.Prev.(*discoveryv1.EndpointSlice); p.Labels[ServiceNameLabel] != sl.Labels[ServiceNameLabel] {
			l.removeSliceLocked(key(p.Namespace, p.Labels[ServiceNameLabel]), p.Name)
		}
	}
	name := sl.Labels[ServiceNameLabel]
	if name == "" {
		return
	}
	k := key(sl.Namespace, name)
	if ev.Type == state.Deleted {
		l.removeSliceLocked(k, sl.Name)
		return
	}
	m := l.slices[k]
	if m == nil {
		m = map[string]*discoveryv1.EndpointSlice{}
		l.slices[k] = m
	}
	m[sl.Name] = sl
	l.markLocked(k)
}

func (l *Loop) removeSliceLocked(svcKey, name string) {
	if m := l.slices[svcKey]; m != nil {
		delete(m, name)
		if len(m) == 0 {
			delete(l.slices, svcKey)
		}
	}
	l.markLocked(svcKey)
}

func (l *Loop) onPod(ev state.Event) {
	pod := ev.Object.(*corev1.Pod)
	k := key(pod.Namespace, pod.Name)
	info := podInfo{ips: podIPs(pod), weight: weightOf(pod)}
	l.mu.Lock()
	defer l.mu.Unlock()
	old, had := l.pods[k]
	if ev.Type == state.Deleted || len(info.ips) == 0 && info.weight == 1 {
		delete(l.pods, k)
		info = podInfo{weight: 1}
	} else {
		l.pods[k] = info
	}
	if !had {
		old = podInfo{weight: 1}
	}
	if !slices.Equal(old.ips, info.ips) {
		l.zoneDirt = true
		poke(l.zoneWake)
	}
	if old.weight != info.weight {
		for s := range l.svcsOf[k] {
			l.markLocked(s)
		}
	}
}

func (l *Loop) onNode(ev state.Event) {
	node := ev.Object.(*corev1.Node)
	if node.Name != l.cfg.NodeName {
		return
	}
	ips := nodeAddrs(node)
	if ev.Type == state.Deleted {
		ips = nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Equal(ips, l.nodeIPs) {
		l.nodeIPs = ips
		l.nodeDirt = true
		poke(l.wake)
	}
}

// rebuildLocked recomputes the dirty entries and reports whether anything
// was rebuilt.
func (l *Loop) rebuildLocked() bool {
	if len(l.dirty) == 0 && !l.nodeDirt {
		return false
	}
	lookup := func(ns, name string) *corev1.Pod {
		o, ok := l.cfg.Store.Get("pods", ns, name)
		if !ok {
			return nil
		}
		return o.(*corev1.Pod)
	}
	zone := false
	for k := range l.dirty {
		for _, p := range l.podsOf[k] {
			if m := l.svcsOf[p]; m != nil {
				delete(m, k)
				if len(m) == 0 {
					delete(l.svcsOf, p)
				}
			}
		}
		delete(l.podsOf, k)
		svc, ok := l.services[k]
		if !ok {
			if _, had := l.entries[k]; had {
				delete(l.entries, k)
				zone = true
			}
			continue
		}
		var sl []*discoveryv1.EndpointSlice
		for _, s := range l.slices[k] {
			sl = append(sl, s)
		}
		eps := endpointsByPort(sl)
		e := &entry{dns: dnsService(svc, eps)}
		e.proxy, e.hasProxy = proxyService(svc, eps, l.cfg.NodeName, lookup)
		if _, ok := strategyOf(svc); !ok && !l.warned[k] {
			l.warned[k] = true
			l.log.Warn("unknown load-balancing strategy; using round-robin", "service", k, "annotation", svc.Annotations[StrategyAnnotation])
		}
		if old, had := l.entries[k]; !had || !reflect.DeepEqual(old.dns, e.dns) {
			zone = true // endpoint changes of ClusterIP services leave DNS alone
		}
		l.entries[k] = e
		var pods []string
		for _, list := range eps {
			for _, ep := range list {
				if ep.pod != "" {
					pods = append(pods, key(svc.Namespace, ep.pod))
				}
			}
		}
		l.podsOf[k] = pods
		for _, p := range pods {
			if l.svcsOf[p] == nil {
				l.svcsOf[p] = map[string]bool{}
			}
			l.svcsOf[p][k] = true
		}
	}
	l.dirty = map[string]bool{}
	l.nodeDirt = false
	if zone {
		l.zoneDirt = true
		poke(l.zoneWake)
	}
	return true
}

// proxyConfigLocked assembles the dataplane configuration from the entries.
func (l *Loop) proxyConfigLocked() netproxy.Config {
	cfg := netproxy.Config{ClusterCIDR: l.cfg.ClusterCIDR, NodeIPs: append([]netip.Addr(nil), l.nodeIPs...)}
	cfg.Services = make([]netproxy.Service, 0, len(l.entries))
	for _, e := range l.entries {
		if e.hasProxy {
			cfg.Services = append(cfg.Services, e.proxy)
		}
	}
	return cfg
}

func (l *Loop) proxyLoop(ctx context.Context) {
	failed := false
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case <-retry:
		}
		t0 := time.Now()
		l.mu.Lock()
		changed := l.rebuildLocked()
		var cfg netproxy.Config
		if changed || failed {
			cfg = l.proxyConfigLocked()
		}
		l.mu.Unlock()
		if (!changed && !failed) || l.cfg.Proxy == nil {
			continue
		}
		t1 := time.Now()
		err := l.cfg.Proxy.Set(ctx, cfg)
		if d := time.Since(t0); d > time.Second {
			l.log.Warn("slow service sync", "build", t1.Sub(t0), "dataplane", time.Since(t1), "services", len(cfg.Services))
		} else {
			l.log.Debug("service sync", "build", t1.Sub(t0), "dataplane", time.Since(t1), "services", len(cfg.Services))
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failed {
				l.log.Error("programming services", "err", err)
			}
			failed = true
			retry = time.After(l.cfg.RetryInterval)
			continue
		}
		failed, retry = false, nil
		if l.cfg.OnSync != nil {
			l.cfg.OnSync(time.Since(t0), len(cfg.Services))
		}
	}
}

// zoneConfig snapshots the entries and pods for a new zone.
func (l *Loop) zoneConfig() dns.ZoneConfig {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.zoneDirt = false
	zc := dns.ZoneConfig{Domain: l.cfg.Domain}
	zc.Services = make([]dns.Service, 0, len(l.entries))
	for _, e := range l.entries {
		zc.Services = append(zc.Services, e.dns)
	}
	zc.Pods = make([]dns.Pod, 0, len(l.pods))
	for k, p := range l.pods {
		if len(p.ips) == 0 {
			continue
		}
		ns, _ := controller.SplitKey(k)
		zc.Pods = append(zc.Pods, dns.Pod{Namespace: ns, IPs: p.ips})
	}
	sort.Slice(zc.Services, func(i, j int) bool {
		a, b := zc.Services[i], zc.Services[j]
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	return zc
}

func (l *Loop) zoneLoop(ctx context.Context) {
	if l.cfg.DNS == nil {
		return
	}
	var last time.Time
	poke(l.zoneWake)
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.zoneWake:
		}
		if d := l.cfg.ZoneInterval - time.Since(last); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		last = time.Now()
		l.mu.Lock()
		dirty := l.zoneDirt
		l.mu.Unlock()
		if !dirty {
			continue
		}
		l.cfg.DNS.SetZoneConfig(l.zoneConfig())
	}
}
