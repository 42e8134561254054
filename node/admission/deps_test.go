package admission

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDependencies enforces that admission stays importable by both the API
// server and the controllers: of node/..., it may use node/state only.
func TestDependencies(t *testing.T) {
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
	allowed := map[string]bool{
		"github.com/shoal-dev/shoal/node/admission": true,
		"github.com/shoal-dev/shoal/node/state":     true,
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/shoal-dev/shoal/") && !allowed[pkg] {
			t.Errorf("admission depends on %s", pkg)
		}
	}
}
