package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
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

// TestDownwardAPIAndProjectedVolumesFollowThePod: a running pod's
// downwardAPI and projected volumes are written before its containers
// start, mount read-only, and follow label changes and their ConfigMap.
func TestDownwardAPIAndProjectedVolumesFollowThePod(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start(h.config())
	h.create(&corev1.ConfigMap{ObjectMeta: meta("conf"), Data: map[string]string{"a": "1"}})
	p := newPod("labelled", ctr("main"))
	p.Labels = map[string]string{"app": "web"}
	p.Spec.Volumes = []corev1.Volume{
		{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{fieldItem("labels", "metadata.labels", nil), fieldItem("name", "metadata.name", nil)}}}},
		{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{fieldItem("app", "metadata.labels['app']", nil)}}},
		}}}},
	}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "info", MountPath: "/info"}, {Name: "all", MountPath: "/all"}}
	h.create(p)
	h.waitPod("labelled", "running", running("main", 0))
	vols := filepath.Join(h.dir, "pods", string(p.UID), "volumes")
	read := func(vol, name string) string {
		b, err := os.ReadFile(filepath.Join(vols, vol, name))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	if got := read("info", "labels"); got != `app="web"` {
		t.Errorf("info/labels = %q", got)
	}
	if read("info", "name") != "labelled" || read("all", "a") != "1" || read("all", "app") != "web" {
		t.Errorf("volumes: info/name=%q all/a=%q all/app=%q", read("info", "name"), read("all", "a"), read("all", "app"))
	}
	spec, ok := h.rt.Spec(containerID(p.UID, "main", 0))
	if !ok {
		t.Fatal("no container spec")
	}
	ro := map[string]bool{}
	for _, m := range spec.Mounts {
		ro[m.Destination] = m.ReadOnly
	}
	if !ro["/info"] || !ro["/all"] {
		t.Errorf("mounts read-only: /info %v, /all %v; want both", ro["/info"], ro["/all"])
	}

	h.updatePod("labelled", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "shop", "tier": "front"} })
	h.waitFor("the volumes to follow the labels", func() bool {
		return read("info", "labels") == `app="shop"`+"\n"+`tier="front"` && read("all", "app") == "shop"
	})
	o, _ := h.store.Get("configmaps", testNamespace, "conf")
	cm := o.(*corev1.ConfigMap).DeepCopy()
	cm.Data = map[string]string{"a": "2"}
	if _, err := h.prop.Propose(context.Background(), state.Update(cm, 0)); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the projected volume to follow the ConfigMap", func() bool { return read("all", "a") == "2" })
}

// TestServiceAccountTokenProjection: a projected serviceAccountToken
// source holds the token the node mints for the pod, in a tmpfs like a
// secret; on a node that mints none (no ServiceAccountToken) the pod's
// containers do not start, with a message that names the source.
// Mounting needs root.
func TestServiceAccountTokenProjection(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("a token volume mounts a tmpfs, which needs root")
	}
	tokenPod := func(name string) *corev1.Pod {
		p := newPod(name, ctr("main"))
		p.Spec.Volumes = []corev1.Volume{{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: new(int64(3607))}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{fieldItem("namespace", "metadata.namespace", nil)}}},
			}}}}}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}}
		return p
	}
	unmountAll := func(h *harness) {
		t.Cleanup(func() {
			ms, _ := mountsUnder(h.dir)
			for _, m := range ms {
				_ = unix.Unmount(m, unix.MNT_DETACH)
			}
		})
	}

	h := newHarness(t)
	unmountAll(h)
	h.start(h.config())
	h.create(tokenPod("no-issuer"))
	got := h.waitPod("no-issuer", "config error", waiting("main", "CreateContainerConfigError"))
	want := `volume "kube-api-access": projected serviceAccountToken sources are not supported: this node issues no service-account tokens`
	if msg := status(got, "main").State.Waiting.Message; msg != want {
		t.Errorf("message %q, want %q", msg, want)
	}
	if got.Status.Phase != corev1.PodPending {
		t.Errorf("phase %s, want Pending", got.Status.Phase)
	}
	if cs := h.podContainers(got.UID); len(cs) != 0 {
		t.Errorf("containers created: %v", cs)
	}

	h2 := newHarness(t)
	unmountAll(h2)
	cfg := h2.config()
	cfg.ServiceAccountToken = func(pod *corev1.Pod, audience string, secs int64) (string, error) {
		return "token-for-" + pod.Name + "-" + strconv.FormatInt(secs, 10), nil
	}
	h2.start(cfg)
	p := tokenPod("issued")
	h2.create(p)
	h2.waitPod("issued", "running", running("main", 0))
	dir := filepath.Join(h2.dir, "pods", string(p.UID), "volumes", "kube-api-access")
	if mounted, err := isMountPoint(dir); err != nil || !mounted {
		t.Errorf("token volume: mounted %v, %v; want a tmpfs", mounted, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "token")); err != nil || string(b) != "token-for-issued-3607" {
		t.Errorf("token: %q, %v", b, err)
	}
}

// TestProjectedSecretInMemory: a projected volume with a secret source
// lives in a tmpfs like a secret volume; one without stays on disk.
// Mounting needs root.
func TestProjectedSecretInMemory(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("a projected volume with a secret mounts a tmpfs, which needs root")
	}
	h := newHarness(t)
	t.Cleanup(func() {
		ms, _ := mountsUnder(h.dir)
		for _, m := range ms {
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
	})
	h.create(&corev1.Secret{ObjectMeta: meta("creds"), Data: map[string][]byte{"password": []byte("hunter2")}})
	h.create(&corev1.ConfigMap{ObjectMeta: meta("conf"), Data: map[string]string{"a": "1"}})
	h.start(h.config())
	c := ctr("app")
	c.VolumeMounts = []corev1.VolumeMount{{Name: "with-secret", MountPath: "/s"}, {Name: "without", MountPath: "/c"}}
	pod := newPod("projected-memory", c)
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "with-secret", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}}},
		}}}},
		{Name: "without", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}},
		}}}},
	}
	h.create(pod)
	h.waitPod("projected-memory", "running", running("app", 0))
	vols := filepath.Join(h.dir, "pods", string(pod.UID), "volumes")
	if mounted, err := isMountPoint(filepath.Join(vols, "with-secret")); err != nil || !mounted {
		t.Errorf("projected volume with a secret: mounted %v, %v; want a tmpfs", mounted, err)
	}
	if mounted, err := isMountPoint(filepath.Join(vols, "without")); err != nil || mounted {
		t.Errorf("projected volume without a secret: mounted %v, %v; want a plain directory", mounted, err)
	}
	if b, err := os.ReadFile(filepath.Join(vols, "with-secret", "password")); err != nil || string(b) != "hunter2" {
		t.Errorf("password: %q, %v", b, err)
	}
	h.deletePod("projected-memory")
	h.waitFor("the pod's files to go", func() bool {
		_, err := os.Stat(filepath.Join(h.dir, "pods", string(pod.UID)))
		return os.IsNotExist(err)
	})
	if ms, err := mountsUnder(h.dir); err != nil || len(ms) != 0 {
		t.Errorf("left mounted: %v, %v", ms, err)
	}
}
