package containerd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestShimCgroupConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ShimCgroup = "shoal/runtime"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "shim cgroup") {
		t.Errorf("relative shim cgroup: %v, want an error naming it", err)
	}
	cfg.ShimCgroup = "/shoal/runtime"
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
	if got := (&Runtime{cfg: cfg}).runcOptions().ShimCgroup; got != "/shoal/runtime" {
		t.Errorf("runc options carry shim cgroup %q", got)
	}
}

// TestEnsureCPUCgroup makes a cgroup where CPU is shared out, and only
// there (a v1 cpuset child would start without CPUs and refuse the shim).
func TestEnsureCPUCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a cgroup")
	}
	base := fmt.Sprintf("/shoal-test-%d", os.Getpid())
	if err := ensureCPUCgroup(base + "/runtime"); err != nil {
		t.Fatal(err)
	}
	root := cpuRoot
	if root == "" {
		root = unifiedRoot
	}
	t.Cleanup(func() {
		for _, p := range []string{base + "/runtime", base} {
			_ = syscall.Rmdir(filepath.Join(root, p))
		}
	})
	if fi, err := os.Stat(filepath.Join(root, base, "runtime")); err != nil || !fi.IsDir() {
		t.Fatalf("cgroup not made under %s: %v", root, err)
	}
	if err := ensureCPUCgroup(base + "/runtime"); err != nil {
		t.Errorf("second call: %v", err)
	}
	for _, r := range cgroupRoots {
		if r == root {
			continue
		}
		if _, err := os.Stat(filepath.Join(r, base)); err == nil {
			t.Errorf("cgroup also made in %s", r)
		}
	}
	if err := ensureCPUCgroup("/"); err == nil {
		t.Error("accepted the root cgroup")
	}
}
