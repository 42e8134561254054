package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/e2e/images"
)

// TestImageImport: every agent runs its own containerd; `shoal image import`
// puts an image built here (no registry) into one node, `shoal image ls`
// shows it, and the Node object lists it.
func TestImageImport(t *testing.T) {
	c := newCluster(t, 2)
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := images.Busybox(f, images.BusyboxRef); err != nil {
		t.Fatalf("building the busybox image: %v", err)
	}
	f.Close()
	n1 := node(t, c, "n1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := c.NodeCommand(ctx, "n1", shoalBinary(t), "image", "import", archive, "--data-dir", n1.DataDir).Output()
	if err != nil || !strings.Contains(string(out), images.BusyboxRef) {
		t.Fatalf("shoal image import: %v\n%s", err, out)
	}
	out, err = c.NodeCommand(ctx, "n1", shoalBinary(t), "image", "ls", "--data-dir", n1.DataDir).Output()
	if err != nil || !strings.Contains(string(out), images.BusyboxRef) {
		t.Fatalf("shoal image ls: %v\n%s", err, out)
	}
	cs := clientset(t, c)
	eventually(t, 10*time.Second, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !strings.HasPrefix(n.Status.NodeInfo.ContainerRuntimeVersion, "containerd://") {
			return fmt.Errorf("runtime version %q", n.Status.NodeInfo.ContainerRuntimeVersion)
		}
		for _, im := range n.Status.Images {
			if slices.Contains(im.Names, images.BusyboxRef) {
				return nil
			}
		}
		return fmt.Errorf("n1 images: %+v", n.Status.Images)
	})
	// The other node has not got it (peer-to-peer pulls come later).
	n2, err := cs.CoreV1().Nodes().Get(ctx, "n2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range n2.Status.Images {
		if slices.Contains(im.Names, images.BusyboxRef) {
			t.Fatalf("n2 lists an image imported only on n1: %+v", n2.Status.Images)
		}
	}
	// Bad input: not an archive.
	junk := filepath.Join(t.TempDir(), "junk.tar")
	_ = os.WriteFile(junk, []byte("not a tarball"), 0o644)
	if out, err := c.NodeCommand(ctx, "n1", shoalBinary(t), "image", "import", junk, "--data-dir", n1.DataDir).CombinedOutput(); err == nil {
		t.Fatalf("importing junk succeeded:\n%s", out)
	} else if !strings.Contains(string(out), "importing") {
		t.Errorf("junk import error is unclear:\n%s", out)
	}
}
