package scheduler

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDependencies enforces that node/scheduler stays pure placement logic:
// it imports nothing of Shoal's (DESIGN.md allows node/state; it does not
// need it), and none of the machinery of a running node either.
func TestDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-deps", "-test", ".").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	const self = "github.com/shoal-dev/shoal/node/scheduler"
	forbidden := []string{"os/exec", "k8s.io/client-go", "github.com/hashicorp/", "github.com/containerd/"}
	for _, pkg := range strings.Fields(string(out)) {
		pkg, _, _ = strings.Cut(pkg, " ") // "pkg [pkg.test]" variants
		if strings.HasPrefix(pkg, "github.com/shoal-dev/shoal") && pkg != self && !strings.HasPrefix(pkg, self+".") {
			t.Errorf("node/scheduler depends on %s", pkg)
		}
	}
	// Nor the machinery of a node (k8s.io/apimachinery brings net/http along,
	// so that one cannot be checked).
	out, err = exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, f) {
				t.Errorf("node/scheduler depends on %s", pkg)
			}
		}
	}
}
