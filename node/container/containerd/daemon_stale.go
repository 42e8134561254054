package containerd

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killStale ends a containerd that an earlier run of this node started on
// the same Dir and left behind (the agent was killed): it holds the
// metadata database, so a second daemon could not open it. The process is
// identified by the pid file and checked by its command line (our binary
// with our config file) before it is signalled; its shims are untouched.
func (d *Daemon) killStale() {
	data, err := os.ReadFile(d.cfg.pidFile())
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 || pid == os.Getpid() || !d.isOurDaemon(pid) {
		return
	}
	d.logf("containerd daemon: stopping stale daemon pid %d on %s", pid, d.cfg.Dir)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for d.isOurDaemon(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(5 * time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isOurDaemon reports whether pid runs containerd with this Dir's config
// (and is not a zombie).
func (d *Daemon) isOurDaemon(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(cmdline) == 0 {
		return false
	}
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	for i := 0; i+1 < len(args); i++ {
		if string(args[i]) == "--config" && string(args[i+1]) == d.cfg.configFile() {
			return true
		}
	}
	return false
}
