package defaults

import (
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
)

func tol(key string, secs *int64) corev1.Toleration {
	return corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: secs}
}

// TestDefaultTolerations: a pod gets the not-ready and unreachable
// tolerations of DefaultTolerationSeconds unless it tolerates those taints
// itself; applying again changes nothing; templates get none.
func TestDefaultTolerations(t *testing.T) {
	own := corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "db", Effect: corev1.TaintEffectNoSchedule}
	for _, tc := range []struct {
		name string
		tols []corev1.Toleration
		want []corev1.Toleration
	}{
		{"none", nil, []corev1.Toleration{tol(corev1.TaintNodeNotReady, ptr(int64(2))), tol(corev1.TaintNodeUnreachable, ptr(int64(2)))}},
		{"others kept first", []corev1.Toleration{own},
			[]corev1.Toleration{own, tol(corev1.TaintNodeNotReady, ptr(int64(2))), tol(corev1.TaintNodeUnreachable, ptr(int64(2)))}},
		{"own unreachable kept", []corev1.Toleration{tol(corev1.TaintNodeUnreachable, ptr(int64(60)))},
			[]corev1.Toleration{tol(corev1.TaintNodeUnreachable, ptr(int64(60))), tol(corev1.TaintNodeNotReady, ptr(int64(2)))}},
		{"own forever kept", []corev1.Toleration{tol(corev1.TaintNodeNotReady, nil), tol(corev1.TaintNodeUnreachable, nil)},
			[]corev1.Toleration{tol(corev1.TaintNodeNotReady, nil), tol(corev1.TaintNodeUnreachable, nil)}},
		{"any effect counts", []corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists}},
			[]corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists}, tol(corev1.TaintNodeNotReady, ptr(int64(2)))}},
		{"wildcard", []corev1.Toleration{{Operator: corev1.TolerationOpExists}}, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}},
		{"NoSchedule only does not count", []corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			[]corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
				tol(corev1.TaintNodeNotReady, ptr(int64(2))), tol(corev1.TaintNodeUnreachable, ptr(int64(2)))}},
	} {
		in := append([]corev1.Toleration(nil), tc.tols...)
		pod := &corev1.Pod{Spec: corev1.PodSpec{Tolerations: in}}
		Apply(pod)
		if !reflect.DeepEqual(pod.Spec.Tolerations, tc.want) {
			t.Errorf("%s: tolerations %+v, want %+v", tc.name, pod.Spec.Tolerations, tc.want)
		}
		if !reflect.DeepEqual(in, tc.tols) {
			t.Errorf("%s: the caller's slice was changed", tc.name)
		}
		again := pod.DeepCopy()
		Apply(again)
		if !reflect.DeepEqual(again.Spec.Tolerations, pod.Spec.Tolerations) {
			t.Errorf("%s: not idempotent: %+v", tc.name, again.Spec.Tolerations)
		}
	}

	d := &appsv1.Deployment{}
	Apply(d)
	if n := len(d.Spec.Template.Spec.Tolerations); n != 0 {
		t.Errorf("a Deployment's template got %d tolerations, want none (pods get them when created)", n)
	}
}

// TestDefaultTolerationSecondsSetting: the variable sets the seconds.
func TestDefaultTolerationSecondsSetting(t *testing.T) {
	old := DefaultTolerationSeconds
	t.Cleanup(func() { DefaultTolerationSeconds = old })
	DefaultTolerationSeconds = 30
	pod := &corev1.Pod{}
	Apply(pod)
	for _, tl := range pod.Spec.Tolerations {
		if tl.TolerationSeconds == nil || *tl.TolerationSeconds != 30 {
			t.Errorf("toleration %+v, want 30 s", tl)
		}
	}
	if len(pod.Spec.Tolerations) != 2 {
		t.Errorf("%d tolerations, want 2", len(pod.Spec.Tolerations))
	}
}

// A pod's containers with limits but no requests get the limits as
// requests (the scheduler and the QoS class read them); templates do not
// (their pods get it when created), and set requests stay.
func TestRequestsFromLimits(t *testing.T) {
	res := func(l, r corev1.ResourceList) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Limits: l, Requests: r}
	}
	list := func(kv ...string) corev1.ResourceList {
		out := corev1.ResourceList{}
		for i := 0; i < len(kv); i += 2 {
			out[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
		return out
	}
	spec := func() corev1.PodSpec {
		return corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Resources: res(list("memory", "64Mi"), nil)}},
			Containers: []corev1.Container{
				{Name: "a", Resources: res(list("cpu", "500m", "memory", "1Gi"), list("cpu", "100m"))},
				{Name: "b"},
			},
		}
	}
	pod := &corev1.Pod{Spec: spec()}
	Apply(pod)
	for _, c := range []struct {
		got  corev1.ResourceList
		want corev1.ResourceList
	}{
		{pod.Spec.InitContainers[0].Resources.Requests, list("memory", "64Mi")},
		{pod.Spec.Containers[0].Resources.Requests, list("cpu", "100m", "memory", "1Gi")},
		{pod.Spec.Containers[1].Resources.Requests, nil},
	} {
		if !equality.Semantic.DeepEqual(c.got, c.want) {
			t.Errorf("requests %v, want %v", c.got, c.want)
		}
	}
	rs := &appsv1.ReplicaSet{Spec: appsv1.ReplicaSetSpec{Template: corev1.PodTemplateSpec{Spec: spec()}}}
	Apply(rs)
	if r := rs.Spec.Template.Spec.Containers[0].Resources.Requests; len(r) != 1 {
		t.Errorf("a template's requests were defaulted: %v", r)
	}
}

func TestServiceAccountTokenExpiration(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "token", VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}}}}
	Apply(pod)
	if e := pod.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken.ExpirationSeconds; e == nil || *e != 3600 {
		t.Errorf("expirationSeconds %v, want 3600", e)
	}
}
