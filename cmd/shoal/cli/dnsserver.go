package cli

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/dns"
)

// newDNSServerCmd is the node's cluster DNS server, run by the agent as a
// child process of its own (dns.Child): a Go runtime apart from the
// agent's, fed zones on stdin and reporting its counters on stdout
// (dns.RunChild). It exits when stdin ends; the agent has it killed if the
// agent dies. Stdin and stdout carry the protocol: nothing else may be
// printed on stdout.
func newDNSServerCmd() *cobra.Command {
	var cfg dns.Config
	cmd := &cobra.Command{
		Use:    "dns-server --listen ADDR[,ADDR] [--upstream ADDR]... [--udp-sockets N]",
		Short:  "Serve cluster DNS from zones read on stdin (run by the agent)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{
				// The agent's log adds its own time.
				ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
					if len(groups) == 0 && a.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return a
				},
			}))
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return dns.RunChild(ctx, cfg, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&cfg.Addrs, "listen", nil, "ip:port addresses to answer on (UDP and TCP)")
	f.StringSliceVar(&cfg.Upstreams, "upstream", nil, "ip:port forwarders for names outside the cluster, tried in order")
	f.IntVar(&cfg.UDPSockets, "udp-sockets", 0, "SO_REUSEPORT UDP sockets per address (0: the server's default)")
	_ = cmd.MarkFlagRequired("listen")
	return cmd
}
