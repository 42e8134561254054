package containerd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/containerd/containers"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var (
	cgroupOnce   sync.Once
	cgroupRoots  []string // every mounted cgroup hierarchy (v1 and v2)
	memoryRoot   string   // the v1 memory hierarchy, or ""
	cpuRoot      string   // the v1 cpu hierarchy, or ""
	unifiedRoot  string   // the v2 hierarchy, or ""
	errNoCgroups = errors.New("no cgroup hierarchies mounted")
)

// loadCgroupMounts finds the cgroup hierarchies in /proc/self/mountinfo.
func loadCgroupMounts() {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// id parent major:minor root mountpoint opts... - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 > len(fields) || len(fields) < 5 {
			continue
		}
		mnt, fstype, super := fields[4], fields[sep+1], fields[sep+3]
		switch fstype {
		case "cgroup2":
			cgroupRoots = append(cgroupRoots, mnt)
			unifiedRoot = mnt
		case "cgroup":
			cgroupRoots = append(cgroupRoots, mnt)
			for _, o := range strings.Split(super, ",") {
				switch o {
				case "memory":
					memoryRoot = mnt
				case "cpu":
					cpuRoot = mnt
				}
			}
		}
	}
}

// cgroupRel cleans a cgroup path to an absolute one below the root; what
// names the operation refused on the root itself.
func cgroupRel(path, what string) (string, error) {
	rel := filepath.Clean("/" + path)
	if rel == "/" {
		return "", fmt.Errorf("refusing to %s the root cgroup", what)
	}
	return rel, nil
}

// ensureCPUCgroup creates the cgroup path (e.g. "/shoal/runtime") in the
// hierarchy that shares out CPU time: the v1 cpu controller's, or the
// unified one when there is no v1 cpu hierarchy. Only that one: a v1 cpuset
// child starts without CPUs and could take no process, and containerd's
// shim skips the hierarchies where the path is missing.
func ensureCPUCgroup(path string) error {
	cgroupOnce.Do(loadCgroupMounts)
	root := cpuRoot
	if root == "" {
		root = unifiedRoot
	}
	if root == "" {
		return errNoCgroups
	}
	rel, err := cgroupRel(path, "use")
	if err != nil {
		return err
	}
	return os.MkdirAll(filepath.Join(root, rel), 0o755)
}

// RemoveCgroup deletes the cgroup at path (e.g. "/shoal/<id>") in every
// hierarchy; it must be empty. A cgroup that is already gone is success. The
// agent uses it for the pod-level parents it puts containers under.
func RemoveCgroup(path string) error {
	cgroupOnce.Do(loadCgroupMounts)
	if len(cgroupRoots) == 0 {
		return errNoCgroups
	}
	rel, err := cgroupRel(path, "remove")
	if err != nil {
		return err
	}
	var errs []error
	for _, root := range cgroupRoots {
		err := syscall.Rmdir(filepath.Join(root, rel))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing cgroup %s in %s: %w", rel, root, err))
		}
	}
	return errors.Join(errs...)
}

// cgroupExists reports whether path exists in any hierarchy.
func cgroupExists(path string) bool {
	cgroupOnce.Do(loadCgroupMounts)
	for _, root := range cgroupRoots {
		if _, err := os.Stat(filepath.Join(root, path)); err == nil {
			return true
		}
	}
	return false
}

// oomKills reads how many processes the OOM killer took in the cgroup at
// path (v1 memory.oom_control or v2 memory.events, "oom_kill N"); 0 when
// unknown.
func oomKills(path string) int {
	cgroupOnce.Do(loadCgroupMounts)
	var file string
	switch {
	case memoryRoot != "":
		file = filepath.Join(memoryRoot, path, "memory.oom_control")
	case unifiedRoot != "":
		file = filepath.Join(unifiedRoot, path, "memory.events")
	default:
		return 0
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// cgroupPathOf reads the cgroup path from a container's OCI spec.
func cgroupPathOf(c containers.Container) string {
	if c.Spec == nil {
		return ""
	}
	var s specs.Spec
	if err := json.Unmarshal(c.Spec.GetValue(), &s); err != nil || s.Linux == nil {
		return ""
	}
	return s.Linux.CgroupsPath
}
