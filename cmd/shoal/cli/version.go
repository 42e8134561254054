package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/node"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the shoal version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "shoal %s (Kubernetes API %s.%s, %s %s/%s)\n", node.Version,
				node.ServerVersion.Major, node.ServerVersion.Minor, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
