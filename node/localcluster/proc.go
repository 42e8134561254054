package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStat is what we read from /proc/PID/stat.
type procStat struct {
	state     byte   // R, S, D, T, t, Z, X, …
	ppid      int    // parent PID
	threads   int    // threads in the process, num_threads
	startTime uint64 // clock ticks after boot; stable across exec
}

// readStat parses /proc/PID/stat. The command name may contain spaces and
// parentheses, so fields are counted from the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: ppid: %w", pid, err)
	}
	threads, err := strconv.Atoi(f[17])
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: num_threads: %w", pid, err)
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: starttime: %w", pid, err)
	}
	return procStat{state: f[0][0], ppid: ppid, threads: threads, startTime: st}, nil
}

// Process states reported by ProcessState.
const (
	ProcRunning = "running"
	ProcStopped = "stopped"
	ProcExited  = "exited"
)

// procState tells whether the process recorded as (pid, startTime) is still
// the one we started, and whether it is stopped. A zombie counts as exited
// once its other threads are gone too (see stateOf).
func procState(pid int, startTime uint64) string {
	if pid <= 0 {
		return ProcExited
	}
	st, err := readStat(pid)
	if err != nil || st.startTime != startTime {
		return ProcExited
	}
	return stateOf(st)
}

// stateOf maps a process's stat to running, stopped or exited. After kill
// -9 the main thread turns zombie at once, while the process's other threads
// still exit; the last of them frees the memory and only then closes the
// files. For an agent holding a large store that takes a few hundred ms, and
// a restart in between found its data dir still locked. So a zombie whose
// other threads still run is still running.
func stateOf(st procStat) string {
	switch st.state {
	case 'Z', 'X', 'x':
		if st.threads > 1 {
			return ProcRunning
		}
		return ProcExited
	case 'T', 't':
		return ProcStopped
	}
	return ProcRunning
}

// signalProc sends sig to pid if it is still the process we started.
// A process that is gone is success.
func signalProc(pid int, startTime uint64, sig syscall.Signal) error {
	if procState(pid, startTime) == ProcExited {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to pid %d: %w", sig, pid, err)
	}
	return nil
}

// waitExit waits until every process in procs has exited or ctx is done.
func waitExit(ctx context.Context, procs map[int]uint64) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		left := 0
		for pid, st := range procs {
			if procState(pid, st) != ProcExited {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d process(es) still running: %w", left, ctx.Err())
		case <-t.C:
		}
	}
}

// cmdline returns argv of pid.
func cmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), nil
}

// nsInode returns the inode of a namespace file (a /run/netns entry or a
// /proc/PID/ns/net link), which identifies the namespace.
func nsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// processesIn returns the processes whose network namespace is one of
// namespaces, plus all their descendants (containerd shims, containers in pod
// namespaces), with their start times. The calling process and its ancestors
// are never included.
func processesIn(namespaces []string) (map[int]uint64, error) {
	want := map[uint64]bool{}
	for _, ns := range namespaces {
		ino, err := nsInode(filepath.Join(netnsDir, ns))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		want[ino] = true
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	stats := map[int]procStat{}
	children := map[int][]int{}
	var seeds []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.state == 'Z' || st.state == 'X' {
			continue
		}
		stats[pid] = st
		children[st.ppid] = append(children[st.ppid], pid)
		if len(want) == 0 {
			continue
		}
		if ino, err := nsInode(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && want[ino] {
			seeds = append(seeds, pid)
		}
	}
	exclude := map[int]bool{0: true, 1: true}
	for pid := os.Getpid(); pid > 1 && !exclude[pid]; pid = stats[pid].ppid {
		exclude[pid] = true
	}
	out := map[int]uint64{}
	for len(seeds) > 0 {
		pid := seeds[len(seeds)-1]
		seeds = seeds[:len(seeds)-1]
		if exclude[pid] {
			continue
		}
		if _, seen := out[pid]; seen {
			continue
		}
		out[pid] = stats[pid].startTime
		seeds = append(seeds, children[pid]...)
	}
	return out, nil
}

// killAll SIGKILLs procs and waits (bounded) for them to exit.
func killAll(procs map[int]uint64) error {
	var errs []error
	for pid, st := range procs {
		if err := signalProc(pid, st, syscall.SIGKILL); err != nil {
			errs = append(errs, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitExit(ctx, procs); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// tail returns about the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	const max = 64 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// unmountUnder lazily unmounts everything mounted at or below dir (pod
// network namespaces and volumes of the cluster's agents), deepest first.
func unmountUnder(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := strings.ReplaceAll(f[4], `\040`, " ")
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	var errs []error
	for _, mp := range mps {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// podCgroupRoot is where agents put their pods' cgroups ("/shoal/pod-<uid>"
// in every hierarchy): shared by all nodes on the machine.
const podCgroupRoot = "shoal"

// removePodCgroups removes the cgroups of the pods a node's agent ran (the
// pod directories under its data dir name them), children first. Only empty
// cgroups can go: run it after the processes are dead.
func removePodCgroups(dataDir string) error {
	ents, err := os.ReadDir(filepath.Join(dataDir, "agent", "pods"))
	if err != nil {
		return nil // no agent ran pods there
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + podCgroupRoot)
	if d := "/sys/fs/cgroup/" + podCgroupRoot; isDir(d) {
		roots = append(roots, d) // cgroup v2
	}
	var errs []error
	for _, e := range ents {
		for _, root := range roots {
			pod := filepath.Join(root, "pod-"+e.Name())
			kids, _ := os.ReadDir(pod)
			for _, k := range kids {
				if k.IsDir() {
					if err := syscall.Rmdir(filepath.Join(pod, k.Name())); err != nil && !errors.Is(err, syscall.ENOENT) {
						errs = append(errs, fmt.Errorf("removing cgroup %s: %w", filepath.Join(pod, k.Name()), err))
					}
				}
			}
			if err := syscall.Rmdir(pod); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", pod, err))
			}
		}
	}
	return errors.Join(errs...)
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// RemoveDir removes a cluster directory left behind by a process that
// died before Down (a test that timed out): it unmounts what the agents
// mounted below it, removes the cgroups of the pods they ran, then the
// files. Kill the cluster's processes first (Purge).
func RemoveDir(dir string) error {
	var errs []error
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	podDirs, _ := filepath.Glob(filepath.Join(dir, "*", "data", "agent", "pods"))
	more, _ := filepath.Glob(filepath.Join(dir, "*", "*", "data", "agent", "pods"))
	for _, p := range append(podDirs, more...) {
		if err := removePodCgroups(filepath.Dir(filepath.Dir(p))); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
