package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/node/state"
)

// TestConfigMapVolumeFollowsUpdates: a configMap volume is rewritten when
// the ConfigMap changes (new and changed keys appear, removed keys go), as
// the kubelet does for running pods.
func TestConfigMapVolumeFollowsUpdates(t *testing.T) {
	h := newHarness(t)
	h.start(h.config())
	h.create(&corev1.ConfigMap{ObjectMeta: meta("conf"), Data: map[string]string{"a": "1", "b": "2"}})
	p := newPod("reader", ctr("main"))
	p.Spec.Volumes = []corev1.Volume{{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}}}}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "conf", MountPath: "/conf"}}
	h.create(p)
	h.waitPod("reader", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	dir := filepath.Join(h.dir, "pods", string(p.UID), "volumes", "conf")
	read := func(k string) string {
		b, err := os.ReadFile(filepath.Join(dir, k))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	if read("a") != "1" || read("b") != "2" {
		t.Fatalf("volume: a=%q b=%q", read("a"), read("b"))
	}
	o, _ := h.store.Get("configmaps", testNamespace, "conf")
	cm := o.(*corev1.ConfigMap).DeepCopy()
	cm.Data = map[string]string{"a": "10", "c": "3"}
	if _, err := h.prop.Propose(context.Background(), state.Update(cm, 0)); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the volume to follow the ConfigMap", func() bool {
		_, errB := os.Stat(filepath.Join(dir, "b"))
		return read("a") == "10" && read("c") == "3" && os.IsNotExist(errB)
	})
}
