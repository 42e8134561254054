package dns

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestLeafDependencies enforces that dns stays a leaf: nothing under node/
// may be imported, directly or indirectly.
func TestLeafDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
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
	for _, pkg := range pkgs {
		if pkg == "github.com/shoal-dev/shoal/node" || strings.HasPrefix(pkg, "github.com/shoal-dev/shoal/node/") {
			t.Errorf("dns depends on %s", pkg)
		}
	}
}
