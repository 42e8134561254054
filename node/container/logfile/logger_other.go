//go:build !unix

package logfile

import (
	"context"
	"errors"
)

// LoggerMain is the containerd logging process, which needs unix.
func LoggerMain(context.Context, []string) error {
	return errors.New("logfile: the container logger needs unix")
}

// RunFIFOLogger is the FIFO-mode logging process, which needs unix.
func RunFIFOLogger(context.Context, FIFOLogger) error {
	return errors.New("logfile: the container logger needs unix")
}
