// Package statefulset is the StatefulSet controller: it gives each replica
// a stable identity — pod <set>-<ordinal> with hostname <set>-<ordinal>,
// subdomain spec.serviceName, and its own PersistentVolumeClaims
// <template>-<set>-<ordinal> made from spec.volumeClaimTemplates — and
// keeps those identities at spec.replicas, as kube-controller-manager's
// StatefulSet controller does:
//
//   - podManagementPolicy OrderedReady creates ordinals in order, one at a
//     time, each Running, Ready and available (minReadySeconds) before the
//     next, and scales down from the highest ordinal, one at a time,
//     waiting for each pod to be gone; Parallel creates and deletes
//     without waiting;
//   - updateStrategy RollingUpdate replaces the pods at ordinals ≥
//     partition (counted from spec.ordinals.start) that are not at the
//     update revision, highest ordinal first, at most maxUnavailable
//     (default 1) unavailable at a time, each remade at the update revision
//     once the old pod is gone; pods below the partition stay at (and are
//     remade from) the current revision; OnDelete leaves pods alone until
//     someone deletes them;
//   - a failed (or succeeded) pod is deleted and made again under the same
//     name; a pod of an identity is never made while an older pod of that
//     identity still exists, Terminating included (no two copies of one
//     identity: the store's unique names enforce it);
//   - claims are made before their pod, labelled with the selector's
//     matchLabels, and kept when pods go unless
//     persistentVolumeClaimRetentionPolicy says Delete: the controller then
//     makes the claim a dependent of the StatefulSet (whenDeleted) or of
//     the condemned pod (whenScaled) and the garbage collector removes it;
//   - status: replicas, readyReplicas, availableReplicas, currentReplicas,
//     updatedReplicas, currentRevision, updateRevision, collisionCount and
//     observedGeneration (all that kubectl rollout status reads).
//
// Revisions. A revision is named <set>-<hash>, the hash of the pod template
// (FNV-32a over the template dumped for hashing, and the collision count, as
// for Deployments), and is the pods' controller-revision-hash label.
// ControllerRevisions are not a stored kind in Shoal (not served by the
// API: kubectl rollout history and undo do not work for StatefulSets), but
// a partitioned rollout must remake a pod below the partition from the
// current revision's template after the StatefulSet's template changed. So
// the controller keeps each revision as an internal record of the store (a
// ControllerRevision, protobuf, under statefulsets/revisions/<namespace>/
// <set>/<revision>): replicated, snapshotted, written through the proposer
// like everything else, and trimmed to revisionHistoryLimit, deleted with
// the StatefulSet.
//
// Not supported: the ControllerRevision API (above); detecting hash
// collisions; changing the volumes of a live pod whose claims do not match
// the templates (its missing claims are made, as Kubernetes does for
// pending pods); status conditions (Kubernetes sets none either).
//
// It runs on the leader only and keeps no state of its own: pods, claims,
// status and revision records are all in the store, so a new leader picks
// up mid-rollout where the old one stopped. Writes whose outcome is unknown
// need no bookkeeping either: every object has a fixed name, so repeating
// a create that did commit fails with AlreadyExists and never makes a
// second copy.
package statefulset

import (
	"context"
	"errors"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// DefaultWorkers is how many StatefulSets are synced at once.
const DefaultWorkers = 5

// Store keys of the kinds the controller reads and writes.
const (
	// Resource is the store key of StatefulSets.
	Resource = "statefulsets.apps"
	// resourceClaims is the store key of PersistentVolumeClaims.
	resourceClaims = "persistentvolumeclaims"
)

// GVK is the StatefulSet kind, as owner references name it.
var GVK = appsv1.SchemeGroupVersion.WithKind("StatefulSet")

// podGVK is the Pod kind, for claims a condemned pod owns.
var podGVK = corev1.SchemeGroupVersion.WithKind("Pod")

// Controller is the StatefulSet controller. Create it with New, then call
// Run once; a Controller is not reused after Run returns (a new leader
// term makes a new one).
type Controller struct {
	c     controller.Context
	queue controller.Queue
	// Workers is how many keys are synced concurrently (DefaultWorkers);
	// set it before Run.
	Workers int
}

// New returns a StatefulSet controller.
func New(c controller.Context) *Controller {
	c = c.WithDefaults()
	return &Controller{c: c, queue: controller.NewQueue("statefulset", c.Clock), Workers: DefaultWorkers}
}

// Run watches StatefulSets, pods and PersistentVolumeClaims and syncs
// StatefulSets until ctx ends.
func (sc *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Revision records of StatefulSets deleted while no controller ran
	// are dropped by syncing their (gone) keys.
	for _, key := range historyOwners(sc.c.Store) {
		sc.queue.Add(key)
	}
	var wg sync.WaitGroup
	for resource, handle := range map[string]func(state.Event){
		Resource:                sc.onStatefulSet,
		controller.ResourcePods: sc.onPod,
		resourceClaims:          sc.onClaim,
	} {
		wg.Add(1)
		go func() { defer wg.Done(); controller.Watch(ctx, sc.c.Store, resource, handle) }()
	}
	controller.Run(ctx, sc.queue, sc.Workers, sc.c.Log, sc.sync)
	cancel()
	wg.Wait()
}

func (sc *Controller) onStatefulSet(ev state.Event) {
	sc.queue.Add(controller.Key(ev.Object.GetNamespace(), ev.Object.GetName()))
}

// onPod enqueues the StatefulSets a pod change matters to: its controller
// (before and after the change) or, for an orphan, the StatefulSets that
// could adopt it.
func (sc *Controller) onPod(ev state.Event) {
	controller.EnqueueOwners(ev, GVK, sc.queue.Add, func(o metav1.Object) []string {
		pod := o.(*corev1.Pod)
		var keys []string
		for _, set := range sc.matchingSets(pod.Namespace, pod.Labels) {
			if isMemberOf(set, pod) {
				keys = append(keys, controller.Key(set.Namespace, set.Name))
			}
		}
		return keys
	})
}

// onClaim enqueues the StatefulSets a claim change matters to: a pod
// waits for its claim to go away when the claim is being deleted or still
// belongs to a condemned pod, and claims' owner references follow the
// retention policy.
func (sc *Controller) onClaim(ev state.Event) {
	for _, o := range []state.Object{ev.Prev, ev.Object} {
		pvc, ok := o.(*corev1.PersistentVolumeClaim)
		if !ok {
			continue
		}
		for _, ref := range pvc.OwnerReferences {
			switch {
			case isRef(&ref, GVK):
				sc.queue.Add(controller.Key(pvc.Namespace, ref.Name))
			case isRef(&ref, podGVK):
				if parent, ord := parentAndOrdinal(ref.Name); ord >= 0 {
					sc.queue.Add(controller.Key(pvc.Namespace, parent))
				}
			}
		}
		for _, set := range sc.matchingSets(pvc.Namespace, pvc.Labels) {
			if len(set.Spec.VolumeClaimTemplates) > 0 {
				sc.queue.Add(controller.Key(set.Namespace, set.Name))
			}
		}
	}
}

// matchingSets are the StatefulSets in namespace whose selector matches
// lbls.
func (sc *Controller) matchingSets(namespace string, lbls map[string]string) []*appsv1.StatefulSet {
	if len(lbls) == 0 {
		return nil
	}
	objs, _ := sc.c.Store.List(Resource, namespace)
	var out []*appsv1.StatefulSet
	for _, o := range objs {
		set := o.(*appsv1.StatefulSet)
		if sel, err := selectorOf(set); err == nil && sel.Matches(labels.Set(lbls)) {
			out = append(out, set)
		}
	}
	return out
}

// isRef reports whether ref names an object of kind gvk.
func isRef(ref *metav1.OwnerReference, gvk schema.GroupVersionKind) bool {
	return ref.Kind == gvk.Kind && ref.APIVersion == gvk.GroupVersion().String()
}

// selectorOf is set's pod selector; an empty one (which would match every
// pod: the API refuses it) is an error.
func selectorOf(set *appsv1.StatefulSet) (labels.Selector, error) {
	sel, err := metav1.LabelSelectorAsSelector(set.Spec.Selector)
	if err != nil {
		return nil, err
	}
	if sel.Empty() {
		return nil, errors.New("empty selector")
	}
	return sel, nil
}

// sync reconciles one StatefulSet: claim its pods, find its revisions,
// make pods and claims match the spec (unless it is being deleted), then
// write its status and trim its revision history.
func (sc *Controller) sync(ctx context.Context, key string) error {
	ns, name := controller.SplitKey(key)
	o, ok := sc.c.Store.Get(Resource, ns, name)
	if !ok {
		return sc.dropHistory(ctx, ns, name)
	}
	set := o.(*appsv1.StatefulSet)
	sel, err := selectorOf(set)
	if err != nil {
		sc.c.Log.Warn("statefulset: invalid selector", "statefulset", key, "err", err)
		return nil
	}
	pods, err := sc.claimPods(ctx, set, sel)
	if err != nil {
		return err
	}
	hist, err := sc.revisions(ctx, set)
	if err != nil {
		return err
	}
	var manageErr error
	if set.DeletionTimestamp == nil {
		manageErr = sc.manage(ctx, set, hist, pods)
	}
	// The store already shows what was written (read-your-writes).
	pods = sc.ownedPods(set, sel)
	now := sc.c.Now()
	status := computeStatus(set, pods, hist, now)
	statusErr := sc.writeStatus(ctx, set, status)
	historyErr := sc.truncateHistory(ctx, set, hist, pods)
	if d := nextAvailable(pods, set.Spec.MinReadySeconds, now); d > 0 {
		sc.queue.AddAfter(key, d)
	}
	return errors.Join(manageErr, statusErr, historyErr)
}

// claimPods returns the pods set controls after adopting orphans that
// match its selector and carry one of its identities, and releasing owned
// pods it no longer selects. Pods being deleted and finished pods are
// included: they still hold their identity.
func (sc *Controller) claimPods(ctx context.Context, set *appsv1.StatefulSet, sel labels.Selector) ([]*corev1.Pod, error) {
	objs, _ := sc.c.Store.List(controller.ResourcePods, set.Namespace)
	var members []*corev1.Pod
	for _, o := range objs {
		if p := o.(*corev1.Pod); isMemberOf(set, p) {
			members = append(members, p)
		}
	}
	m := controller.NewRefManager(sc.c, set, GVK, sel, controller.ResourcePods)
	return controller.Claim(ctx, m, members)
}

// ownedPods lists the member pods set controls and selects, as the store
// has them now.
func (sc *Controller) ownedPods(set *appsv1.StatefulSet, sel labels.Selector) []*corev1.Pod {
	objs, _ := sc.c.Store.List(controller.ResourcePods, set.Namespace)
	var out []*corev1.Pod
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if isMemberOf(set, p) && controller.IsControlledBy(p, set) && sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

// nextAvailable is how long until the next ready pod of pods becomes
// available (0: none pending).
func nextAvailable(pods []*corev1.Pod, minReadySeconds int32, now time.Time) time.Duration {
	var next time.Duration
	if minReadySeconds == 0 {
		return 0
	}
	for _, p := range pods {
		if d := controller.PodAvailableIn(p, minReadySeconds, now); d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	return next
}

// Sync reconciles the StatefulSet with key ("namespace/name") once, now,
// as a worker would: for tests and tools that drive the controller step by
// step.
func (sc *Controller) Sync(ctx context.Context, key string) error { return sc.sync(ctx, key) }
