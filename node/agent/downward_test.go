package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/state"
)

// downwardPod is the pod the downward API tests read: labels and
// annotations with characters that need quoting, and resources on an app
// container and an init container.
func downwardPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-1", Namespace: "shop", UID: types.UID("6f1c2a8e-0000-4000-8000-000000000001"),
			Labels: map[string]string{
				"app": "web", "a.b": "2", "a": "1", // "a" before "a.b": sorted by key, not by line
				"quote": `say "hi"`,
			},
			Annotations: map[string]string{
				"example.com/multi": "line1\nline2\ttab",
				"note":              "café",
				"empty":             "",
				"Mixed.Case/Key":    "x",
			},
		},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "setup", Resources: corev1.ResourceRequirements{
				Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")},
			}}},
			Containers: []corev1.Container{{Name: "app", Resources: corev1.ResourceRequirements{
				Limits: corev1.ResourceList{
					corev1.ResourceCPU:              resource.MustParse("500m"),
					corev1.ResourceMemory:           resource.MustParse("100Mi"),
					corev1.ResourceEphemeralStorage: resource.MustParse("2Gi"),
				},
				Requests: corev1.ResourceList{
					corev1.ResourceCPU:              resource.MustParse("250m"),
					corev1.ResourceMemory:           resource.MustParse("64Mi"),
					corev1.ResourceEphemeralStorage: resource.MustParse("1G"),
				},
			}}},
		},
	}
}

// TestDownwardField: every fieldRef a downwardAPI volume may use, in the
// kubelet's formats, and the ones it may not.
func TestDownwardField(t *testing.T) {
	pod := downwardPod()
	tests := []struct{ path, want, wantErr string }{
		{path: "metadata.name", want: "web-1"},
		{path: "metadata.namespace", want: "shop"},
		{path: "metadata.uid", want: "6f1c2a8e-0000-4000-8000-000000000001"},
		// Sorted key="value" lines, values Go-quoted, no final newline.
		{path: "metadata.labels", want: `a="1"` + "\n" + `a.b="2"` + "\n" + `app="web"` + "\n" + `quote="say \"hi\""`},
		{path: "metadata.annotations", want: `Mixed.Case/Key="x"` + "\n" + `empty=""` + "\n" + `example.com/multi="line1\nline2\ttab"` + "\n" + `note="café"`},
		{path: "metadata.labels['app']", want: "web"},
		{path: "metadata.labels['quote']", want: `say "hi"`},
		{path: "metadata.labels['absent']", want: ""},
		{path: "metadata.annotations['example.com/multi']", want: "line1\nline2\ttab"},
		{path: "metadata.annotations['Mixed.Case/Key']", want: "x"},
		{path: "spec.nodeName", wantErr: `fieldPath "spec.nodeName" is not supported in a volume`},
		{path: "status.podIP", wantErr: `fieldPath "status.podIP" is not supported in a volume`},
		{path: "metadata.generateName", wantErr: `is not supported in a volume`},
		{path: "metadata.labels['bad key!']", wantErr: "invalid key subscript in metadata.labels['bad key!']"},
		{path: "metadata.labels['Upper.com/x']", wantErr: "invalid key subscript"}, // a label key's prefix is a lower-case DNS subdomain
		{path: "metadata.name['x']", wantErr: `fieldPath "metadata.name['x']" does not support a subscript`},
	}
	for _, tc := range tests {
		got, err := downwardField(pod, tc.path)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: %q, %v; want error %q", tc.path, got, err, tc.wantErr)
			}
		case err != nil || got != tc.want:
			t.Errorf("%s = %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
	if got, err := downwardField(&corev1.Pod{}, "metadata.labels"); err != nil || got != "" {
		t.Errorf("labels of a pod without labels = %q, %v; want empty", got, err)
	}
}

// TestDownwardResource: resourceFieldRef in a volume names its container
// (app or init), and values are rounded up to the divisor as the kubelet
// does.
func TestDownwardResource(t *testing.T) {
	pod := downwardPod()
	tests := []struct{ container, res, divisor, want, wantErr string }{
		{container: "app", res: "limits.cpu", want: "1"}, // 0.5 cores, rounded up
		{container: "app", res: "limits.cpu", divisor: "1m", want: "500"},
		{container: "app", res: "requests.cpu", divisor: "1m", want: "250"},
		{container: "app", res: "requests.cpu", divisor: "100m", want: "3"}, // 2.5, rounded up
		{container: "app", res: "limits.memory", want: strconv.Itoa(100 << 20)},
		{container: "app", res: "limits.memory", divisor: "1Mi", want: "100"},
		{container: "app", res: "limits.memory", divisor: "1Gi", want: "1"},
		{container: "app", res: "requests.memory", divisor: "1M", want: "68"}, // 67.1 MB, rounded up
		{container: "app", res: "limits.ephemeral-storage", divisor: "1Gi", want: "2"},
		{container: "app", res: "requests.ephemeral-storage", divisor: "1Mi", want: "954"}, // 1G = 953.7 Mi
		{container: "setup", res: "limits.cpu", want: "2"},
		{container: "setup", res: "requests.memory", want: "0"}, // unset request
		{container: "", res: "limits.cpu", wantErr: "a resourceFieldRef in a volume needs a containerName"},
		{container: "nope", res: "limits.cpu", wantErr: `resourceFieldRef: container "nope" not found in the pod`},
		{container: "app", res: "limits.gpu", wantErr: `unsupported resourceFieldRef "limits.gpu"`},
	}
	for _, tc := range tests {
		ref := &corev1.ResourceFieldSelector{ContainerName: tc.container, Resource: tc.res}
		if tc.divisor != "" {
			ref.Divisor = resource.MustParse(tc.divisor)
		}
		got, err := downwardResource(pod, ref, nil)
		switch {
		case tc.wantErr != "":
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%s of %q: %q, %v; want error %q", tc.res, tc.container, got, err, tc.wantErr)
			}
		case err != nil || got != tc.want:
			t.Errorf("%s of %q, divisor %q = %q, %v; want %q", tc.res, tc.container, tc.divisor, got, err, tc.want)
		}
	}
}

// volumeAgent is an agent that is not running, for writing volumes
// directly.
func volumeAgent(t *testing.T) (*harness, *Agent) {
	t.Helper()
	h := newHarness(t)
	a, err := New(h.config())
	if err != nil {
		t.Fatal(err)
	}
	return h, a
}

func fieldItem(path, fieldPath string, mode *int32) corev1.DownwardAPIVolumeFile {
	return corev1.DownwardAPIVolumeFile{Path: path, FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: fieldPath}, Mode: mode}
}

func resourceItem(path, container, res, divisor string) corev1.DownwardAPIVolumeFile {
	ref := &corev1.ResourceFieldSelector{ContainerName: container, Resource: res}
	if divisor != "" {
		ref.Divisor = resource.MustParse(divisor)
	}
	return corev1.DownwardAPIVolumeFile{Path: path, ResourceFieldRef: ref}
}

// TestDownwardAPIVolume: a downwardAPI volume's files, with the volume's
// defaultMode, items' modes and paths in subdirectories.
func TestDownwardAPIVolume(t *testing.T) {
	_, a := volumeAgent(t)
	pod := downwardPod()
	v := corev1.Volume{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
		DefaultMode: new(int32(0o440)),
		Items: []corev1.DownwardAPIVolumeFile{
			fieldItem("name", "metadata.name", nil),
			fieldItem("labels", "metadata.labels", new(int32(0o400))),
			fieldItem("meta/annotations", "metadata.annotations", nil),
			fieldItem("meta/deep/er/namespace", "metadata.namespace", new(int32(0o644))),
			fieldItem("app", "metadata.labels['app']", nil),
			resourceItem("cpu_limit", "app", "limits.cpu", "1m"),
			resourceItem("mem_request", "app", "requests.memory", "1Mi"),
		},
	}}}
	dir := filepath.Join(t.TempDir(), "info")
	if _, err := a.writeSourceVolume(dir, pod, v); err != nil {
		t.Fatal(err)
	}
	labels, _ := downwardField(pod, "metadata.labels")
	annotations, _ := downwardField(pod, "metadata.annotations")
	checkFiles(t, dir, map[string]wantFile{
		"name":                   {"web-1", 0o440},
		"labels":                 {labels, 0o400},
		"meta/annotations":       {annotations, 0o440},
		"meta/deep/er/namespace": {"shop", 0o644},
		"app":                    {"web", 0o440},
		"cpu_limit":              {"500", 0o440},
		"mem_request":            {"64", 0o440},
	})

	// Without a defaultMode (an object the API did not default): 0644.
	v.DownwardAPI.DefaultMode = nil
	v.DownwardAPI.Items = v.DownwardAPI.Items[:1]
	dir = filepath.Join(t.TempDir(), "info")
	if _, err := a.writeSourceVolume(dir, pod, v); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, map[string]wantFile{"name": {"web-1", 0o644}})

	for _, tc := range []struct {
		item    corev1.DownwardAPIVolumeFile
		wantErr string
	}{
		{fieldItem("node", "spec.nodeName", nil), `volume "info": downwardAPI item "node": fieldPath "spec.nodeName" is not supported in a volume`},
		{resourceItem("cpu", "", "limits.cpu", ""), `volume "info": downwardAPI item "cpu": a resourceFieldRef in a volume needs a containerName`},
		{corev1.DownwardAPIVolumeFile{Path: "nothing"}, `volume "info": downwardAPI item "nothing": needs a fieldRef or a resourceFieldRef`},
		{fieldItem("../escape", "metadata.name", nil), `volume "info": bad item path "../escape"`},
	} {
		v.DownwardAPI.Items = []corev1.DownwardAPIVolumeFile{tc.item}
		_, err := a.writeSourceVolume(filepath.Join(t.TempDir(), "info"), pod, v)
		var ce *configError
		if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tc.wantErr) {
			t.Errorf("item %s: %v; want a config error %q", tc.item.Path, err, tc.wantErr)
		}
	}
}

// TestProjectedVolume: configMap, secret and downwardAPI sources in one
// directory, with the volume's defaultMode, items' modes and optional
// sources; a later source wins a path.
func TestProjectedVolume(t *testing.T) {
	h, a := volumeAgent(t)
	pod := downwardPod()
	pod.Namespace = testNamespace
	h.create(&corev1.ConfigMap{ObjectMeta: meta("conf"), Data: map[string]string{"a": "1", "b": "2"}, BinaryData: map[string][]byte{"bin": {0, 1}}})
	h.create(&corev1.Secret{ObjectMeta: meta("creds"), Data: map[string][]byte{"user": []byte("admin"), "pass": []byte("hunter2")}})
	v := corev1.Volume{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: new(int32(0o440)),
		Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"},
				Items: []corev1.KeyToPath{{Key: "a", Path: "conf/a", Mode: new(int32(0o600))}, {Key: "bin", Path: "conf/bin"}}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: new(true)}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: new(true),
				Items: []corev1.KeyToPath{{Key: "k", Path: "k"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				fieldItem("pod/name", "metadata.name", nil),
				fieldItem("pod/app", "metadata.labels['app']", new(int32(0o444))),
				fieldItem("user", "metadata.namespace", nil), // after the secret: wins "user"
				resourceItem("pod/cpu", "app", "requests.cpu", "1m"),
			}}},
		},
	}}}
	dir := filepath.Join(t.TempDir(), "all")
	version, err := a.writeSourceVolume(dir, pod, v)
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, map[string]wantFile{
		"conf/a":   {"1", 0o600},
		"conf/bin": {"\x00\x01", 0o440},
		"pass":     {"hunter2", 0o440},
		"user":     {testNamespace, 0o440},
		"pod/name": {"web-1", 0o440},
		"pod/app":  {"web", 0o444},
		"pod/cpu":  {"250", 0o440},
	})
	if cheap, err := a.volumeSources(pod, v, nil); err != nil || cheap != version {
		t.Errorf("version without files = %q, %v; want %q, as written", cheap, err, version)
	}

	for _, tc := range []struct {
		source  corev1.VolumeProjection
		wantErr string
	}{
		{corev1.VolumeProjection{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}}},
			`volume "all": configmap "nope" not found`},
		{corev1.VolumeProjection{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"},
			Items: []corev1.KeyToPath{{Key: "token", Path: "token"}}}},
			`volume "all": couldn't find key token in Secret default/creds`},
		{corev1.VolumeProjection{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
			`volume "all": projected serviceAccountToken sources are not supported: this node issues no service-account tokens`},
		{corev1.VolumeProjection{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{Path: "ca.crt"}},
			`volume "all": projected clusterTrustBundle sources are not supported by Shoal`},
		{corev1.VolumeProjection{}, `volume "all": projected source 1 has no configMap, secret, downwardAPI or serviceAccountToken`},
	} {
		// After a good source: the whole volume fails, not just the source.
		bad := v.DeepCopy()
		bad.Projected.Sources = []corev1.VolumeProjection{v.Projected.Sources[0], tc.source}
		_, err := a.writeSourceVolume(filepath.Join(t.TempDir(), "all"), pod, *bad)
		var ce *configError
		if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tc.wantErr) {
			t.Errorf("%v; want a config error %q", err, tc.wantErr)
		}
	}
}

// TestAPIVolumeRefresh: refreshSourceVolumes rewrites a downwardAPI or
// projected volume when what it shows changed (labels, annotations, a
// source's resourceVersion) and otherwise does nothing at all.
func TestAPIVolumeRefresh(t *testing.T) {
	h, a := volumeAgent(t)
	h.create(&corev1.ConfigMap{ObjectMeta: meta("conf"), Data: map[string]string{"a": "1"}})
	pod := newPod("web", ctr("app"))
	pod.Labels = map[string]string{"app": "web"}
	pod.Annotations = map[string]string{"note": "one"}
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "labels", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{fieldItem("labels", "metadata.labels", nil)}}}},
		{Name: "name", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{fieldItem("name", "metadata.name", nil)}}}},
		{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{fieldItem("note", "metadata.annotations['note']", nil)}}},
		}}}},
	}
	dir := t.TempDir()
	if _, _, err := a.prepareVolumes(dir, pod); err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	a.refreshSourceVolumes(dir, pod, seen)
	file := func(vol, name string) string { return filepath.Join(dir, "volumes", vol, name) }
	read := func(vol, name string) string {
		b, err := os.ReadFile(file(vol, name))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	// Files removed behind the agent's back show whether a refresh wrote.
	removeAll := func() {
		for _, f := range []string{file("labels", "labels"), file("name", "name"), file("proj", "a"), file("proj", "note")} {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	written := func(vol, name string) bool { _, err := os.Stat(file(vol, name)); return err == nil }

	removeAll()
	a.refreshSourceVolumes(dir, pod, seen)
	for _, f := range [][2]string{{"labels", "labels"}, {"name", "name"}, {"proj", "a"}, {"proj", "note"}} {
		if written(f[0], f[1]) {
			t.Errorf("volume %s was rewritten though nothing changed", f[0])
		}
	}

	// A label changes: the labels volume follows; the others show no
	// labels and stay as they are.
	pod = pod.DeepCopy()
	pod.Labels["tier"] = "front"
	a.refreshSourceVolumes(dir, pod, seen)
	if got, want := read("labels", "labels"), `app="web"`+"\n"+`tier="front"`; got != want {
		t.Errorf("labels after a label change = %q, want %q", got, want)
	}
	if written("name", "name") || written("proj", "note") {
		t.Errorf("a volume that shows no labels was rewritten for a label change")
	}

	// An annotation changes: the projected volume follows.
	pod = pod.DeepCopy()
	pod.Annotations["note"] = "two"
	a.refreshSourceVolumes(dir, pod, seen)
	if got := read("proj", "note"); got != "two" {
		t.Errorf("note after an annotation change = %q, want two", got)
	}
	if read("proj", "a") != "1" {
		t.Errorf("the projected volume was not written whole: a = %q", read("proj", "a"))
	}

	// The ConfigMap changes: the projected volume follows.
	o, _ := h.store.Get("configmaps", testNamespace, "conf")
	cm := o.(*corev1.ConfigMap).DeepCopy()
	cm.Data = map[string]string{"a": "10", "b": "20"}
	if _, err := h.prop.Propose(context.Background(), state.Update(cm, 0)); err != nil {
		t.Fatal(err)
	}
	a.refreshSourceVolumes(dir, pod, seen)
	if read("proj", "a") != "10" || read("proj", "b") != "20" {
		t.Errorf("projected volume after a ConfigMap change: a=%q b=%q", read("proj", "a"), read("proj", "b"))
	}
}

// TestTokenSource: a projected serviceAccountToken source holds what the
// node's minter returns for the pod and the source's audience and
// lifetime, and its version moves on once 80% of the lifetime passed, so a
// sync rewrites it with a fresh token.
func TestTokenSource(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	cfg.Now = func() time.Time { return now }
	var calls []string
	cfg.ServiceAccountToken = func(pod *corev1.Pod, audience string, secs int64) (string, error) {
		calls = append(calls, fmt.Sprintf("%s/%s %s %d", pod.Namespace, pod.Name, audience, secs))
		return fmt.Sprintf("token-%d", len(calls)), nil
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pod := downwardPod()
	pod.Namespace = testNamespace
	exp := int64(3600)
	v := corev1.Volume{Name: "api", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: new(int32(0o644)),
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "vault", ExpirationSeconds: &exp}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{fieldItem("namespace", "metadata.namespace", nil)}}},
		},
	}}}
	if !holdsSecret(v) {
		t.Fatal("a token volume must live in a tmpfs")
	}
	dir := filepath.Join(t.TempDir(), "api")
	version, err := a.writeSourceVolume(dir, pod, v)
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, map[string]wantFile{"token": {"token-1", 0o644}, "namespace": {testNamespace, 0o644}})
	if len(calls) != 1 || calls[0] != testNamespace+"/web-1 vault 3600" {
		t.Fatalf("minter calls %q", calls)
	}
	// A resync within the period sees the same version and mints nothing.
	now = now.Add(10 * time.Minute)
	if cheap, err := a.volumeSources(pod, v, nil); err != nil || cheap != version || len(calls) != 1 {
		t.Fatalf("within the period: version %q (written %q), %v, %d calls", cheap, version, err, len(calls))
	}
	// 48 minutes (80% of an hour) on, the version moves: time to refresh.
	now = now.Add(48 * time.Minute)
	if cheap, _ := a.volumeSources(pod, v, nil); cheap == version {
		t.Fatal("version unchanged after 80% of the token's lifetime")
	}
	if _, err := a.writeSourceVolume(dir, pod, v); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, map[string]wantFile{"token": {"token-2", 0o644}, "namespace": {testNamespace, 0o644}})
}
