package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps named namespaces.
const netnsDir = "/run/netns"

// partitionComment marks the iptables rules Partition adds.
const partitionComment = "shoal-local-partition"

func lanNamespace(cluster string) string         { return cluster + "-lan" }
func nodeNamespace(cluster string, i int) string { return fmt.Sprintf("%s-n%d", cluster, i) }
func vethName(i int) string                      { return fmt.Sprintf("veth%d", i) }

// ipCmd is the path of iproute2's ip.
// nsenterCmd finds util-linux nsenter.
func nsenterCmd() string {
	if p, err := exec.LookPath("nsenter"); err == nil {
		return p
	}
	return "/usr/bin/nsenter"
}

func ipCmd() string {
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "ip"
}

// run runs a command and returns its combined output in the error.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// netnsExists reports whether the named network namespace exists.
func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

// clusterNamespaces lists the existing namespaces that belong to cluster:
// "<cluster>-lan" and "<cluster>-n<digits>".
func clusterNamespaces(cluster string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(cluster) + `-(lan|n[0-9]+)$`)
	var out []string
	for _, e := range ents {
		if re.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// addNetns creates a named network namespace with `ip netns add`, which also
// sets up /run/netns the way `ip netns exec` expects.
func addNetns(ctx context.Context, name string) error {
	_, err := run(ctx, ipCmd(), "netns", "add", name)
	return err
}

// delNetns deletes a named network namespace; one that is gone is success.
// The namespace itself disappears once no process is left in it.
func delNetns(ctx context.Context, name string) error {
	if !netnsExists(name) {
		return nil
	}
	_, err := run(ctx, ipCmd(), "netns", "del", name)
	if err != nil && !netnsExists(name) {
		return nil
	}
	return err
}

// handleAt opens a netlink handle inside the named namespace.
func handleAt(name string) (*netlink.Handle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("opening netns %s: %w", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in netns %s: %w", name, err)
	}
	return h, nil
}

// setupLAN creates the lan namespace with its bridge at bridgeIP/24.
func setupLAN(ctx context.Context, lanNS string, bridgeIP netip.Prefix) error {
	if err := addNetns(ctx, lanNS); err != nil {
		return err
	}
	h, err := handleAt(lanNS)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return fmt.Errorf("netns %s: %w", lanNS, err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("netns %s: adding bridge %s: %w", lanNS, bridgeName, err)
	}
	if err := h.AddrReplace(br, &netlink.Addr{IPNet: ipNet(bridgeIP)}); err != nil {
		return fmt.Errorf("netns %s: address on %s: %w", lanNS, bridgeName, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("netns %s: %s up: %w", lanNS, bridgeName, err)
	}
	return nil
}

// setupHost creates node namespace nodeNS, joined to the lan bridge by a
// veth pair ("veth<index>" on the bridge, "eth0" in the node), with addr on
// eth0 and a default route via gw.
func setupHost(ctx context.Context, lanNS, nodeNS string, index int, addr netip.Prefix, gw netip.Addr) error {
	if err := addNetns(ctx, nodeNS); err != nil {
		return err
	}
	lan, err := handleAt(lanNS)
	if err != nil {
		return err
	}
	defer lan.Close()
	node, err := handleAt(nodeNS)
	if err != nil {
		return err
	}
	defer node.Close()
	nodeFd, err := netns.GetFromName(nodeNS)
	if err != nil {
		return fmt.Errorf("opening netns %s: %w", nodeNS, err)
	}
	defer nodeFd.Close()

	br, err := lan.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("netns %s: %s: %w", lanNS, bridgeName, err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: vethName(index), MasterIndex: br.Attrs().Index},
		PeerName:      nodeIface,
		PeerNamespace: netlink.NsFd(int(nodeFd)),
	}
	if err := lan.LinkAdd(veth); err != nil {
		return fmt.Errorf("netns %s: adding veth %s: %w", lanNS, veth.Name, err)
	}
	if err := linkUp(lan, veth.Name); err != nil {
		return fmt.Errorf("netns %s: %w", lanNS, err)
	}
	if err := linkUp(node, "lo"); err != nil {
		return fmt.Errorf("netns %s: %w", nodeNS, err)
	}
	if err := setHostAddr(node, addr, gw); err != nil {
		return fmt.Errorf("netns %s: %w", nodeNS, err)
	}
	return nil
}

func linkUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("link %s up: %w", name, err)
	}
	return nil
}

// setHostAddr makes addr the only IPv4 address of eth0 (up), with a default
// route via gw. It converges from any prior state.
func setHostAddr(h *netlink.Handle, addr netip.Prefix, gw netip.Addr) error {
	l, err := h.LinkByName(nodeIface)
	if err != nil {
		return fmt.Errorf("link %s: %w", nodeIface, err)
	}
	have, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", nodeIface, err)
	}
	keep := false
	for _, a := range have {
		if a.IPNet.String() == addr.String() {
			keep = true
			continue
		}
		// Delete before adding: deleting a primary address also deletes its
		// secondaries unless promote_secondaries is set.
		if err := h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("deleting %s from %s: %w", a.IPNet, nodeIface, err)
		}
	}
	if !keep {
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
			return fmt.Errorf("adding %s to %s: %w", addr, nodeIface, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("link %s up: %w", nodeIface, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IP(gw.AsSlice())}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// setAddrIn sets the address of eth0 in the named node namespace.
func setAddrIn(nodeNS string, addr netip.Prefix, gw netip.Addr) error {
	h, err := handleAt(nodeNS)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := setHostAddr(h, addr, gw); err != nil {
		return fmt.Errorf("netns %s: %w", nodeNS, err)
	}
	return nil
}

// partitionRules are the iptables rules (without -A/-I/-D/-C) that cut a
// node off its LAN interface; loopback is untouched.
// partitionRules cut a node off from every other node on the LAN. The lan
// namespace's own address (client) stays reachable, so tests and kubectl can
// still talk to the cut-off node and see how it behaves without its peers.
func partitionRules(client string) [][]string {
	c := []string{"-m", "comment", "--comment", partitionComment, "-j", "DROP"}
	return [][]string{
		append([]string{"INPUT", "-i", nodeIface, "!", "-s", client}, c...),
		append([]string{"OUTPUT", "-o", nodeIface, "!", "-d", client}, c...),
	}
}

// iptablesIn runs iptables inside the named namespace.
func iptablesIn(ctx context.Context, ns string, args ...string) error {
	_, err := run(ctx, ipCmd(), append([]string{"netns", "exec", ns, "iptables", "-w", "5"}, args...)...)
	return err
}

// partition inserts the DROP rules (first in their chains) unless present.
func partition(ctx context.Context, nodeNS, client string) error {
	for _, r := range partitionRules(client) {
		if iptablesIn(ctx, nodeNS, append([]string{"-C"}, r...)...) == nil {
			continue
		}
		if err := iptablesIn(ctx, nodeNS, append([]string{"-I", r[0], "1"}, r[1:]...)...); err != nil {
			return err
		}
	}
	return nil
}

// heal deletes every copy of the DROP rules; none left is success.
func heal(ctx context.Context, nodeNS, client string) error {
	for _, r := range partitionRules(client) {
		for i := 0; i < 100 && iptablesIn(ctx, nodeNS, append([]string{"-C"}, r...)...) == nil; i++ {
			if err := iptablesIn(ctx, nodeNS, append([]string{"-D"}, r...)...); err != nil {
				return err
			}
		}
	}
	return nil
}

// inNetns runs fn on a fresh OS thread that has joined the named network
// namespace. The thread is never unlocked, so the runtime discards it when fn
// returns: no other goroutine ever runs in the namespace by accident.
// Sockets fn creates stay in the namespace for their whole life.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, on purpose
		ns, err := netns.GetFromName(name)
		if err != nil {
			errc <- fmt.Errorf("opening netns %s: %w", name, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("entering netns %s: %w", name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// dialIn dials addr from inside the named namespace. The host of addr must be
// an IP address: names would be resolved outside the namespace.
func dialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return nil, fmt.Errorf("dial %s: host must be an IP address (names are not resolved inside netns %s)", addr, ns)
	}
	var conn net.Conn
	err = inNetns(ns, func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		conn = c
		return err
	})
	return conn, err
}

// listenIn opens a listener inside the named namespace.
func listenIn(ns, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetns(ns, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}
