// Package e2e holds Shoal's end-to-end tests: real `shoal` agents, each in a
// network namespace of its own, built and run by node/localcluster.
//
// Every test starts with newCluster (or requireRoot): without root the tests
// skip. The shoal binary is built once per run from ./cmd/shoal (or taken
// from $SHOAL_E2E_BINARY). Set SHOAL_E2E_KEEP=1 to leave a failed test's
// cluster running for inspection (its dir and the command to remove it are
// logged).
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/shoal-dev/shoal/node/localcluster"
)

var (
	isRoot = os.Geteuid() == 0
	// pidTag identifies this test process in cluster names and dirs, so a
	// later run can recognise (and purge) what a crashed run left behind.
	pidTag     = strconv.FormatInt(int64(os.Getpid()), 36)
	clusterSeq atomic.Int64
	// baseDir holds every cluster dir of this run; kept short because agents
	// put unix sockets below it.
	baseDir = "/tmp/shoal-e2e-" + pidTag

	buildOnce sync.Once
	shoalPath string
	buildErr  error
	buildDir  string
)

// Cluster names are "e2-<pid base36>-<seq base36>" (at most 11 characters),
// so namespaces are "e2-…-lan" and "e2-…-nI".
var staleNSRE = regexp.MustCompile(`^(e2-([0-9a-z]{1,5})-[0-9a-z]+)-(lan|n[0-9]+)$`)

func TestMain(m *testing.M) {
	if !isRoot {
		fmt.Println("e2e: skipping: needs root (network namespaces)")
	} else {
		purgeStale()
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if archivesDir != "" {
		os.RemoveAll(archivesDir) // the test image archives (pods_test.go)
	}
	os.Remove(baseDir) // empty once every cluster is down
	os.Exit(code)
}

// requireRoot skips the test unless it runs as root.
func requireRoot(t testing.TB) {
	t.Helper()
	if !isRoot {
		t.Skip("e2e: skipping: needs root (network namespaces)")
	}
}

// purgeStale removes clusters left by earlier runs of this package whose
// test process is gone (a timeout panic skips t.Cleanup): it kills the
// processes inside their namespaces and deletes the namespaces and dirs.
func purgeStale() {
	alive := func(tag string) bool {
		pid, err := strconv.ParseInt(tag, 36, 64)
		if err != nil || pid <= 0 || pid > 1<<22 {
			return true // not ours to judge
		}
		if pid == int64(os.Getpid()) {
			return true
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if errors.Is(err, os.ErrNotExist) {
			return false
		}
		// A zombie (state Z, after the last ')') is dead too.
		i := bytes.LastIndexByte(b, ')')
		return err != nil || i < 0 || i+2 >= len(b) || b[i+2] != 'Z'

	}
	ents, _ := os.ReadDir("/run/netns")
	purged := map[string]bool{}
	for _, e := range ents {
		m := staleNSRE.FindStringSubmatch(e.Name())
		if m == nil || purged[m[1]] || alive(m[2]) {
			continue
		}
		purged[m[1]] = true
		if err := localcluster.Purge(m[1]); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: purging stale cluster %s: %v\n", m[1], err)
		}
	}
	dirs, _ := filepath.Glob("/tmp/shoal-e2e-*")
	for _, d := range dirs {
		if tag := strings.TrimPrefix(filepath.Base(d), "shoal-e2e-"); !alive(tag) {
			if err := localcluster.RemoveDir(d); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: removing stale %s: %v\n", d, err)
			}
		}
	}
}

// buildFlags are `make build`'s (see the Makefile): static binaries
// (CGO_ENABLED=0) without containerd's loader of Go plugins.
var buildFlags = []string{"-tags=no_dynamic_plugins"}

// shoalBinary returns the shoal binary under test, building it on first use.
func shoalBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("SHOAL_E2E_BINARY"); p != "" {
			shoalPath, buildErr = filepath.Abs(p)
			return
		}
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
			buildErr = fmt.Errorf("finding the module root: %v", err)
			return
		}
		if buildDir, err = os.MkdirTemp("", "shoal-e2e-bin-"); err != nil {
			buildErr = err
			return
		}
		shoalPath = filepath.Join(buildDir, "shoal")
		// shoal-logger sits next to shoal, as `make build` leaves them: the
		// agents use it for their containers' logs.
		for _, b := range []struct{ out, pkg string }{{shoalPath, "./cmd/shoal"}, {filepath.Join(buildDir, "shoal-logger"), "./cmd/shoal-logger"}} {
			cmd := exec.Command("go", append([]string{"build"}, append(buildFlags, "-o", b.out, b.pkg)...)...)
			cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("e2e: shoal binary: %v", buildErr)
	}
	return shoalPath
}

// newCluster starts a cluster of nodes nodes for this test and removes it
// when the test ends, logging the tail of every agent log first if the test
// failed. opts may adjust the Config (AgentArgs, ReadyTimeout, …).
func newCluster(t *testing.T, nodes int, opts ...func(*localcluster.Config)) *localcluster.Cluster {
	t.Helper()
	requireRoot(t)
	bin := shoalBinary(t)
	seq := clusterSeq.Add(1)
	cfg := localcluster.Config{
		Name:         fmt.Sprintf("e2-%s-%s", pidTag, strconv.FormatInt(seq, 36)),
		Dir:          filepath.Join(baseDir, strconv.FormatInt(seq, 36)),
		Nodes:        nodes,
		Binary:       bin,
		ReadyTimeout: 3 * time.Minute,
		Stdout:       testLogWriter{t},
	}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := localcluster.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("shoal local up (%d nodes): %v", nodes, err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("SHOAL_E2E_KEEP") != "" {
			t.Logf("SHOAL_E2E_KEEP: cluster %s left running; remove it with: shoal local down --dir %s", cfg.Name, c.State().Dir)
			return
		}
		if err := c.Down(); err != nil {
			t.Errorf("shoal local down: %v", err)
		}
	})
	t.Cleanup(func() { // runs before Down
		if t.Failed() {
			dumpLogs(t, c, 80)
		}
	})
	return c
}

// dumpLogs logs the last lines of every agent log.
func dumpLogs(t testing.TB, c *localcluster.Cluster, lines int) {
	t.Helper()
	for _, n := range c.Nodes() {
		state, _ := c.ProcessState(n.Name)
		t.Logf("--- %s (%s, pid %d, %s) %s, last %d lines:\n%s", n.Name, n.IP, n.PID, state, n.LogPath, lines, tailFile(n.LogPath, lines))
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 256<<10 {
		b = b[len(b)-256<<10:]
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// node returns a node's record or fails the test.
func node(t testing.TB, c *localcluster.Cluster, name string) localcluster.NodeInfo {
	t.Helper()
	n, err := c.Node(name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// restConfig returns a client-go config for the cluster's admin kubeconfig
// (node 1) that dials from the lan namespace.
func restConfig(t testing.TB, c *localcluster.Cluster) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath())
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	cfg.Dial = c.DialContext
	cfg.Timeout = 30 * time.Second
	cfg.QPS, cfg.Burst = 100, 200
	return cfg
}

// clientset returns a clientset for the cluster (node 1's API).
func clientset(t testing.TB, c *localcluster.Cluster) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(restConfig(t, c))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// clientsetFor returns a clientset talking to one node's API (its current
// address; the node's serving certificate must name that address).
func clientsetFor(t testing.TB, c *localcluster.Cluster, nodeName string) *kubernetes.Clientset {
	t.Helper()
	cfg := restConfig(t, c)
	cfg.Host = fmt.Sprintf("https://%s:%d", node(t, c, nodeName).IP, localcluster.APIPort)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// kubectl runs /usr/bin/kubectl in the lan namespace with the cluster's
// kubeconfig and a fresh HOME (kubectl caches discovery in ~/.kube/cache).
// It returns stdout; the error carries stderr.
func kubectl(t testing.TB, c *localcluster.Cluster, args ...string) (string, error) {
	t.Helper()
	return kubectlStdin(t, c, nil, args...)
}

// kubectlStdin is kubectl with stdin (for `apply -f -`).
func kubectlStdin(t testing.TB, c *localcluster.Cluster, stdin io.Reader, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := c.Command(ctx, "/usr/bin/kubectl", args...)
	cmd.Env = append(cmd.Env, "HOME="+t.TempDir())
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// eventually calls f until it returns nil, failing the test with f's last
// error after timeout. Polls start at 100ms and back off to 1s.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 100 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("eventually: still failing after %v: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
}

// testLogWriter sends progress lines to t.Log.
type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
