package netproxy

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// onLockedThread runs fn on a new goroutine locked to its OS thread and
// waits for it. The goroutine exits without unlocking, so the runtime
// terminates the thread: whatever fn did to the thread's namespaces dies
// with it.
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
// namespace open at fd (fd < 0: the caller's namespace, on the calling
// goroutine). Sockets fn creates belong to that namespace and may then be
// used from any goroutine.
func inNetNS(fd int, fn func() error) error {
	if fd < 0 {
		return fn()
	}
	return onLockedThread(func() error {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("entering network namespace: %w", err)
		}
		return fn()
	})
}

// openNetNS opens a network namespace file; "" returns -1 (the caller's).
func openNetNS(path string) (int, error) {
	if path == "" {
		return -1, nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open network namespace", Path: path, Err: err}
	}
	return fd, nil
}
