package cli

import (
	"github.com/spf13/cobra"
)

func newKubeconfigCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print an admin kubeconfig (client certificate of the cluster CA) for this node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			kc, err := c.Kubeconfig(cmd.Context())
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(kc)
			return err
		},
	}
	cf.add(cmd)
	return cmd
}
