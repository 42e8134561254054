package agent

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDependencies enforces the layering: node/agent and its subpackages
// (tests included) translate cluster objects for the node's leaves
// (node/state, node/events, node/container, node/podnet) and import nothing else of
// Shoal — not the node wiring (github.com/shoal-dev/shoal/node), the API
// server, consensus or gossip.
func TestDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-deps", "-test", "./...").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	const module = "github.com/shoal-dev/shoal"
	allowed := []string{module + "/node/agent", module + "/node/state", module + "/node/container", module + "/node/podnet", module + "/node/events"}
	within := func(pkg, tree string) bool {
		return pkg == tree || strings.HasPrefix(pkg, tree+"/") || strings.HasPrefix(pkg, tree+".")
	}
	for _, pkg := range strings.Fields(string(out)) {
		if !within(pkg, module) {
			continue // also skips the "[pkg.test]" halves of test variants
		}
		ok := false
		for _, tree := range allowed {
			ok = ok || within(pkg, tree)
		}
		if !ok {
			t.Errorf("node/agent depends on %s; it may only use %v", pkg, allowed)
		}
	}
}
