package containerd

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/logfile"
)

// Config configures a Runtime. It is not mutated after New.
type Config struct {
	// Address is the containerd socket.
	Address string
	// Namespace is the containerd namespace holding Shoal's images and
	// containers.
	Namespace string
	// Snapshotter unpacks images and makes root filesystems.
	Snapshotter string
	// Runtime is the containerd shim.
	Runtime string
	// RuncRoot is runc's state directory (the runc option Root); "" keeps
	// runc's default, /run/containerd/runc, shared by every daemon.
	RuncRoot string
	// FIFODir holds exec FIFOs; "" keeps /run/containerd/fifo.
	FIFODir string
	// CgroupParent is the parent cgroup of containers whose spec gives none;
	// "" is "/<Namespace>".
	CgroupParent string
	// ShimCgroup, when set, is the cgroup (in the CPU hierarchy) that each
	// container's shim joins, and with it the runc calls the shim makes and
	// the logging binary: under a burst of container starts they compete
	// for CPU as one group instead of dozens of processes each as heavy as
	// the agent itself (whose Raft heartbeats must stay on time). "" leaves
	// them in the daemon's cgroup.
	ShimCgroup string
	// DialTimeout bounds connecting to the daemon in New.
	DialTimeout time.Duration
	// LogBinary, when set, is the containerd logging binary (an absolute
	// path) that writes each container's LogPath in the CRI format, rotated
	// by size (see node/container/logfile): the shim starts
	// "LogBinary LogBinaryArgs[0] <logfile.LoggerArg JSON>" for each run, as
	// its own child, so it outlives the agent and the daemon. "" leaves the
	// shim appending raw stdout and stderr to LogPath, never rotated.
	// Containers with stdin or a terminal need it: the runtime starts
	// "LogBinary LogBinaryArgs[0] fifo ..." for them (logfile.FIFOLogger),
	// in a session of its own, so it outlives the agent too.
	LogBinary string
	// LogBinaryArgs is the fixed argument before the JSON, exactly one
	// (such as "container-logger" for `shoal container-logger`): the shim
	// passes a logging binary's arguments as URL query pairs in map order,
	// so only a single key and value keep argv fixed.
	LogBinaryArgs []string
	// LogMaxSize is the size at which LogBinary rotates a container's log
	// file, and LogMaxFiles the number of files it keeps, the current one
	// included; 0 takes logfile's defaults (10 MiB, 5).
	LogMaxSize  int64
	LogMaxFiles int
	// Logf receives rare operational messages (retries, cleanup failures);
	// nil discards them.
	Logf func(format string, args ...any)
}

// DefaultConfig is a Config for the system containerd.
func DefaultConfig() Config {
	return Config{
		Address:     "/run/containerd/containerd.sock",
		Namespace:   "shoal",
		Snapshotter: "overlayfs",
		Runtime:     "io.containerd.runc.v2",
		DialTimeout: 10 * time.Second,
		LogMaxSize:  logfile.DefaultMaxSize,
		LogMaxFiles: logfile.DefaultMaxFiles,
	}
}

// Validate reports a config New cannot use.
func (c Config) Validate() error {
	if c.Address == "" {
		return errors.New("containerd: no socket address")
	}
	if c.Namespace == "" || !container.ValidID(c.Namespace) {
		return fmt.Errorf("containerd: bad namespace %q", c.Namespace)
	}
	if c.Snapshotter == "" || c.Runtime == "" {
		return errors.New("containerd: snapshotter and runtime must be set")
	}
	for name, p := range map[string]string{"runc root": c.RuncRoot, "fifo dir": c.FIFODir, "cgroup parent": c.CgroupParent, "shim cgroup": c.ShimCgroup} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("containerd: %s %q is not absolute", name, p)
		}
	}
	if c.DialTimeout <= 0 {
		return errors.New("containerd: dial timeout must be positive")
	}
	if c.LogBinary != "" {
		if !filepath.IsAbs(c.LogBinary) {
			return fmt.Errorf("containerd: log binary %q is not absolute", c.LogBinary)
		}
		if len(c.LogBinaryArgs) != 1 || c.LogBinaryArgs[0] == "" {
			return fmt.Errorf("containerd: log binary arguments %q: want exactly one (the shim shuffles any more)", c.LogBinaryArgs)
		}
	}
	if c.LogMaxSize < 0 || c.LogMaxFiles < 0 {
		return fmt.Errorf("containerd: negative log limits (max size %d, max files %d)", c.LogMaxSize, c.LogMaxFiles)
	}
	return nil
}

func (c Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}
