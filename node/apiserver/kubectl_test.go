package apiserver

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const kubectlPath = "/usr/bin/kubectl"

// kubectl runs stock kubectl against a test server with a fresh HOME (so
// ~/.kube/cache holds nothing from earlier runs).
type kubectl struct {
	t   *testing.T
	bin string
	env []string
}

// kubectlBinaries are the dispatcher and every version-specific kubectl
// installed beside it (kubectl.1.27 … kubectl.1.33).
func kubectlBinaries(t *testing.T) []string {
	if _, err := os.Stat(kubectlPath); err != nil {
		t.Skipf("kubectl end-to-end test skipped: %s not installed", kubectlPath)
	}
	bins := []string{kubectlPath}
	if real, err := filepath.EvalSymlinks(kubectlPath); err == nil {
		more, _ := filepath.Glob(filepath.Join(filepath.Dir(real), "kubectl.1.*"))
		bins = append(bins, more...)
	}
	return bins
}

func newKubectl(t *testing.T, bin string, p *testPKI, url string) *kubectl {
	t.Helper()
	home := t.TempDir()
	b64 := base64.StdEncoding.EncodeToString
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: shoal
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: shoal
  context: {cluster: shoal, user: admin, namespace: default}
current-context: shoal
`, url, b64(p.caPEM), b64(p.adminCert), b64(p.adminKey))
	path := filepath.Join(home, "kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + home, "KUBECONFIG=" + path, "PATH=" + os.Getenv("PATH")}
	return &kubectl{t: t, bin: bin, env: env}
}

// minor is the kubectl's minor version: from a version-specific binary's
// name (kubectl.1.27), 33 for the dispatcher, which picks kubectl.1.33 for
// this server.
func (k *kubectl) minor() int {
	if v, ok := strings.CutPrefix(filepath.Base(k.bin), "kubectl.1."); ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return 33
}

func (k *kubectl) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, k.bin, args...)
	c.Env = k.env
	return c
}

// run runs kubectl and fails the test unless it succeeds.
func (k *kubectl) run(stdin string, args ...string) string {
	k.t.Helper()
	out, err := k.try(stdin, args...)
	if err != nil {
		k.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (k *kubectl) try(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := k.cmd(ctx, args...)
	if stdin != "" {
		c.Stdin = strings.NewReader(stdin)
	}
	out, err := c.CombinedOutput()
	return string(out), err
}

func mustContain(t *testing.T, what, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Fatalf("%s: output lacks %q:\n%s", what, s, out)
		}
	}
}

// TestKubectl drives the server with stock kubectl: the dispatcher (which
// picks kubectl.1.33 for our server version) and each installed
// version-specific binary, so 1.27 … 1.33 are all covered.
func TestKubectl(t *testing.T) { forEachKubectl(t, kubectlFlow) }

// forEachKubectl runs flow with every installed kubectl against a server of
// its own over TLS.
func forEachKubectl(t *testing.T, flow func(t *testing.T, e *testEnv, k *kubectl)) {
	if testing.Short() {
		t.Skip("kubectl end-to-end test skipped in -short mode")
	}
	p := newTestPKI(t)
	for _, bin := range kubectlBinaries(t) {
		t.Run(filepath.Base(bin), func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Now = time.Now })
			ts := e.startTLS(p)
			flow(t, e, newKubectl(t, bin, p, ts.URL))
		})
	}
}

func kubectlFlow(t *testing.T, e *testEnv, k *kubectl) {
	out := k.run("", "version", "-o", "yaml")
	mustContain(t, "version", out, "minor: \"33\"", "v1.33.0-shoal")
	if i := strings.Index(out, "gitVersion:"); i >= 0 {
		t.Logf("client %s", strings.SplitN(out[i:], "\n", 2)[0])
	}

	// Discovery from an empty cache: kubectl asks for the aggregated
	// documents and needs no request per group version.
	out = k.run("", "api-resources", "-v=6", "--cache-dir", t.TempDir())
	mustContain(t, "api-resources", out, "GET", "/apis?", "deployments", "deploy", "apps/v1", "cronjobs", "priorityclasses")
	for _, gv := range []string{"/api/v1?", "/apis/apps/v1?", "/apis/batch/v1?"} {
		if strings.Contains(out, gv) {
			t.Fatalf("api-resources fetched %s: the aggregated discovery documents were not used\n%s", gv, out)
		}
	}

	// explain reads the schemas and field documentation from /openapi/v3.
	out = k.run("", "explain", "deployment.spec.strategy")
	mustContain(t, "explain deployment.spec.strategy", out, "Deployment", "<DeploymentStrategy>",
		"The deployment strategy to use to replace existing pods with new ones.", "rollingUpdate", "<RollingUpdateDeployment>")
	out = k.run("", "explain", "pods.spec.containers.resources")
	mustContain(t, "explain pods.spec.containers.resources", out, "<ResourceRequirements>", "limits", "<map[string]Quantity>",
		"Limits describes the maximum amount of compute resources allowed.")
	out = k.run("", "explain", "svc.spec.ports.targetPort")
	mustContain(t, "explain svc.spec.ports.targetPort", out, "Service", "<IntOrString>", "Number or name of the port")
	out = k.run("", "explain", "cm")
	mustContain(t, "explain cm", out, "ConfigMap", "apiVersion", "APIVersion defines the versioned schema", "<ObjectMeta>", "binaryData")
	if _, err := k.try("", "explain", "pods.spec.nosuchfield"); err == nil {
		t.Fatal("explain of a field that does not exist succeeded")
	}

	// RBAC: the admin may do anything; roles and bindings print as upstream.
	out = k.run("", "auth", "can-i", "delete", "nodes")
	mustContain(t, "auth can-i", out, "yes")
	k.run("", "create", "clusterrole", "pod-reader", "--verb=get,list", "--resource=pods")
	k.run("", "create", "rolebinding", "read-pods", "--clusterrole=pod-reader", "--user=bob", "-n", "default")
	out = k.run("", "get", "rolebindings", "-o", "wide")
	mustContain(t, "get rolebindings -o wide", out, "ROLE", "ClusterRole/pod-reader", "bob")
	// Impersonation (--as, --as-group): the admin sees what bob sees.
	withBootstrapPolicy(t, e)
	out = k.run("", "auth", "can-i", "list", "pods", "--as=bob")
	mustContain(t, "auth can-i --as=bob", out, "yes")
	if out, err := k.try("", "get", "secrets", "--as=bob"); err == nil ||
		!strings.Contains(out, `User "bob" cannot list resource "secrets"`) {
		t.Fatalf("get secrets --as=bob: %v\n%s", err, out)
	}
	k.run("", "get", "pods", "--as=bob", "--as-group=system:masters", "-A")
	if k.minor() >= 28 { // auth whoami is beta from 1.28 (alpha, and off, before)
		out = k.run("", "auth", "whoami", "--as=bob", "--as-group=developers")
		mustContain(t, "auth whoami --as", out, "bob", "developers", "system:authenticated")
	}

	out = k.run("", "get", "ns")
	mustContain(t, "get ns", out, "NAME", "STATUS", "default", "Active", "kube-system")

	out = k.run("", "create", "configmap", "x", "--from-literal=a=b")
	mustContain(t, "create configmap", out, "configmap/x created")

	// kubectl create secret POSTs protobuf.
	out = k.run("", "create", "secret", "generic", "pw", "--from-literal=password=hunter2")
	mustContain(t, "create secret", out, "secret/pw created")
	if o, ok := e.store.Get("secrets", "default", "pw"); !ok || string(o.(*corev1.Secret).Data["password"]) != "hunter2" {
		t.Fatalf("secret pw not stored: %v", o)
	}

	manifest := func(value, extra string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata:
  name: applied
  labels: {app: demo}
data:
  key: %q%s
---
apiVersion: v1
kind: Secret
metadata:
  name: applied-secret
stringData:
  token: %q
`, value, extra, value)
	}
	out = k.run(manifest("one", ""), "apply", "-f", "-")
	mustContain(t, "apply", out, "configmap/applied created", "secret/applied-secret created")
	out = k.run(manifest("two", "\n  added: \"yes\""), "apply", "-f", "-")
	mustContain(t, "apply changed", out, "configmap/applied configured", "secret/applied-secret configured")
	o, _ := e.store.Get("configmaps", "default", "applied")
	if cm := o.(*corev1.ConfigMap); cm.Data["key"] != "two" || cm.Data["added"] != "yes" || cm.Annotations["kubectl.kubernetes.io/last-applied-configuration"] == "" {
		t.Fatalf("applied configmap: %+v", cm)
	}
	o, _ = e.store.Get("secrets", "default", "applied-secret")
	if s := o.(*corev1.Secret); string(s.Data["token"]) != "two" {
		t.Fatalf("applied secret: %q", s.Data["token"])
	}
	out = k.run(manifest("two", "\n  added: \"yes\""), "apply", "-f", "-")
	mustContain(t, "apply unchanged", out, "configmap/applied unchanged")

	// Server-side field validation: kubectl relies on our OpenAPI and the 422.
	bad := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\nbogus: 1\n"
	out, err := k.try(bad, "apply", "-f", "-")
	if err == nil || !strings.Contains(out, "bogus") || !strings.Contains(out, "is invalid") {
		t.Fatalf("apply with an unknown field: %v\n%s", err, out)
	}
	if _, ok := e.store.Get("configmaps", "default", "bad"); ok {
		t.Fatal("strict apply stored an object with an unknown field")
	}

	out = k.run("", "get", "cm", "-o", "yaml")
	mustContain(t, "get cm -o yaml", out, "kind: List", "name: x", "a: b", "key: two")

	out = k.run("", "get", "cm")
	mustContain(t, "get cm", out, "NAME", "DATA", "AGE", "applied")

	// get -w prints the current rows, then a row per change.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := k.cmd(ctx, "get", "cm", "-w")
	stdout, err := w.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Stderr = w.Stdout
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine := func(what string, match func(string) bool) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("kubectl get -w ended before %s", what)
				}
				if match(l) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("kubectl get -w: no %s", what)
			}
		}
	}
	waitLine("initial rows", func(l string) bool { return strings.HasPrefix(l, "x ") })
	e.ok(req{method: "PATCH", path: "/api/v1/namespaces/default/configmaps/x", ct: "application/merge-patch+json",
		body: `{"data":{"b":"c"}}`}, 200, nil)
	waitLine("row for the change", func(l string) bool { return strings.HasPrefix(l, "x ") && strings.Fields(l)[1] == "2" })
	_ = w.Process.Kill()
	_ = w.Wait()

	out = k.run("", "delete", "cm", "x")
	mustContain(t, "delete", out, `configmap "x" deleted`)
	if _, ok := e.store.Get("configmaps", "default", "x"); ok {
		t.Fatal("configmap x still stored")
	}

	// Nodes, wide.
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.7"}},
			NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "v1.33.0-shoal", OSImage: "Debian 12", KernelVersion: "6.1", ContainerRuntimeVersion: "containerd://1.6.20"},
		},
	}
	e.ok(req{method: "POST", path: "/api/v1/nodes", body: node}, 201, nil)
	out = k.run("", "get", "nodes", "-o", "wide")
	mustContain(t, "get nodes -o wide", out, "node-1", "Ready", "INTERNAL-IP", "10.0.0.7", "containerd://1.6.20")

	// Deployments: create, scale (merge patch on /scale), get all.
	out = k.run("", "create", "deployment", "web", "--image=nginx:1.27", "--replicas=2")
	mustContain(t, "create deployment", out, "deployment.apps/web created")
	out = k.run("", "scale", "deployment", "web", "--replicas=4")
	mustContain(t, "scale", out, "deployment.apps/web scaled")
	out = k.run("", "get", "deploy", "web", "-o", "jsonpath={.spec.replicas}")
	if strings.TrimSpace(out) != "4" {
		t.Fatalf("replicas after scale: %q", out)
	}
	out = k.run("", "patch", "deployment", "web", "-p", `{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"}]}}}}`)
	mustContain(t, "patch", out, "deployment.apps/web patched")
	out = k.run("", "get", "all")
	mustContain(t, "get all", out, "deployment.apps/web")

	// Namespace lifecycle.
	k.run("", "create", "namespace", "scratch")
	k.run("", "-n", "scratch", "create", "configmap", "c", "--from-literal=a=b")
	out = k.run("", "delete", "namespace", "scratch")
	mustContain(t, "delete namespace", out, `namespace "scratch" deleted`)
}
