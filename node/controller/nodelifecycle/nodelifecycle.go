// Package nodelifecycle is the node lifecycle controller: it taints nodes
// that are not Ready, evicts the pods that do not tolerate it, and collects
// the pods of deleted nodes, as kube-controller-manager's node lifecycle
// controller (taint-based evictions), its NoExecute taint manager and the
// pod garbage collector do.
//
//   - Taints. Membership (node/membership.go) sets each Node's Ready
//     condition from gossip. A node with Ready=Unknown (gossip lost it) gets
//     node.kubernetes.io/unreachable:NoExecute, one with Ready=False
//     node.kubernetes.io/not-ready:NoExecute, with timeAdded; both go when
//     Ready is True again. Any other NoExecute taint without a timeAdded
//     gets one, so eviction deadlines live in the store.
//   - Eviction. A pod bound to a node with a NoExecute taint it does not
//     tolerate is evicted at once; one that tolerates it for
//     tolerationSeconds is evicted when the taint's timeAdded plus those
//     seconds has passed; one that tolerates it without tolerationSeconds
//     stays. Finished pods are left alone. On a node that is Ready (a
//     user's taint) the pod is deleted gracefully, as a DELETE through the
//     API would; on a node that is not Ready no agent will finish a graceful
//     deletion, so the pod is removed from the store at once — except pods
//     a StatefulSet controls: those are only marked for deletion and stay
//     Terminating (no two copies of one identity) until their node comes
//     back and finishes the deletion, or the Node object is deleted.
//   - Mass disruption. When at least Config.UnhealthyThreshold of the nodes
//     (and more than one) are not Ready at once, the leader is more likely
//     the one cut off than the fleet: no node is newly tainted and the
//     not-ready/unreachable taints evict nothing until enough nodes are
//     back. Taints are still removed from nodes that recover.
//   - Pod GC. When a Node object is deleted, every pod still bound to that
//     name is removed at once (pods with finalizers are marked). A pod bound
//     to a node that does not exist is also collected when an agent had
//     taken it up (it has run, or is being deleted); one that never ran
//     waits for a node of that name to join, as node/podbinding.go tells
//     its user.
//
// All decisions are made from the store: the controller keeps only an
// index from node names to the pods bound to them (rebuilt from the
// replica's watch, used to requeue pods when their node changes) and
// whether it last reported a mass disruption (to log it once). A new leader
// resumes where the old one stopped: eviction deadlines come from the
// taints' timeAdded.
//
// Concurrency: Run starts the watches and the workers; the handlers only
// update the index and enqueue keys; syncs of different keys run
// concurrently and write with optimistic concurrency.
package nodelifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// Config configures the controller. The zero value of a field means its
// default (DefaultConfig).
type Config struct {
	// UnhealthyThreshold is the fraction of nodes that, not Ready at once
	// (and more than one of them), suspends tainting and evictions
	// (0 < t ≤ 1; default 0.5: half the nodes or more).
	UnhealthyThreshold float64
	// Workers is how many keys are synced concurrently (default 4).
	Workers int
}

// DefaultConfig returns the default configuration.
func DefaultConfig() Config { return Config{UnhealthyThreshold: 0.5, Workers: 4} }

// Validate reports a configuration New cannot use.
func (cfg Config) Validate() error {
	var errs []error
	if !(cfg.UnhealthyThreshold > 0 && cfg.UnhealthyThreshold <= 1) {
		errs = append(errs, fmt.Errorf("UnhealthyThreshold %v must be in (0, 1]", cfg.UnhealthyThreshold))
	}
	if cfg.Workers < 1 {
		errs = append(errs, fmt.Errorf("Workers %d must be at least 1", cfg.Workers))
	}
	return errors.Join(errs...)
}

func (cfg Config) withDefaults() Config {
	def := DefaultConfig()
	if cfg.UnhealthyThreshold == 0 {
		cfg.UnhealthyThreshold = def.UnhealthyThreshold
	}
	if cfg.Workers == 0 {
		cfg.Workers = def.Workers
	}
	return cfg
}

// Event reasons.
const (
	// ReasonTaintManagerEviction is recorded on an evicted pod (as
	// Kubernetes' taint manager does).
	ReasonTaintManagerEviction = "TaintManagerEviction"
	// ReasonEvictionsSuppressed is recorded on the nodes that are not Ready
	// when a mass disruption suspends evictions.
	ReasonEvictionsSuppressed = "NodeEvictionsSuppressed"
)

// Queue keys: "node/NAME" syncs a node's taints, "pod/NS/NAME" a pod's
// eviction, "gone/NAME" collects the pods of a deleted node, "all"
// enqueues every node (the set of Ready nodes changed, which may start or
// end a mass disruption).
const (
	prefixNode = "node/"
	prefixPod  = "pod/"
	prefixGone = "gone/"
	keyAll     = "all"
)

// Controller is the node lifecycle controller. Create it with New, then
// call Run once; it is not reused after Run returns (a new leader term
// makes a new one).
type Controller struct {
	c     controller.Context
	cfg   Config
	queue controller.Queue

	mu sync.Mutex
	// podsByNode indexes pod keys ("ns/name") by spec.nodeName, as the
	// pod watch last reported them. Guarded by mu.
	podsByNode map[string]map[string]struct{}
	// disrupted is the mass-disruption state last reported. Guarded by mu.
	disrupted bool
}

// New returns a node lifecycle controller. Zero fields of cfg take their
// defaults; an invalid cfg (see Validate) is replaced by DefaultConfig,
// with a warning.
func New(c controller.Context, cfg Config) *Controller {
	c = c.WithDefaults()
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		c.Log.Warn("nodelifecycle: invalid configuration, using the defaults", "err", err)
		cfg = DefaultConfig()
	}
	return &Controller{
		c:          c,
		cfg:        cfg,
		queue:      controller.NewQueue("nodelifecycle", c.Clock),
		podsByNode: map[string]map[string]struct{}{},
	}
}

// Run watches nodes and pods and syncs them until ctx ends.
func (lc *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); controller.Watch(ctx, lc.c.Store, controller.ResourceNodes, lc.onNode) }()
	go func() { defer wg.Done(); controller.Watch(ctx, lc.c.Store, controller.ResourcePods, lc.onPod) }()
	controller.Run(ctx, lc.queue, lc.cfg.Workers, lc.c.Log, lc.sync)
	cancel()
	wg.Wait()
}

// onNode enqueues the node; a deleted node's pods are collected; a change
// in the set of Ready nodes re-examines every node.
func (lc *Controller) onNode(ev state.Event) {
	node, ok := ev.Object.(*corev1.Node)
	if !ok {
		return
	}
	switch ev.Type {
	case state.Deleted:
		lc.queue.Add(prefixGone + node.Name)
		lc.queue.Add(keyAll)
		return
	case state.Added:
		lc.queue.Add(keyAll)
	case state.Modified:
		if prev, ok := ev.Prev.(*corev1.Node); !ok || isReady(prev) != isReady(node) {
			lc.queue.Add(keyAll)
		}
	}
	lc.queue.Add(prefixNode + node.Name)
}

// onPod keeps the node index and enqueues bound pods.
func (lc *Controller) onPod(ev state.Event) {
	pod, ok := ev.Object.(*corev1.Pod)
	if !ok {
		return
	}
	key := controller.Key(pod.Namespace, pod.Name)
	prevNode := ""
	if prev, ok := ev.Prev.(*corev1.Pod); ok {
		prevNode = prev.Spec.NodeName
	}
	lc.mu.Lock()
	if prevNode != "" && (prevNode != pod.Spec.NodeName || ev.Type == state.Deleted) {
		lc.unindexLocked(prevNode, key)
	}
	if ev.Type == state.Deleted {
		lc.unindexLocked(pod.Spec.NodeName, key)
	} else if pod.Spec.NodeName != "" {
		set := lc.podsByNode[pod.Spec.NodeName]
		if set == nil {
			set = map[string]struct{}{}
			lc.podsByNode[pod.Spec.NodeName] = set
		}
		set[key] = struct{}{}
	}
	lc.mu.Unlock()
	if ev.Type != state.Deleted && pod.Spec.NodeName != "" {
		lc.queue.Add(prefixPod + key)
	}
}

func (lc *Controller) unindexLocked(node, key string) {
	if set := lc.podsByNode[node]; set != nil {
		delete(set, key)
		if len(set) == 0 {
			delete(lc.podsByNode, node)
		}
	}
}

// enqueuePodsOf enqueues the pods indexed under node.
func (lc *Controller) enqueuePodsOf(node string) {
	lc.mu.Lock()
	keys := make([]string, 0, len(lc.podsByNode[node]))
	for k := range lc.podsByNode[node] {
		keys = append(keys, k)
	}
	lc.mu.Unlock()
	for _, k := range keys {
		lc.queue.Add(prefixPod + k)
	}
}

// sync dispatches a queue key.
func (lc *Controller) sync(ctx context.Context, key string) error {
	switch {
	case key == keyAll:
		objs, _ := lc.c.Store.List(controller.ResourceNodes, "")
		for _, o := range objs {
			lc.queue.Add(prefixNode + o.GetName())
		}
		return nil
	case strings.HasPrefix(key, prefixNode):
		return lc.syncNode(ctx, strings.TrimPrefix(key, prefixNode))
	case strings.HasPrefix(key, prefixPod):
		ns, name := controller.SplitKey(strings.TrimPrefix(key, prefixPod))
		return lc.syncPod(ctx, ns, name)
	case strings.HasPrefix(key, prefixGone):
		return lc.syncGoneNode(ctx, strings.TrimPrefix(key, prefixGone))
	}
	return nil
}

// readyCondition returns node's Ready condition, or nil.
func readyCondition(node *corev1.Node) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == corev1.NodeReady {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

// isReady reports whether node's Ready condition is True. A node without
// one is not Ready (as the scheduler and Kubernetes count it).
func isReady(node *corev1.Node) bool {
	c := readyCondition(node)
	return c != nil && c.Status == corev1.ConditionTrue
}

// massDisruption reports whether at least the threshold fraction of the
// nodes, and more than one, are not Ready, logging and recording the
// change when it starts or ends.
func (lc *Controller) massDisruption() bool {
	objs, _ := lc.c.Store.List(controller.ResourceNodes, "")
	var notReady []*corev1.Node
	for _, o := range objs {
		if n := o.(*corev1.Node); !isReady(n) {
			notReady = append(notReady, n)
		}
	}
	on := len(notReady) > 1 && float64(len(notReady)) >= lc.cfg.UnhealthyThreshold*float64(len(objs))
	lc.mu.Lock()
	changed := on != lc.disrupted
	lc.disrupted = on
	lc.mu.Unlock()
	if changed && on {
		lc.c.Log.Warn("nodelifecycle: most nodes are not Ready at once; evicting nothing and tainting no more nodes until they are back",
			"notReady", len(notReady), "nodes", len(objs))
		for _, n := range notReady {
			lc.c.Events.Eventf(n, "Node", corev1.EventTypeWarning, ReasonEvictionsSuppressed,
				"%d of %d nodes are not Ready at once: pods are not evicted (this leader may be the one cut off)", len(notReady), len(objs))
		}
	} else if changed {
		lc.c.Log.Info("nodelifecycle: mass disruption over; tainting and evictions resume", "notReady", len(notReady), "nodes", len(objs))
	}
	return on
}
