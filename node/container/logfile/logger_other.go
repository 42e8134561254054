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
