// Command shoal is the one binary every Shoal node runs: the agent daemon and
// the commands that talk to it.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	_ "time/tzdata" // CronJob time zones on machines without /usr/share/zoneinfo

	"github.com/shoal-dev/shoal/cmd/shoal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.NewRoot().ExecuteContext(ctx)
	stop()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && exitErr.ExitCode() > 0:
		os.Exit(exitErr.ExitCode()) // `shoal local exec`: the command's own status
	default:
		fmt.Fprintln(os.Stderr, "shoal:", err)
		os.Exit(1)
	}
}
