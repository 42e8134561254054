//go:build unix

package logfile

import (
	"context"
	"fmt"
	"os"
	"syscall"
)

// LoggerMain runs RunLogger on the file descriptors a containerd shim gives
// a logging binary (cio.BinaryIO): the container's stdout on 3, its stderr
// on 4, and on 5 the pipe to close once the log is open, all three pipes.
// The shim also sets CONTAINER_ID and CONTAINER_NAMESPACE, and nothing
// else, in the environment. Cancel ctx on SIGTERM, which the shim sends
// when it deletes the task, right after closing the pipes.
//
// Arguments starting with FIFOCommand (FIFOLogger.Args) run RunFIFOLogger
// instead, on the FIFOs they name.
func LoggerMain(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == FIFOCommand {
		l, err := ParseFIFOArgs(args)
		if err == nil {
			err = RunFIFOLogger(ctx, l)
		}
		if err != nil && os.Getenv("CONTAINER_ID") != "" {
			err = fmt.Errorf("container %s/%s: %w", os.Getenv("CONTAINER_NAMESPACE"), os.Getenv("CONTAINER_ID"), err)
		}
		return err
	}
	names := [3]string{"CONTAINER_STDOUT", "CONTAINER_STDERR", "CONTAINER_WAIT"}
	for i, name := range names {
		// Checked before os.NewFile, whose finalizer would close a
		// descriptor the runtime opened for itself (its poller takes the
		// lowest free ones when the shim did not pass these).
		var st syscall.Stat_t
		if err := syscall.Fstat(3+i, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
			return fmt.Errorf("logfile: file descriptor %d (%s) is not a pipe: the logger runs as a containerd logging binary, started by the shim", 3+i, name)
		}
	}
	stdout, stderr, wait := os.NewFile(3, names[0]), os.NewFile(4, names[1]), os.NewFile(5, names[2])
	defer stdout.Close()
	defer stderr.Close()
	err := RunLogger(ctx, args, stdout, stderr, wait.Close)
	if err != nil && os.Getenv("CONTAINER_ID") != "" {
		err = fmt.Errorf("container %s/%s: %w", os.Getenv("CONTAINER_NAMESPACE"), os.Getenv("CONTAINER_ID"), err)
	}
	return err
}
