package containerd

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/shoal-dev/shoal/node/container"
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
	// DialTimeout bounds connecting to the daemon in New.
	DialTimeout time.Duration
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
	for name, p := range map[string]string{"runc root": c.RuncRoot, "fifo dir": c.FIFODir, "cgroup parent": c.CgroupParent} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("containerd: %s %q is not absolute", name, p)
		}
	}
	if c.DialTimeout <= 0 {
		return errors.New("containerd: dial timeout must be positive")
	}
	return nil
}

func (c Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}
