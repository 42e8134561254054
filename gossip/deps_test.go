package gossip

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLeafDependencies enforces that gossip is a leaf: neither the package nor
// its tests may depend on Shoal's node packages (or any other Shoal package).
func TestLeafDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not in PATH: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "-test", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps -test .: %v\n%s", err, out)
	}
	const module = "github.com/shoal-dev/shoal"
	const self = module + "/gossip"
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, _, _ := strings.Cut(line, " ") // "pkg [pkg.test]" for test variants
		switch {
		case pkg == module+"/node" || strings.HasPrefix(pkg, module+"/node/"):
			t.Errorf("gossip depends on %s: leaves must never import node/...", line)
		case pkg == self || pkg == self+".test":
		case pkg == module || strings.HasPrefix(pkg, module+"/"):
			t.Errorf("gossip depends on %s: leaves import memberlist only", line)
		}
	}
}
