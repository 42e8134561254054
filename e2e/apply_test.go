package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/localcluster"
)

// TestServerSideApply drives `kubectl apply --server-side` against a 2-node
// cluster: a Deployment applied and changed through node 1, a second field
// manager through node 2 that conflicts and then forces, and both managers
// read back through either node after the entries went through raft.
func TestServerSideApply(t *testing.T) {
	if _, err := os.Stat("/usr/bin/kubectl"); err != nil {
		t.Skip("e2e: skipping: /usr/bin/kubectl not installed")
	}
	c := newCluster(t, 2)
	via := func(nodeName string, args ...string) []string {
		return append([]string{"--server", fmt.Sprintf("https://%s:%d", node(t, c, nodeName).IP, localcluster.APIPort)}, args...)
	}
	apply := func(manifest string, args ...string) (string, error) {
		t.Helper()
		return kubectlStdin(t, c, strings.NewReader(manifest), append([]string{"apply", "--server-side", "-f", "-"}, args...)...)
	}
	// replicas: 0 keeps pods (and images) out of it: this is about the API.
	deploy := func(image, extraLabel string) string {
		return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: ssa
  labels:
    app: ssa` + extraLabel + `
spec:
  replicas: 0
  selector:
    matchLabels: {app: ssa}
  template:
    metadata:
      labels: {app: ssa}
    spec:
      containers:
      - name: main
        image: ` + image + `
        command: ["sleep", "3600"]
`
	}

	out, err := apply(deploy("busybox:1.36", "\n    stage: first"))
	if err != nil || !strings.Contains(out, "deployment.apps/ssa serverside-applied") {
		t.Fatalf("first apply: %v\n%s", err, out)
	}
	// The changed manifest drops the stage label: kubectl applied it, so
	// it goes.
	out, err = apply(deploy("busybox:1.37", ""))
	if err != nil || !strings.Contains(out, "deployment.apps/ssa serverside-applied") {
		t.Fatalf("second apply: %v\n%s", err, out)
	}
	d, err := clientset(t, c).AppsV1().Deployments("default").Get(context.Background(), "ssa", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "busybox:1.37" || d.Labels["stage"] != "" || d.Generation != 2 {
		t.Fatalf("after the second apply: image %s labels %v generation %d", img, d.Labels, d.Generation)
	}

	// Another manager, through node 2, wants another image: a conflict,
	// with kubectl's advice.
	out, err = apply(deploy("busybox:1.38", ""), via("n2", "--field-manager=other")...)
	if err == nil {
		t.Fatalf("a conflicting apply succeeded:\n%s", out)
	}
	for _, want := range []string{`Apply failed with 1 conflict: conflict with "kubectl"`, `.spec.template.spec.containers[name="main"].image`, "--force-conflicts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("conflict message lacks %q:\n%v", want, err)
		}
	}
	out, err = apply(deploy("busybox:1.38", ""), via("n2", "--field-manager=other", "--force-conflicts")...)
	if err != nil || !strings.Contains(out, "deployment.apps/ssa serverside-applied") {
		t.Fatalf("forced apply: %v\n%s", err, out)
	}

	// Both managers, read through each node.
	for _, n := range []string{"n1", "n2"} {
		var yaml string
		eventually(t, 10*time.Second, func() error {
			out, err := kubectl(t, c, via(n, "get", "deployment", "ssa", "-o", "yaml", "--show-managed-fields")...)
			if err != nil {
				return err
			}
			yaml = out
			for _, want := range []string{"manager: kubectl\n", "manager: other\n", "image: busybox:1.38"} {
				if !strings.Contains(out, want) {
					return fmt.Errorf("get through %s lacks %q", n, want)
				}
			}
			return nil
		})
		if !strings.Contains(yaml, "operation: Apply") {
			t.Errorf("managedFields through %s:\n%s", n, yaml)
		}
	}
	// Without --show-managed-fields kubectl hides them, as with Kubernetes.
	if out, err := kubectl(t, c, "get", "deployment", "ssa", "-o", "yaml"); err != nil || strings.Contains(out, "managedFields") {
		t.Errorf("plain get -o yaml: %v\n%s", err, out)
	}
}
