package admission

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/state"
)

// saReader holds service accounts only.
type saReader map[string]*corev1.ServiceAccount

func (r saReader) Get(resource, namespace, name string) (state.Object, bool) {
	sa, ok := r[namespace+"/"+name]
	if resource != "serviceaccounts" || !ok {
		return nil, false
	}
	return sa, true
}

func (r saReader) List(string, string) ([]state.Object, uint64) { return nil, 0 }

func TestPodServiceAccount(t *testing.T) {
	off := false
	r := saReader{"ns/robot": {ObjectMeta: metav1.ObjectMeta{Name: "robot", Namespace: "ns"}, AutomountServiceAccountToken: &off,
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}}}}
	pod := func() *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init"}},
			Containers: []corev1.Container{{Name: "a"}, {Name: "b", VolumeMounts: []corev1.VolumeMount{
				{Name: "own", MountPath: ServiceAccountMountPath}}}},
		}}
	}
	p := pod()
	PodServiceAccount(r, p)
	if p.Spec.ServiceAccountName != "default" || p.Spec.DeprecatedServiceAccount != "default" {
		t.Fatalf("account %q/%q", p.Spec.ServiceAccountName, p.Spec.DeprecatedServiceAccount)
	}
	if len(p.Spec.Volumes) != 1 || !strings.HasPrefix(p.Spec.Volumes[0].Name, "kube-api-access-") || len(p.Spec.Volumes[0].Projected.Sources) != 3 {
		t.Fatalf("volumes %+v", p.Spec.Volumes)
	}
	name := p.Spec.Volumes[0].Name
	if m := p.Spec.InitContainers[0].VolumeMounts; len(m) != 1 || m[0].Name != name || !m[0].ReadOnly {
		t.Errorf("init container mounts %+v", m)
	}
	if m := p.Spec.Containers[0].VolumeMounts; len(m) != 1 || m[0].Name != name {
		t.Errorf("container a mounts %+v", m)
	}
	if m := p.Spec.Containers[1].VolumeMounts; len(m) != 1 || m[0].Name != "own" {
		t.Errorf("container b's own mount at the path was replaced or doubled: %+v", m)
	}
	PodServiceAccount(r, p) // admitting twice adds nothing
	if len(p.Spec.Volumes) != 1 {
		t.Errorf("second admission added a volume: %+v", p.Spec.Volumes)
	}

	p = pod()
	p.Spec.AutomountServiceAccountToken = &off
	PodServiceAccount(r, p)
	if len(p.Spec.Volumes) != 0 || p.Spec.ServiceAccountName != "default" {
		t.Errorf("pod's automount off: %+v", p.Spec)
	}
	p = pod()
	p.Spec.ServiceAccountName = "robot"
	PodServiceAccount(r, p)
	if len(p.Spec.Volumes) != 0 {
		t.Errorf("account's automount off: %+v", p.Spec.Volumes)
	}
	if len(p.Spec.ImagePullSecrets) != 1 || p.Spec.ImagePullSecrets[0].Name != "regcred" {
		t.Errorf("the account's imagePullSecrets not copied: %+v", p.Spec.ImagePullSecrets)
	}
	p = pod()
	p.Spec.ServiceAccountName = "robot"
	p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "mine"}}
	PodServiceAccount(r, p)
	if len(p.Spec.ImagePullSecrets) != 1 || p.Spec.ImagePullSecrets[0].Name != "mine" {
		t.Errorf("the pod's own imagePullSecrets replaced: %+v", p.Spec.ImagePullSecrets)
	}
	on := true
	p = pod()
	p.Spec.ServiceAccountName, p.Spec.AutomountServiceAccountToken = "robot", &on
	PodServiceAccount(r, p)
	if len(p.Spec.Volumes) != 1 {
		t.Errorf("the pod's automount overrides its account's: %+v", p.Spec.Volumes)
	}
	p = pod()
	p.Spec.DeprecatedServiceAccount = "legacy"
	PodServiceAccount(r, p)
	if p.Spec.ServiceAccountName != "legacy" {
		t.Errorf("deprecated serviceAccount field ignored: %q", p.Spec.ServiceAccountName)
	}
}
