package endpoints

import (
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/shoal-dev/shoal/node/state"
)

// labelPair is one label (key and value) of a pod or a selector.
type labelPair struct{ key, value string }

// nameSet is a set of object names.
type nameSet map[string]struct{}

// index is what the controller keeps of the replica between events, so
// that one pod event costs work in proportion to the services it can
// matter to, and one sync work in proportion to the service's own pods:
//
//   - pods by namespace and name, and by namespace and label (every label of
//     every pod is a posting list);
//   - services with a selector, each filed under one label of its selector
//     (the one with the fewest services when it was filed): a pod can only
//     match a service whose filed label it carries, so routing a pod event
//     looks at the services filed under the pod's own labels only;
//   - the EndpointSlices this controller manages, by service.
//
// It only says where to look: every decision re-reads the store (services,
// Endpoints, slices, nodes) except the pods, which are taken as last seen
// here (a later pod event enqueues the service again).
type index struct {
	mu sync.RWMutex
	// guarded by mu:
	pods       map[string]map[string]*corev1.Pod // namespace → name → pod
	podsByPair map[string]map[labelPair]nameSet  // namespace → label → pod names
	svcs       map[string]map[string]svcEntry    // namespace → name → selector
	svcsByPair map[string]map[labelPair]nameSet  // namespace → filed label → service names
	slices     map[string]nameSet                // service key → managed slice names
	sliceSvc   map[string]string                 // "ns/slice" → service name
}

// svcEntry is an indexed service: its selector and the label it is filed
// under.
type svcEntry struct {
	selector map[string]string
	filed    labelPair
}

func newIndex() *index {
	ix := &index{}
	ix.resetPods(nil)
	ix.resetServices(nil)
	ix.resetSlices(nil)
	return ix
}

// --- pods ---

// resetPods replaces the pod index with objs.
func (ix *index) resetPods(objs []state.Object) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.pods = map[string]map[string]*corev1.Pod{}
	ix.podsByPair = map[string]map[labelPair]nameSet{}
	for _, o := range objs {
		ix.setPodLocked(o.(*corev1.Pod))
	}
}

// setPod records pod (replacing an earlier version).
func (ix *index) setPod(pod *corev1.Pod) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.setPodLocked(pod)
}

func (ix *index) setPodLocked(pod *corev1.Pod) {
	ix.deletePodLocked(pod.Namespace, pod.Name)
	byName := ix.pods[pod.Namespace]
	if byName == nil {
		byName = map[string]*corev1.Pod{}
		ix.pods[pod.Namespace] = byName
	}
	byName[pod.Name] = pod
	byPair := ix.podsByPair[pod.Namespace]
	if byPair == nil {
		byPair = map[labelPair]nameSet{}
		ix.podsByPair[pod.Namespace] = byPair
	}
	for k, v := range pod.Labels {
		p := labelPair{k, v}
		set := byPair[p]
		if set == nil {
			set = nameSet{}
			byPair[p] = set
		}
		set[pod.Name] = struct{}{}
	}
}

// deletePod forgets a pod.
func (ix *index) deletePod(namespace, name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.deletePodLocked(namespace, name)
}

func (ix *index) deletePodLocked(namespace, name string) {
	old, ok := ix.pods[namespace][name]
	if !ok {
		return
	}
	delete(ix.pods[namespace], name)
	if len(ix.pods[namespace]) == 0 {
		delete(ix.pods, namespace)
	}
	byPair := ix.podsByPair[namespace]
	for k, v := range old.Labels {
		p := labelPair{k, v}
		delete(byPair[p], name)
		if len(byPair[p]) == 0 {
			delete(byPair, p)
		}
	}
	if len(byPair) == 0 {
		delete(ix.podsByPair, namespace)
	}
}

// podsMatching returns the indexed pods of namespace that selector (not
// empty) matches, sorted by name. It walks the shortest posting list of
// the selector's labels.
func (ix *index) podsMatching(namespace string, selector map[string]string) []*corev1.Pod {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	byPair := ix.podsByPair[namespace]
	var shortest nameSet
	first := true
	for k, v := range selector {
		set := byPair[labelPair{k, v}]
		if len(set) == 0 {
			return nil
		}
		if first || len(set) < len(shortest) {
			shortest, first = set, false
		}
	}
	out := make([]*corev1.Pod, 0, len(shortest))
	for name := range shortest {
		pod := ix.pods[namespace][name]
		if pod != nil && selectorMatches(selector, pod.Labels) {
			out = append(out, pod)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// podsOnNode returns the indexed pods bound to node (a walk over every
// pod: used only when a node's zone changes).
func (ix *index) podsOnNode(node string) []*corev1.Pod {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []*corev1.Pod
	for _, byName := range ix.pods {
		for _, p := range byName {
			if p.Spec.NodeName == node {
				out = append(out, p)
			}
		}
	}
	return out
}

// --- services ---

// resetServices replaces the service index with objs.
func (ix *index) resetServices(objs []state.Object) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.svcs = map[string]map[string]svcEntry{}
	ix.svcsByPair = map[string]map[labelPair]nameSet{}
	for _, o := range objs {
		ix.setServiceLocked(o.(*corev1.Service))
	}
}

// setService records svc if it selects pods (else forgets it).
func (ix *index) setService(svc *corev1.Service) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.setServiceLocked(svc)
}

func (ix *index) setServiceLocked(svc *corev1.Service) {
	ix.deleteServiceLocked(svc.Namespace, svc.Name)
	if !selectsPods(svc) {
		return
	}
	byPair := ix.svcsByPair[svc.Namespace]
	if byPair == nil {
		byPair = map[labelPair]nameSet{}
		ix.svcsByPair[svc.Namespace] = byPair
	}
	// File it under the selector label with the fewest services (ties:
	// the smallest label), so that services sharing a label (tier=web)
	// spread over their distinct ones (app=…).
	var filed labelPair
	best := -1
	for k, v := range svc.Spec.Selector {
		p := labelPair{k, v}
		n := len(byPair[p])
		if best < 0 || n < best || n == best && (p.key < filed.key || p.key == filed.key && p.value < filed.value) {
			filed, best = p, n
		}
	}
	set := byPair[filed]
	if set == nil {
		set = nameSet{}
		byPair[filed] = set
	}
	set[svc.Name] = struct{}{}
	byName := ix.svcs[svc.Namespace]
	if byName == nil {
		byName = map[string]svcEntry{}
		ix.svcs[svc.Namespace] = byName
	}
	byName[svc.Name] = svcEntry{selector: svc.Spec.Selector, filed: filed}
}

// deleteService forgets a service.
func (ix *index) deleteService(namespace, name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.deleteServiceLocked(namespace, name)
}

func (ix *index) deleteServiceLocked(namespace, name string) {
	e, ok := ix.svcs[namespace][name]
	if !ok {
		return
	}
	delete(ix.svcs[namespace], name)
	if len(ix.svcs[namespace]) == 0 {
		delete(ix.svcs, namespace)
	}
	byPair := ix.svcsByPair[namespace]
	delete(byPair[e.filed], name)
	if len(byPair[e.filed]) == 0 {
		delete(byPair, e.filed)
	}
	if len(byPair) == 0 {
		delete(ix.svcsByPair, namespace)
	}
}

// hasService reports whether the service is indexed (it selects pods).
func (ix *index) hasService(namespace, name string) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	_, ok := ix.svcs[namespace][name]
	return ok
}

// servicesFor calls add with the key of every indexed service of
// namespace whose selector matches podLabels.
func (ix *index) servicesFor(namespace string, podLabels map[string]string, add func(key string)) {
	if len(podLabels) == 0 {
		return
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	byPair := ix.svcsByPair[namespace]
	if byPair == nil {
		return
	}
	byName := ix.svcs[namespace]
	for k, v := range podLabels {
		for name := range byPair[labelPair{k, v}] {
			if selectorMatches(byName[name].selector, podLabels) {
				add(namespace + "/" + name)
			}
		}
	}
}

// --- slices ---

// resetSlices replaces the slice index with the managed slices of objs.
func (ix *index) resetSlices(objs []state.Object) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.slices = map[string]nameSet{}
	ix.sliceSvc = map[string]string{}
	for _, o := range objs {
		s := o.(*discoveryv1.EndpointSlice)
		if svc := managedService(s); svc != "" {
			ix.setSliceLocked(s.Namespace, s.Name, svc)
		}
	}
}

// setSlice records that slice (in namespace) is managed for service svc.
func (ix *index) setSlice(namespace, slice, svc string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.setSliceLocked(namespace, slice, svc)
}

func (ix *index) setSliceLocked(namespace, slice, svc string) {
	ix.deleteSliceLocked(namespace, slice)
	key := namespace + "/" + svc
	set := ix.slices[key]
	if set == nil {
		set = nameSet{}
		ix.slices[key] = set
	}
	set[slice] = struct{}{}
	ix.sliceSvc[namespace+"/"+slice] = svc
}

// deleteSlice forgets a slice.
func (ix *index) deleteSlice(namespace, slice string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.deleteSliceLocked(namespace, slice)
}

func (ix *index) deleteSliceLocked(namespace, slice string) {
	sk := namespace + "/" + slice
	svc, ok := ix.sliceSvc[sk]
	if !ok {
		return
	}
	delete(ix.sliceSvc, sk)
	key := namespace + "/" + svc
	delete(ix.slices[key], slice)
	if len(ix.slices[key]) == 0 {
		delete(ix.slices, key)
	}
}

// slicesOf returns the names of the slices indexed for the service key,
// sorted.
func (ix *index) slicesOf(key string) []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]string, 0, len(ix.slices[key]))
	for name := range ix.slices[key] {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// sliceOwners returns the keys of every service with indexed slices.
func (ix *index) sliceOwners() []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]string, 0, len(ix.slices))
	for k := range ix.slices {
		out = append(out, k)
	}
	return out
}

// selectorMatches reports whether every label of selector is in labels.
func selectorMatches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}
