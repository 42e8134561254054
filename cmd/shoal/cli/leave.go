package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newLeaveCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Remove this node from its cluster for good (run on the node)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.Leave(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "node left the cluster; its agent stops now")
			return nil
		},
	}
	cf.add(cmd)
	return cmd
}
