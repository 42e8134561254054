package localcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClusterFakeAgent runs Up, the fault helpers, AddNode and Down against
// the fake agent in fakeagent_test.go.
func TestClusterFakeAgent(t *testing.T) {
	requireRoot(t)
	before := rootNetState(t)
	shared := shortTempDir(t)
	if err := makeFakeShared(shared); err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeAgentEnv, "1")
	t.Setenv(fakeSharedEnv, shared)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(shortTempDir(t), "c")
	cfg := Config{Name: testName(), Dir: dir, Nodes: 3, Binary: exe, ReadyTimeout: time.Minute, Stdout: tWriter{t}}
	ctx := t.Context()
	c, err := Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			c.Down()
		}
	})

	// A second Up with the same name fails clearly.
	cfg2 := cfg
	cfg2.Dir = filepath.Join(shortTempDir(t), "other")
	if _, err := Up(ctx, cfg2); !errors.Is(err, ErrAlreadyUp) || !strings.Contains(err.Error(), "shoal local down") {
		t.Errorf("second Up: %v, want ErrAlreadyUp mentioning shoal local down", err)
	}
	if _, err := Up(ctx, cfg); !errors.Is(err, ErrAlreadyUp) || !strings.Contains(err.Error(), "--dir "+dir) {
		t.Errorf("Up over a running cluster: %v, want ErrAlreadyUp naming its dir", err)
	}

	// Agents: one per node, in its namespace, PID recorded, log written.
	for _, n := range c.Nodes() {
		argv, err := cmdline(n.PID)
		if err != nil || argv[0] != exe || argv[1] != "agent" || !slices.Contains(argv, "--advertise-addr") {
			t.Errorf("%s: pid %d cmdline %q, %v", n.Name, n.PID, argv, err)
		}
		nsIno, _ := nsInode(filepath.Join(netnsDir, n.Namespace))
		pIno, _ := nsInode(fmt.Sprintf("/proc/%d/ns/net", n.PID))
		if nsIno == 0 || nsIno != pIno {
			t.Errorf("%s: agent not in namespace %s", n.Name, n.Namespace)
		}
		if b, _ := os.ReadFile(n.LogPath); !strings.Contains(string(b), "fake agent "+n.Name) {
			t.Errorf("%s: log %s: %q", n.Name, n.LogPath, b)
		}
		if strings.Contains(string(must(os.ReadFile(n.LogPath))), "--token ") && !strings.Contains(string(must(os.ReadFile(n.LogPath))), "--token <redacted>") {
			t.Errorf("%s: token in log", n.Name)
		}
	}
	if _, err := os.Stat(c.KubeconfigPath()); err != nil {
		t.Error(err)
	}
	ld, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(ld.State()), fmt.Sprint(c.State()); got != want {
		t.Errorf("Load: %s, want %s", got, want)
	}
	hc, err := ld.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	if ready, err := readyNodes(ctx, hc, c.Nodes()[1].IP); err != nil || len(ready) != 3 {
		t.Errorf("nodes via n2: %v, %v", ready, err)
	}

	// Kill and Start.
	if err := c.Kill("n2"); err != nil {
		t.Fatal(err)
	}
	if s, _ := c.ProcessState("n2"); s != ProcExited {
		t.Errorf("n2 after Kill: %s", s)
	}
	if err := c.Kill("n2"); err != nil {
		t.Errorf("Kill of a dead agent: %v", err)
	}
	if err := c.Stop("n2"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Stop of a dead agent: %v", err)
	}
	if err := c.Start("n2"); err != nil {
		t.Fatal(err)
	}
	if err := c.Start("n2"); !errors.Is(err, ErrRunning) {
		t.Errorf("second Start: %v", err)
	}
	if argv, _ := cmdline(must(c.Node("n2")).PID); slices.Contains(argv, "--join") {
		t.Errorf("restart with --join: %q", argv)
	}
	waitReady(t, c, "n2")

	// Stop and Cont.
	if err := c.Stop("n3"); err != nil {
		t.Fatal(err)
	}
	if s, _ := c.ProcessState("n3"); s != ProcStopped {
		t.Errorf("n3 after Stop: %s", s)
	}
	if err := readyOnce(c, "n3", 500*time.Millisecond); err == nil {
		t.Error("stopped n3 answers /readyz")
	}
	if err := c.Cont("n3"); err != nil {
		t.Fatal(err)
	}
	waitReady(t, c, "n3")

	// Partition and Heal.
	if err := c.Partition("n1"); err != nil {
		t.Fatal(err)
	}
	if err := readyOnce(c, "n1", 500*time.Millisecond); err != nil {
		t.Errorf("partitioned n1 must still answer clients in the lan namespace: %v", err)
	}
	if err := c.Heal("n1"); err != nil {
		t.Fatal(err)
	}
	waitReady(t, c, "n1")

	// Restart with a new address, for n3 and for n1 (the kubeconfig's server).
	for _, move := range []struct{ node, host string }{{"n3", "103"}, {"n1", "101"}} {
		n := must(c.Node(move.node))
		ip := n.IP[:strings.LastIndexByte(n.IP, '.')+1] + move.host
		if err := c.Kill(n.Name); err != nil {
			t.Fatal(err)
		}
		if err := c.SetAddr(n.Name, ip); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(n.Name); err != nil {
			t.Fatal(err)
		}
		waitReady(t, c, n.Name)
		if argv, _ := cmdline(must(c.Node(n.Name)).PID); !slices.Contains(argv, ip) {
			t.Errorf("%s restarted with %q, want advertise %s", n.Name, argv, ip)
		}
	}
	if kc := string(must(os.ReadFile(c.KubeconfigPath()))); !strings.Contains(kc, "https://"+must(c.Node("n1")).IP+":6443") {
		t.Errorf("kubeconfig not moved to n1's new address:\n%s", kc)
	}

	// AddNode.
	n4, err := c.AddNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n4.Name != "n4" || n4.PID == 0 || len(c.Nodes()) != 4 {
		t.Errorf("AddNode: %+v, %d nodes", n4, len(c.Nodes()))
	}
	if argv, _ := cmdline(n4.PID); !slices.Contains(argv, "--join") || !slices.Contains(argv, "--token") {
		t.Errorf("n4 cmdline %q, want --join and --token", argv)
	}

	// Down stops agents, sweeps their leftover children, removes everything.
	var children []int
	for _, n := range c.Nodes() {
		for _, f := range strings.Fields(string(must(os.ReadFile(filepath.Join(n.DataDir, "children"))))) {
			children = append(children, must(strconv.Atoi(f)))
		}
	}
	if len(children) < 4 {
		t.Fatalf("fake agents recorded %d children", len(children))
	}
	name := c.State().Name
	downed = true
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range children {
		if st, err := readStat(pid); err == nil && st.state != 'Z' {
			t.Errorf("child %d of a fake agent survived Down (state %c)", pid, st.state)
		}
	}
	if nss, _ := clusterNamespaces(name); len(nss) > 0 {
		t.Errorf("namespaces left: %v", nss)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dir left: %v", err)
	}
	if err := ld.Down(); err != nil {
		t.Errorf("Down of the loaded copy after Down: %v", err)
	}
	if after := rootNetState(t); after != before {
		t.Errorf("root namespace changed:\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// TestUpFailure checks that a failed Up cleans up and reports the agent log.
func TestUpFailure(t *testing.T) {
	requireRoot(t)
	shared := shortTempDir(t)
	if err := makeFakeShared(shared); err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeAgentEnv, "1")
	t.Setenv(fakeSharedEnv, shared)
	exe, _ := os.Executable()
	dir := filepath.Join(shortTempDir(t), "c")
	name := testName()
	// --bogus makes the fake agent exit at once.
	_, err := Up(t.Context(), Config{Name: name, Dir: dir, Nodes: 2, Binary: exe, AgentArgs: []string{"--bogus"}, ReadyTimeout: 20 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "flag provided but not defined: -bogus") {
		t.Fatalf("Up with a failing agent: %v", err)
	}
	t.Log(err)
	if nss, _ := clusterNamespaces(name); len(nss) > 0 {
		t.Errorf("namespaces left: %v", nss)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dir left: %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string // substring of the error; "" for none
	}{
		{Config{Dir: "/tmp/x", Nodes: 3, Binary: "/bin/true"}, ""},
		{Config{Dir: "/tmp/x", Nodes: 0, Binary: "/bin/true"}, "nodes"},
		{Config{Nodes: 1, Binary: "/bin/true"}, "dir"},
		{Config{Name: "Has_Caps", Dir: "/tmp/x", Nodes: 1, Binary: "/bin/true"}, "cluster name"},
		{Config{Name: "much-too-long", Dir: "/tmp/x", Nodes: 1, Binary: "/bin/true"}, "cluster name"},
		{Config{Dir: "/tmp/x", Nodes: 1, Binary: "/nonexistent"}, "binary"},
		{Config{Dir: "/tmp/x", Nodes: 1, Binary: "/bin/true", Subnet: "10.1.0.0/16"}, "/24"},
		{Config{Dir: "/tmp/x", Nodes: 1, Binary: "/bin/true", Subnet: "10.1.0.5/24"}, "/24"},
	} {
		got, err := tc.cfg.withDefaults()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		case err == nil && (got.Name != "shoal" || got.Subnet != DefaultSubnet("shoal") || got.ReadyTimeout != defaultReadyTimeout):
			t.Errorf("defaults: %+v", got)
		}
	}
	if DefaultSubnet("a") == DefaultSubnet("b") {
		t.Error("DefaultSubnet does not depend on the name")
	}
}

func waitReady(t *testing.T, c *Cluster, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx, names...); err != nil {
		t.Fatal(err)
	}
}

func readyOnce(c *Cluster, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Ready(ctx, name)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
