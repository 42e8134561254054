package cli

import (
	"errors"
	"time"

	"github.com/spf13/cobra"
)

func newKubeconfigCmd() *cobra.Command {
	var (
		cf     clientFlags
		user   string
		groups []string
		ttl    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print a kubeconfig (client certificate of the cluster CA) for this node: the admin's, or a user's",
		Long: `Print a kubeconfig with a fresh client certificate signed by the cluster CA.

Without --user it is the cluster administrator's (group system:masters, allowed
everything). With --user (and --group, repeatable) it names that user and those
groups, who may do what RBAC grants them: discovery and "kubectl auth can-i"
at first, more once an admin binds a role, e.g.

  kubectl create rolebinding dev-edit --clusterrole=edit --group=developers -n dev`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if user == "" && len(groups) > 0 {
				return errors.New("--group needs --user")
			}
			if ttl < 0 {
				return errors.New("--ttl must be positive")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			kc, err := c.UserKubeconfig(cmd.Context(), user, groups, ttl)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(kc)
			return err
		},
	}
	cf.add(cmd)
	cmd.Flags().StringVar(&user, "user", "", "user name for the certificate (CN); empty: the cluster admin")
	cmd.Flags().StringArrayVar(&groups, "group", nil, "group of the user (O; repeatable)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the certificate is valid (default a year)")
	return cmd
}
