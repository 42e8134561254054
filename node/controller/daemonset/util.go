package daemonset

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/dump"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
)

// Labels the controller puts on the pods it creates, as Kubernetes does.
const (
	// HashLabel is the hash of the template a pod was made from
	// (controller-revision-hash): a pod is up to date when it is the
	// current template's.
	HashLabel = appsv1.DefaultDaemonSetUniqueLabelKey
	// TemplateGenerationLabel is the DaemonSet's template generation when
	// the pod was made (pod-template-generation), for tools that read it.
	TemplateGenerationLabel = "pod-template-generation"
)

// computeHash is the controller-revision-hash of a template, as
// Kubernetes computes it for DaemonSets (controller.ComputeHash, the same
// as a Deployment's pod-template-hash): FNV-32a over the template dumped
// for hashing, then the collision count if any, safe-encoded.
func computeHash(template *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", dump.ForHash(*template))
	if collisionCount != nil {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, uint32(*collisionCount))
		h.Write(b)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// templateGeneration is the value of a new pod's pod-template-generation
// label: the DaemonSet's deprecated.daemonset.template.generation
// annotation, which Kubernetes' API server keeps (bumped on template
// changes only), or, as Shoal's API server does not keep it, the
// DaemonSet's generation. The label is informational here: whether a pod
// is up to date is decided by its hash label alone.
func templateGeneration(ds *appsv1.DaemonSet) string {
	if v, ok := ds.Annotations[appsv1.DeprecatedTemplateGeneration]; ok {
		if _, err := strconv.ParseInt(v, 10, 64); err == nil {
			return v
		}
	}
	return strconv.FormatInt(ds.Generation, 10)
}

// podTemplate is the template of the DaemonSet's new pods: its template
// with the daemon tolerations and the two labels (Kubernetes'
// CreatePodTemplate). Each pod is then pinned to its node.
func podTemplate(ds *appsv1.DaemonSet, hash string) *corev1.PodTemplateSpec {
	t := ds.Spec.Template.DeepCopy()
	addDaemonTolerations(&t.Spec)
	if t.Labels == nil {
		t.Labels = map[string]string{}
	}
	t.Labels[TemplateGenerationLabel] = templateGeneration(ds)
	t.Labels[HashLabel] = hash
	return t
}

// isUpdated reports whether pod was made from the template with hash.
func isUpdated(pod *corev1.Pod, hash string) bool { return pod.Labels[HashLabel] == hash }

// rollingUpdateOf returns ds's rolling-update parameters, nil for OnDelete
// (an unset strategy type is RollingUpdate, the API default).
func rollingUpdateOf(ds *appsv1.DaemonSet) (r *appsv1.RollingUpdateDaemonSet, rolling bool) {
	s := ds.Spec.UpdateStrategy
	if s.Type != "" && s.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		return nil, false
	}
	if s.RollingUpdate == nil {
		return &appsv1.RollingUpdateDaemonSet{}, true
	}
	return s.RollingUpdate, true
}

var (
	defaultMaxUnavailable = intstr.FromInt32(1)
	defaultMaxSurge       = intstr.FromInt32(0)
)

// surgeAndUnavailable resolves maxSurge and maxUnavailable against the
// number of nodes that should run a pod, rounding percentages up as
// Kubernetes does for DaemonSets. Unset values take the API defaults (1
// unavailable, no surge); when both come out 0 with pods to run, one
// unavailable pod is allowed, or the update could never start.
func surgeAndUnavailable(ds *appsv1.DaemonSet, desired int) (surge, unavailable int, err error) {
	r, rolling := rollingUpdateOf(ds)
	if !rolling {
		return 0, 0, nil
	}
	mu, ms := r.MaxUnavailable, r.MaxSurge
	if mu == nil {
		mu = &defaultMaxUnavailable
	}
	if ms == nil {
		ms = &defaultMaxSurge
	}
	if unavailable, err = intstr.GetScaledValueFromIntOrPercent(mu, desired, true); err != nil {
		return 0, 0, fmt.Errorf("invalid maxUnavailable: %w", err)
	}
	if surge, err = intstr.GetScaledValueFromIntOrPercent(ms, desired, true); err != nil {
		return 0, 0, fmt.Errorf("invalid maxSurge: %w", err)
	}
	if desired > 0 && surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return max(surge, 0), max(unavailable, 0), nil
}

// allowsSurge reports whether ds may run a new pod beside an old one on a
// node during an update (maxSurge resolves to more than 0).
func allowsSurge(ds *appsv1.DaemonSet) bool {
	r, rolling := rollingUpdateOf(ds)
	if !rolling || r.MaxSurge == nil {
		return false
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(r.MaxSurge, 1, true)
	return err == nil && n > 0
}

// sortOldestFirst orders a node's daemon pods as Kubernetes does
// (podByCreationTimestampAndPhase): bound pods first, then oldest, then by
// name.
func sortOldestFirst(pods []*corev1.Pod) {
	sort.SliceStable(pods, func(i, j int) bool {
		a, b := pods[i], pods[j]
		if (a.Spec.NodeName != "") != (b.Spec.NodeName != "") {
			return a.Spec.NodeName != ""
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
}
