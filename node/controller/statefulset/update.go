package statefulset

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// Event reasons, as Kubernetes' StatefulSet controller records them on
// the StatefulSet.
const (
	reasonSuccessfulCreate = "SuccessfulCreate"
	reasonFailedCreate     = "FailedCreate"
	reasonSuccessfulDelete = "SuccessfulDelete"
	reasonFailedDelete     = "FailedDelete"
	reasonSuccessfulUpdate = "SuccessfulUpdate"
	reasonFailedUpdate     = "FailedUpdate"
	reasonRecreatingFailed = "RecreatingFailedPod"
	reasonRecreatingDone   = "RecreatingTerminatedPod"
)

// initialBatch is the first batch of a Parallel round's creates and
// deletes; batches then double (slow start), so a cause that fails every
// create costs few calls.
const initialBatch = 1

// round is one sync's view of a StatefulSet's identities.
type round struct {
	sc        *Controller
	set       *appsv1.StatefulSet
	hist      *history
	monotonic bool // OrderedReady
	// replicas[i] is the pod of ordinal start+i, nil when there is none.
	replicas []*corev1.Pod
	// condemned are the pods whose ordinals are out of range, highest
	// ordinal first.
	condemned []*corev1.Pod
}

// manage makes set's pods and claims match its spec, as Kubernetes'
// updateStatefulSet does, in four steps that each may end the round:
// the identities in range (create, recreate, wait); the claims of
// condemned pods (retention policy); scale-down; the rolling update.
func (sc *Controller) manage(ctx context.Context, set *appsv1.StatefulSet, hist *history, pods []*corev1.Pod) error {
	start, n := startOrdinal(set), replicasOf(set)
	r := &round{
		sc: sc, set: set, hist: hist,
		monotonic: set.Spec.PodManagementPolicy != appsv1.ParallelPodManagement,
		replicas:  make([]*corev1.Pod, n),
	}
	for _, p := range pods {
		if ord := ordinalOf(p); inRange(set, ord) {
			r.replicas[ord-start] = p
		} else {
			r.condemned = append(r.condemned, p)
		}
	}
	sort.Slice(r.condemned, func(i, j int) bool { return ordinalOf(r.condemned[i]) > ordinalOf(r.condemned[j]) })

	if stop, err := r.forAll(len(r.replicas), func(i int) (bool, error) { return r.processReplica(ctx, i) }); stop || err != nil {
		return err
	}
	fixClaims := func(i int) (bool, error) { return false, sc.fixClaimOwners(ctx, set, r.condemned[i]) }
	if stop, err := r.forAll(len(r.condemned), fixClaims); stop || err != nil {
		return err
	}
	// Monotonically, every identity in range is now healthy and available:
	// scale-down may proceed. It goes before updates.
	firstUnhealthy := r.firstUnhealthyCondemned()
	if stop, err := r.forAll(len(r.condemned), func(i int) (bool, error) {
		return r.processCondemned(ctx, i, firstUnhealthy)
	}); stop || err != nil {
		return err
	}
	if !isRollingUpdate(set) {
		return nil // OnDelete: pods are updated when someone deletes them
	}
	return r.rollingUpdate(ctx)
}

// forAll runs fn for 0..n-1: in order, stopping when fn says so, for
// OrderedReady; for Parallel, concurrently in batches of 1, 2, 4, …,
// stopping after a batch with an error.
func (r *round) forAll(n int, fn func(i int) (stop bool, err error)) (bool, error) {
	if r.monotonic {
		for i := range n {
			if stop, err := fn(i); stop || err != nil {
				return true, err
			}
		}
		return false, nil
	}
	for lo, batch := 0, initialBatch; lo < n; lo, batch = lo+batch, 2*batch {
		hi := min(lo+batch, n)
		errs := make([]error, hi-lo)
		var wg sync.WaitGroup
		for i := lo; i < hi; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); _, errs[i-lo] = fn(i) }()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return true, err
		}
	}
	return false, nil
}

// processReplica brings the identity at index i to life: it replaces a
// finished pod, creates a missing one (with its claims), and, in order,
// waits for the pod to be running, ready and available. It also keeps a
// live pod's identity labels and claim owners as they should be.
func (r *round) processReplica(ctx context.Context, i int) (bool, error) {
	sc, set := r.sc, r.set
	pod := r.replicas[i]
	if pod != nil && controller.IsPodFinished(pod) {
		if pod.DeletionTimestamp == nil {
			if pod.Status.Phase == corev1.PodFailed {
				sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeWarning, reasonRecreatingFailed,
					"StatefulSet %s/%s is recreating failed Pod %s", set.Namespace, set.Name, pod.Name)
			} else {
				sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeNormal, reasonRecreatingDone,
					"StatefulSet %s/%s is recreating terminated Pod %s", set.Namespace, set.Name, pod.Name)
			}
			if err := sc.deletePod(ctx, set, pod); err != nil {
				return true, err
			}
		}
		// A finished pod normally goes at once; if it is still there
		// (finalizers), its identity waits for it.
		if cur, ok := sc.c.Store.Get(controller.ResourcePods, pod.Namespace, pod.Name); ok && cur.GetUID() == pod.UID {
			r.replicas[i] = cur.(*corev1.Pod)
			return true, nil
		}
		r.replicas[i], pod = nil, nil
	}
	if pod == nil {
		pod = newPod(sc.c, set, r.revisionFor(i), startOrdinal(set)+i)
		if stale, err := sc.claimsStale(set, pod); stale || err != nil {
			// A claim still belongs to the condemned pod of an earlier
			// scale-down; the garbage collector is removing it.
			return true, err
		}
		if err := sc.createPod(ctx, set, pod); err != nil {
			return true, err
		}
		r.replicas[i] = pod
		return r.monotonic, nil
	}
	if pod.Status.Phase == corev1.PodPending {
		// Its claims may have been deleted since it was made.
		if err := sc.createClaims(ctx, set, pod); err != nil {
			return true, err
		}
	}
	if r.monotonic && (pod.DeletionTimestamp != nil || !isAvailable(set, pod, sc.c)) {
		return true, nil
	}
	if pod.DeletionTimestamp != nil {
		return false, nil
	}
	if err := sc.fixIdentity(ctx, set, pod, startOrdinal(set)+i); err != nil {
		return true, err
	}
	return false, sc.fixClaimOwners(ctx, set, pod)
}

// revisionFor is the revision a new pod at index i is made from: the
// current one below the rolling update's partition, the update revision
// otherwise (and always with OnDelete).
func (r *round) revisionFor(i int) *revision {
	if isRollingUpdate(r.set) && i < partitionOf(r.set) {
		return r.hist.current
	}
	return r.hist.update
}

// firstUnhealthyCondemned is the condemned pod with the lowest ordinal
// that is not healthy, or nil.
func (r *round) firstUnhealthyCondemned() *corev1.Pod {
	var first *corev1.Pod
	for _, p := range r.condemned { // highest ordinal first
		if !isHealthy(p) {
			first = p
		}
	}
	return first
}

// processCondemned deletes the condemned pod at index i (highest ordinal
// first). In order, one pod at a time: it waits for a terminating pod to
// be gone, and for an unhealthy one to recover unless it is the lowest
// unhealthy one (which cannot wait for anything else).
func (r *round) processCondemned(ctx context.Context, i int, firstUnhealthy *corev1.Pod) (bool, error) {
	pod := r.condemned[i]
	if pod.DeletionTimestamp != nil {
		return r.monotonic, nil
	}
	if r.monotonic && pod != firstUnhealthy && !isAvailable(r.set, pod, r.sc.c) {
		return true, nil
	}
	return true, r.sc.deletePod(ctx, r.set, pod)
}

// rollingUpdate deletes pods at ordinals ≥ partition that are not at the
// update revision, highest ordinal first, keeping at most maxUnavailable
// identities unavailable (a missing, unhealthy or not yet available pod is
// unavailable, wherever it is). An outdated pod that is unavailable anyway
// is replaced without counting against the budget (Kubernetes' default
// path would replace the highest outdated pod first even so, exceeding
// the budget; its maxUnavailable path would wait forever for the broken
// pod). With OrderedReady every pod is available by the time this runs,
// so this only matters for Parallel. The deleted pods are
// made again at the update revision by later rounds, once gone.
func (r *round) rollingUpdate(ctx context.Context) error {
	maxUnavailable := 1
	if ru := r.set.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.MaxUnavailable != nil {
		v, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxUnavailable, len(r.replicas), false)
		if err != nil {
			return fmt.Errorf("statefulset %s/%s: maxUnavailable: %w", r.set.Namespace, r.set.Name, err)
		}
		maxUnavailable = max(v, 1)
	}
	unavailable := 0
	for _, p := range r.replicas {
		if p == nil || !isAvailable(r.set, p, r.sc.c) {
			unavailable++
		}
	}
	for i := len(r.replicas) - 1; i >= partitionOf(r.set); i-- {
		p := r.replicas[i]
		if p == nil || p.DeletionTimestamp != nil || revisionOf(p) == r.hist.update.name {
			continue
		}
		if isAvailable(r.set, p, r.sc.c) {
			if unavailable >= maxUnavailable {
				continue // an unavailable outdated pod further down may still go
			}
			unavailable++
		}
		if err := r.sc.deletePod(ctx, r.set, p); err != nil {
			return err
		}
	}
	return nil
}

// createPod creates pod's missing claims, then pod itself, then points
// the claims' owners at it as the retention policy asks. The pod is
// created under its fixed name only: an existing pod of that name, of any
// age or owner, keeps the identity (no second copy).
func (sc *Controller) createPod(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	if err := controller.AdmitPod(sc.c, pod); err != nil {
		sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeWarning, reasonFailedCreate,
			"create Pod %s in StatefulSet %s failed error: %v", pod.Name, set.Name, err)
		return err
	}
	if err := sc.createClaims(ctx, set, pod); err != nil {
		sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeWarning, reasonFailedCreate,
			"create Pod %s in StatefulSet %s failed error: %v", pod.Name, set.Name, err)
		return err
	}
	rs, err := sc.c.Proposer.Propose(ctx, state.Create(pod))
	if state.IsCode(err, state.CodeAlreadyExists) {
		return fmt.Errorf("creating pod %s/%s: a pod of that name exists (not this StatefulSet's, or not yet seen)", pod.Namespace, pod.Name)
	}
	if err != nil {
		sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeWarning, reasonFailedCreate,
			"create Pod %s in StatefulSet %s failed error: %v", pod.Name, set.Name, err)
		return fmt.Errorf("creating pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	pod.ResourceVersion = fmt.Sprint(rs[0].RV)
	sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeNormal, reasonSuccessfulCreate,
		"create Pod %s in StatefulSet %s successful", pod.Name, set.Name)
	return sc.fixClaimOwners(ctx, set, pod)
}

// createClaims creates the claims of pod's identity that do not exist. A
// claim being deleted is an error: the pod must not start on the old
// volume, nor its claim be made again before the old one is gone.
func (sc *Controller) createClaims(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	ord := ordinalOf(pod)
	var errs []error
	for i := range set.Spec.VolumeClaimTemplates {
		t := &set.Spec.VolumeClaimTemplates[i]
		name := claimName(set, t, ord)
		if o, ok := sc.c.Store.Get(resourceClaims, set.Namespace, name); ok {
			if o.GetDeletionTimestamp() != nil {
				errs = append(errs, fmt.Errorf("pvc %s is being deleted", name))
			}
			continue
		}
		pvc := newClaim(sc.c, set, t, ord)
		_, err := sc.c.Proposer.Propose(ctx, state.Create(pvc))
		switch {
		case state.IsCode(err, state.CodeAlreadyExists):
			// Made meanwhile (an earlier create that committed late).
		case err != nil:
			errs = append(errs, fmt.Errorf("failed to create PVC %s: %w", name, err))
			sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeWarning, reasonFailedCreate,
				"create Claim %s for Pod %s in StatefulSet %s failed error: %v", name, pod.Name, set.Name, err)
		default:
			sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeNormal, reasonSuccessfulCreate,
				"create Claim %s Pod %s in StatefulSet %s success", name, pod.Name, set.Name)
		}
	}
	return errors.Join(errs...)
}

// claimsStale reports whether a claim of pod's identity (pod not created
// yet) still references an earlier pod of that identity: with
// whenScaled=Delete that claim is on its way out and must not be reused.
func (sc *Controller) claimsStale(set *appsv1.StatefulSet, pod *corev1.Pod) (bool, error) {
	if retentionOf(set).WhenScaled != appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
		return false, nil
	}
	ord := ordinalOf(pod)
	for i := range set.Spec.VolumeClaimTemplates {
		name := claimName(set, &set.Spec.VolumeClaimTemplates[i], ord)
		if o, ok := sc.c.Store.Get(resourceClaims, set.Namespace, name); ok && hasStaleOwnerRef(o, pod, podGVK) {
			return true, nil
		}
	}
	return false, nil
}

// fixClaimOwners updates the owner references of pod's existing claims
// where the retention policy asks for others.
func (sc *Controller) fixClaimOwners(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	ord := ordinalOf(pod)
	var errs []error
	for i := range set.Spec.VolumeClaimTemplates {
		name := claimName(set, &set.Spec.VolumeClaimTemplates[i], ord)
		o, ok := sc.c.Store.Get(resourceClaims, set.Namespace, name)
		if !ok || claimOwnersUpToDate(o.(*corev1.PersistentVolumeClaim), set, pod) {
			continue
		}
		_, err := controller.Modify(ctx, sc.c, resourceClaims, set.Namespace, name, func(obj state.Object) error {
			pvc := obj.(*corev1.PersistentVolumeClaim)
			if claimOwnersUpToDate(pvc, set, pod) {
				return controller.ErrUnchanged
			}
			setClaimOwners(pvc, set, pod)
			return nil
		})
		if err != nil && !state.IsCode(err, state.CodeNotFound) {
			errs = append(errs, fmt.Errorf("updating the owners of claim %s/%s: %w", set.Namespace, name, err))
			sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeWarning, reasonFailedUpdate,
				"update Claim %s for Pod %s in StatefulSet %s failed error: %v", name, pod.Name, set.Name, err)
		}
	}
	return errors.Join(errs...)
}

// fixIdentity restores the identity labels of a live pod (a user may have
// removed them; older pods may lack the pod-index label).
func (sc *Controller) fixIdentity(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod, ordinal int) error {
	index := fmt.Sprint(ordinal)
	if pod.Labels[PodNameLabel] == pod.Name && pod.Labels[PodIndexLabel] == index {
		return nil
	}
	uid := pod.UID
	_, err := controller.Modify(ctx, sc.c, controller.ResourcePods, pod.Namespace, pod.Name, func(obj state.Object) error {
		p := obj.(*corev1.Pod)
		if p.UID != uid || (p.Labels[PodNameLabel] == p.Name && p.Labels[PodIndexLabel] == index) {
			return controller.ErrUnchanged
		}
		l := copyMap(p.Labels)
		if l == nil {
			l = map[string]string{}
		}
		l[PodNameLabel], l[PodIndexLabel] = p.Name, index
		p.Labels = l
		return nil
	})
	switch {
	case state.IsCode(err, state.CodeNotFound):
		return nil
	case err != nil:
		sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeWarning, reasonFailedUpdate,
			"update Pod %s in StatefulSet %s failed error: %v", pod.Name, set.Name, err)
		return fmt.Errorf("updating pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeNormal, reasonSuccessfulUpdate,
		"update Pod %s in StatefulSet %s successful", pod.Name, set.Name)
	return nil
}

// deletePod deletes pod as the API would (gracefully when it runs on a
// node).
func (sc *Controller) deletePod(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	if err := controller.DeletePod(ctx, sc.c, pod); err != nil {
		sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeWarning, reasonFailedDelete,
			"delete Pod %s in StatefulSet %s failed error: %v", pod.Name, set.Name, err)
		return err
	}
	sc.c.Events.Eventf(set, GVK.Kind, corev1.EventTypeNormal, reasonSuccessfulDelete,
		"delete Pod %s in StatefulSet %s successful", pod.Name, set.Name)
	return nil
}
