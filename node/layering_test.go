package node

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestLayering enforces the architecture map of the README: which packages
// of the module each leaf and each node component may depend on, directly
// or not, and which outside packages some must not touch. One table, so
// the layering reads in one place.
func TestLayering(t *testing.T) {
	const module = "github.com/shoal-dev/shoal"
	rules := []struct {
		pkg     string   // relative to the module; "x/..." for a tree
		tests   bool     // count the dependencies of its tests too
		allowed []string // module trees it may use besides its own
		banned  []string // outside packages (prefixes) it must not use
	}{
		{pkg: "consensus"},
		{pkg: "gossip", tests: true},
		{pkg: "netproxy"},
		{pkg: "dns"},
		{pkg: "node/podnet"},
		{pkg: "node/sysmon", tests: true},
		{pkg: "node/container/..."},
		{pkg: "node/admission", allowed: []string{"node/state"}},
		{pkg: "node/rbac", tests: true, allowed: []string{"node/state"}},
		{pkg: "node/scheduler", banned: []string{"os/exec", "k8s.io/client-go", "github.com/hashicorp/", "github.com/containerd/"}},
		{pkg: "node/agent/...", tests: true, allowed: []string{"node/state", "node/container", "node/podnet", "node/events"}},
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	within := func(pkg, tree string) bool {
		return pkg == tree || strings.HasPrefix(pkg, tree+"/") || strings.HasPrefix(pkg, tree+".")
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			args := []string{"list", "-deps"}
			if r.tests {
				args = append(args, "-test")
			}
			out, err := exec.Command(goBin, append(args, module+"/"+r.pkg)...).Output()
			if err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					t.Fatalf("go list: %v\n%s", err, ee.Stderr)
				}
				t.Fatalf("go list: %v", err)
			}
			pkgs := strings.Fields(string(out))
			if len(pkgs) == 0 {
				t.Fatal("go list printed no packages")
			}
			trees := []string{module + "/" + strings.TrimSuffix(r.pkg, "/...")}
			for _, a := range r.allowed {
				trees = append(trees, module+"/"+a)
			}
			for _, pkg := range pkgs {
				for _, b := range r.banned {
					if pkg == b || strings.HasPrefix(pkg, b) {
						t.Errorf("%s depends on %s, which it must not use", r.pkg, pkg)
					}
				}
				if !within(pkg, module) {
					continue // outside the module, or the "[pkg.test]" half of a test variant
				}
				ok := false
				for _, tree := range trees {
					ok = ok || within(pkg, tree)
				}
				if !ok {
					t.Errorf("%s depends on %s; it may use only %v", r.pkg, pkg, trees)
				}
			}
		})
	}
}
