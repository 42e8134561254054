package cli

import (
	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/node/container/logfile"
)

// newContainerLoggerCmd is the containerd logging binary of the agent's
// containers (its containerd Config.LogBinary is this executable, with this
// command as LogBinaryArgs): the shim runs it once per container start with
// the container's stdout and stderr on file descriptors 3 and 4, and it
// writes them to the container's log file, rotated, until both close. Its
// one argument is the JSON from logfile.LoggerArg. SIGTERM (from main's
// context) makes it finish what the pipes still hold and exit.
func newContainerLoggerCmd() *cobra.Command {
	return &cobra.Command{
		Use:                logfile.LoggerCommand + " CONFIG",
		Short:              "Write a container's output to its log files (run by the containerd shim)",
		Hidden:             true,
		DisableFlagParsing: true, // the argument is JSON, never flags
		RunE: func(cmd *cobra.Command, args []string) error {
			return logfile.LoggerMain(cmd.Context(), args)
		},
	}
}
