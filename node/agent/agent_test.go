package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/containertest"
	"github.com/shoal-dev/shoal/node/podnet"
)

func TestNewValidatesConfig(t *testing.T) {
	h := newHarness(t)
	for name, mutate := range map[string]func(*Config){
		"no node name":      func(c *Config) { c.NodeName = "" },
		"no store":          func(c *Config) { c.Store = nil },
		"no proposer":       func(c *Config) { c.Proposer = nil },
		"no runtime":        func(c *Config) { c.Runtime = nil },
		"no network":        func(c *Config) { c.Network = nil },
		"relative data dir": func(c *Config) { c.DataDir = "data" },
		"bad host IP":       func(c *Config) { c.HostIP = "not-an-ip" },
	} {
		cfg := h.config()
		mutate(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	a, err := New(h.config())
	if err != nil {
		t.Fatal(err)
	}
	if a.cfg.ClusterDNS != DefaultClusterDNS || a.cfg.ClusterDomain != DefaultClusterDomain || a.cfg.Now == nil {
		t.Errorf("defaults not applied: %+v", a.cfg)
	}
}

// TestRunsPod checks the container spec the agent derives from a pod and
// the status it reports, and that it leaves other nodes' pods alone.
func TestRunsPod(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.create(&corev1.ConfigMap{ObjectMeta: meta("settings"), Data: map[string]string{"LEVEL": "debug", "MODE": "fast"}})
	h.create(&corev1.Secret{ObjectMeta: meta("creds"), Data: map[string][]byte{"password": []byte("hunter2")}})
	a, _ := h.start(h.config())

	elsewhere := newPod("elsewhere", ctr("app"))
	elsewhere.Spec.NodeName = "node-b"
	unbound := newPod("unbound", ctr("app"))
	unbound.Spec.NodeName = ""
	h.create(elsewhere)
	h.create(unbound)

	c := corev1.Container{
		Name:       "app",
		Image:      "busybox",
		Command:    []string{"/bin/server"},
		Args:       []string{"--name=$(POD_NAME)", "--ip=$(POD_IP)", "--level=$(CM_LEVEL)", "$$(POD_NAME)", "$(UNDEFINED)"},
		WorkingDir: "/srv",
		EnvFrom: []corev1.EnvFromSource{{
			Prefix:       "CM_",
			ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}},
		}},
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "MODE"}}},
			{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
			{Name: "MAYBE", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Key: "k", Optional: new(true)}}},
			{Name: "GREETING", Value: "hello $(POD_NAME)"},
		},
		Resources: corev1.ResourceRequirements{
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:              new(int64(2000)),
			ReadOnlyRootFilesystem: new(true),
			Capabilities:           &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}},
		},
		VolumeMounts:           []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}},
		TerminationMessagePath: "/dev/termination-log",
	}
	pod := newPod("web", c)
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: new(int64(1000)), RunAsGroup: new(int64(3000)), RunAsNonRoot: new(true)}
	pod.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	h.create(pod)

	p := h.waitPod("web", "running and ready", all(hasPhase(corev1.PodRunning), isReady(true)))
	uid := pod.UID
	id := containerID(uid, "app", 0)
	podDir := filepath.Join(h.dir, "pods", string(uid))
	podIP := "10.42.0.2"

	// The container.
	got, ok := h.rt.Spec(id)
	if !ok {
		t.Fatalf("no container %s; runtime calls: %v", id, h.rt.Calls())
	}
	want := container.ContainerSpec{
		ID:      id,
		Image:   "busybox",
		Command: []string{"/bin/server"},
		Args:    []string{"--name=web", "--ip=" + podIP, "--level=debug", "$(POD_NAME)", "$(UNDEFINED)"},
		Env: []string{
			"CM_LEVEL=debug", "CM_MODE=fast", // envFrom first, sorted
			"POD_NAME=web", "POD_IP=" + podIP, "MODE=fast", "PASSWORD=hunter2", "GREETING=hello web",
		},
		WorkingDir: "/srv",
		Hostname:   "web",
		NetNSPath:  "/run/netns/fake-" + string(uid),
		Mounts: []container.Mount{
			{Source: filepath.Join(podDir, "volumes", "scratch"), Destination: "/scratch"},
			{Source: filepath.Join(podDir, "etc-hosts"), Destination: "/etc/hosts"},
			{Source: filepath.Join(podDir, "resolv.conf"), Destination: "/etc/resolv.conf"},
			{Source: filepath.Join(podDir, "hostname"), Destination: "/etc/hostname"},
			{Source: filepath.Join(podDir, "termination", "app-0"), Destination: "/dev/termination-log"},
		},
		Resources: container.Resources{MemoryLimitBytes: 64 << 20, CPUQuota: 50000, CPUPeriod: 100000, CPUShares: 256},
		Security: container.Security{
			RunAsUser:      new(int64(2000)), // the container's, over the pod's
			RunAsGroup:     new(int64(3000)), // the pod's
			ReadOnlyRootFS: true,
			CapAdd:         []string{"NET_ADMIN"},
			CapDrop:        []string{"ALL"},
		},
		LogPath: filepath.Join(podDir, "logs", "app", "0.log"),
		Labels: map[string]string{
			labelPodUID: string(uid), labelPodName: "web", labelPodNamespace: testNamespace,
			labelContainer: "app", labelAttempt: "0",
		},
		CgroupParent: "/shoal/pod-" + string(uid),
	}
	byDest := cmpopts.SortSlices(func(x, y container.Mount) bool { return x.Destination < y.Destination })
	if diff := cmp.Diff(want, got, byDest); diff != "" {
		t.Errorf("container spec (-want +got):\n%s", diff)
	}
	for i, m := range got.Mounts[1:] {
		if strings.Count(m.Destination, "/") < strings.Count(got.Mounts[i].Destination, "/") {
			t.Errorf("mount %s comes after the deeper %s: parents must be mounted first", m.Destination, got.Mounts[i].Destination)
		}
	}
	for file, want := range map[string]string{
		"etc-hosts":   podIP + "\tweb\n",
		"resolv.conf": "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.43.0.10\noptions ndots:5\n",
		"hostname":    "web\n",
	} {
		b, err := os.ReadFile(filepath.Join(podDir, file))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s = %q, %v; want it to contain %q", file, b, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(podDir, "volumes", "scratch")); err != nil || !fi.IsDir() {
		t.Errorf("emptyDir volume: %v", err)
	}

	// The status.
	img, err := h.rt.GetImage(context.Background(), "busybox")
	if err != nil {
		t.Fatal(err)
	}
	st := p.Status
	if st.PodIP != podIP || len(st.PodIPs) != 1 || st.PodIPs[0].IP != podIP {
		t.Errorf("podIP %q, podIPs %v; want %s", st.PodIP, st.PodIPs, podIP)
	}
	if st.HostIP != testHostIP || len(st.HostIPs) != 1 || st.HostIPs[0].IP != testHostIP {
		t.Errorf("hostIP %q, hostIPs %v; want %s", st.HostIP, st.HostIPs, testHostIP)
	}
	if st.QOSClass != corev1.PodQOSBurstable {
		t.Errorf("qosClass %s, want Burstable", st.QOSClass)
	}
	if st.StartTime == nil {
		t.Error("no startTime")
	}
	for _, ct := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled} {
		if c := condition(p, ct); c == nil || c.Status != corev1.ConditionTrue {
			t.Errorf("condition %s = %+v, want True", ct, c)
		}
	}
	cs := status(p, "app")
	if cs == nil {
		t.Fatal("no status for container app")
	}
	wantCS := corev1.ContainerStatus{
		Name:         "app",
		ContainerID:  "containerd://" + id,
		Image:        "docker.io/library/busybox:latest",
		ImageID:      img.ConfigDigest,
		RestartCount: 0,
		Started:      new(true),
		Ready:        true,
	}
	if diff := cmp.Diff(wantCS, *cs, cmpopts.IgnoreFields(corev1.ContainerStatus{}, "State")); diff != "" {
		t.Errorf("container status (-want +got):\n%s", diff)
	}
	if cs.State.Running == nil || cs.State.Running.StartedAt.IsZero() {
		t.Errorf("state = %+v, want running", cs.State)
	}

	// Pods of other nodes, and pods not bound yet, are not this agent's.
	if uids := a.Pods(); !slices.Equal(uids, []types.UID{uid}) {
		t.Errorf("agent runs pods %v, want only %s", uids, uid)
	}
	for _, name := range []string{"elsewhere", "unbound"} {
		if p := h.pod(name); p.Status.Phase != "" || len(p.Status.Conditions) > 0 {
			t.Errorf("pod %s of another node got a status: %s", name, dumpPod(p))
		}
	}
	for _, c := range h.rt.Calls() {
		if c.Op == containertest.OpCreate && !strings.HasPrefix(c.ID, string(uid)) {
			t.Errorf("created container %s of another pod", c.ID)
		}
	}
}

// TestPendingUntilConfigMapExists checks CreateContainerConfigError and the
// Pending → Running transition once the missing object appears.
func TestPendingUntilConfigMapExists(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start(h.config())
	c := ctr("app")
	c.EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "later"}}}}
	pod := newPod("patient", c)
	h.create(pod)
	p := h.waitPod("patient", "config error", waiting("app", "CreateContainerConfigError"))
	if msg := status(p, "app").State.Waiting.Message; msg != `configmap "later" not found` {
		t.Errorf("message %q", msg)
	}
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("phase %s, want Pending", p.Status.Phase)
	}
	if c := condition(p, corev1.PodReady); c == nil || c.Status != corev1.ConditionFalse || c.Reason != "ContainersNotReady" || c.Message != "containers with unready status: [app]" {
		t.Errorf("Ready condition %+v", c)
	}
	if cs := h.podContainers(pod.UID); len(cs) != 0 {
		t.Errorf("containers created despite the config error: %v", cs)
	}
	h.create(&corev1.ConfigMap{ObjectMeta: meta("later"), Data: map[string]string{"K": "v"}})
	h.waitPod("patient", "running", all(hasPhase(corev1.PodRunning), running("app", 0)))
	if got, want := h.phases("patient"), []corev1.PodPhase{corev1.PodPending, corev1.PodRunning}; !slices.Equal(got, want) {
		t.Errorf("phases %v, want %v", got, want)
	}
	if spec, _ := h.rt.Spec(containerID(pod.UID, "app", 0)); !slices.Contains(spec.Env, "K=v") {
		t.Errorf("env %v lacks K=v", spec.Env)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.create(&corev1.ConfigMap{ObjectMeta: meta("settings"), Data: map[string]string{"MODE": "fast"}})
	h.start(h.config())

	cmKey := func(name, key string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}}
	}
	tests := []struct {
		name       string
		ctr        func(*corev1.Container)
		pod        func(*corev1.Pod)
		wantReason string
		wantMsg    string // contained in the waiting message
	}{{
		name:       "missing-configmap",
		ctr:        func(c *corev1.Container) { c.Env = []corev1.EnvVar{{Name: "X", ValueFrom: cmKey("absent", "k")}} },
		wantReason: "CreateContainerConfigError",
		wantMsg:    `env X: configmap "absent" not found`,
	}, {
		name:       "missing-key",
		ctr:        func(c *corev1.Container) { c.Env = []corev1.EnvVar{{Name: "X", ValueFrom: cmKey("settings", "nokey")}} },
		wantReason: "CreateContainerConfigError",
		wantMsg:    "couldn't find key nokey in ConfigMap default/settings",
	}, {
		name: "missing-secret",
		ctr: func(c *corev1.Container) {
			c.EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}}}}
		},
		wantReason: "CreateContainerConfigError",
		wantMsg:    `secret "absent" not found`,
	}, {
		name:       "image-runs-as-root",
		pod:        func(p *corev1.Pod) { p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: new(true)} },
		wantReason: "CreateContainerConfigError",
		wantMsg:    "container has runAsNonRoot and image will run as root",
	}, {
		name: "privileged-without-escalation",
		ctr: func(c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{Privileged: new(true), AllowPrivilegeEscalation: new(false)}
		},
		wantReason: "CreateContainerConfigError",
		wantMsg:    "cannot set allowPrivilegeEscalation to false and privileged to true",
	}, {
		name:       "unknown-volume",
		ctr:        func(c *corev1.Container) { c.VolumeMounts = []corev1.VolumeMount{{Name: "nope", MountPath: "/x"}} },
		wantReason: "CreateContainerConfigError",
		wantMsg:    `volumeMount "nope": no volume of that name in the pod`,
	}, {
		name: "unsupported-volume",
		pod: func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				NFS: &corev1.NFSVolumeSource{Server: "10.0.0.1", Path: "/x"}}}}
		},
		wantReason: "CreateContainerConfigError",
		wantMsg:    `volume "data": nfs volumes are not supported by Shoal`,
	}, {
		name: "missing-claim",
		pod: func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}}}
		},
		wantReason: "CreateContainerConfigError",
		wantMsg:    `volume "data": persistentvolumeclaim "c" not found`,
	}, {
		name: "hostpath-file-missing",
		pod: func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: filepath.Join(h.dir, "absent-file"), Type: new(corev1.HostPathFile)}}}}
		},
		wantReason: "CreateContainerConfigError",
		wantMsg:    "hostPath type check failed",
	}, {
		name:       "bad-image-name",
		ctr:        func(c *corev1.Container) { c.Image = "Not A Valid:Ref" },
		wantReason: "InvalidImageName",
		wantMsg:    `Failed to apply default image tag "Not A Valid:Ref"`,
	}, {
		name: "never-pull",
		ctr: func(c *corev1.Container) {
			c.Image, c.ImagePullPolicy = "example.com/absent:1", corev1.PullNever
		},
		wantReason: "ErrImageNeverPull",
		wantMsg:    `Container image "example.com/absent:1" is not present with pull policy of Never`,
	}}
	pods := map[string]*corev1.Pod{}
	for _, tc := range tests {
		c := ctr("app")
		if tc.ctr != nil {
			tc.ctr(&c)
		}
		p := newPod(tc.name, c)
		if tc.pod != nil {
			tc.pod(p)
		}
		pods[tc.name] = p
		h.create(p)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := h.waitPod(tc.name, "waiting with "+tc.wantReason, waiting("app", tc.wantReason))
			if msg := status(p, "app").State.Waiting.Message; !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("message %q, want it to contain %q", msg, tc.wantMsg)
			}
			if p.Status.Phase != corev1.PodPending {
				t.Errorf("phase %s, want Pending", p.Status.Phase)
			}
			if cs := h.podContainers(pods[tc.name].UID); len(cs) != 0 {
				t.Errorf("containers created: %v", cs)
			}
		})
	}
	// A volume problem is also the pod's message.
	if p := h.pod("unsupported-volume"); !strings.Contains(p.Status.Message, "nfs volumes are not supported") {
		t.Errorf("pod message %q", p.Status.Message)
	}
}

func TestImagePulls(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const mirror = "10.0.0.2:7443"
	var mu sync.Mutex
	var asked []string
	cfg := h.config()
	cfg.Mirrors = func(ref string) []container.Mirror {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, ref)
		return []container.Mirror{{Host: mirror}}
	}
	h.start(cfg)
	if _, err := h.rt.AddRemoteImage(mirror, "example.com/app:1", container.ImageConfig{Cmd: []string{"app"}}); err != nil {
		t.Fatal(err)
	}

	t.Run("from a mirror", func(t *testing.T) {
		c := ctr("app")
		c.Image = "example.com/app:1"
		pod := newPod("mirrored", c)
		h.create(pod)
		p := h.waitPod("mirrored", "running", running("app", 0))
		if img := status(p, "app").Image; img != "example.com/app:1" {
			t.Errorf("image %q", img)
		}
		if _, err := h.rt.GetImage(context.Background(), "example.com/app:1"); err != nil {
			t.Errorf("image not pulled: %v", err)
		}
		if !slices.ContainsFunc(h.rt.Calls(), func(c containertest.Call) bool {
			return c.Op == containertest.OpPullImage && c.ID == "example.com/app:1"
		}) {
			t.Errorf("no PullImage call: %v", h.rt.Calls())
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(asked, "example.com/app:1") {
			t.Errorf("Mirrors asked for %v, want the normalized ref", asked)
		}
	})

	t.Run("pull always, nowhere to pull from", func(t *testing.T) {
		// An edge node runs what it has when the pull fails.
		clear := h.rt.Inject(containertest.Fault{Op: containertest.OpPullImage, ID: "docker.io/library/busybox:latest", Err: errors.New("no route to host")})
		defer clear()
		c := ctr("app")
		c.ImagePullPolicy = corev1.PullAlways
		h.create(newPod("always", c))
		h.waitPod("always", "running", running("app", 0))
		if !slices.ContainsFunc(h.rt.Calls(), func(c containertest.Call) bool {
			return c.Op == containertest.OpPullImage && c.ID == "docker.io/library/busybox:latest" && c.Refresh
		}) {
			t.Error("imagePullPolicy Always did not try to pull with Refresh (the tag re-resolved at its registry)")
		}
	})

	t.Run("pull secrets", func(t *testing.T) {
		h.create(&corev1.Secret{ObjectMeta: meta("regcred"), Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"https://private.example:5000/v2/":{"username":"robot","password":"s3cret"}}}`)}})
		if _, err := h.rt.AddRemoteImage(mirror, "private.example:5000/team/app:1", container.ImageConfig{Cmd: []string{"app"}}); err != nil {
			t.Fatal(err)
		}
		c := ctr("app")
		c.Image = "private.example:5000/team/app:1"
		pod := newPod("private", c)
		pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
		h.create(pod)
		h.waitPod("private", "running", running("app", 0))
		if !slices.ContainsFunc(h.rt.Calls(), func(c containertest.Call) bool {
			return c.Op == containertest.OpPullImage && c.ID == "private.example:5000/team/app:1" && c.Auth == "robot:s3cret"
		}) {
			t.Fatalf("no PullImage call with the secret's credentials for its registry: %v", h.rt.Calls())
		}
	})

	t.Run("absent everywhere", func(t *testing.T) {
		c := ctr("app")
		c.Image = "example.com/missing:1"
		pod := newPod("missing", c)
		h.create(pod)
		p := h.waitSeen("missing", "ErrImagePull", waiting("app", "ErrImagePull"))
		msg := status(p, "app").State.Waiting.Message
		if !strings.Contains(msg, `failed to pull image "example.com/missing:1"`) || !strings.Contains(msg, mirror) {
			t.Errorf("ErrImagePull message %q should name the image and where it looked", msg)
		}
		p = h.waitSeen("missing", "ImagePullBackOff", waiting("app", "ImagePullBackOff"))
		if msg := status(p, "app").State.Waiting.Message; !strings.HasPrefix(msg, `Back-off pulling image "example.com/missing:1"`) {
			t.Errorf("ImagePullBackOff message %q", msg)
		}
		if p.Status.Phase != corev1.PodPending {
			t.Errorf("phase %s, want Pending", p.Status.Phase)
		}
		if cs := h.podContainers(pod.UID); len(cs) != 0 {
			t.Errorf("containers created without an image: %v", cs)
		}
		// Once a peer has it, the next try pulls it.
		if _, err := h.rt.AddRemoteImage(mirror, "example.com/missing:1", container.ImageConfig{}); err != nil {
			t.Fatal(err)
		}
		h.waitPod("missing", "running", all(hasPhase(corev1.PodRunning), running("app", 0)))
	})
}

func TestRestartPolicies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		policy      corev1.RestartPolicy
		exits       []int
		wantRestart bool            // after the last exit
		wantPhase   corev1.PodPhase // after the last exit
	}{
		{corev1.RestartPolicyAlways, []int{0}, true, corev1.PodRunning},
		{corev1.RestartPolicyAlways, []int{1, 0, 2}, true, corev1.PodRunning},
		{corev1.RestartPolicyOnFailure, []int{1}, true, corev1.PodRunning},
		{corev1.RestartPolicyOnFailure, []int{0}, false, corev1.PodSucceeded},
		{corev1.RestartPolicyOnFailure, []int{1, 0}, false, corev1.PodSucceeded},
		{corev1.RestartPolicyNever, []int{0}, false, corev1.PodSucceeded},
		{corev1.RestartPolicyNever, []int{3}, false, corev1.PodFailed},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/exits%v", tc.policy, tc.exits), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.start(h.config())
			pod := newPod("p", ctr("app"))
			pod.Spec.RestartPolicy = tc.policy
			h.create(pod)
			var ids []string
			for i, code := range tc.exits {
				p := h.waitPod("p", "run "+strconv.Itoa(i), running("app", int32(i)))
				id := runtimeID(status(p, "app"))
				if want := containerID(pod.UID, "app", i); id != want {
					t.Fatalf("run %d is container %s, want %s", i, id, want)
				}
				ids = append(ids, id)
				h.exit(id, code, false)
			}
			last := tc.exits[len(tc.exits)-1]
			reason := "Completed"
			if last != 0 {
				reason = "Error"
			}
			n := len(tc.exits)
			if tc.wantRestart {
				p := h.waitPod("p", "restarted", all(running("app", int32(n)), hasPhase(tc.wantPhase)))
				cs := status(p, "app")
				lt := cs.LastTerminationState.Terminated
				if lt == nil || lt.ExitCode != int32(last) || lt.Reason != reason || lt.ContainerID != "containerd://"+ids[n-1] {
					t.Errorf("lastState %+v, want exit %d (%s) of %s", lt, last, reason, ids[n-1])
				}
				return
			}
			p := h.waitPod("p", "finished", hasPhase(tc.wantPhase))
			cs := status(p, "app")
			term := cs.State.Terminated
			if term == nil || term.ExitCode != int32(last) || term.Reason != reason || cs.RestartCount != int32(n-1) {
				t.Errorf("state %+v, restartCount %d; want terminated with %d (%s), %d restarts", cs.State, cs.RestartCount, last, reason, n-1)
			}
			if cs.Ready || *cs.Started {
				t.Errorf("ready %v, started %v after the end", cs.Ready, *cs.Started)
			}
			if c := condition(p, corev1.PodReady); c == nil || c.Status != corev1.ConditionFalse || c.Reason != "PodCompleted" {
				t.Errorf("Ready condition %+v, want False for PodCompleted", c)
			}
			// The status was written after the decision not to restart: no
			// new run was made.
			if cs := h.podContainers(pod.UID); len(cs) != min(n, 2) {
				t.Errorf("%d containers, want %d", len(cs), min(n, 2))
			}
		})
	}
}

// TestCrashLoopBackOff uses a long back-off so that the waiting state
// lasts.
func TestCrashLoopBackOff(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	cfg.BackoffBase, cfg.BackoffMax = time.Minute, 5*time.Minute
	h.start(cfg)
	pod := newPod("crash", ctr("app"))
	h.create(pod)

	p := h.waitPod("crash", "first run", running("app", 0))
	h.exit(runtimeID(status(p, "app")), 1, false)
	// The first restart is immediate.
	p = h.waitPod("crash", "second run", running("app", 1))
	h.exit(runtimeID(status(p, "app")), 2, false)
	p = h.waitPod("crash", "back-off", waiting("app", "CrashLoopBackOff"))

	cs := status(p, "app")
	wantMsg := "back-off 1m0s restarting failed container=app pod=crash_default(" + string(pod.UID) + ")"
	if cs.State.Waiting.Message != wantMsg {
		t.Errorf("message %q, want %q", cs.State.Waiting.Message, wantMsg)
	}
	if cs.RestartCount != 1 {
		t.Errorf("restartCount %d, want 1", cs.RestartCount)
	}
	if lt := cs.LastTerminationState.Terminated; lt == nil || lt.ExitCode != 2 || lt.Reason != "Error" {
		t.Errorf("lastState %+v, want exit 2", lt)
	}
	if p.Status.Phase != corev1.PodRunning || condition(p, corev1.PodReady).Status != corev1.ConditionFalse {
		t.Errorf("phase %s, Ready %s; want Running, not ready", p.Status.Phase, condition(p, corev1.PodReady).Status)
	}
	if _, ok := h.rt.Spec(containerID(pod.UID, "app", 2)); ok {
		t.Error("a third run was created during the back-off")
	}
}

func TestInitContainers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start(h.config())

	t.Run("in order, before the app", func(t *testing.T) {
		pod := newPod("init", ctr("app"))
		pod.Spec.InitContainers = []corev1.Container{ctr("first"), ctr("second")}
		h.create(pod)
		p := h.waitPod("init", "first init running", running("first", 0))
		if p.Status.Phase != corev1.PodPending {
			t.Errorf("phase %s while initializing, want Pending", p.Status.Phase)
		}
		if c := condition(p, corev1.PodInitialized); c == nil || c.Status != corev1.ConditionFalse || c.Reason != "ContainersNotInitialized" ||
			c.Message != "containers with incomplete status: [first second]" {
			t.Errorf("Initialized condition %+v", c)
		}
		if w := status(p, "app").State.Waiting; w == nil || w.Reason != "PodInitializing" {
			t.Errorf("app state %+v, want waiting PodInitializing", status(p, "app").State)
		}
		for _, name := range []string{"second", "app"} {
			if _, ok := h.rt.Spec(containerID(pod.UID, name, 0)); ok {
				t.Errorf("%s created while the first init container runs", name)
			}
		}
		if spec, _ := h.rt.Spec(containerID(pod.UID, "first", 0)); spec.Labels[labelInit] != "true" {
			t.Errorf("init container labels %v", spec.Labels)
		}

		// A failed init container is restarted (restartPolicy Always).
		h.exit(containerID(pod.UID, "first", 0), 1, false)
		h.waitPod("init", "first init restarted", running("first", 1))
		h.exit(containerID(pod.UID, "first", 1), 0, false)
		p = h.waitPod("init", "second init running", running("second", 0))
		if term := status(p, "first").State.Terminated; term == nil || term.Reason != "Completed" {
			t.Errorf("first init state %+v, want terminated Completed", status(p, "first").State)
		}
		if _, ok := h.rt.Spec(containerID(pod.UID, "app", 0)); ok {
			t.Error("app created while the second init container runs")
		}
		h.exit(containerID(pod.UID, "second", 0), 0, false)
		p = h.waitPod("init", "app running", all(running("app", 0), hasPhase(corev1.PodRunning)))
		if c := condition(p, corev1.PodInitialized); c.Status != corev1.ConditionTrue {
			t.Errorf("Initialized condition %+v", c)
		}
		var created []string
		for _, c := range h.rt.Calls() {
			if c.Op == containertest.OpCreate && strings.HasPrefix(c.ID, string(pod.UID)) {
				created = append(created, c.ID)
			}
		}
		want := []string{
			containerID(pod.UID, "first", 0), containerID(pod.UID, "first", 1),
			containerID(pod.UID, "second", 0), containerID(pod.UID, "app", 0),
		}
		if !slices.Equal(created, want) {
			t.Errorf("created %v, want %v", created, want)
		}
	})

	t.Run("failing with restartPolicy Never", func(t *testing.T) {
		pod := newPod("init-fails", ctr("app"))
		pod.Spec.RestartPolicy = corev1.RestartPolicyNever
		pod.Spec.InitContainers = []corev1.Container{ctr("setup")}
		h.create(pod)
		h.waitPod("init-fails", "init running", running("setup", 0))
		h.exit(containerID(pod.UID, "setup", 0), 1, false)
		p := h.waitPod("init-fails", "failed", hasPhase(corev1.PodFailed))
		if term := status(p, "setup").State.Terminated; term == nil || term.ExitCode != 1 || term.Reason != "Error" {
			t.Errorf("setup state %+v, want terminated with 1", status(p, "setup").State)
		}
		if _, ok := h.rt.Spec(containerID(pod.UID, "app", 0)); ok {
			t.Error("app created after its init container failed")
		}
		if _, ok := h.rt.Spec(containerID(pod.UID, "setup", 1)); ok {
			t.Error("init container restarted with restartPolicy Never")
		}
	})
}

func TestOOMKilled(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start(h.config())
	pod := newPod("oom", ctr("app"))
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	h.create(pod)
	h.waitPod("oom", "running", running("app", 0))
	h.exit(containerID(pod.UID, "app", 0), 137, true)
	p := h.waitPod("oom", "failed", hasPhase(corev1.PodFailed))
	term := status(p, "app").State.Terminated
	if term == nil || term.Reason != "OOMKilled" || term.ExitCode != 137 || term.Signal != 9 {
		t.Errorf("state %+v, want terminated OOMKilled, 137, signal 9", status(p, "app").State)
	}
}

// TestTerminalPhaseIsKept checks that a pod that has finished is not run
// again: its phase stays and no container is made.
func TestTerminalPhaseIsKept(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	pod := newPod("done", ctr("app"))
	pod.Status.Phase = corev1.PodSucceeded
	h.create(pod)
	h.start(h.config())
	p := h.waitPod("done", "status written", func(p *corev1.Pod) bool { return len(p.Status.Conditions) > 0 })
	if p.Status.Phase != corev1.PodSucceeded {
		t.Errorf("phase %s, want Succeeded kept", p.Status.Phase)
	}
	if cs := h.podContainers(pod.UID); len(cs) != 0 {
		t.Errorf("containers created for a finished pod: %v", cs)
	}
}

func TestProbes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var ready, started atomic.Bool
	h.rt.SetExecHandler(func(ctx context.Context, id string, spec container.ExecSpec) (int, error) {
		switch spec.Cmd[0] {
		case "startup-check":
			if started.Load() {
				return 0, nil
			}
			return 1, nil
		case "startup-never":
			if strings.HasSuffix(id, "-0") {
				return 1, nil
			}
		case "ready-check":
			if ready.Load() {
				return 0, nil
			}
			return 1, nil
		case "live-check":
			if strings.HasSuffix(id, "-0") { // only the first run is unhealthy
				spec.Stdout.Write([]byte("not live\n"))
				return 1, nil
			}
		}
		return 0, nil
	})
	h.start(h.config())
	probe := func(cmd string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{cmd}}},
			PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1,
		}
	}

	t.Run("readiness", func(t *testing.T) {
		t.Parallel()
		c := ctr("app")
		c.ReadinessProbe = probe("ready-check")
		h.create(newPod("ready", c))
		p := h.waitPod("ready", "running, not ready", all(running("app", 0), isReady(false)))
		if cs := status(p, "app"); cs.Ready || !*cs.Started {
			t.Errorf("ready %v, started %v; want not ready but started", cs.Ready, *cs.Started)
		}
		ready.Store(true)
		p = h.waitPod("ready", "ready", isReady(true))
		if cs := status(p, "app"); !cs.Ready {
			t.Error("container not ready in a ready pod")
		}
		if c := condition(p, corev1.ContainersReady); c.Status != corev1.ConditionTrue {
			t.Errorf("ContainersReady %+v", c)
		}
		ready.Store(false)
		h.waitPod("ready", "not ready again", all(isReady(false), running("app", 0)))
	})

	t.Run("startup", func(t *testing.T) {
		t.Parallel()
		c := ctr("app")
		c.StartupProbe = probe("startup-check")
		c.StartupProbe.FailureThreshold = 1000
		h.create(newPod("slow-start", c))
		p := h.waitPod("slow-start", "running, not started", all(running("app", 0), isReady(false)))
		if cs := status(p, "app"); cs.Ready || *cs.Started {
			t.Errorf("ready %v, started %v before the startup probe succeeded", cs.Ready, *cs.Started)
		}
		started.Store(true)
		p = h.waitPod("slow-start", "started and ready", isReady(true))
		if cs := status(p, "app"); !cs.Ready || !*cs.Started {
			t.Errorf("ready %v, started %v after the startup probe succeeded", cs.Ready, *cs.Started)
		}
	})

	t.Run("startup failure", func(t *testing.T) {
		t.Parallel()
		c := ctr("app")
		c.StartupProbe = probe("startup-never")
		h.create(newPod("never-starts", c))
		p := h.waitPod("never-starts", "restarted", running("app", 1))
		lt := status(p, "app").LastTerminationState.Terminated
		if lt == nil || !strings.Contains(lt.Message, "Container app failed startup probe, will be restarted") {
			t.Errorf("lastState %+v, want a message naming the failed startup probe", lt)
		}
	})

	t.Run("liveness", func(t *testing.T) {
		t.Parallel()
		c := ctr("app")
		c.LivenessProbe = probe("live-check")
		pod := newPod("live", c)
		pod.Spec.TerminationGracePeriodSeconds = new(int64(5))
		h.create(pod)
		p := h.waitPod("live", "restarted", running("app", 1))
		lt := status(p, "app").LastTerminationState.Terminated
		if lt == nil || !strings.Contains(lt.Message, "Container app failed liveness probe, will be restarted") ||
			!strings.Contains(lt.Message, `command "live-check" exited with 1: not live`) {
			t.Errorf("lastState %+v, want a message naming the failed liveness probe", lt)
		}
		first := containerID(pod.UID, "app", 0)
		if !slices.Contains(h.rt.Calls(), containertest.Call{Op: containertest.OpStop, ID: first, Grace: 5 * time.Second}) {
			t.Errorf("%s not stopped with the pod's grace period: %v", first, h.rt.Calls())
		}
	})
}

// TestGracefulDeletion covers deletionTimestamp: containers stopped with
// the deletion's grace after their preStop hook, removed with the pod's
// network and files, and the pod deleted unless it has finalizers.
func TestGracefulDeletion(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var mu sync.Mutex
	var hooks []string
	h.rt.SetExecHandler(func(ctx context.Context, id string, spec container.ExecSpec) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		hooks = append(hooks, id+" "+strings.Join(spec.Cmd, " "))
		return 0, nil
	})
	a, _ := h.start(h.config())
	deleteGracefully := func(name string, grace int64) {
		h.updatePod(name, func(p *corev1.Pod) {
			now := metav1.Now()
			p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &now, &grace
		})
	}

	t.Run("deleted by the agent", func(t *testing.T) {
		app := ctr("app")
		app.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"drain"}}}}
		pod := newPod("graceful", app, ctr("sidecar"))
		h.create(pod)
		h.waitPod("graceful", "running", all(running("app", 0), running("sidecar", 0)))
		podDir := filepath.Join(h.dir, "pods", string(pod.UID))
		if _, err := os.Stat(podDir); err != nil {
			t.Fatal(err)
		}
		n := len(h.rt.Calls())
		deleteGracefully("graceful", 7)
		h.waitFor("the pod to be deleted", func() bool { return h.pod("graceful") == nil })

		appID, sideID := containerID(pod.UID, "app", 0), containerID(pod.UID, "sidecar", 0)
		calls := h.callsSince(n)
		for _, id := range []string{appID, sideID} {
			stop := slices.Index(calls, containertest.Call{Op: containertest.OpStop, ID: id, Grace: 7 * time.Second})
			remove := slices.Index(calls, containertest.Call{Op: containertest.OpRemove, ID: id})
			if stop < 0 || remove < stop {
				t.Errorf("%s: want a stop with 7s grace, then a remove; calls %v", id, calls)
			}
		}
		hook := slices.Index(calls, containertest.Call{Op: containertest.OpExec, ID: appID})
		if stop := slices.Index(calls, containertest.Call{Op: containertest.OpStop, ID: appID, Grace: 7 * time.Second}); hook < 0 || hook > stop {
			t.Errorf("preStop hook not run before the stop: %v", calls)
		}
		mu.Lock()
		if !slices.Equal(hooks, []string{appID + " drain"}) {
			t.Errorf("hooks run: %v", hooks)
		}
		mu.Unlock()
		if cs := h.podContainers(pod.UID); len(cs) != 0 {
			t.Errorf("containers left: %v", cs)
		}
		if !h.net.tornDown(string(pod.UID)) {
			t.Error("network not torn down")
		}
		if !h.cgroupRemoved(pod.UID) {
			t.Error("cgroup not removed")
		}
		if _, err := os.Stat(podDir); !os.IsNotExist(err) {
			t.Errorf("pod directory left: %v", err)
		}
		h.waitFor("the worker to end", func() bool { return a.worker(pod.UID) == nil })
	})

	t.Run("kept for its finalizers", func(t *testing.T) {
		pod := newPod("finalized", ctr("app"))
		pod.Finalizers = []string{"example.com/keep"}
		h.create(pod)
		h.waitPod("finalized", "running", running("app", 0))
		deleteGracefully("finalized", 3)
		h.waitFor("the worker to end", func() bool { return a.worker(pod.UID) == nil })
		if cs := h.podContainers(pod.UID); len(cs) != 0 {
			t.Errorf("containers left: %v", cs)
		}
		if !h.net.tornDown(string(pod.UID)) {
			t.Error("network not torn down")
		}
		p := h.pod("finalized")
		if p == nil || p.DeletionTimestamp == nil {
			t.Fatalf("pod with finalizers: %s; want it kept, terminating", dumpPod(p))
		}
		if !slices.Contains(h.rt.Calls(), containertest.Call{Op: containertest.OpStop, ID: containerID(pod.UID, "app", 0), Grace: 3 * time.Second}) {
			t.Error("container not stopped with the deletion's grace")
		}
	})

	t.Run("removed outright", func(t *testing.T) {
		pod := newPod("vanished", ctr("app"))
		h.create(pod)
		h.waitPod("vanished", "running", running("app", 0))
		h.deletePod("vanished")
		h.waitFor("containers removed and network torn down", func() bool {
			return len(h.podContainers(pod.UID)) == 0 && h.net.tornDown(string(pod.UID))
		})
		h.waitFor("the worker to end", func() bool { return a.worker(pod.UID) == nil })
		if h.pod("vanished") != nil {
			t.Error("pod recreated")
		}
	})
}

// TestAdoption restarts the agent over running containers: it keeps those
// of pods that still exist, as they are, and collects the others.
func TestAdoption(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	_, stop := h.start(cfg)
	keep := newPod("keep", ctr("app"))
	keep.Spec.InitContainers = []corev1.Container{ctr("setup")}
	stale := newPod("stale", ctr("app"))
	h.create(keep)
	h.create(stale)
	h.waitPod("keep", "init running", running("setup", 0))
	h.exit(containerID(keep.UID, "setup", 0), 0, false)
	before := h.waitPod("keep", "running", all(running("app", 0), hasPhase(corev1.PodRunning)))
	h.waitPod("stale", "running", running("app", 0))
	stop()

	// While no agent runs, "stale" is deleted; its containers keep running.
	h.deletePod("stale")
	staleDir := filepath.Join(h.dir, "pods", string(stale.UID))
	if _, err := os.Stat(staleDir); err != nil {
		t.Fatal(err)
	}
	n := len(h.rt.Calls())

	// With no resync, only the runtime's exits can tell the new agent that
	// an adopted container ended.
	cfg.Resync = time.Hour
	a, _ := h.start(cfg)
	h.waitFor("the restarted agent to sync pod keep", func() bool {
		pw := a.worker(keep.UID)
		return pw != nil && len(pw.runs("app")) > 0
	})
	// Containers the agent did not adopt: one of no pod that appeared late
	// (a create in flight when its worker ended), and one that is not a
	// pod's at all.
	ctx := context.Background()
	for id, labels := range map[string]map[string]string{
		"late-orphan": {labelPodUID: "3f0c4d2e-1111-4000-8000-000000000001", labelContainer: "app"},
		"not-a-pod":   {"purpose": "someone else's"},
	} {
		if err := h.rt.CreateContainer(ctx, container.ContainerSpec{ID: id, Image: "busybox", Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.collectGarbage(ctx); err != nil {
		t.Fatalf("collectGarbage: %v", err)
	}
	if _, err := h.rt.Status(ctx, "late-orphan"); !isNotFound(err) {
		t.Errorf("container of no pod: %v, want it removed", err)
	}
	if _, err := h.rt.Status(ctx, "not-a-pod"); err != nil {
		t.Errorf("container that is not a pod's: %v, want it left alone", err)
	}

	keepIDs := []string{containerID(keep.UID, "setup", 0), containerID(keep.UID, "app", 0)}
	for _, c := range h.callsSince(n) {
		if slices.Contains(keepIDs, c.ID) && c.Op != containertest.OpStatus && c.Op != containertest.OpExec {
			t.Errorf("adopted container touched: %+v", c)
		}
	}
	st, err := h.rt.Status(ctx, keepIDs[1])
	if err != nil || st.State != container.StateRunning {
		t.Errorf("adopted app: %+v, %v; want it running", st, err)
	}
	after := h.pod("keep")
	for _, name := range []string{"setup", "app"} {
		b, a := status(before, name), status(after, name)
		if b.ContainerID != a.ContainerID || a.RestartCount != 0 {
			t.Errorf("%s: container %s (restarts %d) after the restart, was %s", name, a.ContainerID, a.RestartCount, b.ContainerID)
		}
	}
	if after.Status.PodIP != before.Status.PodIP || after.Status.Phase != corev1.PodRunning {
		t.Errorf("after the restart: podIP %s (was %s), phase %s", after.Status.PodIP, before.Status.PodIP, after.Status.Phase)
	}

	// Garbage: the deleted pod's container, network, cgroup and files.
	if _, err := h.rt.Status(ctx, containerID(stale.UID, "app", 0)); !isNotFound(err) {
		t.Errorf("container of the deleted pod: %v, want it removed", err)
	}
	gcs := h.net.gcCalls()
	if len(gcs) == 0 {
		t.Fatal("Network.GC not called")
	}
	if keepSet := gcs[len(gcs)-1]; !keepSet[string(keep.UID)] || keepSet[string(stale.UID)] {
		t.Errorf("Network.GC kept %v, want %s and not %s", keepSet, keep.UID, stale.UID)
	}
	if !h.cgroupRemoved(stale.UID) || h.cgroupRemoved(keep.UID) {
		t.Error("RemoveCgroup: want the deleted pod's cgroup removed, the other kept")
	}
	if _, err := os.Stat(staleDir); !os.IsNotExist(err) {
		t.Errorf("directory of the deleted pod: %v, want it removed", err)
	}

	// The adopted container's exits reach the new agent.
	h.exit(keepIDs[1], 1, false)
	p := h.waitPod("keep", "app restarted", running("app", 1))
	if lt := status(p, "app").LastTerminationState.Terminated; lt == nil || lt.ContainerID != "containerd://"+keepIDs[1] || lt.ExitCode != 1 {
		t.Errorf("lastState %+v", lt)
	}
	if status(p, "setup").RestartCount != 0 {
		t.Error("init container run again")
	}
}

// TestGarbageCollectionSparesNewPods runs a pod's start while the garbage
// collection is under way: nothing of the new pod may be collected.
func TestGarbageCollectionSparesNewPods(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, _ := h.start(h.config())
	late := newPod("late", ctr("app"))
	h.waitFor("the agent to start", func() bool { return len(h.net.peerCalls()) > 0 })
	h.net.setDuringGC(func() {
		h.create(late)
		h.waitPod("late", "running", running("app", 0))
	})
	if err := a.collectGarbage(context.WithValue(context.Background(), gcHookKey{}, true)); err != nil {
		t.Fatalf("collectGarbage: %v", err)
	}
	if p := h.pod("late"); p == nil {
		t.Fatal("the GC did not start the pod")
	}
	dir := filepath.Join(h.dir, "pods", string(late.UID))
	for _, f := range []string{"etc-hosts", "resolv.conf", "hostname"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("file of the new pod: %v", err)
		}
	}
	if !h.net.has(string(late.UID)) {
		t.Error("network of the new pod collected")
	}
	if cs := h.podContainers(late.UID); len(cs) != 1 || cs[0].State != container.StateRunning {
		t.Errorf("containers of the new pod: %v", cs)
	}
}

func TestPeers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	node := func(name, cidr, ip string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: meta(name), Spec: corev1.NodeSpec{PodCIDR: cidr}}
		n.Namespace = ""
		if ip != "" {
			n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
		}
		return n
	}
	h.create(node(testNode, "10.42.0.0/24", testHostIP))
	h.create(node("node-c", "10.42.2.0/24", "192.0.2.12"))
	h.create(node("node-b", "10.42.1.0/24", "192.0.2.11"))
	h.create(node("no-cidr", "", "192.0.2.13"))
	h.create(node("no-address", "10.42.3.0/24", ""))
	h.start(h.config())
	last := func() []podnet.Peer {
		calls := h.net.peerCalls()
		if len(calls) == 0 {
			return nil
		}
		return calls[len(calls)-1]
	}
	want := []podnet.Peer{{NodeIP: "192.0.2.11", PodCIDR: "10.42.1.0/24"}, {NodeIP: "192.0.2.12", PodCIDR: "10.42.2.0/24"}}
	h.waitFor("SetPeers with node-b and node-c", func() bool { return cmp.Equal(last(), want) })

	// A node joining is routed at once.
	h.create(node("node-d", "10.42.0.128/25", "192.0.2.14"))
	want = append([]podnet.Peer{{NodeIP: "192.0.2.14", PodCIDR: "10.42.0.128/25"}}, want...)
	h.waitFor("SetPeers with node-d", func() bool { return cmp.Equal(last(), want) })
	for _, call := range h.net.peerCalls() {
		for _, p := range call {
			if p.NodeIP == testHostIP {
				t.Errorf("SetPeers got this node: %v", call)
			}
		}
	}
}

// TestShutdown checks that Run returns when its context ends, leaving the
// containers running and no goroutine behind.
func TestShutdown(t *testing.T) {
	h := newHarness(t)
	before := runtime.NumGoroutine()
	_, stop := h.start(h.config())
	c := ctr("app")
	c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}, PeriodSeconds: 1}
	pod := newPod("p", c)
	h.create(pod)
	h.waitPod("p", "ready", isReady(true))
	stop()
	h.waitFor("the agent's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	st, err := h.rt.Status(context.Background(), containerID(pod.UID, "app", 0))
	if err != nil || st.State != container.StateRunning {
		t.Errorf("container after shutdown: %+v, %v; want it running", st, err)
	}
}

// TestMemoryVolumes covers the volumes that live in memory: secret volumes
// and emptyDir with medium Memory get a tmpfs, unmounted when the pod goes.
// Mounting needs root.
func TestMemoryVolumes(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("secret and memory emptyDir volumes mount a tmpfs, which needs root")
	}
	h := newHarness(t)
	probe := filepath.Join(h.dir, "probe")
	if err := os.Mkdir(probe, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", probe, "tmpfs", 0, ""); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	if err := unix.Unmount(probe, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever the test left mounted, so that the directory can go.
		ms, _ := mountsUnder(h.dir)
		for _, m := range ms {
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
	})
	h.create(&corev1.Secret{ObjectMeta: meta("creds"), Data: map[string][]byte{"user": []byte("admin"), "password": []byte("hunter2")}})
	h.start(h.config())

	c := ctr("app")
	c.VolumeMounts = []corev1.VolumeMount{{Name: "creds", MountPath: "/creds"}, {Name: "cache", MountPath: "/cache"}}
	pod := newPod("in-memory", c)
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  "creds",
			Items:       []corev1.KeyToPath{{Key: "password", Path: "db/password"}},
			DefaultMode: new(int32(0o400)),
		}}},
		{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: new(resource.MustParse("16Mi")),
		}}},
	}
	h.create(pod)
	h.waitPod("in-memory", "running", running("app", 0))

	vols := filepath.Join(h.dir, "pods", string(pod.UID), "volumes")
	for _, v := range []string{"creds", "cache"} {
		if mounted, err := isMountPoint(filepath.Join(vols, v)); err != nil || !mounted {
			t.Errorf("volume %s: mounted %v, %v; want a tmpfs", v, mounted, err)
		}
	}
	p := filepath.Join(vols, "creds", "db", "password")
	if b, err := os.ReadFile(p); err != nil || string(b) != "hunter2" {
		t.Errorf("secret file: %q, %v", b, err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("secret file mode: %v, %v; want 0400", fi.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(vols, "creds", "user")); !os.IsNotExist(err) {
		t.Errorf("key not in items was written: %v", err)
	}
	spec, _ := h.rt.Spec(containerID(pod.UID, "app", 0))
	for _, m := range spec.Mounts {
		if m.Destination == "/creds" && !m.ReadOnly || m.Destination == "/cache" && m.ReadOnly {
			t.Errorf("mount %+v: secrets mount read-only, emptyDirs read-write", m)
		}
	}

	h.deletePod("in-memory")
	h.waitFor("the pod's files to go", func() bool {
		_, err := os.Stat(filepath.Join(h.dir, "pods", string(pod.UID)))
		return os.IsNotExist(err)
	})
	if ms, err := mountsUnder(h.dir); err != nil || len(ms) != 0 {
		t.Errorf("left mounted: %v, %v", ms, err)
	}
}
