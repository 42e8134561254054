package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// udpReadSize is the receive buffer for one UDP query: far above any sane
// query, and what the server can accept (advertised in its OPT record is
// ednsUDPSize).
const udpReadSize = 4096

// sockets are the listening sockets of a server.
type sockets struct {
	udp   []net.PacketConn
	tcp   []net.Listener
	bound []netip.AddrPort // per configured address, port resolved
}

func (ss *sockets) close() {
	for _, c := range ss.udp {
		c.Close()
	}
	for _, l := range ss.tcp {
		l.Close()
	}
}

// listen opens every socket, inside Config.NetNS when set.
func (s *Server) listen() (*sockets, error) {
	ss := &sockets{}
	open := func() error {
		for _, ap := range s.addrs {
			if err := ss.listenAddr(ap, s.cfg.UDPSockets); err != nil {
				ss.close()
				return err
			}
		}
		return nil
	}
	if s.cfg.NetNS == "" {
		return ss, open()
	}
	if err := inNetNS(s.cfg.NetNS, open); err != nil {
		return nil, err
	}
	return ss, nil
}

// listenAddr opens n SO_REUSEPORT UDP sockets and one TCP listener on ap.
// With port 0 the first UDP socket picks the port and the others follow it;
// if TCP cannot have that port the attempt is repeated with another.
func (ss *sockets) listenAddr(ap netip.AddrPort, n int) error {
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		var udp []net.PacketConn
		var tcp net.Listener
		udp, tcp, err = listenOnce(ap, n)
		if err == nil {
			ss.udp = append(ss.udp, udp...)
			ss.tcp = append(ss.tcp, tcp)
			ss.bound = append(ss.bound, netip.AddrPortFrom(ap.Addr(), uint16(tcp.Addr().(*net.TCPAddr).Port)))
			return nil
		}
		if ap.Port() != 0 || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return err
}

func listenOnce(ap netip.AddrPort, n int) (udp []net.PacketConn, tcp net.Listener, err error) {
	defer func() {
		if err != nil {
			for _, c := range udp {
				c.Close()
			}
			udp = nil
		}
	}()
	lc := net.ListenConfig{Control: setUDPOptions}
	ctx := context.Background()
	addr := ap.String()
	for i := 0; i < n; i++ {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return udp, nil, fmt.Errorf("dns: listening on udp %s: %w", addr, err)
		}
		udp = append(udp, pc)
		if i == 0 {
			addr = netip.AddrPortFrom(ap.Addr(), uint16(pc.LocalAddr().(*net.UDPAddr).Port)).String()
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return udp, nil, fmt.Errorf("dns: listening on tcp %s: %w", addr, err)
	}
	return udp, ln, nil
}

// udpRecvBuffer is the receive buffer asked for on UDP sockets, so that a
// burst of queries waits in the kernel instead of being dropped.
const udpRecvBuffer = 4 << 20

// setUDPOptions sets SO_REUSEPORT, so that several sockets share the
// address and the kernel spreads clients over them, and a large receive
// buffer (SO_RCVBUFFORCE when allowed, else SO_RCVBUF up to the system's
// rmem_max).
func setUDPOptions(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpRecvBuffer) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, udpRecvBuffer)
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt SO_REUSEPORT", serr)
	}
	return nil
}

// inNetNS runs fn on a new goroutine locked to an OS thread that has joined
// the network namespace at path, and waits for it. Sockets fn opens belong
// to that namespace. The goroutine exits without unlocking the thread, so
// the runtime terminates the thread instead of reusing it in the wrong
// namespace.
func inNetNS(path string, fn func() error) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("dns: opening network namespace: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Deliberately never unlocked.
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("dns: entering network namespace %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
