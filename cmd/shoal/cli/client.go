package cli

import (
	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/node"
)

// clientFlags are how client commands find a node: its data dir (run as root
// on the node) or a kubeconfig.
type clientFlags struct {
	dataDir    string
	kubeconfig string
}

func (c *clientFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.dataDir, "data-dir", node.DefaultDataDir, "data dir of the node to talk to (on this machine)")
	cmd.Flags().StringVar(&c.kubeconfig, "kubeconfig", "", "talk to the cluster through this kubeconfig instead of a local data dir")
}

func (c *clientFlags) client() (*node.Client, error) {
	if c.kubeconfig != "" {
		return node.NewKubeconfigClient(c.kubeconfig)
	}
	return node.NewLocalClient(c.dataDir)
}
