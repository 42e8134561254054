package scheduler

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Options tune a Snapshot. The zero value is usable.
type Options struct {
	// PriorityClasses maps PriorityClass names to their values, for pods that
	// name a class but carry no spec.priority (admission normally resolves
	// it). The built-in system-cluster-critical and system-node-critical
	// classes are known without being listed.
	PriorityClasses map[string]int32

	// NamespaceLabels maps namespace names to their labels, for the
	// namespaceSelector of pod affinity terms. Namespaces missing here have
	// no labels.
	NamespaceLabels map[string]map[string]string

	// Volumes resolves a pod's PersistentVolumeClaim to the volume bound to
	// it. It returns found=false when the claim does not exist, and a nil
	// volume when the claim exists but is not bound yet (Shoal's local
	// provisioner binds it after the pod is placed, so unbound claims do not
	// constrain placement). Nil disables the volume filter.
	Volumes VolumeLookup

	// PercentageOfNodesToScore is kube-scheduler's setting of the same name:
	// the share of nodes to find feasible before scoring stops looking, 1 to
	// 100. Zero means adaptive: 50% at 100 nodes, falling by 1% per 125 nodes
	// to a floor of 5% (10% at 5,000 nodes), and never fewer than 100 nodes.
	PercentageOfNodesToScore int32

	// Seed makes scheduling reproducible: the same snapshot, seed and calls
	// give the same placements. It picks where the round-robin over nodes
	// starts and breaks ties between equally scored nodes; vary it between
	// rounds (e.g. the store revision) so that sampling starts elsewhere.
	Seed uint64
}

// VolumeLookup resolves namespace/claim to its bound PersistentVolume; see
// Options.Volumes.
type VolumeLookup func(namespace, claim string) (pv *corev1.PersistentVolume, found bool)

// Validate checks the options.
func (o *Options) Validate() error {
	if o.PercentageOfNodesToScore < 0 || o.PercentageOfNodesToScore > 100 {
		return fmt.Errorf("scheduler: PercentageOfNodesToScore %d is outside 0..100", o.PercentageOfNodesToScore)
	}
	return nil
}

// Errors from Schedule, Assume and Forget.
var (
	ErrBound         = errors.New("scheduler: pod is bound to a node already")
	ErrUnknownNode   = errors.New("scheduler: no such node in the snapshot")
	ErrAlreadyPlaced = errors.New("scheduler: pod is already placed in the snapshot")
	ErrNotPlaced     = errors.New("scheduler: pod is not placed in the snapshot")
	errNilPod        = errors.New("scheduler: nil pod")
)

const errNoNodesMessage = "no nodes available to schedule pods"

// Snapshot is the scheduler's view of the cluster for one scheduling round:
// nodes with the aggregates of the pods placed on them, and the indexes the
// filters and scores use. Build it once per round with NewSnapshot, then call
// Schedule for each pending pod and Assume for each placement made, so later
// pods see earlier ones.
//
// A Snapshot is not safe for concurrent use. It never modifies the objects it
// is given and keeps references to them: they must not change while the
// snapshot is in use (objects from the store are read-only anyway).
type Snapshot struct {
	opts   Options
	nodes  []*nodeInfo // in scheduling order; nodeInfo.idx is the position
	byName map[string]*nodeInfo
	zones  []string

	pods      map[string]*podInfo // namespace/name → placed pod
	allPods   []*podInfo          // every pod ever placed, placed or not now
	forgotten int                 // entries of allPods no longer placed for good

	owners     map[types.UID]*ownerCount
	images     map[string]*imageState
	topologies map[string]*topology // by label key, built on use
	labelIdx   map[hintKey][]*podInfo

	counters   map[string]*counter
	counterIdx matcherIndex[*counter]
	groups     map[string]*termGroup
	groupIdx   matcherIndex[*termGroup]

	anyHardTaint   bool // some node has a NoSchedule/NoExecute taint
	anyPreferTaint bool // some node has a PreferNoSchedule taint

	gen  uint64 // bumped on every change to placed pods
	next int    // round-robin start for the next Schedule
	rng  *rand.Rand

	cyc cycle // scratch for the pod being scheduled
}

// nodeInfo is one node and what is placed on it.
type nodeInfo struct {
	node          *corev1.Node
	name          string
	idx           int32
	labels        map[string]string
	zone          int32 // index into Snapshot.zones; -1 without a zone label
	hasHostname   bool  // carries kubernetes.io/hostname
	unschedulable bool
	taints        []corev1.Taint // NoSchedule and NoExecute, with the not-ready taint when not Ready
	preferTaints  []corev1.Taint // PreferNoSchedule

	alloc          resources
	allowedPods    int64
	invCPU, invMem float64 // 1/allocatable, 0 when none: the balanced score divides by them

	requested              resources
	nonZeroCPU, nonZeroMem int64
	pods                   []*podInfo
	ports                  []hostPort
}

// podInfo is one placed pod with what the scheduler derives from it.
type podInfo struct {
	pod         *corev1.Pod
	key         string
	node        *nodeInfo
	req         podRequest
	ports       []hostPort
	priority    int32
	owner       types.UID // controller ownerReference
	terminating bool
	terms       []termRef
	attached    bool
	gone        bool // forgotten: never attached again
}

// hostPort is one host port a pod binds.
type hostPort struct {
	protocol corev1.Protocol
	ip       string
	port     int32
}

func (a hostPort) conflicts(b hostPort) bool {
	return a.port == b.port && a.protocol == b.protocol &&
		(a.ip == b.ip || a.ip == anyIP || b.ip == anyIP)
}

const anyIP = "0.0.0.0"

// ownerCount counts the pods of one controller per node and per zone.
type ownerCount struct {
	perNode map[int32]int32
	perZone []int32
}

// imageState is one container image present on some nodes.
type imageState struct {
	size     int64
	numNodes int32
	nodes    []uint64 // bitset by node idx
}

// NewSnapshot builds the view of a cluster from its nodes and pods. Pods not
// bound to one of the nodes (pending ones included) and pods that finished
// (phase Succeeded or Failed) are left out; terminating pods still count, as
// they hold their resources until they are gone.
func NewSnapshot(nodes []*corev1.Node, pods []*corev1.Pod, opts Options) (*Snapshot, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s := &Snapshot{
		opts:     opts,
		byName:   make(map[string]*nodeInfo, len(nodes)),
		pods:     make(map[string]*podInfo, len(pods)),
		owners:   make(map[types.UID]*ownerCount),
		images:   make(map[string]*imageState),
		counters: make(map[string]*counter),
		groups:   make(map[string]*termGroup),
		rng:      rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
	}
	s.buildNodes(nodes)
	s.allPods = make([]*podInfo, 0, len(pods))
	slab := make([]podInfo, len(pods)) // one allocation for the pods of the round
	for _, p := range pods {
		if p == nil || p.Spec.NodeName == "" || finished(p) {
			continue
		}
		n := s.byName[p.Spec.NodeName]
		if n == nil {
			continue
		}
		key := podKey(p)
		if _, dup := s.pods[key]; dup {
			continue
		}
		pi := s.initPodInfo(&slab[len(s.allPods)], p, key, n, nil)
		s.pods[key] = pi
		s.allPods = append(s.allPods, pi)
		s.attach(pi)
	}
	if len(s.nodes) > 0 {
		s.next = int(opts.Seed % uint64(len(s.nodes)))
	}
	return s, nil
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

// buildNodes orders the nodes as kube-scheduler's node tree does: zones
// interleaved (one node of each zone in turn), so that a sample of the nodes
// covers every zone; by name within a zone, so that the order is stable.
func (s *Snapshot) buildNodes(nodes []*corev1.Node) {
	sorted := make([]*corev1.Node, 0, len(nodes))
	for _, n := range nodes {
		if n != nil {
			sorted = append(sorted, n)
		}
	}
	slices.SortStableFunc(sorted, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	sorted = slices.CompactFunc(sorted, func(a, b *corev1.Node) bool { return a.Name == b.Name })

	zoneIdx := map[string]int32{}
	var byZone [][]*corev1.Node
	var noZone []*corev1.Node
	for _, n := range sorted {
		z, ok := n.Labels[corev1.LabelTopologyZone]
		if !ok {
			noZone = append(noZone, n)
			continue
		}
		if _, ok := zoneIdx[z]; !ok {
			zoneIdx[z] = int32(len(s.zones))
			s.zones = append(s.zones, z)
			byZone = append(byZone, nil)
		}
		byZone[zoneIdx[z]] = append(byZone[zoneIdx[z]], n)
	}
	// Zones in name order for the interleaving.
	order := make([]int, len(s.zones))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(s.zones[a], s.zones[b]) })
	lists := make([][]*corev1.Node, 0, len(order)+1)
	for _, i := range order {
		lists = append(lists, byZone[i])
	}
	if len(noZone) > 0 {
		lists = append(lists, noZone)
	}
	s.nodes = make([]*nodeInfo, 0, len(sorted))
	for round := 0; len(s.nodes) < len(sorted); round++ {
		for _, l := range lists {
			if round < len(l) {
				s.addNode(l[round], zoneIdx)
			}
		}
	}
	for _, n := range s.nodes {
		s.addImages(n)
	}
}

func (s *Snapshot) addNode(node *corev1.Node, zoneIdx map[string]int32) {
	n := &nodeInfo{
		node:          node,
		name:          node.Name,
		idx:           int32(len(s.nodes)),
		labels:        node.Labels,
		zone:          -1,
		unschedulable: node.Spec.Unschedulable,
	}
	if z, ok := node.Labels[corev1.LabelTopologyZone]; ok {
		n.zone = zoneIdx[z]
	}
	_, n.hasHostname = node.Labels[corev1.LabelHostname]
	n.alloc, n.allowedPods = nodeAllocatable(node)
	if n.alloc.milliCPU > 0 {
		n.invCPU = 1 / float64(n.alloc.milliCPU)
	}
	if n.alloc.memory > 0 {
		n.invMem = 1 / float64(n.alloc.memory)
	}
	for _, t := range node.Spec.Taints {
		switch t.Effect {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute:
			n.taints = append(n.taints, t)
		case corev1.TaintEffectPreferNoSchedule:
			n.preferTaints = append(n.preferTaints, t)
		}
	}
	// A node that is not Ready repels new pods the way the node lifecycle
	// controller's condition taints do (TaintNodesByCondition), whether or not
	// the taint has been written yet; DaemonSet-style tolerations get through.
	if key := notReadyTaint(node); key != "" {
		has := slices.ContainsFunc(n.taints, func(t corev1.Taint) bool {
			return t.Key == key && t.Effect == corev1.TaintEffectNoSchedule
		})
		if !has {
			n.taints = append(n.taints, corev1.Taint{Key: key, Effect: corev1.TaintEffectNoSchedule})
		}
	}
	s.anyHardTaint = s.anyHardTaint || len(n.taints) > 0
	s.anyPreferTaint = s.anyPreferTaint || len(n.preferTaints) > 0
	s.nodes = append(s.nodes, n)
	s.byName[n.name] = n
}

// notReadyTaint returns the condition taint for a node that is not Ready:
// node.kubernetes.io/not-ready for Ready=False (or no Ready condition yet),
// node.kubernetes.io/unreachable for Ready=Unknown; "" when Ready.
func notReadyTaint(node *corev1.Node) string {
	for _, c := range node.Status.Conditions {
		if c.Type != corev1.NodeReady {
			continue
		}
		switch c.Status {
		case corev1.ConditionTrue:
			return ""
		case corev1.ConditionUnknown:
			return corev1.TaintNodeUnreachable
		default:
			return corev1.TaintNodeNotReady
		}
	}
	return corev1.TaintNodeNotReady
}

func (s *Snapshot) addImages(n *nodeInfo) {
	words := (len(s.nodes) + 63) / 64
	for _, img := range n.node.Status.Images {
		for _, name := range img.Names {
			name = normalizedImageName(name)
			st := s.images[name]
			if st == nil {
				st = &imageState{nodes: make([]uint64, words)}
				s.images[name] = st
			}
			w, bit := n.idx/64, uint64(1)<<(n.idx%64)
			if st.nodes[w]&bit != 0 {
				continue
			}
			st.nodes[w] |= bit
			st.numNodes++
			st.size = max(st.size, img.SizeBytes)
		}
	}
}

// normalizedImageName adds the implicit ":latest" tag, as kube-scheduler's
// image locality does.
func normalizedImageName(name string) string {
	if strings.LastIndexByte(name, ':') <= strings.LastIndexByte(name, '/') {
		return name + ":latest"
	}
	return name
}

// newPodInfo derives what the scheduler needs from a placed pod. req, when
// not nil, is the pod's request already computed by Schedule.
func (s *Snapshot) newPodInfo(p *corev1.Pod, n *nodeInfo, req *podRequest) *podInfo {
	return s.initPodInfo(new(podInfo), p, podKey(p), n, req)
}

func (s *Snapshot) initPodInfo(pi *podInfo, p *corev1.Pod, key string, n *nodeInfo, req *podRequest) *podInfo {
	*pi = podInfo{
		pod:         p,
		key:         key,
		node:        n,
		ports:       podHostPorts(p),
		priority:    s.Priority(p),
		terminating: p.DeletionTimestamp != nil,
		terms:       s.podTerms(p),
	}
	if req != nil {
		pi.req = *req
	} else {
		pi.req = computePodRequest(p)
	}
	for i := range p.OwnerReferences {
		if r := &p.OwnerReferences[i]; r.Controller != nil && *r.Controller {
			pi.owner = r.UID
			break
		}
	}
	return pi
}

// podHostPorts lists the host ports of the pod's containers (and of its
// restartable init containers, which run alongside them).
func podHostPorts(p *corev1.Pod) []hostPort {
	var out []hostPort
	add := func(c *corev1.Container) {
		for _, cp := range c.Ports {
			if cp.HostPort <= 0 {
				continue
			}
			hp := hostPort{protocol: cp.Protocol, ip: cp.HostIP, port: cp.HostPort}
			if hp.protocol == "" {
				hp.protocol = corev1.ProtocolTCP
			}
			if hp.ip == "" {
				hp.ip = anyIP
			}
			out = append(out, hp)
		}
	}
	for i := range p.Spec.InitContainers {
		c := &p.Spec.InitContainers[i]
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			add(c)
		}
	}
	for i := range p.Spec.Containers {
		add(&p.Spec.Containers[i])
	}
	return out
}

// attach adds a pod's weight to its node and to every index.
func (s *Snapshot) attach(p *podInfo) {
	s.apply(p, 1)
	n := p.node
	n.pods = append(n.pods, p)
	n.ports = append(n.ports, p.ports...)
	p.attached = true
}

// detach removes what attach added.
func (s *Snapshot) detach(p *podInfo) {
	s.apply(p, -1)
	n := p.node
	if i := slices.Index(n.pods, p); i >= 0 {
		n.pods = slices.Delete(n.pods, i, i+1)
	}
	for _, hp := range p.ports {
		if i := slices.Index(n.ports, hp); i >= 0 {
			n.ports = slices.Delete(n.ports, i, i+1)
		}
	}
	p.attached = false
}

func (s *Snapshot) apply(p *podInfo, d int32) {
	s.gen++
	n := p.node
	n.requested.add(&p.req.resources, int64(d))
	n.nonZeroCPU += int64(d) * p.req.nonZeroCPU
	n.nonZeroMem += int64(d) * p.req.nonZeroMem
	if p.owner != "" && !p.terminating {
		oc := s.owners[p.owner]
		if oc == nil {
			oc = &ownerCount{perNode: make(map[int32]int32), perZone: make([]int32, len(s.zones))}
			s.owners[p.owner] = oc
		}
		if v := oc.perNode[n.idx] + d; v == 0 {
			delete(oc.perNode, n.idx)
		} else {
			oc.perNode[n.idx] = v
		}
		if n.zone >= 0 {
			oc.perZone[n.zone] += d
		}
	}
	if !s.counterIdx.empty() {
		s.cyc.counterScratch = s.counterIdx.collect(s.cyc.counterScratch[:0], p.pod.Namespace, p.pod.Labels)
		for _, c := range s.cyc.counterScratch {
			if c.matches(s, p) {
				c.add(n, d)
			}
		}
	}
	for _, t := range p.terms {
		t.g.add(n, t.w, d)
	}
}

// Assume records that pod runs on nodeName from now on, as if it had been
// bound: the pods scheduled after it see its requests, ports and labels. The
// pod's spec.nodeName is not consulted.
func (s *Snapshot) Assume(pod *corev1.Pod, nodeName string) error {
	if pod == nil {
		return errNilPod
	}
	n := s.byName[nodeName]
	if n == nil {
		return fmt.Errorf("%w: %q", ErrUnknownNode, nodeName)
	}
	key := podKey(pod)
	if _, ok := s.pods[key]; ok {
		return fmt.Errorf("%w: %s", ErrAlreadyPlaced, key)
	}
	var req *podRequest
	if s.cyc.pod == pod {
		req = &s.cyc.req // computed by the Schedule call that placed it
	}
	pi := s.newPodInfo(pod, n, req)
	s.pods[key] = pi
	s.allPods = append(s.allPods, pi)
	if s.labelIdx != nil {
		s.indexLabels(pi)
	}
	s.attach(pi)
	return nil
}

// Forget removes a placed pod (by namespace and name): one whose binding
// failed to commit, or one that was deleted or finished since the snapshot
// was built.
func (s *Snapshot) Forget(pod *corev1.Pod) error {
	if pod == nil {
		return errNilPod
	}
	key := podKey(pod)
	pi, ok := s.pods[key]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotPlaced, key)
	}
	s.detach(pi)
	pi.gone = true
	delete(s.pods, key)
	s.forgotten++
	if s.forgotten > 1024 && s.forgotten > len(s.allPods)/2 {
		s.allPods = slices.DeleteFunc(s.allPods, func(p *podInfo) bool { return p.gone })
		s.forgotten = 0
		if s.labelIdx != nil {
			s.labelIdx = nil // rebuilt on next use
		}
	}
	return nil
}

// NumNodes is the number of nodes in the snapshot.
func (s *Snapshot) NumNodes() int { return len(s.nodes) }

// Built-in priority classes (kube-apiserver creates them in every cluster).
const (
	systemClusterCritical = 2000000000
	systemNodeCritical    = 2000001000
)

// Priority returns the pod's priority: spec.priority, else the value of its
// priorityClassName from Options.PriorityClasses (or a built-in class), else
// zero.
func (s *Snapshot) Priority(pod *corev1.Pod) int32 {
	if pod.Spec.Priority != nil {
		return *pod.Spec.Priority
	}
	if name := pod.Spec.PriorityClassName; name != "" {
		if v, ok := s.opts.PriorityClasses[name]; ok {
			return v
		}
		switch name {
		case "system-cluster-critical":
			return systemClusterCritical
		case "system-node-critical":
			return systemNodeCritical
		}
	}
	return 0
}

// SortPending orders pending pods the way kube-scheduler's queue pops them:
// higher priority first, then older first (creation time), then by
// namespace/name so that the order is total.
func (s *Snapshot) SortPending(pods []*corev1.Pod) {
	slices.SortStableFunc(pods, func(a, b *corev1.Pod) int {
		if c := cmp.Compare(s.Priority(b), s.Priority(a)); c != 0 {
			return c
		}
		if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
}
