package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	shoalnode "github.com/shoal-dev/shoal/node"
	"github.com/shoal-dev/shoal/node/localcluster"
)

// members asks a node's internal API who is in the cluster.
func members(t testing.TB, c *localcluster.Cluster, via string) ([]shoalnode.MemberInfo, error) {
	t.Helper()
	hc, err := c.HTTPClient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://%s:%d/internal/v1/members", node(t, c, via).IP, localcluster.APIPort), nil)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("members: HTTP %d: %s", resp.StatusCode, b)
	}
	var ms []shoalnode.MemberInfo
	return ms, json.NewDecoder(resp.Body).Decode(&ms)
}

// roles counts raft roles among alive members.
func roles(ms []shoalnode.MemberInfo) (leader string, voters, nonvoters int) {
	for _, m := range ms {
		switch m.Role {
		case "leader":
			leader = m.Name
			voters++
		case "voter":
			voters++
		case "non-voter":
			nonvoters++
		}
	}
	return
}

// waitRoles waits until node via reports a leader, voters voters and
// nonvoters non-voters, and returns the leader's name.
func waitRoles(t *testing.T, c *localcluster.Cluster, via string, voters, nonvoters int, timeout time.Duration) string {
	t.Helper()
	var leader string
	eventually(t, timeout, func() error {
		ms, err := members(t, c, via)
		if err != nil {
			return err
		}
		l, v, nv := roles(ms)
		if l == "" || v != voters || nv != nonvoters {
			return fmt.Errorf("leader %q, %d voters, %d non-voters; want %d/%d: %+v", l, v, nv, voters, nonvoters, ms)
		}
		leader = l
		return nil
	})
	return leader
}

func configMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestClusterReplicates: 3 nodes form one cluster with 3 voters; a write
// through any node is readable through every node with the same
// resourceVersion, and a watch on one node sees writes made through another.
func TestClusterReplicates(t *testing.T) {
	c := newCluster(t, 3)
	waitRoles(t, c, "n1", 3, 0, time.Minute)
	ctx := ctxT(t, 2*time.Minute)

	cs := map[string]*kubernetes.Clientset{}
	for _, n := range c.Nodes() {
		cs[n.Name] = clientsetFor(t, c, n.Name)
	}
	// Only this test's object: the leader also creates kube-root-ca.crt here.
	w, err := cs["n1"].CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=via-n2"})
	if err != nil {
		t.Fatalf("watch on n1: %v", err)
	}
	defer w.Stop()

	created, err := cs["n2"].CoreV1().ConfigMaps("default").Create(ctx, configMap("via-n2", map[string]string{"a": "1"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create through n2 (a follower or the leader): %v", err)
	}
	// Reads of the latest state are linearizable on every node (raft read
	// index): the write is visible everywhere at once.
	for name, client := range cs {
		got, err := client.CoreV1().ConfigMaps("default").Get(ctx, "via-n2", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("read on %s right after the write through n2: %v", name, err)
		}
		if got.ResourceVersion != created.ResourceVersion || got.UID != created.UID || got.Data["a"] != "1" {
			t.Fatalf("%s has rv %s uid %s data %v; created rv %s uid %s", name, got.ResourceVersion, got.UID, got.Data, created.ResourceVersion, created.UID)
		}
	}
	select {
	case ev := <-w.ResultChan():
		cm, ok := ev.Object.(*corev1.ConfigMap)
		if ev.Type != watch.Added || !ok || cm.Name != "via-n2" || cm.ResourceVersion != created.ResourceVersion {
			t.Fatalf("watch on n1 got %s %#v", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch on n1 saw nothing of a write through n2")
	}

	// Every node registered a Ready Node object with a pod CIDR of its own.
	eventually(t, 30*time.Second, func() error {
		nodes, err := cs["n3"].CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		cidrs := map[string]bool{}
		for _, n := range nodes.Items {
			if !nodeReady(&n) || n.Spec.PodCIDR == "" || cidrs[n.Spec.PodCIDR] {
				return fmt.Errorf("node %s ready=%v podCIDR=%q", n.Name, nodeReady(&n), n.Spec.PodCIDR)
			}
			cidrs[n.Spec.PodCIDR] = true
		}
		if len(nodes.Items) != 3 {
			return fmt.Errorf("%d nodes", len(nodes.Items))
		}
		return nil
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestLeaderKill: kill -9 the leader; a new one is elected, writes through
// the survivors succeed, a watch resumed across the change misses nothing,
// and the old leader restarts with its ID and catches up.
func TestLeaderKill(t *testing.T) {
	c := newCluster(t, 3)
	leader := waitRoles(t, c, "n1", 3, 0, time.Minute)
	var survivor string
	for _, n := range c.Nodes() {
		if n.Name != leader {
			survivor = n.Name
			break
		}
	}
	ctx := ctxT(t, 3*time.Minute)
	sc := clientsetFor(t, c, survivor)
	first, err := sc.CoreV1().ConfigMaps("default").Create(ctx, configMap("before", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := members(t, c, leader)
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	var second *corev1.ConfigMap
	eventually(t, 30*time.Second, func() error {
		second, err = sc.CoreV1().ConfigMaps("default").Create(ctx, configMap("after", nil), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			second, err = sc.CoreV1().ConfigMaps("default").Get(ctx, "after", metav1.GetOptions{})
		}
		return err
	})
	// A watch resumed from before the change sees exactly the later write.
	w, err := sc.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion, FieldSelector: "metadata.name=after"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		if cm, ok := ev.Object.(*corev1.ConfigMap); !ok || cm.Name != "after" || cm.ResourceVersion != second.ResourceVersion {
			t.Fatalf("resumed watch got %s %#v", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("resumed watch saw nothing")
	}
	w.Stop()

	if err := c.Start(leader); err != nil {
		t.Fatal(err)
	}
	lc := clientsetFor(t, c, leader)
	eventually(t, time.Minute, func() error {
		got, err := lc.CoreV1().ConfigMaps("default").Get(ctx, "after", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got.ResourceVersion != second.ResourceVersion {
			return fmt.Errorf("restarted node has rv %s, want %s", got.ResourceVersion, second.ResourceVersion)
		}
		return nil
	})
	waitRoles(t, c, survivor, 3, 0, time.Minute)
	// The restarted node is back in gossip too (it finds its peers from its
	// raft configuration even if it never wrote a peer list).
	eventually(t, 30*time.Second, func() error {
		ms, err := members(t, c, leader)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Gossip != "alive" || m.Name == "" {
				return fmt.Errorf("restarted %s sees %+v", leader, m)
			}
		}
		return nil
	})
	ms, _ := members(t, c, survivor)
	if idOf(before, leader) == "" || idOf(ms, leader) != idOf(before, leader) {
		t.Fatalf("restarted node's ID changed: before %q after %q", idOf(before, leader), idOf(ms, leader))
	}
}

func idOf(ms []shoalnode.MemberInfo, name string) string {
	for _, m := range ms {
		if m.Name == name {
			return m.ID
		}
	}
	return ""
}

// TestPartitionedNode: a node cut off from the others refuses writes with a
// clear 503 but still serves reads; the majority keeps writing; after
// healing all three converge.
func TestPartitionedNode(t *testing.T) {
	c := newCluster(t, 3)
	leader := waitRoles(t, c, "n1", 3, 0, time.Minute)
	victim := "n3"
	if leader == victim {
		victim = "n2"
	}
	var majority string
	for _, n := range c.Nodes() {
		if n.Name != victim {
			majority = n.Name
		}
	}
	ctx := ctxT(t, 3*time.Minute)
	vc, mc := clientsetFor(t, c, victim), clientsetFor(t, c, majority)
	if _, err := mc.CoreV1().ConfigMaps("default").Create(ctx, configMap("pre", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		_, err := vc.CoreV1().ConfigMaps("default").Get(ctx, "pre", metav1.GetOptions{})
		return err
	})
	if err := c.Partition(victim); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := vc.CoreV1().ConfigMaps("default").Create(ctx, configMap("cut-off", nil), metav1.CreateOptions{})
	took := time.Since(start)
	if !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("write on the partitioned node: %v (want 503)", err)
	}
	t.Logf("partitioned node refused the write in %v: %v", took.Round(time.Millisecond), err)
	if took > 15*time.Second {
		t.Errorf("refusal took %v", took)
	}
	if _, err := vc.CoreV1().ConfigMaps("default").Get(ctx, "pre", metav1.GetOptions{}); err != nil {
		t.Fatalf("read on the partitioned node: %v", err)
	}
	eventually(t, 30*time.Second, func() error {
		_, err := mc.CoreV1().ConfigMaps("default").Create(ctx, configMap("majority", nil), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if err := c.Heal(victim); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, func() error {
		got, err := vc.CoreV1().ConfigMaps("default").Get(ctx, "majority", metav1.GetOptions{})
		if err != nil {
			return err
		}
		want, err := mc.CoreV1().ConfigMaps("default").Get(ctx, "majority", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got.ResourceVersion != want.ResourceVersion {
			return fmt.Errorf("rv %s vs %s", got.ResourceVersion, want.ResourceVersion)
		}
		_, err = vc.CoreV1().ConfigMaps("default").Create(ctx, configMap("healed", nil), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if _, err := vc.CoreV1().ConfigMaps("default").Get(ctx, "cut-off", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the refused write exists after healing: %v", err)
	}
}

// TestRestartAll: every node restarts at once: one cluster, every object
// intact, no re-bootstrap.
func TestRestartAll(t *testing.T) {
	c := newCluster(t, 3)
	waitRoles(t, c, "n1", 3, 0, time.Minute)
	ctx := ctxT(t, 3*time.Minute)
	cs := clientset(t, c)
	for i := 0; i < 20; i++ {
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, configMap(fmt.Sprintf("cm-%d", i), map[string]string{"i": fmt.Sprint(i)}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := cs.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	ids := clusterIDs(t, c)
	for _, n := range c.Nodes() {
		if err := c.Kill(n.Name); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes() {
		if err := c.Start(n.Name); err != nil {
			t.Fatal(err)
		}
	}
	waitRoles(t, c, "n2", 3, 0, 2*time.Minute)
	eventually(t, time.Minute, func() error {
		after, err := clientsetFor(t, c, "n3").CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(after.Items) != len(before.Items) {
			return fmt.Errorf("%d configmaps after restart, %d before", len(after.Items), len(before.Items))
		}
		for i := range after.Items {
			if after.Items[i].ResourceVersion != before.Items[i].ResourceVersion || after.Items[i].Data["i"] != before.Items[i].Data["i"] {
				return fmt.Errorf("%s changed across the restart", after.Items[i].Name)
			}
		}
		return nil
	})
	if got := clusterIDs(t, c); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("cluster IDs changed: %v → %v", ids, got)
	}
}

// clusterIDs reads every node's cluster ID from its data dir.
func clusterIDs(t *testing.T, c *localcluster.Cluster) []string {
	t.Helper()
	var out []string
	for _, n := range c.Nodes() {
		b, err := os.ReadFile(filepath.Join(n.DataDir, "node.json"))
		if err != nil {
			t.Fatal(err)
		}
		var id shoalnode.Identity
		if err := json.Unmarshal(b, &id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id.ClusterID)
	}
	if len(out) > 1 {
		for _, id := range out[1:] {
			if id != out[0] {
				t.Fatalf("nodes disagree on the cluster ID: %v", out)
			}
		}
	}
	return out
}

// TestNewAddress: a node restarted with a new address keeps its ID; the raft
// configuration and its Node object show only the new address.
func TestNewAddress(t *testing.T) {
	c := newCluster(t, 3)
	waitRoles(t, c, "n1", 3, 0, time.Minute)
	before, _ := members(t, c, "n1")
	if err := c.Kill("n3"); err != nil {
		t.Fatal(err)
	}
	oldIP := node(t, c, "n3").IP
	newIP := strings.TrimSuffix(oldIP, "3") + "33"
	if err := c.SetAddr("n3", newIP); err != nil {
		t.Fatal(err)
	}
	if err := c.Start("n3"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, func() error {
		ms, err := members(t, c, "n1")
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Name == "n3" {
				if m.ID != idOf(before, "n3") {
					return fmt.Errorf("n3 has a new ID %s", m.ID)
				}
				if !strings.HasPrefix(m.Raft, newIP+":") || m.Gossip != "alive" || m.Role == "none" {
					return fmt.Errorf("n3: %+v", m)
				}
			}
			if strings.Contains(m.Raft, oldIP+":") || strings.Contains(m.API, oldIP+":") {
				return fmt.Errorf("stale address: %+v", m)
			}
		}
		_, v, nv := roles(ms)
		if len(ms) != 3 || v != 3 || nv != 0 {
			return fmt.Errorf("members %+v", ms)
		}
		return nil
	})
	ctx := ctxT(t, time.Minute)
	eventually(t, 30*time.Second, func() error {
		n, err := clientset(t, c).CoreV1().Nodes().Get(ctx, "n3", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && a.Address != newIP {
				return fmt.Errorf("Node n3 InternalIP %s", a.Address)
			}
		}
		return nil
	})
}

// TestSixNodes: six nodes give five voters and one non-voter; a voter
// killed for good is replaced by the non-voter without losing quorum.
func TestSixNodes(t *testing.T) {
	c := newCluster(t, 6, func(cfg *localcluster.Config) {
		cfg.AgentArgs = append(cfg.AgentArgs, "--dead-voter-grace=5s")
	})
	leader := waitRoles(t, c, "n1", 5, 1, 2*time.Minute)
	ms, _ := members(t, c, "n1")
	var victim string
	for _, m := range ms {
		if m.Role == "voter" && m.Name != leader {
			victim = m.Name
			break
		}
	}
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	via := leader
	ctx := ctxT(t, 3*time.Minute)
	cs := clientsetFor(t, c, via)
	deadline := time.Now().Add(90 * time.Second)
	for i := 0; ; i++ {
		// Writes keep committing throughout the replacement.
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, configMap(fmt.Sprintf("during-%d", i), nil), metav1.CreateOptions{}); err != nil {
			t.Fatalf("write %d during voter replacement: %v", i, err)
		}
		ms, err := members(t, c, via)
		if err == nil {
			l, v, nv := roles(ms)
			victimRole := ""
			for _, m := range ms {
				if m.Name == victim {
					victimRole = m.Role
				}
			}
			if l != "" && v == 5 && nv == 0 && (victimRole == "" || victimRole == "none") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("voter %s not replaced: %+v", victim, ms)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestJoinTokens: expired, revoked, used-up, wrong-secret and wrong-CA joins
// fail with clear messages; a valid one works.
func TestJoinTokens(t *testing.T) {
	c := newCluster(t, 1)
	n1 := node(t, c, "n1")
	token := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := c.NodeCommand(ctx, "n1", shoalBinary(t), append([]string{"token", "create", "--data-dir", n1.DataDir}, args...)...).Output()
		if err != nil {
			t.Fatalf("token create: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	short := token("--ttl", "1s")
	revoked := token()
	once := token("--uses", "1")
	valid := token()
	{
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		id := strings.Split(revoked, ".")[1]
		out, err := c.NodeCommand(ctx, "n1", shoalBinary(t), "token", "revoke", id, "--data-dir", n1.DataDir).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("revoke: %v %s", err, out)
		}
	}
	time.Sleep(1100 * time.Millisecond) // let the short token expire
	parts := strings.Split(valid, ".")
	wrongSecret := strings.Join([]string{parts[0], parts[1], strings.Repeat("a", len(parts[2])), parts[3]}, ".")
	wrongCA := strings.Join([]string{parts[0], parts[1], parts[2], strings.Repeat("0", len(parts[3]))}, ".")

	joins := 0
	join := func(tok string) (string, error) {
		joins++
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		dir := t.TempDir()
		// Run in n1's namespace with a loopback-only address: the join
		// request is what is tested, not the node that would result.
		cmd := c.NodeCommand(ctx, "n1", shoalBinary(t), "agent", "--data-dir", dir, "--advertise-addr", "127.0.0.2",
			"--api-port", "16443", "--gossip-port", "17946", "--raft-port", "17947", "--node-name", fmt.Sprintf("joiner-%d", joins),
			"--join", n1.IP+":6443", "--token", tok)
		out, err := runUntil(cmd, "node running", 30*time.Second)
		return out, err
	}
	cases := []struct{ name, tok, want string }{
		{"expired", short, "expired"},
		{"revoked", revoked, "revoked"},
		{"wrong secret", wrongSecret, "wrong join token secret"},
		{"wrong CA", wrongCA, "cluster CA mismatch"},
		{"malformed", "SHL1.nope", "malformed join token"},
	}
	for _, tc := range cases {
		out, err := join(tc.tok)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s token: err %v, output must contain %q:\n%s", tc.name, err, tc.want, out)
		}
	}
	if out, err := join(once); err != nil {
		t.Fatalf("one-use token, first join: %v\n%s", err, out)
	}
	if out, err := join(once); err == nil || !strings.Contains(out, "used up") {
		t.Errorf("one-use token, second join: err %v\n%s", err, out)
	}
	if out, err := join(valid); err != nil {
		t.Fatalf("valid token: %v\n%s", err, out)
	}
}

// runUntil runs cmd until its combined output contains marker (success: the
// process is then killed) or it exits (failure, with its output).
func runUntil(cmd *exec.Cmd, marker string, timeout time.Duration) (string, error) {
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	var out strings.Builder
	found, readDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		closed := false
		for {
			n, err := pr.Read(buf)
			out.Write(buf[:n])
			if !closed && strings.Contains(out.String(), marker) {
				close(found)
				closed = true
			}
			if err != nil {
				return
			}
		}
	}()
	var err error
	select {
	case <-found:
		_ = cmd.Process.Kill()
		<-done
	case err = <-done:
		if err == nil {
			err = errors.New("exited without " + marker)
		}
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		err = fmt.Errorf("timed out waiting for %q", marker)
	}
	<-readDone
	return out.String(), err
}
