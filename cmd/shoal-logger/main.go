// Command shoal-logger is the small logging binary the containerd shim
// starts for every container of a Shoal node (containerd binary IO): it
// writes the container's stdout and stderr (file descriptors 3 and 4) to the
// container's log, in the CRI format, rotated, until both close. It does
// what `shoal container-logger` does, from a binary that imports only the
// standard library and node/container/logfile, so each container costs
// about a megabyte and a millisecond instead of the full shoal binary's
// package initialisation and memory. The agent uses it when it sits next to
// the shoal executable, and falls back to `shoal container-logger`.
//
// For a container with stdin or a terminal, the agent itself starts it, in
// a session of its own, in FIFO mode:
//
//	shoal-logger container-logger fifo --stdout FIFO [--stderr FIFO] [CONFIG]
//
// It then reads the container's output from the FIFOs the shim writes and
// exits when the shim closes them (see logfile.FIFOLogger). Both modes go
// through logfile.LoggerMain, so `shoal container-logger` has them too.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-dev/shoal/node/container/logfile"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	args := os.Args[1:]
	if len(args) > 0 && args[0] == logfile.LoggerCommand {
		args = args[1:] // the fixed argument the agent gives both loggers
	}
	// The handler stays until exit: the shim's SIGTERM may arrive after the
	// logger finished on its own (the pipes closed first).
	defer stop()
	err := logfile.LoggerMain(ctx, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "shoal-logger:", err)
		os.Exit(1)
	}
}
