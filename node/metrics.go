package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/shoal-dev/shoal/dns"
)

// metrics are the node's own Prometheus metrics; the API server registers
// its request metrics in the same registry.
type metrics struct {
	reg           *prometheus.Registry
	applyLatency  prometheus.Histogram
	proposeErrors prometheus.Counter
	serviceSync   prometheus.Histogram
	services      prometheus.Gauge
	sched         schedMetrics
}

// schedMetrics are the leader's scheduler's, as kube-scheduler names them.
type schedMetrics struct {
	attempts *prometheus.CounterVec // result: scheduled, unschedulable, error
	bindings prometheus.Counter     // bindings committed
	pending  prometheus.Gauge       // pods waiting, unschedulable ones included
	round    prometheus.Histogram   // one round: scheduling the pods waiting for a try
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_raft_apply_latency_seconds",
			Help:    "Time from proposing a write to it being applied on this node's replica.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		proposeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_raft_propose_errors_total",
			Help: "Writes that could not be committed (no leader, no quorum, timeout).",
		}),
		serviceSync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_service_sync_seconds",
			Help:    "Time to program this node's service rules after a change (translation and nftables transaction).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_services_programmed",
			Help: "Services in this node's nftables rules after the last sync.",
		}),
		sched: schedMetrics{
			attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "shoal_scheduler_schedule_attempts_total",
				Help: "Attempts to schedule a pod, by result (scheduled, unschedulable, error); on the leader.",
			}, []string{"result"}),
			bindings: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "shoal_scheduler_bindings_total",
				Help: "Pod bindings committed by the scheduler; on the leader.",
			}),
			pending: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "shoal_scheduler_pending_pods",
				Help: "Pods waiting for the scheduler, unschedulable ones included; on the leader.",
			}),
			round: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name:    "shoal_scheduler_round_duration_seconds",
				Help:    "Time to schedule the pods waiting for a try, one round (commits go on after it).",
				Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
			}),
		},
	}
	m.reg.MustRegister(m.applyLatency, m.proposeErrors, m.serviceSync, m.services,
		m.sched.attempts, m.sched.bindings, m.sched.pending, m.sched.round,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// registerNodeGauges adds gauges read from the running node at scrape time.
func (m *metrics) registerNodeGauges(n *Node) {
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	gauge("shoal_raft_leader", "1 if this node is the raft leader.", func() float64 {
		if n.raft.IsLeader() {
			return 1
		}
		return 0
	})
	gauge("shoal_raft_term", "Current raft term.", func() float64 { return float64(n.raft.Stats().Term) })
	gauge("shoal_raft_commit_index", "Last committed raft index known here.", func() float64 { return float64(n.raft.Stats().CommitIndex) })
	gauge("shoal_raft_applied_index", "Last raft index applied to this replica.", func() float64 { return float64(n.raft.AppliedIndex()) })
	gauge("shoal_raft_peers", "Servers in the raft configuration.", func() float64 {
		s, err := n.raft.Servers()
		if err != nil {
			return 0
		}
		return float64(len(s))
	})
	gauge("shoal_raft_proposed_entries", "Raft entries this node proposed as leader (each carries a batch of commands).", func() float64 { return float64(n.raft.Stats().ProposedEntries) })
	gauge("shoal_raft_proposed_commands", "Commands this node proposed as leader.", func() float64 { return float64(n.raft.Stats().ProposedCommands) })
	gauge("shoal_raft_commit_pushes", "Times this node as leader pushed its commit index to the followers after a batch with nothing queued behind it.", func() float64 { return float64(n.raft.Stats().Nudges) })
	gauge("shoal_gossip_members_alive", "Members gossip reports alive (self included).", func() float64 { return float64(len(n.gossip.Alive())) })
	gauge("shoal_gossip_members", "Members gossip knows, in any state.", func() float64 { return float64(len(n.gossip.Members())) })
	dnsCounter := func(name, help string, f func(dns.Stats) uint64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			if s := n.dnsSrv.Load(); s != nil {
				return float64(f(s.Stats()))
			}
			return 0
		}))
	}
	dnsCounter("shoal_dns_forwarded_total", "Queries cluster DNS sent upstream (cache misses).", func(s dns.Stats) uint64 { return s.Forwarded })
	dnsCounter("shoal_dns_cache_hits_total", "Forwarded names answered from cluster DNS's cache.", func(s dns.Stats) uint64 { return s.CacheHits })
	dnsCounter("shoal_dns_upstream_failures_total", "Queries for which every upstream failed.", func(s dns.Stats) uint64 { return s.UpstreamFailures })
	gauge("shoal_store_revision", "Latest resourceVersion in this replica.", func() float64 { return float64(n.store.Revision()) })
}
