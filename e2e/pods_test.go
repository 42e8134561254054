package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/shoal-dev/shoal/e2e/images"
	"github.com/shoal-dev/shoal/node/localcluster"
)

var (
	archivesOnce sync.Once
	archivesDir  string
	archivesErr  error
)

// testArchives builds the echo and busybox image archives once per run.
func testArchives(t testing.TB) (echo, busybox string) {
	t.Helper()
	archivesOnce.Do(func() {
		archivesDir, archivesErr = os.MkdirTemp("", "shoal-e2e-images-")
		if archivesErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		f, err := os.Create(filepath.Join(archivesDir, "echo.tar"))
		if err != nil {
			archivesErr = err
			return
		}
		if err := images.BuildEcho(ctx, f, images.EchoRef); err != nil {
			archivesErr = fmt.Errorf("building the echo image: %w", err)
			return
		}
		f.Close()
		f, err = os.Create(filepath.Join(archivesDir, "busybox.tar"))
		if err != nil {
			archivesErr = err
			return
		}
		if err := images.Busybox(f, images.BusyboxRef); err != nil {
			archivesErr = fmt.Errorf("building the busybox image: %w", err)
			return
		}
		f.Close()
	})
	if archivesErr != nil {
		t.Fatal(archivesErr)
	}
	return filepath.Join(archivesDir, "echo.tar"), filepath.Join(archivesDir, "busybox.tar")
}

// importImages imports the test images into one node with `shoal image import`.
func importImages(t testing.TB, c *localcluster.Cluster, nodeName string) {
	t.Helper()
	echo, busybox := testArchives(t)
	n := node(t, c, nodeName)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, a := range []string{echo, busybox} {
		if out, err := c.NodeCommand(ctx, nodeName, shoalBinary(t), "image", "import", a, "--data-dir", n.DataDir).CombinedOutput(); err != nil {
			t.Fatalf("shoal image import %s on %s: %v\n%s", a, nodeName, err, out)
		}
	}
}

func echoPod(name, nodeName string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "echo"}},
		Spec: corev1.PodSpec{
			NodeName: nodeName,
			Containers: []corev1.Container{{
				Name:  "echo",
				Image: images.EchoRef,
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

func busyboxPod(name, nodeName string, policy corev1.RestartPolicy, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:      nodeName,
			RestartPolicy: policy,
			Containers: []corev1.Container{{
				Name:    "main",
				Image:   images.BusyboxRef,
				Command: []string{"sh", "-c", script},
			}},
		},
	}
}

// waitPod waits until cond holds for the pod and returns it.
func waitPod(t testing.TB, cs kubernetes.Interface, ns, name string, timeout time.Duration, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last *corev1.Pod
	for {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = p
			if cond(p) {
				return p
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s/%s: not %s after %s; last status: %s", ns, name, what, timeout, podSummary(last))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func podSummary(p *corev1.Pod) string {
	if p == nil {
		return "<none>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s ip=%s msg=%q", p.Status.Phase, p.Status.PodIP, p.Status.Message)
	for _, c := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		fmt.Fprintf(&b, " [%s ready=%v restarts=%d", c.Name, c.Ready, c.RestartCount)
		switch s := c.State; {
		case s.Waiting != nil:
			fmt.Fprintf(&b, " waiting %s %q", s.Waiting.Reason, s.Waiting.Message)
		case s.Running != nil:
			b.WriteString(" running")
		case s.Terminated != nil:
			fmt.Fprintf(&b, " terminated %s exit=%d", s.Terminated.Reason, s.Terminated.ExitCode)
		}
		if lt := c.LastTerminationState.Terminated; lt != nil {
			fmt.Fprintf(&b, " last=%s/%d", lt.Reason, lt.ExitCode)
		}
		b.WriteString("]")
	}
	return b.String()
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func condition(p *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

// TestPodsAcrossNodes: images imported on one node only run on all three
// (peer-to-peer pulls, no registry anywhere); pods reach Running with the
// status fields Kubernetes reports; pods on different nodes reach each other
// by pod IP; deleting a pod stops it gracefully and frees its IP and
// namespace.
func TestPodsAcrossNodes(t *testing.T) { podsAcrossNodes(t, "host-gw") }

// TestPodsAcrossNodesVXLAN is the same over the VXLAN pod network.
func TestPodsAcrossNodesVXLAN(t *testing.T) { podsAcrossNodes(t, "vxlan") }

func podsAcrossNodes(t *testing.T, mode string) {
	c := newCluster(t, 3, func(cfg *localcluster.Config) {
		cfg.AgentArgs = append(cfg.AgentArgs, "--pod-network="+mode)
	})
	importImages(t, c, "n1")
	cs := clientset(t, c)
	ctx := context.Background()
	nodes := []string{"n1", "n2", "n3"}
	for _, n := range nodes {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, echoPod("echo-"+n, n), metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating echo-%s: %v", n, err)
		}
	}
	ips := map[string]string{}
	for _, n := range nodes {
		p := waitPod(t, cs, "default", "echo-"+n, 90*time.Second, "Running and Ready", func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodRunning && podReady(p)
		})
		info := node(t, c, n)
		nodeObj, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, cidr, _ := net.ParseCIDR(nodeObj.Spec.PodCIDR)
		switch {
		case p.Status.PodIP == "" || cidr == nil || !cidr.Contains(net.ParseIP(p.Status.PodIP)):
			t.Errorf("%s: podIP %q not in the node's pod CIDR %s", p.Name, p.Status.PodIP, nodeObj.Spec.PodCIDR)
		case p.Status.HostIP != info.IP:
			t.Errorf("%s: hostIP %q, want %s", p.Name, p.Status.HostIP, info.IP)
		case p.Status.StartTime == nil:
			t.Errorf("%s: no startTime", p.Name)
		case len(p.Status.ContainerStatuses) != 1:
			t.Errorf("%s: %d container statuses", p.Name, len(p.Status.ContainerStatuses))
		}
		ctr := p.Status.ContainerStatuses[0]
		if !ctr.Ready || ctr.Started == nil || !*ctr.Started || ctr.RestartCount != 0 || ctr.State.Running == nil ||
			!strings.HasPrefix(ctr.ContainerID, "containerd://") || !strings.HasPrefix(ctr.ImageID, "sha256:") {
			t.Errorf("%s: container status %+v", p.Name, ctr)
		}
		for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
			if condition(p, ct) != corev1.ConditionTrue {
				t.Errorf("%s: condition %s = %q", p.Name, ct, condition(p, ct))
			}
		}
		ips[n] = p.Status.PodIP
	}

	// Every node's client pod fetches from every echo pod by pod IP.
	var script strings.Builder
	script.WriteString("set -e; ")
	for _, n := range nodes {
		// busybox-static's wget crashes in its resolver here: speak HTTP with nc.
		fmt.Fprintf(&script, "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 %s 8080 | grep -q '^echo-%s %s '; ", ips[n], n, ips[n])
	}
	for _, n := range nodes {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, busyboxPod("client-"+n, n, corev1.RestartPolicyNever, script.String()), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		p := waitPod(t, cs, "default", "client-"+n, 90*time.Second, "finished", func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		})
		if p.Status.Phase != corev1.PodSucceeded {
			t.Errorf("client on %s could not reach every echo pod: %s", n, podSummary(p))
		}
		if tr := p.Status.ContainerStatuses[0].State.Terminated; tr == nil || tr.Reason != "Completed" || tr.ExitCode != 0 {
			t.Errorf("client on %s: %s", n, podSummary(p))
		}
	}

	// Every node pulled the images from n1.
	for _, n := range nodes {
		nodeObj, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, im := range nodeObj.Status.Images {
			for _, name := range im.Names {
				found = found || name == images.EchoRef
			}
		}
		if !found && n != "n1" {
			// Node images are refreshed every 10 s: not a failure of the pull.
			t.Logf("%s does not list %s yet", n, images.EchoRef)
		}
	}

	// Delete echo-n2: it stops gracefully and its address and namespace go.
	n2 := node(t, c, "n2")
	if err := cs.CoreV1().Pods("default").Delete(ctx, "echo-n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		_, err := cs.CoreV1().Pods("default").Get(ctx, "echo-n2", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("echo-n2 still there (%v)", err)
	})
	eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(n2.DataDir, "podnet", "podnet.json"))
		if err != nil {
			return err
		}
		if strings.Contains(string(b), ips["n2"]+"\"") {
			return fmt.Errorf("n2 still holds %s: %s", ips["n2"], b)
		}
		ents, _ := os.ReadDir(filepath.Join(n2.DataDir, "podnet", "netns"))
		if len(ents) != 1 { // client-n2 still exists
			return fmt.Errorf("n2 pod namespaces: %d, want 1", len(ents))
		}
		return nil
	})
}

func ptr[T any](v T) *T { return &v }

// TestPodLifecycle: restart policies, CrashLoopBackOff, liveness and
// readiness probes, init containers, OOM kills and graceful stops, on a
// one-node cluster with real containerd (the back-off is shortened).
func TestPodLifecycle(t *testing.T) {
	c := newCluster(t, 1, func(cfg *localcluster.Config) {
		cfg.AgentArgs = append(cfg.AgentArgs, "--crashloop-backoff=1s")
	})
	importImages(t, c, "n1")
	cs := clientset(t, c)
	ctx := context.Background()
	create := func(p *corev1.Pod) {
		t.Helper()
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s: %v", p.Name, err)
		}
	}
	// restartPolicy: Always restarts even a clean exit; OnFailure restarts
	// failures only; Never restarts nothing.
	create(busyboxPod("always", "n1", corev1.RestartPolicyAlways, "echo run; exit 0"))
	create(busyboxPod("onfailure-ok", "n1", corev1.RestartPolicyOnFailure, "exit 0"))
	create(busyboxPod("onfailure-bad", "n1", corev1.RestartPolicyOnFailure, "exit 3"))
	create(busyboxPod("never-bad", "n1", corev1.RestartPolicyNever, "exit 4"))

	// Liveness: healthy for a while, then the probe fails and the container is restarted.
	live := busyboxPod("liveness", "n1", corev1.RestartPolicyAlways, "touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 600")
	live.Spec.Containers[0].LivenessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/healthy"}}},
		PeriodSeconds: 1, FailureThreshold: 2,
	}
	live.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	create(live)

	// Readiness follows a file.
	ready := busyboxPod("readiness", "n1", corev1.RestartPolicyAlways, "sleep 600")
	ready.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/ready"}}},
		PeriodSeconds: 1, FailureThreshold: 1,
	}
	ready.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	create(ready)

	// Init containers run in order, sharing an emptyDir; the app sees both marks.
	initp := busyboxPod("init-order", "n1", corev1.RestartPolicyNever, "cat /work/log")
	initp.Spec.Volumes = []corev1.Volume{{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	initp.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "work", MountPath: "/work"}}
	for i, name := range []string{"first", "second"} {
		initp.Spec.InitContainers = append(initp.Spec.InitContainers, corev1.Container{
			Name: name, Image: images.BusyboxRef,
			Command:      []string{"sh", "-c", fmt.Sprintf("sleep 0.%d; echo %s >> /work/log", 5-i*4, name)},
			VolumeMounts: []corev1.VolumeMount{{Name: "work", MountPath: "/work"}},
		})
	}
	// The app exits 0 only if the marks are in order.
	initp.Spec.Containers[0].Command = []string{"sh", "-c", `test "$(cat /work/log | tr '\n' ' ')" = "first second "`}
	create(initp)

	// A failing init container blocks the app (Never: the pod fails).
	initBad := busyboxPod("init-fails", "n1", corev1.RestartPolicyNever, "echo app ran; exit 0")
	initBad.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: images.BusyboxRef, Command: []string{"sh", "-c", "exit 7"}}}
	create(initBad)

	// A memory hog is OOM-killed and reported.
	hog := busyboxPod("oom", "n1", corev1.RestartPolicyNever, "mkdir /m && mount -t tmpfs tmpfs /m 2>/dev/null; dd if=/dev/zero of=/dev/shm/fill bs=1M count=200; tail /dev/zero")
	hog.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: mustQuantity("32Mi")}
	create(hog)

	waitPod(t, cs, "default", "always", 60*time.Second, "restarted twice", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) == 1 && s[0].RestartCount >= 2 && s[0].LastTerminationState.Terminated != nil &&
			s[0].LastTerminationState.Terminated.ExitCode == 0 && p.Status.Phase == corev1.PodRunning
	})
	waitPod(t, cs, "default", "onfailure-ok", 60*time.Second, "Succeeded", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodSucceeded && p.Status.ContainerStatuses[0].RestartCount == 0
	})
	p := waitPod(t, cs, "default", "onfailure-bad", 60*time.Second, "in CrashLoopBackOff", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) == 1 && s[0].RestartCount >= 2 && s[0].LastTerminationState.Terminated != nil &&
			s[0].LastTerminationState.Terminated.ExitCode == 3
	})
	if p.Status.Phase != corev1.PodRunning {
		t.Errorf("onfailure-bad: phase %s, want Running (it keeps restarting)", p.Status.Phase)
	}
	p = waitPod(t, cs, "default", "never-bad", 60*time.Second, "Failed", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodFailed
	})
	if s := p.Status.ContainerStatuses[0]; s.RestartCount != 0 || s.State.Terminated == nil || s.State.Terminated.ExitCode != 4 || s.State.Terminated.Reason != "Error" {
		t.Errorf("never-bad: %s", podSummary(p))
	}
	p = waitPod(t, cs, "default", "liveness", 60*time.Second, "restarted by its liveness probe", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) == 1 && s[0].RestartCount >= 1 && s[0].LastTerminationState.Terminated != nil
	})
	if m := p.Status.ContainerStatuses[0].LastTerminationState.Terminated.Message; !strings.Contains(m, "liveness probe") {
		t.Errorf("liveness: last termination message %q does not name the probe", m)
	}
	eventually(t, 10*time.Second, func() error {
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=liveness"})
		if err != nil {
			return err
		}
		reasons := map[string]bool{}
		for _, e := range evs.Items {
			reasons[e.Reason] = true
		}
		for _, want := range []string{"Created", "Started", "Unhealthy", "Killing"} {
			if !reasons[want] {
				return fmt.Errorf("no %s event for the liveness pod: %v", want, reasons)
			}
		}
		return nil
	})

	p = waitPod(t, cs, "default", "readiness", 60*time.Second, "Running and not Ready", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning && condition(p, corev1.PodReady) == corev1.ConditionFalse
	})
	if p.Status.ContainerStatuses[0].Ready {
		t.Errorf("readiness: container ready without its file")
	}
	// Make it ready through the container itself (exec arrives with the API;
	// here the probe's own exec path is what creates the file).
	// The readiness probe flips when /tmp/ready appears.
	readyCID := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
	touchInContainer(t, c, "n1", readyCID, "/tmp/ready")
	waitPod(t, cs, "default", "readiness", 30*time.Second, "Ready", func(p *corev1.Pod) bool {
		return podReady(p) && p.Status.ContainerStatuses[0].Ready
	})

	p = waitPod(t, cs, "default", "init-order", 60*time.Second, "finished", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})
	if p.Status.Phase != corev1.PodSucceeded || condition(p, corev1.PodInitialized) != corev1.ConditionTrue {
		t.Errorf("init-order: %s", podSummary(p))
	}
	for _, s := range p.Status.InitContainerStatuses {
		if s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 {
			t.Errorf("init-order: init container %s: %+v", s.Name, s.State)
		}
	}
	p = waitPod(t, cs, "default", "init-fails", 60*time.Second, "Failed", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodFailed
	})
	if s := p.Status.ContainerStatuses[0]; s.State.Waiting == nil || s.State.Waiting.Reason != "PodInitializing" {
		t.Errorf("init-fails: the app container must never have run: %s", podSummary(p))
	}
	if condition(p, corev1.PodInitialized) != corev1.ConditionFalse {
		t.Errorf("init-fails: Initialized = %s", condition(p, corev1.PodInitialized))
	}
	p = waitPod(t, cs, "default", "oom", 60*time.Second, "OOMKilled", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) == 1 && s[0].State.Terminated != nil
	})
	if tr := p.Status.ContainerStatuses[0].State.Terminated; tr.Reason != "OOMKilled" || tr.ExitCode != 137 {
		t.Errorf("oom: %s", podSummary(p))
	}

	// Graceful stop: a container that ignores SIGTERM is killed after the
	// grace period, and the pod goes only then.
	stubborn := busyboxPod("stubborn", "n1", corev1.RestartPolicyAlways, "trap '' TERM; while true; do sleep 0.2; done")
	stubborn.Spec.TerminationGracePeriodSeconds = ptr(int64(2))
	create(stubborn)
	waitPod(t, cs, "default", "stubborn", 30*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	start := time.Now()
	if err := cs.CoreV1().Pods("default").Delete(ctx, "stubborn", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := cs.CoreV1().Pods("default").Get(ctx, "stubborn", metav1.GetOptions{})
	if err != nil || p.DeletionTimestamp == nil || p.DeletionGracePeriodSeconds == nil || *p.DeletionGracePeriodSeconds != 2 {
		t.Fatalf("stubborn right after delete: %v %+v", err, p)
	}
	eventually(t, 20*time.Second, func() error {
		_, err := cs.CoreV1().Pods("default").Get(ctx, "stubborn", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("stubborn was gone after %s, before its 2 s grace period", d)
	}
}

// touchInContainer creates a file inside a running container by entering
// its mount namespace from the node (no exec API needed).
func touchInContainer(t testing.TB, c *localcluster.Cluster, nodeName, containerID, path string) {
	t.Helper()
	pid := containerPID(t, containerID)
	out, err := execCommand("nsenter", "-t", pid, "-m", "--", "/bin/sh", "-c", "touch "+path)
	if err != nil {
		t.Fatalf("touching %s in %s: %v\n%s", path, containerID, err, out)
	}
}

// containerPID finds the main process of a container by its cgroup (the
// container's cgroup is named by its ID).
func containerPID(t testing.TB, containerID string) string {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	best := ""
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cgroup")
		if err != nil || !strings.Contains(string(b), "/"+containerID+"\n") {
			continue
		}
		if best == "" || len(e.Name()) < len(best) || len(e.Name()) == len(best) && e.Name() < best {
			best = e.Name() // the lowest PID is the container's init
		}
	}
	if best == "" {
		t.Fatalf("no process of container %s", containerID)
	}
	return best
}

// parentPID is the parent of process pid.
func parentPID(t testing.TB, pid string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid ...: comm may hold spaces, so count from ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 2 {
		t.Fatalf("short /proc/%s/stat: %q", pid, b)
	}
	return f[1]
}

// cpuCgroupOf is the cgroup of process pid in the hierarchy with the v1 cpu
// controller, or its cgroup v2 path on a host without one.
func cpuCgroupOf(t testing.TB, pid string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	unified := ""
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			unified = parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "cpu" {
				return parts[2]
			}
		}
	}
	return unified
}

func execCommand(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

// TestAgentRestartKeepsPods: kill -9 of `shoal agent` (not containerd's
// shims) never restarts a container: the restarted agent adopts what runs,
// with the same container IDs, and the pod never leaves Running.
func TestAgentRestartKeepsPods(t *testing.T) {
	// The pod runs on n2; the API (and the watch) are n1's, which stays up;
	// three nodes keep a quorum while n2 is down.
	c := newCluster(t, 3)
	importImages(t, c, "n2")
	cs := clientsetFor(t, c, "n1")
	ctx := context.Background()
	for _, name := range []string{"steady", "doomed"} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, echoPod(name, "n2"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	doomed := waitPod(t, cs, "default", "doomed", 60*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	doomedCID := strings.TrimPrefix(doomed.Status.ContainerStatuses[0].ContainerID, "containerd://")
	before := waitPod(t, cs, "default", "steady", 60*time.Second, "Running and Ready", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning && podReady(p)
	})
	w, err := cs.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=steady", ResourceVersion: before.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	pid := containerPID(t, strings.TrimPrefix(before.Status.ContainerStatuses[0].ContainerID, "containerd://"))

	if err := c.Kill("n2"); err != nil {
		t.Fatal(err)
	}
	// While n2's agent is down, doomed is force-deleted: nobody stops it.
	if err := cs.CoreV1().Pods("default").Delete(ctx, "doomed", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := c.Start("n2"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := c.WaitReady(wctx, "n2"); err != nil {
		t.Fatal(err)
	}
	// Give the agent time to adopt and resync, then check the pod.
	time.Sleep(3 * time.Second)
	after := waitPod(t, cs, "default", "steady", 30*time.Second, "Running and Ready", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning && podReady(p)
	})
	a, b := before.Status.ContainerStatuses[0], after.Status.ContainerStatuses[0]
	if a.ContainerID != b.ContainerID || b.RestartCount != 0 || b.State.Running == nil || !b.State.Running.StartedAt.Equal(&a.State.Running.StartedAt) {
		t.Errorf("container changed across the agent restart:\nbefore %+v\nafter  %+v", a, b)
	}
	if p := containerPID(t, strings.TrimPrefix(b.ContainerID, "containerd://")); p != pid {
		t.Errorf("container process changed: pid %s → %s", pid, p)
	}
	if before.Status.PodIP != after.Status.PodIP {
		t.Errorf("pod IP changed: %s → %s", before.Status.PodIP, after.Status.PodIP)
	}
	events := 0
drain:
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("the watch on n1 ended during n2's restart")
			}
			events++
			if p, ok := ev.Object.(*corev1.Pod); !ok || p.Status.Phase != corev1.PodRunning {
				t.Errorf("the pod left Running during the agent restart: %s %v", ev.Type, ev.Object)
			}
		default:
			break drain
		}
	}
	t.Logf("%d pod events during the agent restart, all Running", events)

	// The restarted agent collected what doomed left: its container, address,
	// namespace and cgroup.
	n2 := node(t, c, "n2")
	eventually(t, 20*time.Second, func() error {
		if _, err := os.Stat(filepath.Join(n2.DataDir, "containerd", "state", "io.containerd.runtime.v2.task", "shoal", doomedCID)); err == nil {
			return fmt.Errorf("doomed's container %s still exists", doomedCID)
		}
		if b, _ := os.ReadFile(filepath.Join(n2.DataDir, "podnet", "podnet.json")); strings.Contains(string(b), string(doomed.UID)) {
			return fmt.Errorf("doomed still holds an address: %s", b)
		}
		if ents, _ := os.ReadDir(filepath.Join(n2.DataDir, "podnet", "netns")); len(ents) != 1 {
			return fmt.Errorf("%d pod namespaces on n2, want 1 (steady's)", len(ents))
		}
		if ms, _ := filepath.Glob("/sys/fs/cgroup/*/shoal/pod-" + string(doomed.UID)); len(ms) > 0 {
			return fmt.Errorf("doomed's cgroups are left: %v", ms)
		}
		return nil
	})
	// The restarted agent still serves the pod: deleting it works.
	if err := cs.CoreV1().Pods("default").Delete(ctx, "steady", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(1))}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		if _, err := cs.CoreV1().Pods("default").Get(ctx, "steady", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
}

// TestPodBadInput: a bad image name, an image that is nowhere, an
// unsupported volume type and an impossible securityContext each give a
// clear container status and leave a healthy pod alone.
func TestPodBadInput(t *testing.T) {
	c := newCluster(t, 1, func(cfg *localcluster.Config) {
		cfg.AgentArgs = append(cfg.AgentArgs, "--crashloop-backoff=1s")
	})
	importImages(t, c, "n1")
	cs := clientset(t, c)
	ctx := context.Background()
	if _, err := cs.CoreV1().Pods("default").Create(ctx, echoPod("healthy", "n1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	healthy := waitPod(t, cs, "default", "healthy", 60*time.Second, "Ready", podReady)

	bad := map[string]*corev1.Pod{}
	p := busyboxPod("bad-image-name", "n1", corev1.RestartPolicyAlways, "sleep 60")
	p.Spec.Containers[0].Image = "UPPER/Case::bad"
	bad["InvalidImageName|CreateContainerConfigError"] = p
	p = busyboxPod("no-such-image", "n1", corev1.RestartPolicyAlways, "sleep 60")
	p.Spec.Containers[0].Image = "shoal.dev/nowhere:v9"
	bad["ErrImagePull|ImagePullBackOff"] = p
	p = busyboxPod("nfs-volume", "n1", corev1.RestartPolicyAlways, "sleep 60")
	p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "10.0.0.1", Path: "/x"}}}}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	bad["CreateContainerConfigError"] = p
	p = busyboxPod("root-nonroot", "n1", corev1.RestartPolicyAlways, "sleep 60")
	p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(0))}
	bad["CreateContainerConfigError "] = p
	p = busyboxPod("bad-capability", "n1", corev1.RestartPolicyAlways, "sleep 60")
	p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"CAP_FLY"}}}
	bad["CreateContainerConfigError  "] = p
	for _, p := range bad {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s: %v", p.Name, err)
		}
	}
	// A pod bound to a node that does not exist waits, and says why.
	if _, err := cs.CoreV1().Pods("default").Create(ctx, busyboxPod("nowhere", "n9", corev1.RestartPolicyAlways, "true"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	nowhere := waitPod(t, cs, "default", "nowhere", 30*time.Second, "Pending with a reason", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodPending && p.Status.Reason == "NodeNotFound"
	})
	if !strings.Contains(nowhere.Status.Message, `"n9"`) {
		t.Errorf("nowhere: message %q does not name the node", nowhere.Status.Message)
	}
	for reasons, p := range bad {
		want := strings.Split(strings.TrimSpace(reasons), "|")
		got := waitPod(t, cs, "default", p.Name, 60*time.Second, "waiting with "+reasons, func(p *corev1.Pod) bool {
			s := p.Status.ContainerStatuses
			if len(s) != 1 || s[0].State.Waiting == nil {
				return false
			}
			for _, r := range want {
				if s[0].State.Waiting.Reason == r {
					return s[0].State.Waiting.Message != ""
				}
			}
			return false
		})
		if got.Status.Phase != corev1.PodPending {
			t.Errorf("%s: phase %s, want Pending", p.Name, got.Status.Phase)
		}
		t.Logf("%s: %s: %s", p.Name, got.Status.ContainerStatuses[0].State.Waiting.Reason, got.Status.ContainerStatuses[0].State.Waiting.Message)
	}
	now, err := cs.CoreV1().Pods("default").Get(ctx, "healthy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if now.Status.ContainerStatuses[0].ContainerID != healthy.Status.ContainerStatuses[0].ContainerID || !podReady(now) || now.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("the healthy pod was disturbed: %s", podSummary(now))
	}
}

// TestPodChurnLeaksNothing: 200 pods created and deleted (10 at a time)
// leave no address, network namespace, mount, cgroup, container or pod
// directory behind.
func TestPodChurnLeaksNothing(t *testing.T) {
	c := newCluster(t, 1)
	importImages(t, c, "n1")
	cs := clientset(t, c)
	n1 := node(t, c, "n1")
	mountsBefore := mountsUnder(t, n1.DataDir)
	const workers, rounds = 10, 20
	var (
		mu   sync.Mutex
		uids []string
	)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for r := range rounds {
				name := fmt.Sprintf("churn-%d-%d", w, r)
				p := busyboxPod(name, "n1", corev1.RestartPolicyAlways, "trap 'exit 0' TERM; sleep 3600 & wait")
				created, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				uids = append(uids, string(created.UID))
				mu.Unlock()
				if err := pollPod(ctx, cs, name, 60*time.Second, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning }); err != nil {
					errs <- err
					return
				}
				if err := cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
					errs <- err
					return
				}
				if err := pollPod(ctx, cs, name, 60*time.Second, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(uids) != workers*rounds {
		t.Fatalf("%d pods made, want %d", len(uids), workers*rounds)
	}
	// The checks below look in the right places: a running pod shows there.
	ctx := context.Background()
	probe, err := cs.CoreV1().Pods("default").Create(ctx, busyboxPod("probe", "n1", corev1.RestartPolicyAlways, "sleep 3600"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pollPod(ctx, cs, "probe", 60*time.Second, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning }); err != nil {
		t.Fatal(err)
	}
	tasks := filepath.Join(n1.DataDir, "containerd", "state", "io.containerd.runtime.v2.task", "shoal", "*")
	if ids, _ := filepath.Glob(tasks); len(ids) != 1 {
		t.Errorf("containerd tasks with one pod running: %v", ids)
	}
	if ms, _ := filepath.Glob("/sys/fs/cgroup/*/shoal/pod-" + string(probe.UID)); len(ms) == 0 {
		t.Errorf("no cgroup found for a running pod")
	}
	// The container's shim (the parent of its init) shares out CPU with the
	// other shims and runc calls in one cgroup, not as a peer of the agent.
	if p, err := cs.CoreV1().Pods("default").Get(ctx, "probe", metav1.GetOptions{}); err != nil || len(p.Status.ContainerStatuses) != 1 {
		t.Errorf("probe pod status: %v", err)
	} else if cg := cpuCgroupOf(t, parentPID(t, containerPID(t, strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")))); cg != "/shoal/runtime" {
		t.Errorf("the probe's shim is in CPU cgroup %q, want /shoal/runtime", cg)
	}
	if ents, _ := os.ReadDir(filepath.Join(n1.DataDir, "podnet", "netns")); len(ents) != 1 {
		t.Errorf("pod namespaces with one pod running: %d", len(ents))
	}
	uids = append(uids, string(probe.UID))
	if err := cs.CoreV1().Pods("default").Delete(ctx, "probe", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(1))}); err != nil {
		t.Fatal(err)
	}
	if err := pollPod(ctx, cs, "probe", 60*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	// Nothing of theirs is left.
	b, err := os.ReadFile(filepath.Join(n1.DataDir, "podnet", "podnet.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range uids {
		if strings.Contains(string(b), uid) {
			t.Errorf("podnet still holds an address for pod %s: %s", uid, b)
			break
		}
	}
	for _, dir := range []string{"podnet/netns", "agent/pods"} {
		if ents, _ := os.ReadDir(filepath.Join(n1.DataDir, dir)); len(ents) != 0 {
			t.Errorf("%s holds %d entries after the churn", dir, len(ents))
		}
	}
	if after := mountsUnder(t, n1.DataDir); after != mountsBefore {
		t.Errorf("mounts under the data dir: %d before, %d after", mountsBefore, after)
	}
	for _, uid := range uids {
		if ms, _ := filepath.Glob("/sys/fs/cgroup/*/shoal/pod-" + uid); len(ms) > 0 {
			t.Errorf("cgroups of pod %s left: %v", uid, ms)
			break
		}
	}
	if ids, _ := filepath.Glob(tasks); len(ids) != 0 {
		t.Errorf("containerd still has %d tasks: %v", len(ids), ids)
	}
}

// pollPod waits until cond holds for the pod (nil cond: until it is gone).
func pollPod(ctx context.Context, cs kubernetes.Interface, name string, timeout time.Duration, cond func(*corev1.Pod) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		switch {
		case cond == nil && apierrors.IsNotFound(err):
			return nil
		case cond != nil && err == nil && cond(p):
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s: condition not met after %s (%v, %s)", name, timeout, err, podSummary(p))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountsUnder counts the mounts at or below dir.
func mountsUnder(t testing.TB, dir string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			n++
		}
	}
	return n
}
