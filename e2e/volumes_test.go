package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestDownwardAPIAndProjectedVolumes: a pod with a downwardAPI volume and a
// projected volume (configMap + secret + downwardAPI) reads, from inside
// its container, the files in the kubelet's formats and modes, cannot
// write them, and sees them follow a label change and a ConfigMap change
// while it runs. A projected serviceAccountToken with an audience of the
// pod's own is minted on the node and readable in the container.
func TestDownwardAPIAndProjectedVolumes(t *testing.T) {
	c := newCluster(t, 1)
	importImages(t, c, "n1")
	cs := clientset(t, c)
	ctx := ctxT(t, 5*time.Minute)

	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, configMap("app-config", map[string]string{"greeting": "hello", "unused": "x"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "app-secret"},
		StringData: map[string]string{"password": "hunter2"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	field := func(path, fieldPath string) corev1.DownwardAPIVolumeFile {
		return corev1.DownwardAPIVolumeFile{Path: path, FieldRef: &corev1.ObjectFieldSelector{FieldPath: fieldPath}}
	}
	res := func(path, res, divisor string) corev1.DownwardAPIVolumeFile {
		return corev1.DownwardAPIVolumeFile{Path: path, ResourceFieldRef: &corev1.ResourceFieldSelector{
			ContainerName: "main", Resource: res, Divisor: mustQuantity(divisor)}}
	}
	secretMode := field("pod/uid", "metadata.uid")
	secretMode.Mode = ptr(int32(0o400))
	p := busyboxPod("downward", "n1", corev1.RestartPolicyAlways, "sleep 3600")
	p.Labels = map[string]string{"app": "shop", "tier": "front"}
	p.Annotations = map[string]string{"build": `4"2`}
	p.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	p.Spec.Containers[0].Resources = corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceCPU: mustQuantity("500m"), corev1.ResourceMemory: mustQuantity("64Mi")},
		Requests: corev1.ResourceList{corev1.ResourceCPU: mustQuantity("250m"), corev1.ResourceMemory: mustQuantity("32Mi")},
	}
	p.Spec.Volumes = []corev1.Volume{
		{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			field("labels", "metadata.labels"),
			field("annotations", "metadata.annotations"),
			field("tier", "metadata.labels['tier']"),
			field("pod/name", "metadata.name"),
			field("pod/namespace", "metadata.namespace"),
			secretMode,
			res("cpu_limit", "limits.cpu", "1m"),
			res("cpu_request", "requests.cpu", "1"), // 0.25 core, rounded up
			res("mem_request", "requests.memory", "1Mi"),
		}}}},
		{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr(int32(0o440)),
			Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"},
					Items: []corev1.KeyToPath{{Key: "greeting", Path: "config/greeting"}}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "app-secret"}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{field("app", "metadata.labels['app']")}}},
			},
		}}},
	}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "info", MountPath: "/etc/info"}, {Name: "all", MountPath: "/etc/all"}}
	created, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitPod(t, cs, "default", "downward", 2*time.Minute, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })

	// Every file with its mode, as the container sees them.
	const show = `cd /etc/info && for f in labels annotations tier pod/name pod/namespace pod/uid cpu_limit cpu_request mem_request /etc/all/config/greeting /etc/all/password /etc/all/app; do echo "$f $(stat -c %a $f): $(cat $f | tr '\n' '|')"; done`
	out, err := inPod(t, c, "", "downward", show)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		`labels 644: app="shop"|tier="front"`,
		`annotations 644: build="4\"2"`,
		`tier 644: front`,
		`pod/name 644: downward`,
		`pod/namespace 644: default`,
		`pod/uid 400: ` + string(created.UID),
		`cpu_limit 644: 500`,
		`cpu_request 644: 1`,
		`mem_request 644: 32`,
		`/etc/all/config/greeting 440: hello`,
		`/etc/all/password 440: hunter2`,
		`/etc/all/app 440: shop`,
	}, "\n") + "\n"
	if out != want {
		t.Errorf("files in the container:\n%s\nwant:\n%s", out, want)
	}
	if out, err := inPod(t, c, "", "downward", "ls /etc/all"); err != nil || out != "app\nconfig\npassword\n" {
		t.Errorf("projected volume holds %q, %v; want app, config and password alone", out, err)
	}
	if out, err := inPod(t, c, "", "downward", "touch /etc/info/x /etc/all/x 2>&1; echo rc=$?"); err != nil || !strings.Contains(out, "Read-only file system") {
		t.Errorf("writing into the volumes: %q, %v; want a read-only file system", out, err)
	}

	// A label changes: both volumes follow while the container runs.
	patch := []byte(`{"metadata":{"labels":{"app":"outlet","tier":null,"zone":"b"}}}`)
	if _, err := cs.CoreV1().Pods("default").Patch(ctx, "downward", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		out, err := inPod(t, c, "", "downward", `cat /etc/info/labels; echo; echo "tier=[$(cat /etc/info/tier)]"; cat /etc/all/app`)
		if err != nil {
			return err
		}
		if want := "app=\"outlet\"\nzone=\"b\"\ntier=[]\noutlet"; out != want {
			return fmt.Errorf("after the label change the files read %q, want %q", out, want)
		}
		return nil
	})
	// The ConfigMap changes: the projected file follows.
	cm, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "app-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["greeting"] = "bonjour"
	if _, err := cs.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		out, err := inPod(t, c, "", "downward", "cat /etc/all/config/greeting")
		if err == nil && out != "bonjour" {
			err = fmt.Errorf("greeting %q, want bonjour", out)
		}
		return err
	})

	// A projected token of the pod's own (an audience of its choosing): the
	// node mints it, bound to the pod, into a tmpfs.
	tok := busyboxPod("token", "n1", corev1.RestartPolicyAlways, "sleep 3600")
	tok.Spec.AutomountServiceAccountToken = ptr(false)
	tok.Spec.Volumes = []corev1.Volume{{Name: "vault-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Path: "token", Audience: "vault", ExpirationSeconds: ptr(int64(3607))}}},
	}}}}
	tok.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "vault-token", MountPath: "/var/run/secrets/vault"}}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, tok, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, cs, "default", "token", time.Minute, "running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	out, err = inPod(t, c, "", "token", "cat /var/run/secrets/vault/token")
	if err != nil || strings.Count(out, ".") != 2 || len(out) < 100 {
		t.Errorf("token file: %q %v; want a JWT", out, err)
	}
	if out, err := inPod(t, c, "", "token", "grep /var/run/secrets/vault /proc/mounts"); err != nil || !strings.HasPrefix(out, "tmpfs ") {
		t.Errorf("token volume mount: %q %v; want a tmpfs", out, err)
	}
	if out, err := kubectl(t, c, "describe", "pod", "downward"); err != nil || !strings.Contains(out, "metadata.labels -> labels") {
		t.Errorf("kubectl describe pod downward: %v\n%s", err, out)
	}
}
