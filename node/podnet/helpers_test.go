package podnet

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestMain checks that the privileged tests leave the machine's root network
// namespace exactly as they found it.
func TestMain(m *testing.M) {
	before, snapErr := rootNSSnapshot()
	code := m.Run()
	if snapErr == nil && os.Geteuid() == 0 {
		after, err := rootNSSnapshot()
		switch {
		case err != nil:
			fmt.Fprintf(os.Stderr, "root namespace snapshot after tests: %v\n", err)
			code = 1
		case before != after:
			fmt.Fprintf(os.Stderr, "FAIL: tests changed the root network namespace (-before +after):\n%s\n", cmp.Diff(before, after))
			code = 1
		default:
			fmt.Fprintln(os.Stderr, "root network namespace unchanged (ip link, ip addr, ip route, ip rule)")
		}
	}
	os.Exit(code)
}

var lftRE = regexp.MustCompile(`(valid_lft|preferred_lft|expires) \S+`)

// rootNSSnapshot renders the root namespace's links, addresses, routes and
// rules with `ip` (counters and lifetimes stripped).
func rootNSSnapshot() (string, error) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, args := range [][]string{
		{"-o", "link", "show"},
		{"-o", "addr", "show"},
		{"route", "show", "table", "all"},
		{"-6", "route", "show", "table", "all"},
		{"rule", "show"},
	} {
		out, err := exec.Command(ip, args...).Output()
		if err != nil {
			return "", fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		fmt.Fprintf(&b, "## ip %s\n%s", strings.Join(args, " "), lftRE.ReplaceAllString(string(out), "$1 X"))
	}
	return b.String(), nil
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces, veths and bridges (run `go test` as root)")
	}
}

// testNS is a throwaway network namespace standing in for a node.
type testNS struct {
	path string
	fd   int
	h    *netlink.Handle
}

// newTestNS creates a network namespace at dir/name, removed in t.Cleanup.
func newTestNS(t *testing.T, dir, name string) *testNS {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := createNetNS(p); err != nil {
		t.Fatalf("creating namespace %s: %v", p, err)
	}
	t.Cleanup(func() {
		if err := removeNetNS(p); err != nil {
			t.Errorf("removing namespace %s: %v", p, err)
		}
	})
	fd, err := openNetNS(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlinkIn(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); unix.Close(fd) })
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return &testNS{path: p, fd: fd, h: h}
}

// nsDir returns a directory for namespace files. Namespace mounts still
// there at the end (after a failed test) are detached before t.TempDir's
// own cleanup removes the directory.
func nsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { detachNSMounts(dir) })
	return dir
}

func detachNSMounts(dir string) {
	for _, p := range nsMountsUnder(dir) {
		unix.Unmount(p, unix.MNT_DETACH)
	}
}

// nsMountsUnder lists namespace (nsfs) mount points under dir.
func nsMountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// mountinfo: id parent maj:min root mountpoint opts... - fstype source superopts
		sep := -1
		for i, s := range f {
			if s == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) || f[sep+1] != "nsfs" {
			continue
		}
		if strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	sort.Strings(out)
	return out
}

// lan is two node namespaces joined by a veth, like two nodes on a LAN.
type lan struct {
	a, b     *testNS
	ipA, ipB string
	subnet   int // third octet of 10.99.<subnet>.0/24
}

func newLAN(t *testing.T) *lan {
	t.Helper()
	dir := nsDir(t)
	l := &lan{a: newTestNS(t, dir, "nodeA"), b: newTestNS(t, dir, "nodeB"), subnet: rand.IntN(250) + 1}
	l.ipA = fmt.Sprintf("10.99.%d.1", l.subnet)
	l.ipB = fmt.Sprintf("10.99.%d.2", l.subnet)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}, PeerName: "lan0", PeerNamespace: netlink.NsFd(l.b.fd)}
	if err := l.a.h.LinkAdd(veth); err != nil {
		t.Fatalf("creating LAN veth: %v", err)
	}
	for _, x := range []struct {
		ns *testNS
		ip string
	}{{l.a, l.ipA}, {l.b, l.ipB}} {
		link, err := x.ns.h.LinkByName("lan0")
		if err != nil {
			t.Fatal(err)
		}
		addr, _ := netlink.ParseAddr(x.ip + "/24")
		if err := x.ns.h.AddrAdd(link, addr); err != nil {
			t.Fatal(err)
		}
		if err := x.ns.h.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// newTestNetwork makes a Network programming inside ns, closed and with every
// pod collected in t.Cleanup.
func newTestNetwork(t *testing.T, ns *testNS, podCIDR, mode, nodeIP string) *Network {
	t.Helper()
	cfg := DefaultConfig()
	cfg.HostNS = ns.path
	cfg.PodCIDR = podCIDR
	cfg.Mode = mode
	cfg.MTU = 0 // mode default
	cfg.NodeIP = nodeIP
	cfg.StateDir = nsDir(t)
	return openTestNetwork(t, cfg)
}

func openTestNetwork(t *testing.T, cfg Config) *Network {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if n.checkOpen() == nil {
			if err := n.GC(context.Background(), nil); err != nil {
				t.Errorf("final GC: %v", err)
			}
			n.Close()
		}
	})
	return n
}

// inNS runs fn with its sockets in the namespace at path.
func inNS(path string, fn func() error) error {
	fd, err := openNetNS(path)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return inNetNS(fd, fn)
}

// serveEcho listens on addr inside the namespace at nsPath. Each connection
// sends "size\n"; the server answers "<name> <client IP>\n" then size bytes.
func serveEcho(t *testing.T, nsPath, addr, name string) {
	t.Helper()
	var ln net.Listener
	if err := inNS(nsPath, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, nsPath, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var size int
				if _, err := fmt.Fscanf(bufio.NewReader(c), "%d\n", &size); err != nil {
					return
				}
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				fmt.Fprintf(c, "%s %s\n", name, host)
				c.Write(bytes.Repeat([]byte{'x'}, size))
			}()
		}
	}()
}

// dialEcho connects from inside the namespace at nsPath to an echo server
// and returns its greeting line, checking that size bytes follow.
func dialEcho(nsPath, addr string, size int, timeout time.Duration) (string, error) {
	var line string
	err := inNS(nsPath, func() error {
		c, err := net.DialTimeout("tcp4", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(c, "%d\n", size); err != nil {
			return err
		}
		r := bufio.NewReader(c)
		line, err = r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimSpace(line)
		got, err := io.Copy(io.Discard, r)
		if err != nil {
			return err
		}
		if int(got) != size {
			return fmt.Errorf("got %d of %d bytes", got, size)
		}
		return nil
	})
	return line, err
}

// renderLinks lists the links of a namespace as "name type mtu [master]".
func renderLinks(t *testing.T, h *netlink.Handle) string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var lines []string
	for _, l := range links {
		s := fmt.Sprintf("%s %s mtu %d", l.Attrs().Name, l.Type(), l.Attrs().MTU)
		if m := l.Attrs().MasterIndex; m != 0 {
			s += " master " + names[m]
		}
		lines = append(lines, s)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// renderPeers renders what SetPeers owns in a namespace: podnet's routes, the
// VXLAN device and its permanent ARP and FDB entries, one sorted line each.
func renderPeers(t *testing.T, h *netlink.Handle) string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var lines []string
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		s := fmt.Sprintf("route %s via %s dev %s", r.Dst, r.Gw, names[r.LinkIndex])
		if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
			s += " onlink"
		}
		if r.Priority != 0 {
			s += fmt.Sprintf(" metric %d", r.Priority)
		}
		lines = append(lines, s)
	}
	if l, err := h.LinkByName(VXLANDevice); err == nil {
		vx := l.(*netlink.Vxlan)
		addrs, _ := h.AddrList(l, netlink.FAMILY_V4)
		var as []string
		for _, a := range addrs {
			as = append(as, a.IPNet.String())
		}
		up := "down"
		if l.Attrs().Flags&net.FlagUp != 0 {
			up = "up"
		}
		lines = append(lines, fmt.Sprintf("link %s vni %d local %s port %d learning %v mtu %d mac %s addr %s %s",
			l.Attrs().Name, vx.VxlanId, vx.SrcAddr, vx.Port, vx.Learning, l.Attrs().MTU, l.Attrs().HardwareAddr, strings.Join(as, ","), up))
		arp, err := h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, nb := range arp {
			if nb.State&netlink.NUD_PERMANENT != 0 {
				lines = append(lines, fmt.Sprintf("arp %s lladdr %s dev %s", nb.IP, nb.HardwareAddr, names[nb.LinkIndex]))
			}
		}
		fdb, err := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			t.Fatal(err)
		}
		for _, nb := range fdb {
			if nb.LinkIndex == l.Attrs().Index {
				lines = append(lines, fmt.Sprintf("fdb %s dst %s dev %s", nb.HardwareAddr, nb.IP, names[nb.LinkIndex]))
			}
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// execIn runs a command with the namespace at fd as its network namespace.
func execIn(fd int, name string, args ...string) (string, error) {
	var out []byte
	err := inNetNS(fd, func() error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
		}
		return nil
	})
	return string(out), err
}

func mustSetup(t *testing.T, n *Network, podID string) PodNet {
	t.Helper()
	pn, err := n.Setup(context.Background(), podID, "")
	if err != nil {
		t.Fatalf("Setup(%s): %v", podID, err)
	}
	return pn
}
