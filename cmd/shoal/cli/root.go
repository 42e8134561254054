// Package cli holds the shoal subcommands, one file each.
package cli

import (
	"github.com/spf13/cobra"
)

// NewRoot returns the shoal command tree.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "shoal",
		Short:         "Shoal: a peer-to-peer, masterless container orchestrator that speaks the Kubernetes API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newAgentCmd(), newTokenCmd(), newMembersCmd(), newKubeconfigCmd(), newLeaveCmd(), newVersionCmd(), newImageCmd(), newLocalCmd())
	root.AddCommand(newContainerLoggerCmd(), newDNSServerCmd())
	return root
}
