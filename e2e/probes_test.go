package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/shoal-dev/shoal/e2e/images"
	"github.com/shoal-dev/shoal/node/localcluster"
)

// importGRPCHealth builds the grpchealth image and imports it into one node.
func importGRPCHealth(t *testing.T, c *localcluster.Cluster, nodeName string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	archive := filepath.Join(t.TempDir(), "grpchealth.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := images.BuildGRPCHealth(ctx, f, images.GRPCHealthRef); err != nil {
		f.Close()
		t.Fatalf("building the grpchealth image: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	n := node(t, c, nodeName)
	if out, err := c.NodeCommand(ctx, nodeName, shoalBinary(t), "image", "import", archive, "--data-dir", n.DataDir).CombinedOutput(); err != nil {
		t.Fatalf("shoal image import %s on %s: %v\n%s", archive, nodeName, err, out)
	}
}

// grpcHealthPod runs the grpchealth server on n1 (answering for the server
// and for the service "live") with the given probes (nil for none).
func grpcHealthPod(name string, readiness, liveness *corev1.Probe) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:                      "n1",
			TerminationGracePeriodSeconds: ptr(int64(1)),
			Containers: []corev1.Container{{
				Name:           "server",
				Image:          images.GRPCHealthRef,
				Env:            []corev1.EnvVar{{Name: "SERVICES", Value: "live"}},
				Ports:          []corev1.ContainerPort{{Name: "grpc", ContainerPort: images.GRPCHealthPort}},
				ReadinessProbe: readiness,
				LivenessProbe:  liveness,
			}},
		},
	}
}

// TestGRPCProbes: gRPC probes against a real gRPC health server in a pod. A
// readiness probe makes the pod Ready while the server answers SERVING and
// not Ready while it answers NOT_SERVING (with the kubelet's event); a
// liveness probe restarts the container once its server answers
// NOT_SERVING.
func TestGRPCProbes(t *testing.T) {
	c := newCluster(t, 1)
	importGRPCHealth(t, c, "n1")
	cs := clientset(t, c)
	ctx := context.Background()

	ready := grpcHealthPod("grpc-ready", &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: images.GRPCHealthPort}},
		PeriodSeconds: 1, FailureThreshold: 1,
	}, nil)
	live := grpcHealthPod("grpc-live", nil, &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: images.GRPCHealthPort, Service: ptr("live")}},
		PeriodSeconds: 1, FailureThreshold: 2,
	})
	for _, p := range []*corev1.Pod{ready, live} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s: %v", p.Name, err)
		}
	}
	exec := func(pod string, args ...string) {
		t.Helper()
		if out, err := kubectl(t, c, append([]string{"exec", pod, "--"}, args...)...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}

	// Readiness: Ready while SERVING, not Ready while NOT_SERVING (the
	// container keeps running), Ready again.
	waitPod(t, cs, "default", "grpc-ready", 90*time.Second, "Running and Ready", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning && podReady(p)
	})
	exec("grpc-ready", images.GRPCHealthPath, "fail")
	p := waitPod(t, cs, "default", "grpc-ready", 60*time.Second, "Running and not Ready", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning && condition(p, corev1.PodReady) == corev1.ConditionFalse
	})
	if s := p.Status.ContainerStatuses[0]; s.Ready || s.RestartCount != 0 || s.State.Running == nil {
		t.Errorf("grpc-ready: %s; want running, not ready, never restarted", podSummary(p))
	}
	wantEvent(t, cs, "grpc-ready", `Readiness probe failed: service unhealthy (responded with "NOT_SERVING")`)
	exec("grpc-ready", images.GRPCHealthPath, "pass")
	waitPod(t, cs, "default", "grpc-ready", 60*time.Second, "Ready again", func(p *corev1.Pod) bool {
		return podReady(p) && p.Status.ContainerStatuses[0].Ready && p.Status.ContainerStatuses[0].RestartCount == 0
	})

	// Liveness: NOT_SERVING restarts the container; the new one starts
	// with a fresh /tmp, so it is SERVING and keeps running.
	waitPod(t, cs, "default", "grpc-live", 90*time.Second, "Running", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
	})
	exec("grpc-live", images.GRPCHealthPath, "fail")
	p = waitPod(t, cs, "default", "grpc-live", 60*time.Second, "restarted by its liveness probe", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) == 1 && s[0].RestartCount >= 1 && s[0].State.Running != nil && s[0].LastTerminationState.Terminated != nil
	})
	want := `Container server failed liveness probe, will be restarted: service unhealthy (responded with "NOT_SERVING")`
	if m := p.Status.ContainerStatuses[0].LastTerminationState.Terminated.Message; m != want {
		t.Errorf("grpc-live: last termination message %q, want %q", m, want)
	}
	wantEvent(t, cs, "grpc-live", `Liveness probe failed: service unhealthy (responded with "NOT_SERVING")`)
	// Healthy after the restart: it stays at one restart.
	time.Sleep(5 * time.Second)
	p = waitPod(t, cs, "default", "grpc-live", 10*time.Second, "running", func(p *corev1.Pod) bool {
		return p.Status.ContainerStatuses[0].State.Running != nil
	})
	if n := p.Status.ContainerStatuses[0].RestartCount; n != 1 {
		t.Errorf("grpc-live: %d restarts after recovering, want 1: %s", n, podSummary(p))
	}
}

// wantEvent waits for an Unhealthy event of the pod with message msg.
func wantEvent(t *testing.T, cs kubernetes.Interface, pod, msg string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		evs, err := cs.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
		if err != nil {
			return err
		}
		var seen []string
		for _, e := range evs.Items {
			if e.Reason == "Unhealthy" && e.Message == msg {
				return nil
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		return fmt.Errorf("no Unhealthy event %q for %s; events: %s", msg, pod, strings.Join(seen, "; "))
	})
}
