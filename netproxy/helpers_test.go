package netproxy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain checks that the privileged tests leave the machine's root
// network namespace (links, addresses, routes, rules, nftables) as they
// found it.
func TestMain(m *testing.M) {
	before, snapErr := rootNSSnapshot()
	code := m.Run()
	if snapErr == nil && os.Geteuid() == 0 {
		after, err := rootNSSnapshot()
		switch {
		case err != nil:
			fmt.Fprintf(os.Stderr, "root namespace snapshot after tests: %v\n", err)
			code = 1
		case before != after:
			fmt.Fprintf(os.Stderr, "FAIL: tests changed the root network namespace:\nbefore:\n%s\nafter:\n%s\n", before, after)
			code = 1
		}
	}
	os.Exit(code)
}

// rootNSSnapshot renders the root namespace's links, addresses, routes,
// rules and nftables ruleset.
func rootNSSnapshot() (string, error) {
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "link", "show"},
		{"ip", "-o", "-4", "addr", "show"},
		{"ip", "route", "show", "table", "all"},
		{"ip", "rule", "show"},
		{"nft", "list", "tables"},
	} {
		out, err := exec.Command(args[0], args[1:]...).Output()
		if err != nil {
			return "", fmt.Errorf("%s: %w", strings.Join(args, " "), err)
		}
		fmt.Fprintf(&b, "## %s\n%s", strings.Join(args, " "), out)
	}
	return b.String(), nil
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths, bridges and nftables tables (run `go test` as root)")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs the %s binary (apt: iproute2, nftables)", bin)
		}
	}
}

// testNS is a network namespace created for one test and deleted when it
// ends.
type testNS struct {
	name string
	path string
}

func newTestNS(t testing.TB) *testNS {
	t.Helper()
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := "shoaltest-" + hex.EncodeToString(rnd[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &testNS{name: name, path: "/run/netns/" + name}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns.run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// run runs a command inside the namespace and returns its stdout.
func (n *testNS) run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.try(args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v", n.name, strings.Join(args, " "), err)
	}
	return out
}

func (n *testNS) try(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
