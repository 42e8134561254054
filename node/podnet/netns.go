package podnet

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nsfsMagic is NSFS_MAGIC from linux/magic.h: the filesystem type of a
// bind-mounted namespace file.
const nsfsMagic = 0x6e736673

// onLockedThread runs fn on a new goroutine locked to its OS thread and waits
// for it. The goroutine exits without unlocking, so the runtime terminates
// the thread: whatever fn did to the thread's namespaces dies with it.
func onLockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Deliberately never unlocked.
		errc <- fn()
	}()
	return <-errc
}

// inNetNS runs fn on a throwaway thread that has joined the network
// namespace open at fd. Sockets fn creates belong to that namespace;
// /proc/sys/net opened by fn shows that namespace's sysctls.
func inNetNS(fd int, fn func() error) error {
	return onLockedThread(func() error {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("entering network namespace: %w", err)
		}
		return fn()
	})
}

// openNetNS opens a network namespace file ("" = the process's own).
func openNetNS(path string) (int, error) {
	if path == "" {
		path = "/proc/self/ns/net"
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open network namespace", Path: path, Err: err}
	}
	return fd, nil
}

// netlinkIn returns a rtnetlink handle whose socket lives in the namespace
// open at fd. The handle may then be used from any goroutine.
func netlinkIn(fd int) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := inNetNS(fd, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink socket in namespace: %w", err)
	}
	return h, nil
}

// isNetNS reports whether path is a mounted namespace file.
func isNetNS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return st.Type == nsfsMagic, nil
}

// createNetNS creates a new network namespace and bind-mounts it at path
// (creating the parent directory and the mount-point file). A leftover
// plain file at path, from a crash between create and mount, is reused.
func createNetNS(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if f != nil {
		f.Close()
	}
	err = onLockedThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			return &os.PathError{Op: "bind-mount network namespace", Path: path, Err: err}
		}
		return nil
	})
	if err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// removeNetNS unmounts and removes a namespace file created by createNetNS.
// It unmounts only a namespace mount and removes only a regular file, so a
// wrong path cannot unmount or delete anything else. Gone is success.
func removeNetNS(path string) error {
	mounted, err := isNetNS(path)
	if err != nil {
		return err
	}
	if mounted {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return &os.PathError{Op: "unmount network namespace", Path: path, Err: err}
		}
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("removing network namespace %s: not a namespace file (%s)", path, fi.Mode().Type())
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// writeSysctl sets a sysctl (path under /proc/sys) inside the namespace open
// at fd, writing only when the value differs.
func writeSysctl(fd int, name, value string) error {
	return inNetNS(fd, func() error {
		p := filepath.Join("/proc/sys", name)
		cur, err := os.ReadFile(p)
		if err == nil && string(trimNL(cur)) == value {
			return nil
		}
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", name, value, err)
		}
		return nil
	})
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
