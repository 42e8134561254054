package localcluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeAgentEnv) != "" {
		os.Exit(fakeMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("localcluster: skipping: needs root (network namespaces)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("localcluster: skipping: iptables not installed (apt-get install -y iptables)")
	}
}

var clusterSeq atomic.Int32

// testName returns a cluster name unique to this process and call, short
// enough for nameRE.
func testName() string {
	return fmt.Sprintf("lc-%s-%d", strconv.FormatInt(int64(os.Getpid()), 36), clusterSeq.Add(1))
}

// shortTempDir is like t.TempDir but short, since agents put unix sockets
// below a cluster's dir.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "lc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

var countersRE = regexp.MustCompile(`\[\d+:\d+\]`)

// rootNetState renders the root network namespace's addresses, links,
// routes, rules and iptables rules, to compare before and after.
func rootNetState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "link"},
		{"ip", "-o", "addr"},
		{"ip", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"},
		{"ip", "rule"},
		{"ip", "-6", "rule"},
		{"iptables-save"},
	} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		fmt.Fprintf(&b, "### %s\n", strings.Join(args, " "))
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "#") { // iptables-save timestamps
				continue
			}
			b.WriteString(countersRE.ReplaceAllString(l, "[]") + "\n")
		}
	}
	return b.String()
}

// serveName listens on port in namespace ns and answers each connection
// with reply.
func serveName(t *testing.T, ns string, port int, reply string) {
	t.Helper()
	l, err := listenIn(ns, "tcp", ":"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(conn, reply)
			conn.Close()
		}
	}()
}

// readFrom dials addr with dial and returns what the server sends.
func readFrom(dial func(context.Context, string, string) (net.Conn, error), addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(conn)
	return string(b), err
}

func dialFrom(ns string) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialIn(ctx, ns, network, addr)
	}
}

// tWriter sends progress messages to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// dialRoot dials from the calling process's own (root) namespace.
func dialRoot(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}
