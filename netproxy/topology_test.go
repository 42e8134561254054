package netproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// topology is a node in a network namespace of its own with a bridge
// (10.42.0.1/24) and pods on it, and a "LAN" client outside (192.168.50.2)
// reaching the node at 192.168.50.1. Everything lives in namespaces the
// test creates; nothing touches the machine's root namespace.
type topology struct {
	node   *testNS
	lan    *testNS
	pods   map[string]*testNS // by pod IP
	nodeIP netip.Addr
	lanIP  netip.Addr
}

const (
	echoTCP  = 8080
	echoUDP  = 5353
	bridgeIP = "10.42.0.1"
)

// newTopology builds the node, one client pod (10.42.0.10) and backend
// pods at the given IPs, each running TCP and UDP echo servers that answer
// "<own IP> <peer address>".
func newTopology(t *testing.T, backends ...string) *topology {
	t.Helper()
	tp := &topology{node: newTestNS(t), lan: newTestNS(t), pods: map[string]*testNS{},
		nodeIP: a4("192.168.50.1"), lanIP: a4("192.168.50.2")}
	n := tp.node.name
	run := func(args ...string) {
		t.Helper()
		if out, err := execCmd(args...); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "-n", n, "link", "add", "br0", "type", "bridge")
	run("ip", "-n", n, "addr", "add", bridgeIP+"/24", "dev", "br0")
	run("ip", "-n", n, "link", "set", "br0", "up")
	tp.node.run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// Same-bridge backends answer through the DNAT'ed address only if
	// bridged packets see netfilter (br_netfilter); see NOTES.md.
	if _, err := tp.node.try("test", "-e", "/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		tp.node.run(t, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
	}
	for i, ip := range append([]string{"10.42.0.10"}, backends...) {
		pod := newTestNS(t)
		veth := fmt.Sprintf("vp%d", i)
		run("ip", "-n", n, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod.name)
		run("ip", "-n", n, "link", "set", veth, "master", "br0", "up")
		// A pod reaching itself through its service leaves by the port
		// it came in (br_netfilter bridges the DNAT'ed packet): the
		// port needs hairpin mode, as kubelet sets it.
		run("ip", "-n", n, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
		run("ip", "-n", pod.name, "addr", "add", ip+"/24", "dev", "eth0")
		run("ip", "-n", pod.name, "link", "set", "eth0", "up")
		run("ip", "-n", pod.name, "route", "add", "default", "via", bridgeIP)
		tp.pods[ip] = pod
		if i > 0 {
			startEcho(t, pod, ip)
		}
	}
	run("ip", "-n", n, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", tp.lan.name)
	run("ip", "-n", n, "addr", "add", tp.nodeIP.String()+"/24", "dev", "lan0")
	run("ip", "-n", n, "link", "set", "lan0", "up")
	run("ip", "-n", tp.lan.name, "addr", "add", tp.lanIP.String()+"/24", "dev", "eth0")
	run("ip", "-n", tp.lan.name, "link", "set", "eth0", "up")
	run("ip", "-n", tp.lan.name, "route", "add", "default", "via", tp.nodeIP.String())
	// The node's default route (its LAN gateway) is what lets its own
	// processes route to service addresses before the output hook DNATs.
	run("ip", "-n", n, "route", "add", "default", "via", tp.lanIP.String())
	return tp
}

func execCmd(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

func (tp *topology) client() *testNS { return tp.pods["10.42.0.10"] }

// startEcho runs TCP and UDP echo servers on sockets opened inside the pod.
func startEcho(t *testing.T, pod *testNS, ip string) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := inNS(pod, func() error {
		var err error
		if ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", echoTCP)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", echoUDP))
		return err
	})
	if err != nil {
		t.Fatalf("echo server in %s: %v", ip, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				fmt.Fprintf(c, "%s %s\n", ip, c.RemoteAddr())
				_, _ = io.Copy(io.Discard, c) // stay open until the client closes
				c.Close()
			}()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			_, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(fmt.Sprintf("%s %s\n", ip, addr)), addr)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		wg.Wait()
	})
}

// inNS runs fn on a thread inside the namespace (sockets fn opens stay
// there).
func inNS(ns *testNS, fn func() error) error {
	fd, err := openNetNS(ns.path)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return inNetNS(fd, fn)
}

// reply is what an echo server answered: which backend, and the client
// address it saw.
type reply struct {
	server string
	peer   netip.Addr
}

func parseReply(line string) (reply, error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return reply{}, fmt.Errorf("bad echo reply %q", line)
	}
	ap, err := netip.ParseAddrPort(f[1])
	if err != nil {
		return reply{}, err
	}
	return reply{server: f[0], peer: ap.Addr()}, nil
}

const ioTimeout = 10 * time.Second // a safety net, not an assertion

// dial opens a TCP connection from inside ns.
func dial(ns *testNS, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNS(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, ioTimeout)
		return err
	})
	return c, err
}

// get connects from ns, reads the echo reply and closes.
func get(ns *testNS, addr string) (reply, error) {
	c, err := dial(ns, addr)
	if err != nil {
		return reply{}, err
	}
	defer c.Close()
	return readReply(c)
}

func readReply(c net.Conn) (reply, error) {
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return reply{}, err
	}
	_ = c.SetReadDeadline(time.Time{})
	return parseReply(line)
}

func mustGet(t *testing.T, ns *testNS, addr string) reply {
	t.Helper()
	r, err := get(ns, addr)
	if err != nil {
		t.Fatalf("from %s to %s: %v", ns.name, addr, err)
	}
	return r
}

// udpSocket is a connected UDP socket opened inside ns: every datagram
// has the same 5-tuple, so conntrack keeps one entry for it.
func udpSocket(t *testing.T, ns *testNS, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := inNS(ns, func() error {
		var err error
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ask sends one datagram and reads the answer.
func ask(c *net.UDPConn) (reply, error) {
	if _, err := c.Write([]byte("?")); err != nil {
		return reply{}, err
	}
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		return reply{}, err
	}
	return parseReply(strings.TrimSpace(string(buf[:n])))
}

func isRefused(err error) bool { return errors.Is(err, unix.ECONNREFUSED) }
