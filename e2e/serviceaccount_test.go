package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/admission"
)

// TestPodServiceAccount: a pod gets its service account's token, the
// cluster CA and its namespace at the standard path, and calls the API
// through the kubernetes service the way client-go's in-cluster config
// does (CA and certificate names checked) — allowed what RBAC grants the
// account, by IP and by name. A pod that turns automounting off gets none.
func TestPodServiceAccount(t *testing.T) {
	c := newCluster(t, 3)
	importImages(t, c, "n1")
	cs := clientset(t, c)
	ctx := context.Background()
	if _, err := cs.CoreV1().Pods("default").Create(ctx, echoPod("api-client", "n2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, cs, "default", "api-client", 2*time.Minute, "ready", podReady)
	if p.Spec.ServiceAccountName != "default" {
		t.Errorf("serviceAccountName %q", p.Spec.ServiceAccountName)
	}
	var mounted bool
	for _, m := range p.Spec.Containers[0].VolumeMounts {
		mounted = mounted || (m.MountPath == admission.ServiceAccountMountPath && m.ReadOnly && strings.HasPrefix(m.Name, "kube-api-access-"))
	}
	if !mounted {
		t.Fatalf("no token volume mounted: %+v", p.Spec.Containers[0].VolumeMounts)
	}
	exec := func(pod string, args ...string) (string, error) {
		return kubectl(t, c, append([]string{"exec", pod, "--"}, args...)...)
	}
	if out, err := exec("api-client", "cat", admission.ServiceAccountMountPath+"/namespace"); err != nil || out != "default" {
		t.Fatalf("namespace file: %q %v", out, err)
	}
	kube := func(query string) string {
		out, err := exec("api-client", "wget", "-qO-", "http://127.0.0.1:8080/kube"+query)
		if err != nil {
			t.Fatalf("in-cluster call: %v", err)
		}
		return strings.TrimSpace(out)
	}
	// Authenticated as system:serviceaccount:default:default, which may
	// not list pods yet.
	if got := kube(""); got != "403" {
		t.Fatalf("in-cluster call before any binding: %s, want 403", got)
	}
	if _, err := kubectl(t, c, "create", "rolebinding", "default-view", "--clusterrole=view", "--serviceaccount=default:default"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if got := kube(""); got != "200" {
			return fmt.Errorf("in-cluster call with view: %s", got)
		}
		return nil
	})
	if got := kube("?host=kubernetes.default.svc"); got != "200" {
		t.Errorf("in-cluster call by the service's DNS name: %s", got)
	}
	if got := kube("?path=/api/v1/namespaces/kube-system/pods"); got != "403" {
		t.Errorf("in-cluster call to another namespace: %s, want 403", got)
	}

	off := echoPod("no-token", "n3")
	off.Spec.AutomountServiceAccountToken = ptr(false)
	if _, err := cs.CoreV1().Pods("default").Create(ctx, off, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p = waitPod(t, cs, "default", "no-token", 2*time.Minute, "ready", podReady)
	for _, v := range p.Spec.Volumes {
		if strings.HasPrefix(v.Name, "kube-api-access-") {
			t.Errorf("automount off, but the pod got %s", v.Name)
		}
	}
	if out, err := exec("no-token", "ls", admission.ServiceAccountMountPath); err == nil {
		t.Errorf("automount off, but %s exists: %s", admission.ServiceAccountMountPath, out)
	}
	if got := strings.TrimSpace(mustExec(t, exec, "no-token", "wget", "-qO-", "http://127.0.0.1:8080/kube")); !strings.HasPrefix(got, "error:") {
		t.Errorf("in-cluster call without a token: %s", got)
	}
}

func mustExec(t *testing.T, exec func(string, ...string) (string, error), pod string, args ...string) string {
	t.Helper()
	out, err := exec(pod, args...)
	if err != nil {
		t.Fatalf("exec %s: %v", strings.Join(args, " "), err)
	}
	return out
}
