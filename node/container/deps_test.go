package container

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestLeafDependencies enforces that node/container stays a leaf: it and
// its subpackages (tests included) import nothing of Shoal's outside
// node/container itself.
func TestLeafDependencies(t *testing.T) {
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
	const self = "github.com/shoal-dev/shoal/node/container"
	for _, pkg := range strings.Fields(string(out)) {
		pkg, _, _ = strings.Cut(pkg, " ") // "pkg [pkg.test]" variants
		if strings.HasPrefix(pkg, "github.com/shoal-dev/shoal") && pkg != self && !strings.HasPrefix(pkg, self+"/") && !strings.HasPrefix(pkg, self+".") {
			t.Errorf("node/container depends on %s", pkg)
		}
	}
}
