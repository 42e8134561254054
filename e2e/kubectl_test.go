package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/localcluster"
)

// TestKubectl drives a 3-node cluster with the machine's stock kubectl.
func TestKubectl(t *testing.T) {
	if _, err := os.Stat("/usr/bin/kubectl"); err != nil {
		t.Skip("e2e: skipping: /usr/bin/kubectl not installed")
	}
	c := newCluster(t, 3)
	home := t.TempDir() // one discovery cache for the whole test, as a user has
	run := func(stdin string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := c.Command(ctx, "/usr/bin/kubectl", args...)
		cmd.Env = append(cmd.Env, "HOME="+home)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	out := run("", "get", "nodes", "-o", "wide")
	for _, want := range []string{"NAME", "STATUS", "INTERNAL-IP", "OS-IMAGE", "n1", "n2", "n3", "Ready", node(t, c, "n2").IP} {
		if !strings.Contains(out, want) {
			t.Errorf("get nodes -o wide lacks %q:\n%s", want, out)
		}
	}
	out = run("", "get", "ns")
	for _, want := range []string{"default", "kube-system", "Active"} {
		if !strings.Contains(out, want) {
			t.Errorf("get ns lacks %q:\n%s", want, out)
		}
	}
	run("", "create", "configmap", "made-by-kubectl", "--from-literal=k=v")
	if out := run("", "get", "cm", "made-by-kubectl", "-o", "jsonpath={.data.k}"); out != "v" {
		t.Errorf("created configmap data %q", out)
	}

	manifest := `apiVersion: v1
kind: ConfigMap
metadata:
  name: app
  labels: {tier: web}
data:
  mode: blue
  keep: "yes"
---
apiVersion: v1
kind: Secret
metadata:
  name: app
stringData:
  password: first
`
	out = run(manifest, "apply", "-f", "-")
	if !strings.Contains(out, "configmap/app created") || !strings.Contains(out, "secret/app created") {
		t.Errorf("first apply: %s", out)
	}
	changed := strings.Replace(strings.Replace(manifest, "mode: blue\n  keep: \"yes\"", "mode: green", 1), "password: first", "password: second", 1)
	out = run(changed, "apply", "-f", "-")
	if !strings.Contains(out, "configmap/app configured") || !strings.Contains(out, "secret/app configured") {
		t.Errorf("second apply: %s", out)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal([]byte(run("", "get", "cm", "app", "-o", "json")), &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Data["mode"] != "green" || cm.Data["keep"] != "" {
		t.Errorf("after the second apply the configmap is %v (want mode=green and keep removed)", cm.Data)
	}
	if pw := run("", "get", "secret", "app", "-o", "jsonpath={.data.password}"); pw != "c2Vjb25k" { // base64("second")
		t.Errorf("secret after apply: %q", pw)
	}
	// Server-side validation: an unknown field is refused with its path.
	bad := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndatta: {a: b}\n"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := c.Command(ctx, "/usr/bin/kubectl", "apply", "-f", "-")
	cmd.Env, cmd.Stdin = append(cmd.Env, "HOME="+home), strings.NewReader(bad)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "datta") {
		t.Errorf("apply with an unknown field: err %v\n%s", err, out)
	}

	// get -w sees a change made through another node.
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	watch := c.Command(wctx, "/usr/bin/kubectl", "get", "cm", "app", "-w", "--output-watch-events")
	watch.Env = append(watch.Env, "HOME="+home)
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expectLine(t, lines, "ADDED")
	patched := false
	eventually(t, 10*time.Second, func() error {
		if !patched {
			_, err := clientsetFor(t, c, "n3").CoreV1().ConfigMaps("default").Patch(context.Background(), "app", "application/merge-patch+json",
				[]byte(`{"data":{"mode":"red"}}`), metav1.PatchOptions{})
			if err != nil {
				return err
			}
			patched = true
		}
		return nil
	})
	expectLine(t, lines, "MODIFIED")

	run("", "delete", "cm", "app", "made-by-kubectl")
	if _, err := clientset(t, c).CoreV1().ConfigMaps("default").Get(context.Background(), "app", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("configmap after delete: %v", err)
	}
}

// TestKubectlRBAC: a user's kubeconfig from `shoal kubeconfig --user`, and
// what RBAC lets that user do through another node, before and after an
// admin binds a role, as kubectl shows it.
func TestKubectlRBAC(t *testing.T) {
	if _, err := os.Stat("/usr/bin/kubectl"); err != nil {
		t.Skip("e2e: skipping: /usr/bin/kubectl not installed")
	}
	c := newCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n2 := node(t, c, "n2")
	kc, err := c.NodeCommand(ctx, "n2", shoalBinary(t), "kubeconfig", "--data-dir", n2.DataDir, "--user", "alice", "--group", "devs").Output()
	if err != nil {
		t.Fatalf("shoal kubeconfig --user: %v", err)
	}
	alicePath := t.TempDir() + "/alice.kubeconfig"
	if err := os.WriteFile(alicePath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := c.NodeCommand(ctx, "n2", shoalBinary(t), "kubeconfig", "--data-dir", n2.DataDir, "--group", "devs").CombinedOutput(); err == nil {
		t.Fatalf("--group without --user accepted: %s", out)
	}
	as := func(kubeconfig string, args ...string) (string, error) {
		t.Helper()
		cmd := c.Command(ctx, "/usr/bin/kubectl", args...)
		cmd.Env = append(cmd.Env, "HOME="+t.TempDir())
		if kubeconfig != "" {
			cmd.Env = append(cmd.Env, "KUBECONFIG="+kubeconfig)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	admin := func(args ...string) string {
		t.Helper()
		out, err := as("", args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	// The leader creates the bootstrap policy; alice may discover and ask.
	eventually(t, 30*time.Second, func() error {
		out, err := as(alicePath, "auth", "can-i", "list", "pods")
		if strings.TrimSpace(out) != "no" || err == nil {
			return fmt.Errorf("can-i list pods before any binding: %q %v", out, err)
		}
		return nil
	})
	out, err := as(alicePath, "get", "pods")
	if err == nil || !strings.Contains(out, `User "alice" cannot list resource "pods" in API group "" in the namespace "default"`) {
		t.Fatalf("alice get pods: %v\n%s", err, out)
	}
	out = admin("get", "clusterroles")
	for _, want := range []string{"cluster-admin", "admin", "edit", "view", "CREATED AT"} {
		if !strings.Contains(out, want) {
			t.Errorf("get clusterroles lacks %q:\n%s", want, out)
		}
	}

	admin("create", "namespace", "team")
	admin("create", "rolebinding", "devs-edit", "--clusterrole=edit", "--group=devs", "-n", "team")
	out = admin("get", "rolebinding", "devs-edit", "-n", "team", "-o", "wide")
	for _, want := range []string{"ClusterRole/edit", "devs"} {
		if !strings.Contains(out, want) {
			t.Errorf("get rolebinding -o wide lacks %q:\n%s", want, out)
		}
	}
	eventually(t, 10*time.Second, func() error {
		if out, err := as(alicePath, "create", "configmap", "x", "-n", "team", "--from-literal=a=b"); err != nil {
			return fmt.Errorf("alice create configmap in team: %v: %s", err, out)
		}
		return nil
	})
	if out, err := as(alicePath, "auth", "can-i", "create", "deployments", "-n", "team"); err != nil || strings.TrimSpace(out) != "yes" {
		t.Errorf("can-i create deployments -n team: %q %v", out, err)
	}
	if out, err := as(alicePath, "auth", "can-i", "create", "deployments", "-n", "default"); err == nil || strings.TrimSpace(out) != "no" {
		t.Errorf("can-i create deployments -n default: %q %v", out, err)
	}
	if out, err := as(alicePath, "get", "clusterrolebindings"); err == nil || !strings.Contains(out, "forbidden") {
		t.Errorf("alice get clusterrolebindings: %v\n%s", err, out)
	}
	if out, err := as(alicePath, "get", "configmap", "x", "-n", "team", "-o", "jsonpath={.data.a}"); err != nil || out != "b" {
		t.Errorf("alice get configmap: %q %v", out, err)
	}

	// Aggregation, seen through impersonation: view lacks Secrets until a
	// ClusterRole labelled aggregate-to-view lends them (and view, edit and
	// admin all gather it).
	admin("create", "rolebinding", "readers-view", "--clusterrole=view", "--group=readers", "-n", "team")
	if out, err := as("", "get", "secrets", "-n", "team", "--as=bob", "--as-group=readers"); err == nil || !strings.Contains(out, "forbidden") {
		t.Errorf("view read secrets before aggregation: %v\n%s", err, out)
	}
	admin("create", "clusterrole", "secrets-reader", "--verb=get,list", "--resource=secrets")
	admin("label", "clusterrole", "secrets-reader", "rbac.authorization.k8s.io/aggregate-to-view=true")
	eventually(t, 10*time.Second, func() error {
		if out, err := as("", "get", "secrets", "-n", "team", "--as=bob", "--as-group=readers"); err != nil {
			return fmt.Errorf("view has not gathered secrets-reader: %v: %s", err, out)
		}
		return nil
	})
	for _, role := range []string{"view", "edit", "admin"} {
		if out := admin("get", "clusterrole", role, "-o", "jsonpath={.aggregationRule.clusterRoleSelectors[0].matchLabels}"); !strings.Contains(out, "aggregate-to-"+role) {
			t.Errorf("clusterrole %s aggregation rule: %s", role, out)
		}
	}

	// Impersonation: the admin acts as alice (her groups given), and alice,
	// holding edit in team, as team's service accounts but not as the admin.
	if out := admin("auth", "can-i", "create", "deployments", "-n", "team", "--as=alice", "--as-group=devs"); strings.TrimSpace(out) != "yes" {
		t.Errorf("can-i --as=alice --as-group=devs: %q", out)
	}
	if out, err := as("", "get", "configmap", "-n", "team", "--as=alice"); err == nil || !strings.Contains(out, `User "alice" cannot list resource "configmaps"`) {
		t.Errorf("get configmaps --as=alice without her group: %v\n%s", err, out)
	}
	if out, err := as(alicePath, "auth", "whoami", "--as=system:serviceaccount:team:default", "-o", "jsonpath={.status.userInfo.username}"); err != nil ||
		out != "system:serviceaccount:team:default" {
		t.Errorf("alice as team's default service account: %q %v", out, err)
	}
	// (kubectl's aggregated discovery fails first, and its client cannot
	// decode the Status there: it prints "Forbidden: unknown"; the unit
	// tests check the message.)
	if out, err := as(alicePath, "get", "pods", "--as=admin", "--as-group=system:masters"); err == nil || !strings.Contains(out, "Forbidden") {
		t.Errorf("alice impersonating the admin: %v\n%s", err, out)
	}

	// Service accounts: every namespace gets "default"; a token from
	// `kubectl create token` is a credential RBAC applies to.
	eventually(t, 10*time.Second, func() error {
		if out, err := as("", "get", "serviceaccount", "default", "-n", "team"); err != nil {
			return fmt.Errorf("default service account of team: %v: %s", err, out)
		}
		return nil
	})
	admin("create", "serviceaccount", "ci", "-n", "team")
	admin("create", "rolebinding", "ci-view", "--clusterrole=view", "--serviceaccount=team:ci", "-n", "team")
	token := strings.TrimSpace(admin("create", "token", "ci", "-n", "team", "--duration=15m"))
	server := admin("config", "view", "-o", "jsonpath={.clusters[0].cluster.server}")
	caData := admin("config", "view", "--raw", "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}")
	caPEM, err := base64.StdEncoding.DecodeString(caData)
	if err != nil {
		t.Fatal(err)
	}
	caPath := t.TempDir() + "/ca.crt"
	if err := os.WriteFile(caPath, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	withToken := func(args ...string) (string, error) {
		return as("/dev/null", append([]string{"--server", server, "--certificate-authority", caPath, "--token", token}, args...)...)
	}
	eventually(t, 10*time.Second, func() error {
		if out, err := withToken("get", "configmap", "x", "-n", "team", "-o", "jsonpath={.data.a}"); err != nil || out != "b" {
			return fmt.Errorf("get configmap with the ci token: %q %v", out, err)
		}
		return nil
	})
	if out, err := withToken("create", "configmap", "y", "-n", "team"); err == nil || !strings.Contains(out, `User "system:serviceaccount:team:ci" cannot create resource "configmaps"`) {
		t.Errorf("ci token create configmap: %v\n%s", err, out)
	}
	admin("delete", "serviceaccount", "ci", "-n", "team")
	eventually(t, 10*time.Second, func() error {
		if out, err := withToken("get", "configmap", "x", "-n", "team"); err == nil || !strings.Contains(out, "provide credentials") { // kubectl's words for a 401
			return fmt.Errorf("token of a deleted service account: %v %s", err, out)
		}
		return nil
	})
}

func expectLine(t *testing.T, lines <-chan string, word string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("kubectl get -w ended before %s", word)
			}
			if strings.Contains(l, word) {
				return
			}
		case <-timeout:
			t.Fatalf("kubectl get -w printed no %s line", word)
		}
	}
}

// TestBadInput: invalid objects get 422 with field paths, oversized and
// malformed bodies 4xx, and nothing stored changes.
func TestBadInput(t *testing.T) {
	c := newCluster(t, 1)
	hc, err := c.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("https://%s:%d", node(t, c, "n1").IP, localcluster.APIPort)
	revision := func() string {
		resp, err := hc.Get(base + "/api/v1/namespaces/default/configmaps")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var l metav1.List
		_ = json.NewDecoder(resp.Body).Decode(&l)
		return l.ResourceVersion
	}
	before := revision()
	cases := []struct {
		name, ctype, body, query string
		code                     int
		want                     string
	}{
		{"bad name", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}`, "", 422, "metadata.name"},
		{"bad label", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ok","labels":{"a b":"c"}}}`, "", 422, "metadata.labels"},
		{"unknown field, strict", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ok"},"datta":{}}`, "?fieldValidation=Strict", 422, "datta"},
		{"malformed JSON", "application/json", `{"apiVersion":"v1","kind":`, "", 400, ""},
		{"malformed protobuf", "application/vnd.kubernetes.protobuf", "k8s\x00\xff\xff\xff", "", 400, ""},
		{"oversized", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"a":"` + strings.Repeat("x", 4<<20) + `"}}`, "", 413, ""},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/namespaces/default/configmaps"+tc.query, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.ctype)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var st metav1.Status
		_ = json.Unmarshal(body, &st)
		if resp.StatusCode != tc.code || st.Kind != "Status" || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, body)
		}
	}
	if after := revision(); after != before {
		t.Errorf("bad requests changed the store: revision %s → %s", before, after)
	}
}
