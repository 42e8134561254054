package daemonset

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/controller"
)

// manage brings each node to the pods it should have (Kubernetes'
// manage/podsShouldBeOnNode): a pod where one is missing, failed and
// finished pods deleted (failed ones under a per-node back-off), excess
// pods deleted (all but the oldest; with surge, at most one old and one
// new), every pod deleted from nodes that should not keep one, and pods
// of nodes that no longer exist deleted at once.
func (dc *Controller) manage(ctx context.Context, s *syncState, byNode map[string][]*corev1.Pod) error {
	surge := allowsSurge(s.ds)
	var create []string
	var del []*corev1.Pod
	for _, n := range s.nodes {
		v := s.verdicts[n.Name]
		pods, has := byNode[n.Name]
		switch {
		case v.shouldRun && !has:
			create = append(create, n.Name)
		case v.shouldContinue:
			var running []*corev1.Pod
			for _, p := range pods {
				switch {
				case p.DeletionTimestamp != nil:
				case p.Status.Phase == corev1.PodFailed:
					if !dc.failedPodMayGo(s, n.Name) {
						continue
					}
					dc.c.Events.Eventf(s.ds, GVK.Kind, corev1.EventTypeWarning, reasonFailedDaemonPod,
						"Found failed daemon pod %s/%s on node %s, will try to kill it", p.Namespace, p.Name, n.Name)
					del = append(del, p)
				case p.Status.Phase == corev1.PodSucceeded:
					del = append(del, p)
				default:
					running = append(running, p)
				}
			}
			c, d := pruneNode(s, running, surge, v.shouldRun, n.Name)
			create = append(create, c...)
			del = append(del, d...)
		case has:
			// The node should not keep a daemon pod.
			for _, p := range pods {
				if p.DeletionTimestamp == nil {
					del = append(del, p)
				}
			}
		}
	}
	// Pods of nodes that are gone: deleted at once (DeletePod gives a pod
	// on a missing node no grace), even those already terminating, whose
	// agent will never finish them.
	exists := make(map[string]bool, len(s.nodes))
	for _, n := range s.nodes {
		exists[n.Name] = true
	}
	var gone []string
	for name := range byNode {
		if !exists[name] {
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	for _, name := range gone {
		for _, p := range byNode[name] {
			if p.DeletionTimestamp == nil || len(p.Finalizers) == 0 {
				del = append(del, p)
			}
		}
	}
	return dc.syncNodes(ctx, s, create, del)
}

// failedPodMayGo reports whether a failed pod on node may be replaced now,
// advancing the node's back-off if so; otherwise the sync comes back when
// the back-off ends. Kubernetes spaces replacements out like this because
// a node that keeps rejecting a pod would otherwise make the controller
// and the node fight in a hot loop.
func (dc *Controller) failedPodMayGo(s *syncState, node string) bool {
	key := string(s.ds.UID) + "/" + node
	if dc.backoff.IsInBackOffSinceUpdate(key, s.now) {
		s.requeueAfter(dc.backoff.Get(key))
		return false
	}
	dc.backoff.Next(key, s.now)
	return true
}

// pruneNode decides about a node's live (not deleting, not finished) daemon
// pods. Without surge only the oldest stays. With surge, at most two stay:
// the oldest up-to-date pod and the oldest old one, and the old one goes
// once the new one is available or when the old one is not ready; with no
// pod left, a node that should run one gets one.
func pruneNode(s *syncState, running []*corev1.Pod, surge, shouldRun bool, node string) (create []string, del []*corev1.Pod) {
	if len(running) == 0 {
		if surge && shouldRun {
			create = append(create, node)
		}
		return create, nil
	}
	if len(running) == 1 {
		return nil, nil
	}
	running = slices.Clone(running)
	sortOldestFirst(running)
	if !surge {
		return nil, running[1:]
	}
	var oldestNew, oldestOld *corev1.Pod
	for _, p := range running {
		switch {
		case isUpdated(p, s.hash) && oldestNew == nil:
			oldestNew = p
		case !isUpdated(p, s.hash) && oldestOld == nil:
			oldestOld = p
		default:
			del = append(del, p)
		}
	}
	if oldestNew != nil && oldestOld != nil &&
		(!controller.IsPodReady(oldestOld) || controller.IsPodAvailable(oldestNew, s.ds.Spec.MinReadySeconds, s.now)) {
		del = append(del, oldestOld)
	}
	return nil, del
}

// rollingUpdate moves the update forward within its budget (Kubernetes'
// rollingUpdate). Without surge it deletes old pods — unavailable ones at
// once, available ones only while fewer than maxUnavailable nodes lack an
// available pod — and manage puts new pods in their place once they are
// gone. Unlike Kubernetes' controller, a node whose old pod is unavailable
// counts against maxUnavailable too, so the controller never takes the
// number of nodes without an available pod above maxUnavailable; broken
// old pods are still replaced at once, so the update cannot stall on them.
// With surge it creates new pods beside old ones — at once beside
// unavailable old pods, beside available ones while fewer than maxSurge
// nodes are surging — and deletes an old pod once the new one beside it is
// available; maxUnavailable is not used then, as in Kubernetes.
//
// Only nodes that should run a pod take part (Kubernetes also updates the
// pods that nodes merely keep): a pod on a node that is not Ready or has a
// NoSchedule taint it does not tolerate is left as it is — deleting it
// could not be followed by a new one, and on a node that is down the
// deletion would never finish and hold the budget for good. It is updated
// once the node takes new pods again.
func (dc *Controller) rollingUpdate(ctx context.Context, s *syncState, byNode map[string][]*corev1.Pod) error {
	var names []string // the nodes that should run a pod, by name
	for _, n := range s.nodes {
		if s.verdicts[n.Name].shouldRun {
			names = append(names, n.Name)
		}
	}
	maxSurge, maxUnavailable, err := surgeAndUnavailable(s.ds, len(names))
	if err != nil {
		return err
	}

	if maxSurge == 0 {
		unavailable := 0
		var replace, candidates []*corev1.Pod
		for _, name := range names {
			newPod, oldPod, ok := updatedPodsOnNode(s, byNode[name])
			switch {
			case !ok, oldPod == nil && newPod == nil, oldPod != nil && newPod != nil:
				// manage sorts this node out; until then it is unavailable.
				unavailable++
			case newPod != nil:
				if !controller.IsPodAvailable(newPod, s.ds.Spec.MinReadySeconds, s.now) {
					unavailable++
				}
			case !controller.IsPodAvailable(oldPod, s.ds.Spec.MinReadySeconds, s.now):
				// Replacing an old pod that is not available costs no
				// availability, so it is always allowed; the node still
				// counts as unavailable.
				replace = append(replace, oldPod)
				unavailable++
			case unavailable < maxUnavailable:
				candidates = append(candidates, oldPod)
			}
		}
		budget := min(max(maxUnavailable-unavailable, 0), len(candidates))
		return dc.syncNodes(ctx, s, nil, append(replace, candidates[:budget]...))
	}

	surging := 0
	var del []*corev1.Pod
	var replaceOn, candidateNodes []string
	for _, name := range names {
		newPod, oldPod, ok := updatedPodsOnNode(s, byNode[name])
		switch {
		case !ok:
			surging++
		case oldPod == nil:
			// Up to date, or empty: manage's business.
		case newPod == nil:
			switch {
			case !controller.IsPodAvailable(oldPod, s.ds.Spec.MinReadySeconds, s.now):
				replaceOn = append(replaceOn, name)
			case surging < maxSurge:
				candidateNodes = append(candidateNodes, name)
			}
		case !controller.IsPodAvailable(newPod, s.ds.Spec.MinReadySeconds, s.now):
			surging++
		default:
			del = append(del, oldPod)
		}
	}
	budget := min(max(maxSurge-surging, 0), len(candidateNodes))
	return dc.syncNodes(ctx, s, append(replaceOn, candidateNodes[:budget]...), del)
}

// updatedPodsOnNode returns a node's live up-to-date and old pod; ok is
// false when it has more than one of either (manage prunes those first).
func updatedPodsOnNode(s *syncState, pods []*corev1.Pod) (newPod, oldPod *corev1.Pod, ok bool) {
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		if isUpdated(p, s.hash) {
			if newPod != nil {
				return nil, nil, false
			}
			newPod = p
		} else {
			if oldPod != nil {
				return nil, nil, false
			}
			oldPod = p
		}
	}
	return newPod, oldPod, true
}

// syncNodes creates a pod for each node of create, in slow-start batches,
// and deletes the pods of del in parallel, each up to BurstReplicas.
func (dc *Controller) syncNodes(ctx context.Context, s *syncState, create []string, del []*corev1.Pod) error {
	create = create[:min(len(create), BurstReplicas)]
	del = del[:min(len(del), BurstReplicas)]
	var createErr error
	if len(create) > 0 {
		template := podTemplate(s.ds, s.hash)
		ref := controller.NewControllerRef(s.ds, GVK)
		createErr = slowStartBatch(len(create), func(i int) error { return dc.createPod(ctx, s, template, ref, create[i]) })
	}
	errs := make([]error, len(del))
	sem := make(chan struct{}, deleteParallelism)
	var wg sync.WaitGroup
	for i, p := range del {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = dc.deletePod(ctx, s, p)
		}()
	}
	wg.Wait()
	var deleteErr error
	for _, err := range errs {
		if err != nil {
			deleteErr = err // they are likely all the same: report one
			break
		}
	}
	return errors.Join(createErr, deleteErr)
}

func (dc *Controller) createPod(ctx context.Context, s *syncState, template *corev1.PodTemplateSpec, ref *metav1.OwnerReference, node string) error {
	pod := controller.NewPodFromTemplate(dc.c, template, s.ds, ref)
	pinToNode(&pod.Spec, node)
	err := controller.CreatePod(ctx, dc.c, pod)
	if err != nil {
		if controller.UnknownOutcome(err) {
			dc.exp.Expect(s.key, pod, true, dc.c.Now())
		}
		dc.c.Events.Eventf(s.ds, GVK.Kind, corev1.EventTypeWarning, reasonFailedCreate, "Error creating: %v", err)
		return err
	}
	dc.c.Events.Eventf(s.ds, GVK.Kind, corev1.EventTypeNormal, reasonSuccessfulCreate, "Created pod: %s", pod.Name)
	return nil
}

func (dc *Controller) deletePod(ctx context.Context, s *syncState, pod *corev1.Pod) error {
	err := controller.DeletePod(ctx, dc.c, pod)
	if err != nil {
		if controller.UnknownOutcome(err) {
			dc.exp.Expect(s.key, pod, false, dc.c.Now())
		}
		dc.c.Events.Eventf(s.ds, GVK.Kind, corev1.EventTypeWarning, reasonFailedDelete, "Error deleting: %v", err)
		return err
	}
	dc.c.Events.Eventf(s.ds, GVK.Kind, corev1.EventTypeNormal, reasonSuccessfulDelete, "Deleted pod: %s", pod.Name)
	return nil
}

// slowStartBatch calls fn(0…count-1) in batches that start at 1 and
// double after each batch that fully succeeded; it stops at the first
// batch with a failure (so a cause that fails every create — a bad
// template, a namespace going away — costs few calls) and returns one
// error.
func slowStartBatch(count int, fn func(i int) error) error {
	for pos, batch := 0, min(count, 1); batch > 0; pos, batch = pos+batch, min(2*batch, count-pos-batch) {
		errs := make(chan error, batch)
		var wg sync.WaitGroup
		for i := pos; i < pos+batch; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fn(i); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			return <-errs
		}
	}
	return nil
}
