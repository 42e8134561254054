package cli

import (
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/node"
)

func newAgentCmd() *cobra.Command {
	cfg := node.DefaultConfig()
	var logLevel string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a Shoal node (creates a cluster, joins one with --join/--token, or resumes from --data-dir)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return err
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			cfg.Join = strings.TrimSpace(cfg.Join)
			n, err := node.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return n.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "node state directory")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "IP address other nodes and clients reach this node at (required)")
	f.StringVar(&cfg.BindAddr, "bind-addr", "", "IP address to listen on (default: the advertise address)")
	f.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "node name (first start only)")
	f.StringVar(&cfg.Join, "join", "", "HOST[:PORT] of any cluster member to join through (first start only)")
	f.StringVar(&cfg.Token, "token", "", "join token (with --join)")
	f.IntVar(&cfg.APIPort, "api-port", cfg.APIPort, "Kubernetes API and node RPC port (HTTPS)")
	f.IntVar(&cfg.GossipPort, "gossip-port", cfg.GossipPort, "gossip port (TCP and UDP)")
	f.IntVar(&cfg.RaftPort, "raft-port", cfg.RaftPort, "raft port (mTLS)")
	f.StringVar(&cfg.ContainerdSocket, "containerd-socket", "", "use this containerd instead of starting a private one under the data dir")
	f.IntVar(&cfg.Voters, "voters", cfg.Voters, "target raft voters (3 grows to 5 with five healthy nodes)")
	f.DurationVar(&cfg.DeadVoterGrace, "dead-voter-grace", cfg.DeadVoterGrace, "how long a voter must be dead before it is replaced")
	f.StringVar(&cfg.PodNetwork, "pod-network", cfg.PodNetwork, "how pods reach pods on other nodes: host-gw (nodes on one L2) or vxlan")
	f.BoolVar(&cfg.PullFromRegistries, "registry-pull", cfg.PullFromRegistries, "pull images from their registries when no peer node has them")
	f.DurationVar(&cfg.CrashLoopBackoff, "crashloop-backoff", 0, "first restart back-off of a crashing container (0 = 10s, doubling to 5m)")
	_ = f.MarkHidden("crashloop-backoff")
	f.Int64Var(&cfg.DefaultTolerationSeconds, "default-toleration-seconds", cfg.DefaultTolerationSeconds, "how long new pods tolerate an unreachable or not-ready node before they are evicted and replaced elsewhere")
	f.Func("dns-upstream", "comma-separated DNS servers (IP or IP:port) for names outside the cluster domain; \"none\" to forward nothing (default: the nameservers of /etc/resolv.conf)", func(v string) error {
		cfg.DNSUpstreams = []string{}
		if v == "none" {
			return nil
		}
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				cfg.DNSUpstreams = append(cfg.DNSUpstreams, u)
			}
		}
		return nil
	})
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.Uint64Var(&cfg.SnapshotThreshold, "raft-snapshot-threshold", 0, "raft log entries between snapshots (0 = default)")
	f.DurationVar(&cfg.SnapshotInterval, "raft-snapshot-interval", 0, "how often raft checks whether to snapshot (0 = default)")
	f.DurationVar(&cfg.CommitTimeout, "raft-commit-timeout", 0, "how often an idle leader sends followers its commit index (0 = default)")
	_ = f.MarkHidden("raft-commit-timeout")
	f.DurationVar(&cfg.HeartbeatTimeout, "raft-heartbeat-timeout", 0, "raft failure detection timeout (0 = default 300ms)")
	_ = f.MarkHidden("raft-heartbeat-timeout")
	f.DurationVar(&cfg.SysmonTimerSlack, "sysmon-timer-slack", cfg.SysmonTimerSlack, "timer slack of the Go runtime's monitor thread (0 = the kernel's default, 50µs)")
	_ = f.MarkHidden("sysmon-timer-slack")
	_ = f.MarkHidden("raft-snapshot-threshold")
	_ = f.MarkHidden("raft-snapshot-interval")
	_ = cmd.MarkFlagRequired("advertise-addr")
	return cmd
}
