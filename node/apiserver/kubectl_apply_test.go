package apiserver

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestKubectlServerSideApply drives `kubectl apply --server-side` of every
// installed kubectl (1.27 … 1.33) against the server: create, change,
// a conflict between two field managers with kubectl's advice, the forced
// takeover, managedFields shown, server dry run.
func TestKubectlServerSideApply(t *testing.T) { forEachKubectl(t, kubectlApplyFlow) }

func kubectlApplyFlow(t *testing.T, e *testEnv, k *kubectl) {
	cm := func(mode string, extra string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  mode: " + mode + "\n" + extra
	}
	keep := "  keep: \"yes\"\n"
	out := k.run(cm("blue", keep+"  gone: \"soon\"\n"), "apply", "--server-side", "-f", "-")
	mustContain(t, "first apply", out, "configmap/ssa serverside-applied")
	out = k.run(cm("green", keep), "apply", "--server-side", "-f", "-")
	mustContain(t, "second apply", out, "configmap/ssa serverside-applied")
	o, _ := e.store.Get("configmaps", "default", "ssa")
	if c := o.(*corev1.ConfigMap); c.Data["mode"] != "green" || c.Data["keep"] != "yes" || c.Data["gone"] != "" {
		t.Fatalf("after the second apply: %v (want mode=green, keep=yes, gone removed)", c.Data)
	}

	out, err := k.try(cm("red", ""), "apply", "--server-side", "--field-manager=other", "-f", "-")
	if err == nil {
		t.Fatalf("a conflicting apply succeeded:\n%s", out)
	}
	mustContain(t, "conflicting apply", out, `Apply failed with 1 conflict: conflict with "kubectl"`, ".data.mode", "--force-conflicts")
	out = k.run(cm("red", ""), "apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-")
	mustContain(t, "forced apply", out, "configmap/ssa serverside-applied")
	if mode := k.run("", "get", "cm", "ssa", "-o", "jsonpath={.data.mode}"); mode != "red" {
		t.Fatalf("mode after the forced apply: %q", mode)
	}
	out = k.run("", "get", "cm", "ssa", "-o", "yaml", "--show-managed-fields")
	mustContain(t, "managed fields", out, "managedFields:", "manager: kubectl\n", "manager: other\n", "operation: Apply", "f:keep: {}", "f:mode: {}")

	// A Deployment: apply, change the image; a dry run changes nothing.
	deploy := func(image string) string { return deploymentManifest("ssa-web", image) }
	out = k.run(deploy("nginx:1.27"), "apply", "--server-side", "-f", "-")
	mustContain(t, "deployment apply", out, "deployment.apps/ssa-web serverside-applied")
	out = k.run(deploy("nginx:1.28"), "apply", "--server-side", "--dry-run=server", "-f", "-")
	mustContain(t, "dry run", out, "deployment.apps/ssa-web serverside-applied (server dry run)")
	o, _ = e.store.Get("deployments.apps", "default", "ssa-web")
	if img := o.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Image; img != "nginx:1.27" {
		t.Fatalf("image after a dry run: %s", img)
	}
	k.run(deploy("nginx:1.28"), "apply", "--server-side", "-f", "-")
	o, _ = e.store.Get("deployments.apps", "default", "ssa-web")
	if d := o.(*appsv1.Deployment); d.Spec.Template.Spec.Containers[0].Image != "nginx:1.28" || d.Generation != 2 {
		t.Fatalf("after the image change: image %s generation %d", d.Spec.Template.Spec.Containers[0].Image, d.Generation)
	}
	// kubectl scale takes spec.replicas; the next apply conflicts on it.
	k.run("", "scale", "deployment", "ssa-web", "--replicas=3")
	out, err = k.try(deploy("nginx:1.28"), "apply", "--server-side", "-f", "-")
	if err == nil || !strings.Contains(out, ".spec.replicas") {
		t.Fatalf("apply after kubectl scale: %v\n%s", err, out)
	}
}
