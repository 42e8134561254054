package scheduler

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Requests that are missing count as these when scoring (not when filtering),
// as in kube-scheduler, so that pods without requests still spread.
const (
	defaultMilliCPURequest = 100               // 0.1 core
	defaultMemoryRequest   = 200 * 1024 * 1024 // 200 MiB
)

// resources is an amount of the resources the scheduler accounts for.
type resources struct {
	milliCPU int64
	memory   int64
	storage  int64 // ephemeral-storage
	scalar   []scalarAmount
}

// scalarAmount is an extended resource (vendor.example/gpu) or hugepages.
type scalarAmount struct {
	name  corev1.ResourceName
	value int64
}

// isScalar reports whether name is accounted as a scalar resource: extended
// resources (a domain-prefixed name outside kubernetes.io) and hugepages.
func isScalar(name corev1.ResourceName) bool {
	s := string(name)
	if strings.HasPrefix(s, corev1.ResourceHugePagesPrefix) {
		return true
	}
	if !strings.Contains(s, "/") || strings.HasPrefix(s, "requests.") {
		return false
	}
	return !strings.Contains(s, "kubernetes.io/")
}

func (r *resources) scalarValue(name corev1.ResourceName) int64 {
	for _, s := range r.scalar {
		if s.name == name {
			return s.value
		}
	}
	return 0
}

// addList adds a ResourceList (as requests are written) to r.
func (r *resources) addList(l corev1.ResourceList) {
	for name, q := range l {
		r.addQuantity(name, &q, 1)
	}
}

func (r *resources) addQuantity(name corev1.ResourceName, q *resource.Quantity, sign int64) {
	switch name {
	case corev1.ResourceCPU:
		r.milliCPU += sign * q.MilliValue()
	case corev1.ResourceMemory:
		r.memory += sign * q.Value()
	case corev1.ResourceEphemeralStorage:
		r.storage += sign * q.Value()
	default:
		if isScalar(name) {
			r.addScalar(name, sign*q.Value())
		}
	}
}

func (r *resources) addScalar(name corev1.ResourceName, v int64) {
	for i := range r.scalar {
		if r.scalar[i].name == name {
			r.scalar[i].value += v
			return
		}
	}
	r.scalar = append(r.scalar, scalarAmount{name, v})
}

// add adds o (times sign) to r.
func (r *resources) add(o *resources, sign int64) {
	r.milliCPU += sign * o.milliCPU
	r.memory += sign * o.memory
	r.storage += sign * o.storage
	for _, s := range o.scalar {
		r.addScalar(s.name, sign*s.value)
	}
}

// maxWith raises every amount of r to at least o's.
func (r *resources) maxWith(o *resources) {
	r.milliCPU = max(r.milliCPU, o.milliCPU)
	r.memory = max(r.memory, o.memory)
	r.storage = max(r.storage, o.storage)
	for _, s := range o.scalar {
		found := false
		for i := range r.scalar {
			if r.scalar[i].name == s.name {
				r.scalar[i].value = max(r.scalar[i].value, s.value)
				found = true
				break
			}
		}
		if !found {
			r.scalar = append(r.scalar, s)
		}
	}
}

func (r *resources) clone() resources {
	c := *r
	if r.scalar != nil {
		c.scalar = append([]scalarAmount(nil), r.scalar...)
	}
	return c
}

// podRequest is what one pod asks of a node.
type podRequest struct {
	resources
	// nonZeroCPU and nonZeroMem count missing container requests as the
	// defaults above; they feed the least-allocated score only.
	nonZeroCPU, nonZeroMem int64
}

// computePodRequest computes what kube-scheduler's NodeResourcesFit computes
// (k8s.io/component-helpers resource.PodRequests): the sum over containers,
// raised to the largest init container (restartable "sidecar" init
// containers run alongside everything after them, so they add up), pod-level
// requests when set, plus the pod overhead.
func computePodRequest(pod *corev1.Pod) podRequest {
	var out podRequest
	spec := &pod.Spec
	for i := range spec.Containers {
		reqs := spec.Containers[i].Resources.Requests
		out.addList(reqs)
		cpu, mem := nonZero(reqs)
		out.nonZeroCPU += cpu
		out.nonZeroMem += mem
	}
	if len(spec.InitContainers) > 0 {
		var sidecars, initMax podRequest
		for i := range spec.InitContainers {
			c := &spec.InitContainers[i]
			var this podRequest
			this.addList(c.Resources.Requests)
			this.nonZeroCPU, this.nonZeroMem = nonZero(c.Resources.Requests)
			if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				out.add(&this.resources, 1)
				out.nonZeroCPU += this.nonZeroCPU
				out.nonZeroMem += this.nonZeroMem
				sidecars.add(&this.resources, 1)
				sidecars.nonZeroCPU += this.nonZeroCPU
				sidecars.nonZeroMem += this.nonZeroMem
				this = podRequest{resources: sidecars.clone(), nonZeroCPU: sidecars.nonZeroCPU, nonZeroMem: sidecars.nonZeroMem}
			} else {
				this.add(&sidecars.resources, 1)
				this.nonZeroCPU += sidecars.nonZeroCPU
				this.nonZeroMem += sidecars.nonZeroMem
			}
			initMax.maxWith(&this.resources)
			initMax.nonZeroCPU = max(initMax.nonZeroCPU, this.nonZeroCPU)
			initMax.nonZeroMem = max(initMax.nonZeroMem, this.nonZeroMem)
		}
		out.maxWith(&initMax.resources)
		out.nonZeroCPU = max(out.nonZeroCPU, initMax.nonZeroCPU)
		out.nonZeroMem = max(out.nonZeroMem, initMax.nonZeroMem)
	}
	if spec.Resources != nil {
		// Pod-level requests (cpu, memory) replace the containers' sum.
		if q, ok := spec.Resources.Requests[corev1.ResourceCPU]; ok {
			out.milliCPU = q.MilliValue()
			out.nonZeroCPU = out.milliCPU
		}
		if q, ok := spec.Resources.Requests[corev1.ResourceMemory]; ok {
			out.memory = q.Value()
			out.nonZeroMem = out.memory
		}
	}
	if spec.Overhead != nil {
		out.addList(spec.Overhead)
		if q, ok := spec.Overhead[corev1.ResourceCPU]; ok {
			out.nonZeroCPU += q.MilliValue()
		}
		if q, ok := spec.Overhead[corev1.ResourceMemory]; ok {
			out.nonZeroMem += q.Value()
		}
	}
	return out
}

// nonZero returns the cpu and memory requests of one container with the
// scoring defaults for missing ones.
func nonZero(reqs corev1.ResourceList) (milliCPU, memory int64) {
	milliCPU, memory = defaultMilliCPURequest, defaultMemoryRequest
	if q, ok := reqs[corev1.ResourceCPU]; ok {
		milliCPU = q.MilliValue()
	}
	if q, ok := reqs[corev1.ResourceMemory]; ok {
		memory = q.Value()
	}
	return milliCPU, memory
}

// nodeAllocatable reads what a node offers: status.allocatable, or capacity
// when a node reports no allocatable at all.
func nodeAllocatable(n *corev1.Node) (r resources, pods int64) {
	l := n.Status.Allocatable
	if len(l) == 0 {
		l = n.Status.Capacity
	}
	for name, q := range l {
		if name == corev1.ResourcePods {
			pods = q.Value()
			continue
		}
		r.addQuantity(name, &q, 1)
	}
	return r, pods
}
