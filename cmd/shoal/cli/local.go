package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/node/localcluster"
)

// defaultLocalBase is where `shoal local` keeps clusters unless --dir or
// $SHOAL_LOCAL_DIR says otherwise: one subdirectory per cluster name.
const defaultLocalBase = "/tmp/shoal-local"

// newLocalCmd returns `shoal local`: a real multi-node cluster on this
// machine, one network namespace per node.
func newLocalCmd() *cobra.Command {
	var dir, name string
	cmd := &cobra.Command{
		Use:   "local",
		Short: "Run a multi-node Shoal cluster on this machine (one network namespace per node; needs root)",
		Long: `Run a real multi-node Shoal cluster on this machine.

Each node is a "shoal agent" in a network namespace of its own (NAME-n1, NAME-n2, ...),
attached to a bridge in the namespace NAME-lan, where kubectl runs. Nothing is added to
the machine's own network namespace: reach the cluster with "shoal local exec -- CMD".`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "", `state dir (default $SHOAL_LOCAL_DIR/NAME, else `+defaultLocalBase+`/NAME)`)
	cmd.PersistentFlags().StringVar(&name, "name", "shoal", "cluster name (namespaces NAME-lan, NAME-nI)")

	stateDir := func() string {
		if dir != "" {
			return dir
		}
		base := os.Getenv("SHOAL_LOCAL_DIR")
		if base == "" {
			base = defaultLocalBase
		}
		return filepath.Join(base, name)
	}
	load := func() (*localcluster.Cluster, error) {
		c, err := localcluster.Load(stateDir())
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no local cluster in %s (start one with: shoal local up)", stateDir())
		}
		return c, err
	}

	cmd.AddCommand(newLocalUpCmd(&name, stateDir))

	cmd.AddCommand(&cobra.Command{
		Use:   "down",
		Short: "Stop every agent, delete the namespaces and the state dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			c, err := localcluster.Load(stateDir())
			if errors.Is(err, os.ErrNotExist) {
				// The dir is gone: remove what is left under this name.
				nss, lerr := localcluster.Namespaces(name)
				if lerr != nil {
					return lerr
				}
				if len(nss) == 0 {
					fmt.Fprintf(out, "no local cluster in %s, no namespaces named %s-*: nothing to do\n", stateDir(), name)
					return nil
				}
				fmt.Fprintf(out, "no state in %s; removing namespaces %s and every process in them\n", stateDir(), strings.Join(nss, " "))
				return localcluster.Purge(name)
			}
			if err != nil {
				return err
			}
			c.SetProgress(out)
			st := c.State()
			if err := c.Down(); err != nil {
				return err
			}
			fmt.Fprintf(out, "cluster %q is down (%d nodes stopped, namespaces and %s removed)\n", st.Name, len(st.Nodes), st.Dir)
			return nil
		},
	})

	nodeCmd := func(use, short string, f func(c *localcluster.Cluster, node string) error) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NODE",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := load()
				if err != nil {
					return err
				}
				return f(c, args[0])
			},
		}
	}
	cmd.AddCommand(
		nodeCmd("kill", "SIGKILL a node's agent", (*localcluster.Cluster).Kill),
		nodeCmd("stop", "SIGSTOP a node's agent (freeze it)", (*localcluster.Cluster).Stop),
		nodeCmd("cont", "SIGCONT a node's agent", (*localcluster.Cluster).Cont),
		nodeCmd("partition", "Cut a node off from the other nodes (clients in the lan namespace still reach it)", (*localcluster.Cluster).Partition),
		nodeCmd("heal", "Undo partition", (*localcluster.Cluster).Heal),
	)

	var wait bool
	start := nodeCmd("start", "Start a node's agent again from its data dir (no --join)", func(c *localcluster.Cluster, node string) error {
		if err := c.Start(node); err != nil {
			return err
		}
		if !wait {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.State().ReadyTimeout)
		defer cancel()
		return c.WaitReady(ctx, node)
	})
	start.Flags().BoolVar(&wait, "wait", false, "wait until the node is Ready")
	cmd.AddCommand(start)

	cmd.AddCommand(&cobra.Command{
		Use:   "setaddr NODE IP",
		Short: "Move a node to another address in the subnet (takes effect for the agent at its next start)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := load()
			if err != nil {
				return err
			}
			return c.SetAddr(args[0], args[1])
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "add",
		Short: "Add one node, joined with a fresh token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := load()
			if err != nil {
				return err
			}
			c.SetProgress(cmd.OutOrStdout())
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			n, err := c.AddNode(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s) joined\n", n.Name, n.IP)
			return nil
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show nodes, addresses and whether their agents run and answer /readyz",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := load()
			if err != nil {
				return err
			}
			return printLocalStatus(cmd.Context(), cmd.OutOrStdout(), c)
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the cluster's admin kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := load()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), c.KubeconfigPath())
			return nil
		},
	})

	execCmd := &cobra.Command{
		Use:   "exec -- CMD [ARG...]",
		Short: "Run a command in the lan namespace with KUBECONFIG set (e.g. exec -- kubectl get nodes)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := load()
			if err != nil {
				return err
			}
			x := c.Command(cmd.Context(), args[0], args[1:]...)
			x.Stdin, x.Stdout, x.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			if err := x.Run(); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return nil
		},
	}
	execCmd.Flags().SetInterspersed(false) // flags after CMD belong to CMD
	cmd.AddCommand(execCmd)
	return cmd
}

func newLocalUpCmd(name *string, stateDir func() string) *cobra.Command {
	var (
		nodes     int
		binary    string
		subnet    string
		agentArgs []string
		timeout   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create the namespaces, start the agents and wait until every node is Ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			c, err := localcluster.Up(ctx, localcluster.Config{
				Name:         *name,
				Dir:          stateDir(),
				Nodes:        nodes,
				Binary:       binary,
				Subnet:       subnet,
				AgentArgs:    agentArgs,
				ReadyTimeout: timeout,
				Stdout:       out,
			})
			if err != nil {
				return err
			}
			st := c.State()
			kc := c.KubeconfigPath()
			fmt.Fprintf(out, `
cluster %q is up: %d nodes on %s, state in %s
kubeconfig: %s (node addresses are reachable only inside namespace %s)

  shoal local exec -- kubectl get nodes -o wide
  sudo ip netns exec %s kubectl --kubeconfig %s get nodes
  shoal local status        (kill|stop|cont|start|partition|heal NODE, add, down)
`, st.Name, len(st.Nodes), st.Subnet, st.Dir, kc, st.LanNamespace, st.LanNamespace, kc)
			if dir := stateDir(); *name != "shoal" || dir != filepath.Join(defaultLocalBase, "shoal") {
				fmt.Fprintf(out, "  (pass --dir %s to every shoal local command)\n", dir)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes")
	cmd.Flags().StringVar(&binary, "binary", "", "shoal binary the agents run (default: this one)")
	cmd.Flags().StringVar(&subnet, "subnet", "", "IPv4 /24 used inside the namespaces (default 10.213.K.0/24, K from the name)")
	cmd.Flags().StringArrayVar(&agentArgs, "agent-arg", nil, "extra argument for every agent (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Minute, "how long to wait for readiness")
	return cmd
}

func printLocalStatus(ctx context.Context, out io.Writer, c *localcluster.Cluster) error {
	st := c.State()
	nodes := c.Nodes()
	ready := make([]string, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if err := c.Ready(ctx, n.Name); err != nil {
				ready[i] = "no"
				return
			}
			ready[i] = "yes"
		}()
	}
	wg.Wait()
	fmt.Fprintf(out, "cluster %q  subnet %s  lan namespace %s\ndir %s\nkubeconfig %s\n\n",
		st.Name, st.Subnet, st.LanNamespace, st.Dir, c.KubeconfigPath())
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNAMESPACE\tIP\tPID\tAGENT\tREADYZ\tLOG")
	for i, n := range nodes {
		state, err := c.ProcessState(n.Name)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", n.Name, n.Namespace, n.IP, n.PID, state, ready[i], n.LogPath)
	}
	return tw.Flush()
}
