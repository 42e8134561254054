package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newMembersCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List cluster members: name, ID, addresses, gossip state, raft role",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			ms, err := c.Members(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tAPI\tRAFT\tGOSSIP\tRAFT ROLE\tVERSION")
			for _, m := range ms {
				name := m.Name
				if m.ThisNode {
					name += " (this node)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, m.ID, m.API, m.Raft, m.Gossip, m.Role, m.Version)
			}
			return tw.Flush()
		},
	}
	cf.add(cmd)
	return cmd
}
