package podnet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
)

// nftScript renders the whole of podnet's nftables state as one nft
// transaction: create-if-missing, delete, then define. It converges from any
// prior content of the table and never touches another table. With no
// cluster CIDR the table is only removed.
func nftScript(pod, cluster *net.IPNet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {}\ndelete table ip %s\n", NFTable, NFTable)
	if cluster != nil {
		fmt.Fprintf(&b, "table ip %s {\n", NFTable)
		b.WriteString("\tchain postrouting {\n")
		b.WriteString("\t\ttype nat hook postrouting priority 100; policy accept;\n")
		fmt.Fprintf(&b, "\t\tip saddr %s ip daddr != %s masquerade\n", pod, cluster)
		b.WriteString("\t}\n}\n")
	}
	return b.String()
}

// findNFT locates the nft binary, also where PATH of a service may not look.
func findNFT() (string, error) {
	if p, err := exec.LookPath("nft"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New("nft (nftables) not found in PATH, /usr/sbin or /sbin")
}

// ensureMasquerade applies nftScript inside the host namespace.
func (n *Network) ensureMasquerade() error {
	nft, err := findNFT()
	if err != nil {
		if n.clusterNet == nil {
			return nil // nothing to program, and no nft to have programmed anything
		}
		return fmt.Errorf("masquerade for %s: %w", n.podNet, err)
	}
	return runNFT(n.hostFd, nft, nftScript(n.podNet, n.clusterNet))
}

// runNFT runs `nft -f -` with script inside the namespace open at fd. The
// child is forked from the thread that joined the namespace, so it starts
// there (its mount namespace stays the caller's).
func runNFT(fd int, nft, script string) error {
	return inNetNS(fd, func() error {
		cmd := exec.Command(nft, "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(out.String()))
		}
		return nil
	})
}
