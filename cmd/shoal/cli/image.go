package cli

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Import and list container images on a node (no registry needed)"}
	var icf clientFlags
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Import an OCI archive or a `docker save` tarball into the node's containerd",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			c, err := icf.client()
			if err != nil {
				return err
			}
			pr := &progressReader{r: f, total: st.Size()}
			done := make(chan struct{})
			go pr.report(cmd.ErrOrStderr(), done)
			imgs, err := c.ImportImage(cmd.Context(), pr)
			close(done)
			if err != nil {
				return fmt.Errorf("importing %s: %w", args[0], err)
			}
			for _, im := range imgs {
				fmt.Fprintf(cmd.OutOrStdout(), "imported %s (%s)\n", im.Ref, im.Digest)
			}
			return nil
		},
	}
	icf.add(imp)
	var lcf clientFlags
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the node's images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lcf.client()
			if err != nil {
				return err
			}
			imgs, err := c.Images(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IMAGE\tIMAGE ID\tSIZE")
			for _, im := range imgs {
				fmt.Fprintf(tw, "%s\t%.19s\t%.1f MB\n", im.Ref, im.ImageID, float64(im.Size)/1e6)
			}
			return tw.Flush()
		},
	}
	lcf.add(ls)
	cmd.AddCommand(imp, ls)
	return cmd
}

// progressReader counts bytes read; report prints a progress line.
type progressReader struct {
	r     io.Reader
	n     atomic.Int64
	total int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}

func (p *progressReader) report(w io.Writer, done <-chan struct{}) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	line := func() {
		pct := 100.0
		if p.total > 0 {
			pct = 100 * float64(p.n.Load()) / float64(p.total)
		}
		fmt.Fprintf(w, "\r%6.1f%% %8.1f / %.1f MB", pct, float64(p.n.Load())/1e6, float64(p.total)/1e6)
	}
	for {
		select {
		case <-done:
			line()
			fmt.Fprintln(w)
			return
		case <-t.C:
			line()
		}
	}
}
