package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/node"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke join tokens"}
	var cf clientFlags
	var req node.TokenRequest
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join token and print it on one line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.TTL <= 0 {
				return fmt.Errorf("--ttl must be positive")
			}
			if req.Uses < 0 {
				return fmt.Errorf("--uses must not be negative")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			info, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), info.Token)
			return nil
		},
	}
	cf.add(create)
	create.Flags().DurationVar(&req.TTL, "ttl", 24*time.Hour, "how long the token is valid")
	create.Flags().IntVar(&req.Uses, "uses", 0, "how many nodes may join with it (0 = unlimited)")
	create.Flags().StringVar(&req.Description, "description", "", "free text shown by 'token list'")

	var lf clientFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lf.client()
			if err != nil {
				return err
			}
			toks, err := c.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tEXPIRES\tUSED\tSTATE\tDESCRIPTION")
			now := time.Now()
			for _, t := range toks {
				st := "valid"
				switch {
				case t.Revoked:
					st = "revoked"
				case !t.Expires.IsZero() && now.After(t.Expires):
					st = "expired"
				case t.Uses > 0 && t.Used >= t.Uses:
					st = "used-up"
				}
				uses := fmt.Sprintf("%d", t.Used)
				if t.Uses > 0 {
					uses = fmt.Sprintf("%d/%d", t.Used, t.Uses)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Expires.Local().Format(time.RFC3339), uses, st, t.Description)
			}
			return tw.Flush()
		},
	}
	lf.add(list)

	var rf clientFlags
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := rf.client()
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s revoked\n", args[0])
			return nil
		},
	}
	rf.add(revoke)
	cmd.AddCommand(create, list, revoke)
	return cmd
}
