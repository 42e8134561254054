// Package daemonset is the DaemonSet controller: it keeps one pod of each
// DaemonSet on every node that should run one — nodes that join later
// included — removes the pods of nodes that no longer should or no longer
// exist, replaces failed pods, rolls template changes out (RollingUpdate
// with maxUnavailable and maxSurge, or OnDelete), and reports the status
// `kubectl rollout status daemonset` reads, as kube-controller-manager's
// does.
//
// # Placement
//
// Which nodes should run a pod is decided with node/scheduler's own
// filters (see placement.go): the template's nodeName, nodeSelector and
// required node affinity, and the node's taints and cordon against the
// pod's tolerations plus the ones Kubernetes adds to every daemon pod
// (not-ready and unreachable NoExecute; disk, memory and PID pressure and
// unschedulable NoSchedule; network-unavailable with hostNetwork). A node
// that is not Ready carries the scheduler's not-ready NoSchedule taint, so
// it gets no new pod but keeps the one it has. Pods are created, as in
// Kubernetes, without spec.nodeName and with a required node affinity
// term matchFields metadata.name In [node]; the leader's scheduler binds
// them (and may leave one Pending when the node lacks resources). A pod
// whose node is gone is deleted at once, not gracefully.
//
// # Revisions
//
// Kubernetes records DaemonSet revisions as ControllerRevision objects,
// which Shoal does not store. Here the revision is the template's hash
// alone: new pods carry controller-revision-hash (the hash Kubernetes
// would compute for the revision) and pod-template-generation labels, and
// a pod is up to date when its hash label is the current template's. So
// rolling updates, OnDelete and the status counts work as in Kubernetes,
// but there is no revision history: `kubectl rollout history/undo
// daemonset` find nothing, status.collisionCount is never bumped, and
// spec.revisionHistoryLimit has nothing to limit.
//
// # State
//
// The controller runs on the leader only and keeps everything in the
// store, so a new leader carries on where the old one stopped — mid-rollout
// included — with two in-memory exceptions that start empty and are safe
// to lose: expectations (pod writes whose outcome a sync could not know,
// see expectations.go) and the per-node back-off for replacing failed pods
// (1 s doubling to 15 min, as in Kubernetes), which a new leader starts
// over.
package daemonset

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// Defaults.
const (
	// DefaultWorkers is how many DaemonSets are synced at once
	// (kube-controller-manager's --concurrent-daemonset-syncs).
	DefaultWorkers = 2
	// BurstReplicas bounds the pods one sync creates, and those it
	// deletes (Kubernetes' DaemonSet value).
	BurstReplicas = 250
	// FailedPodBackoff and MaxFailedPodBackoff bound how often a failed
	// pod on one node is replaced: the first at once, then after 1 s,
	// doubling up to 15 min (Kubernetes' values).
	FailedPodBackoff    = time.Second
	MaxFailedPodBackoff = 15 * time.Minute
	// backoffGCInterval is how often back-off entries of nodes that stopped
	// failing are dropped.
	backoffGCInterval = time.Minute
	// deleteParallelism bounds concurrent pod deletions in one sync.
	deleteParallelism = 16
)

// Resource is the store key of DaemonSets.
const Resource = "daemonsets.apps"

// GVK is the DaemonSet kind, as owner references name it.
var GVK = appsv1.SchemeGroupVersion.WithKind("DaemonSet")

// Event reasons, as Kubernetes records them on the DaemonSet.
const (
	reasonSuccessfulCreate = "SuccessfulCreate"
	reasonFailedCreate     = "FailedCreate"
	reasonSuccessfulDelete = "SuccessfulDelete"
	reasonFailedDelete     = "FailedDelete"
	reasonFailedDaemonPod  = "FailedDaemonPod"
	reasonSelectingAll     = "SelectingAll"
)

// Controller is the DaemonSet controller. Create it with New, then call
// Run once; a Controller is not reused after Run returns (a new leader
// term makes a new one).
type Controller struct {
	c     controller.Context
	queue controller.Queue
	exp   *controller.Expectations
	// backoff spaces out the replacement of failed pods, per DaemonSet
	// and node; it is safe for concurrent use.
	backoff *flowcontrol.Backoff
	// Workers is how many keys are synced concurrently (DefaultWorkers);
	// set it before Run.
	Workers int
}

// New returns a DaemonSet controller.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	backoff := flowcontrol.NewBackOff(FailedPodBackoff, MaxFailedPodBackoff)
	backoff.Clock = c.Clock
	return &Controller{
		c:       c,
		queue:   controller.NewQueue("daemonset", c.Clock),
		exp:     controller.NewExpectations(GVK.Kind, ExpectationsTimeout),
		backoff: backoff,
		Workers: DefaultWorkers,
	}
}

// Run watches DaemonSets, pods and nodes and syncs DaemonSets until ctx
// ends.
func (dc *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); controller.Watch(ctx, dc.c.Store, Resource, dc.onDaemonSet) }()
	go func() { defer wg.Done(); controller.Watch(ctx, dc.c.Store, controller.ResourcePods, dc.onPod) }()
	go func() { defer wg.Done(); controller.Watch(ctx, dc.c.Store, controller.ResourceNodes, dc.onNode) }()
	go func() {
		defer wg.Done()
		t := dc.c.Clock.NewTicker(backoffGCInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C():
				dc.backoff.GC()
			}
		}
	}()
	controller.Run(ctx, dc.queue, dc.Workers, dc.c.Log, dc.sync)
	cancel()
	wg.Wait()
}

func (dc *Controller) onDaemonSet(ev state.Event) {
	dc.queue.Add(controller.Key(ev.Object.GetNamespace(), ev.Object.GetName()))
}

// onPod enqueues the DaemonSets a pod change matters to: its controller
// (before and after the change) or, for an orphan, every DaemonSet whose
// selector matches it (it may be adopted).
func (dc *Controller) onPod(ev state.Event) {
	dc.exp.Observe(ev)
	controller.EnqueueOwners(ev, GVK, dc.queue.Add, func(o metav1.Object) []string {
		pod := o.(*corev1.Pod)
		var keys []string
		objs, _ := dc.c.Store.List(Resource, pod.Namespace)
		for _, o := range objs {
			if sel, err := selectorOf(o.(*appsv1.DaemonSet)); err == nil && sel.Matches(labels.Set(pod.Labels)) {
				keys = append(keys, controller.Key(o.GetNamespace(), o.GetName()))
			}
		}
		return keys
	})
}

// onNode enqueues every DaemonSet when a node comes or goes, or changes in
// a way that can change where daemon pods belong.
func (dc *Controller) onNode(ev state.Event) {
	if ev.Type == state.Modified {
		prev, ok1 := ev.Prev.(*corev1.Node)
		cur, ok2 := ev.Object.(*corev1.Node)
		if ok1 && ok2 && !placementChanged(prev, cur) {
			return
		}
	}
	objs, _ := dc.c.Store.List(Resource, "")
	for _, o := range objs {
		dc.queue.Add(controller.Key(o.GetNamespace(), o.GetName()))
	}
}

// placementChanged reports whether a node changed in what placement reads.
func placementChanged(a, b *corev1.Node) bool {
	return !equality.Semantic.DeepEqual(a.Labels, b.Labels) ||
		!equality.Semantic.DeepEqual(a.Spec.Taints, b.Spec.Taints) ||
		a.Spec.Unschedulable != b.Spec.Unschedulable ||
		controller.NodeReadyStatus(a) != controller.NodeReadyStatus(b)
}

var errSelectsAll = errors.New("the selector is empty: it would select every pod")

// selectorOf is ds's pod selector; an empty one (which would match every
// pod) is an error.
func selectorOf(ds *appsv1.DaemonSet) (labels.Selector, error) {
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, err
	}
	if sel.Empty() {
		return nil, errSelectsAll
	}
	return sel, nil
}

// syncState is what one sync works from: the DaemonSet, the nodes, their
// verdicts and the template hash.
type syncState struct {
	key      string
	ds       *appsv1.DaemonSet
	sel      labels.Selector
	nodes    []*corev1.Node // by name
	verdicts map[string]verdict
	hash     string
	now      time.Time
	// requeue, when positive, is when the DaemonSet wants another sync
	// (a failed pod's back-off ending).
	requeue time.Duration
}

func (s *syncState) requeueAfter(d time.Duration) {
	if d > 0 && (s.requeue == 0 || d < s.requeue) {
		s.requeue = d
	}
}

// sync reconciles one DaemonSet: claim its pods, create and delete pods
// node by node, roll an update forward, then write its status.
func (dc *Controller) sync(ctx context.Context, key string) error {
	ns, name := controller.SplitKey(key)
	o, ok := dc.c.Store.Get(Resource, ns, name)
	if !ok {
		dc.exp.Forget(key)
		return nil
	}
	ds := o.(*appsv1.DaemonSet)
	sel, err := selectorOf(ds)
	if err != nil {
		if errors.Is(err, errSelectsAll) {
			dc.c.Events.Eventf(ds, GVK.Kind, corev1.EventTypeWarning, reasonSelectingAll,
				"This daemon set is selecting all pods. A non-empty selector is required.")
		}
		dc.c.Log.Warn("daemonset: invalid selector", "daemonset", key, "err", err)
		return nil
	}
	// A DaemonSet being deleted is left to the garbage collector, status
	// included, as Kubernetes leaves it.
	if ds.DeletionTimestamp != nil {
		return nil
	}
	s := &syncState{key: key, ds: ds, sel: sel, hash: computeHash(&ds.Spec.Template, ds.Status.CollisionCount), now: dc.c.Now()}
	s.nodes, s.verdicts = dc.judgeNodes(ds)

	if ok, wait := dc.exp.Satisfied(key, dc.c.Store, s.now); !ok {
		// Only the status, without observedGeneration: this generation
		// has not been acted on yet.
		dc.queue.AddAfter(key, wait)
		return dc.writeStatus(ctx, ds, dc.calculateStatus(s, dc.controlledPods(s), false))
	}

	pods, err := dc.claimPods(ctx, s)
	if err != nil {
		return err
	}
	manageErr := dc.manage(ctx, s, podsByNode(pods))
	if _, rolling := rollingUpdateOf(ds); manageErr == nil && rolling {
		// The store already shows what manage wrote (read-your-writes).
		manageErr = dc.rollingUpdate(ctx, s, podsByNode(dc.controlledPods(s)))
	}
	pods = dc.controlledPods(s)
	if err := dc.writeStatus(ctx, ds, dc.calculateStatus(s, pods, true)); err != nil {
		return errors.Join(manageErr, err)
	}
	if manageErr != nil {
		return manageErr
	}
	// Come back when a failed pod's back-off ends, or when the next
	// ready pod becomes available.
	if ds.Spec.MinReadySeconds > 0 {
		for _, p := range pods {
			s.requeueAfter(controller.PodAvailableIn(p, ds.Spec.MinReadySeconds, s.now))
		}
	}
	if s.requeue > 0 {
		dc.queue.AddAfter(key, s.requeue)
	}
	return nil
}

// judgeNodes lists the nodes, by name, and judges each for ds.
func (dc *Controller) judgeNodes(ds *appsv1.DaemonSet) ([]*corev1.Node, map[string]verdict) {
	objs, _ := dc.c.Store.List(controller.ResourceNodes, "")
	nodes := make([]*corev1.Node, len(objs))
	for i, o := range objs {
		nodes[i] = o.(*corev1.Node)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	p := newPlacement(ds)
	verdicts := make(map[string]verdict, len(nodes))
	var firstErr error
	for _, n := range nodes {
		v, err := p.verdict(n)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		verdicts[n.Name] = v
	}
	if firstErr != nil {
		dc.c.Log.Warn("daemonset: nodes that cannot be judged are not eligible", "daemonset", controller.Key(ds.Namespace, ds.Name), "err", firstErr)
	}
	return nodes, verdicts
}

// claimPods returns the pods ds controls, whatever their phase, after
// adopting orphans it matches and releasing owned pods it no longer
// matches.
func (dc *Controller) claimPods(ctx context.Context, s *syncState) ([]*corev1.Pod, error) {
	objs, _ := dc.c.Store.List(controller.ResourcePods, s.ds.Namespace)
	pods := make([]*corev1.Pod, len(objs))
	for i, o := range objs {
		pods[i] = o.(*corev1.Pod)
	}
	m := controller.NewRefManager(dc.c, s.ds, GVK, s.sel, controller.ResourcePods)
	return controller.Claim(ctx, m, pods)
}

// controlledPods lists the pods ds controls and selects, as the store has
// them now.
func (dc *Controller) controlledPods(s *syncState) []*corev1.Pod {
	objs, _ := dc.c.Store.List(controller.ResourcePods, s.ds.Namespace)
	var out []*corev1.Pod
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if controller.IsControlledBy(p, s.ds) && s.sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

// podsByNode groups daemon pods by the node they are for. Finished pods
// already being deleted are left out (nothing more to do with them), as
// are pods that name no node.
func podsByNode(pods []*corev1.Pod) map[string][]*corev1.Pod {
	out := map[string][]*corev1.Pod{}
	for _, p := range pods {
		if controller.IsPodFinished(p) && p.DeletionTimestamp != nil {
			continue
		}
		if node, ok := targetNode(p); ok {
			out[node] = append(out[node], p)
		}
	}
	return out
}

// calculateStatus is ds's status from its pods. Each node that should run
// a pod counts by its oldest pod (Kubernetes' rule). observe sets
// observedGeneration.
func (dc *Controller) calculateStatus(s *syncState, pods []*corev1.Pod, observe bool) appsv1.DaemonSetStatus {
	byNode := podsByNode(pods)
	st := *s.ds.Status.DeepCopy()
	var desired, current, misscheduled, ready, available, updated int32
	for _, n := range s.nodes {
		nodePods := byNode[n.Name]
		if !s.verdicts[n.Name].shouldRun {
			if len(nodePods) > 0 {
				misscheduled++
			}
			continue
		}
		desired++
		if len(nodePods) == 0 {
			continue
		}
		current++
		nodePods = slices.Clone(nodePods)
		sortOldestFirst(nodePods)
		p := nodePods[0]
		if controller.IsPodReady(p) {
			ready++
			if controller.IsPodAvailable(p, s.ds.Spec.MinReadySeconds, s.now) {
				available++
			}
		}
		if isUpdated(p, s.hash) {
			updated++
		}
	}
	st.DesiredNumberScheduled = desired
	st.CurrentNumberScheduled = current
	st.NumberMisscheduled = misscheduled
	st.NumberReady = ready
	st.NumberAvailable = available
	st.NumberUnavailable = desired - available
	st.UpdatedNumberScheduled = updated
	if observe {
		st.ObservedGeneration = s.ds.Generation
	}
	return st
}

// writeStatus stores status on ds unless it is what is stored. On a
// conflict (the spec or metadata changed meanwhile) it writes the status
// onto the newer object: the observedGeneration it carries says which
// spec it describes.
func (dc *Controller) writeStatus(ctx context.Context, ds *appsv1.DaemonSet, status appsv1.DaemonSetStatus) error {
	if equality.Semantic.DeepEqual(ds.Status, status) {
		return nil
	}
	uid := ds.UID
	_, err := controller.Modify(ctx, dc.c, Resource, ds.Namespace, ds.Name, func(o state.Object) error {
		cur := o.(*appsv1.DaemonSet)
		if cur.UID != uid || equality.Semantic.DeepEqual(cur.Status, status) {
			return controller.ErrUnchanged
		}
		cur.Status = status
		return nil
	})
	if err != nil && !state.IsCode(err, state.CodeNotFound) {
		return fmt.Errorf("updating status of daemonset %s/%s: %w", ds.Namespace, ds.Name, err)
	}
	return nil
}

// Sync reconciles the DaemonSet with key ("namespace/name") once, now, as
// a worker would: for tests and tools that drive the controller step by
// step.
func (dc *Controller) Sync(ctx context.Context, key string) error { return dc.sync(ctx, key) }

// ExpectationsTimeout is how long a pod write whose outcome is unknown
// holds back its DaemonSet's creates and deletes when it is never seen
// (Kubernetes' value); see controller.Expectations.
const ExpectationsTimeout = 5 * time.Minute
