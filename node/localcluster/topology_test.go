package localcluster

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTopology builds the topology for three nodes without agents and checks
// reachability, Partition/Heal, SetAddr and that Down leaves nothing behind.
func TestTopology(t *testing.T) {
	requireRoot(t)
	before := rootNetState(t)
	cfg, err := Config{Name: testName(), Dir: shortTempDir(t) + "/c", Nodes: 3, Binary: "/bin/true"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if err := prepareDir(cfg); err != nil {
		t.Fatal(err)
	}
	c := newCluster(cfg)
	t.Cleanup(func() { c.Down() })
	if err := c.saveLocked(); err != nil {
		t.Fatal(err)
	}
	if err := c.setupTopology(t.Context()); err != nil {
		t.Fatal(err)
	}
	const port = 7000
	for _, n := range c.Nodes() {
		serveName(t, n.Namespace, port, n.Name)
	}
	addr := func(ip string) string { return ip + ":7000" }
	wantReach := func(dial func(ctxDial) string, from string, n NodeInfo) {
		t.Helper()
		if got := dial(ctxDial{addr(n.IP), 2 * time.Second}); got != n.Name {
			t.Errorf("from %s to %s (%s): got %q, want %q", from, n.Name, n.IP, got, n.Name)
		}
	}
	wantNoReach := func(dial func(ctxDial) string, from, ip string) {
		t.Helper()
		if got := dial(ctxDial{addr(ip), 700 * time.Millisecond}); got != "" {
			t.Errorf("from %s to %s: got %q, want no connection", from, ip, got)
		}
	}
	lan := func(d ctxDial) string {
		s, err := readFrom(c.DialContext, d.addr, d.timeout)
		if err != nil {
			return ""
		}
		return s
	}
	from := func(ns string) func(ctxDial) string {
		return func(d ctxDial) string {
			s, err := readFrom(dialFrom(ns), d.addr, d.timeout)
			if err != nil {
				return ""
			}
			return s
		}
	}
	nodes := c.Nodes()
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	// Reachability from the lan namespace and between nodes.
	for _, n := range nodes {
		wantReach(lan, "lan", n)
	}
	wantReach(from(n1.Namespace), n1.Name, n2)
	wantReach(from(n3.Namespace), n3.Name, n1)
	// Nothing answers in the root namespace.
	if _, err := readFrom(dialRoot, addr(n1.IP), 300*time.Millisecond); err == nil {
		t.Errorf("root namespace reaches %s", n1.IP)
	}
	// Each node has a default route to the bridge, and lo up.
	out, err := c.NodeCommand(t.Context(), n2.Name, "ip", "route").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "default via "+c.State().BridgeIP+" dev eth0") {
		t.Errorf("routes in %s: %v\n%s", n2.Namespace, err, out)
	}
	// Command runs in the lan namespace, with KUBECONFIG set.
	out, err = c.Command(t.Context(), "sh", "-c", "ip -o addr show br0; echo $KUBECONFIG").CombinedOutput()
	if err != nil || !strings.Contains(string(out), c.State().BridgeIP+"/24") || !strings.Contains(string(out), c.KubeconfigPath()) {
		t.Errorf("Command in lan: %v\n%s", err, out)
	}

	// Partition cuts n2 off from the other nodes in both directions; the lan
	// namespace (the clients' host) and loopback still reach it.
	for range 2 { // idempotent
		if err := c.Partition(n2.Name); err != nil {
			t.Fatal(err)
		}
	}
	wantReach(lan, "lan", n2)
	wantNoReach(from(n2.Namespace), n2.Name, n1.IP)
	wantNoReach(from(n1.Namespace), n1.Name, n2.IP)
	wantReach(lan, "lan", n1)
	wantReach(from(n3.Namespace), n3.Name, n1)
	if got, err := readFrom(dialFrom(n2.Namespace), "127.0.0.1:7000", time.Second); got != n2.Name {
		t.Errorf("loopback in partitioned %s: %q, %v", n2.Name, got, err)
	}
	for range 2 {
		if err := c.Heal(n2.Name); err != nil {
			t.Fatal(err)
		}
	}
	wantReach(lan, "lan", n2)
	wantReach(from(n2.Namespace), n2.Name, n1)
	out, _ = c.NodeCommand(t.Context(), n2.Name, "iptables-save").CombinedOutput()
	if strings.Contains(string(out), partitionComment) {
		t.Errorf("rules left after Heal:\n%s", out)
	}

	// SetAddr moves n3.
	old := n3.IP
	newIP := strings.TrimSuffix(old, ".3") + ".33"
	for _, bad := range []string{n1.IP, c.State().BridgeIP, "10.99.0.1", strings.TrimSuffix(old, ".3") + ".0", "x"} {
		if err := c.SetAddr(n3.Name, bad); err == nil {
			t.Errorf("SetAddr(%s, %s) succeeded", n3.Name, bad)
		}
	}
	if err := c.SetAddr(n3.Name, newIP); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Node(n3.Name); got.IP != newIP {
		t.Errorf("n3 IP = %s, want %s", got.IP, newIP)
	}
	n3.IP = newIP
	wantReach(lan, "lan", n3)
	wantReach(from(n1.Namespace), n1.Name, n3)
	wantNoReach(lan, "lan", old)
	out, _ = c.NodeCommand(t.Context(), n3.Name, "ip", "-o", "-4", "addr", "show", "eth0").CombinedOutput()
	if strings.Count(string(out), "inet ") != 1 {
		t.Errorf("eth0 of %s after SetAddr:\n%s", n3.Name, out)
	}
	out, _ = c.NodeCommand(t.Context(), n3.Name, "ip", "route").CombinedOutput()
	if !strings.Contains(string(out), "default via "+c.State().BridgeIP) {
		t.Errorf("default route lost after SetAddr:\n%s", out)
	}
	if ld, err := Load(c.State().Dir); err != nil {
		t.Fatal(err)
	} else if got, _ := ld.Node("3"); got.IP != newIP {
		t.Errorf("loaded n3 IP = %s, want %s", got.IP, newIP)
	}

	// Down leaves nothing behind.
	name, dir := c.State().Name, c.State().Dir
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	if err := c.Down(); err != nil {
		t.Errorf("second Down: %v", err)
	}
	if nss, _ := clusterNamespaces(name); len(nss) > 0 {
		t.Errorf("namespaces left: %v", nss)
	}
	out, _ = exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(out), name+"-") {
		t.Errorf("ip netns list still shows %s:\n%s", name, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dir %s left: %v", dir, err)
	}
	if after := rootNetState(t); after != before {
		t.Errorf("root namespace changed:\n--- before\n%s\n--- after\n%s", before, after)
	}
}

type ctxDial struct {
	addr    string
	timeout time.Duration
}
