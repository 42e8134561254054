package netproxy

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// SCTP traffic without SCTP sockets: the test kernel may lack SCTP itself
// (CONFIG_IP_SCTP) while its conntrack and NAT know the protocol, so the
// tests hand-build INIT packets and send and receive them on raw IPv4
// sockets of protocol 132.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sctpInit is an SCTP packet holding one INIT chunk (RFC 9260 3.3.2): the
// common header with verification tag 0 and the CRC32c checksum (stored
// little-endian, as Linux and every other stack do), then the chunk.
func sctpInit(src, dst uint16, tag uint32) []byte {
	b := make([]byte, 12+20)
	binary.BigEndian.PutUint16(b[0:], src)
	binary.BigEndian.PutUint16(b[2:], dst)
	// b[4:8]: verification tag 0, as an INIT must have; b[8:12]: checksum.
	b[12] = 1                                 // chunk type INIT
	binary.BigEndian.PutUint16(b[14:], 20)    // chunk length
	binary.BigEndian.PutUint32(b[16:], tag)   // initiate tag
	binary.BigEndian.PutUint32(b[20:], 65536) // advertised receiver window
	binary.BigEndian.PutUint16(b[24:], 1)     // outbound streams
	binary.BigEndian.PutUint16(b[26:], 1)     // inbound streams
	binary.BigEndian.PutUint32(b[28:], tag)   // initial TSN
	binary.LittleEndian.PutUint32(b[8:], sctpChecksum(b))
	return b
}

// sctpChecksum is the CRC32c of an SCTP packet with its checksum field
// taken as zero.
func sctpChecksum(pkt []byte) uint32 {
	crc := crc32.Update(0, castagnoli, pkt[:8])
	crc = crc32.Update(crc, castagnoli, []byte{0, 0, 0, 0})
	return crc32.Update(crc, castagnoli, pkt[12:])
}

// sctpSeen is an SCTP packet as a raw socket received it.
type sctpSeen struct {
	src, dst   netip.AddrPort
	tag        uint32 // the INIT's initiate tag
	chunk      byte
	checksumOK bool
}

// parseSCTP parses an IPv4 packet carrying SCTP (raw sockets of IPv4 hand
// over the IP header too).
func parseSCTP(b []byte) (sctpSeen, error) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return sctpSeen{}, errors.New("not an IPv4 packet")
	}
	ihl := int(b[0]&0x0f) * 4
	if b[9] != unix.IPPROTO_SCTP || len(b) < ihl+12+20 {
		return sctpSeen{}, errors.New("not an SCTP packet with a chunk")
	}
	p := b[ihl:]
	src, _ := netip.AddrFromSlice(b[12:16])
	dst, _ := netip.AddrFromSlice(b[16:20])
	return sctpSeen{
		src:        netip.AddrPortFrom(src, binary.BigEndian.Uint16(p[0:])),
		dst:        netip.AddrPortFrom(dst, binary.BigEndian.Uint16(p[2:])),
		chunk:      p[12],
		tag:        binary.BigEndian.Uint32(p[16:]),
		checksumOK: binary.LittleEndian.Uint32(p[8:]) == sctpChecksum(p),
	}, nil
}

// rawSocket opens a raw IPv4 socket of the given protocol inside ns (closed
// when the test ends). A kernel that refuses raw SCTP sockets skips the
// test.
func rawSocket(t *testing.T, ns *testNS, proto int) int {
	t.Helper()
	fd := -1
	err := inNS(ns, func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		return err
	})
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ESOCKTNOSUPPORT) {
		t.Skipf("the kernel refuses raw sockets of protocol %d: %v", proto, err)
	}
	if err != nil {
		t.Fatalf("raw socket of protocol %d in %s: %v", proto, ns.name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// sendSCTPInit sends an INIT from srcPort to dst out of ns.
func sendSCTPInit(t *testing.T, ns *testNS, srcPort uint16, dst netip.AddrPort, tag uint32) {
	t.Helper()
	fd := rawSocket(t, ns, unix.IPPROTO_SCTP)
	if err := unix.Sendto(fd, sctpInit(srcPort, dst.Port(), tag), 0, &unix.SockaddrInet4{Addr: dst.Addr().As4()}); err != nil {
		t.Fatalf("sending an SCTP INIT to %s: %v", dst, err)
	}
}

// recvRaw waits (ioTimeout at most, a safety net) for a packet on one of
// the raw sockets and returns which one and the packet.
func recvRaw(t *testing.T, fds ...int) (int, []byte) {
	t.Helper()
	pfds := make([]unix.PollFd, len(fds))
	for i, fd := range fds {
		pfds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	}
	deadline := time.Now().Add(ioTimeout)
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			t.Fatal("no packet arrived")
		}
		n, err := unix.Poll(pfds, int(wait.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			continue
		}
		for i, p := range pfds {
			if p.Revents&unix.POLLIN == 0 {
				continue
			}
			buf := make([]byte, 1500)
			m, _, err := unix.Recvfrom(fds[i], buf, unix.MSG_DONTWAIT)
			if err != nil {
				t.Fatal(err)
			}
			return i, buf[:m]
		}
	}
}

// recvSCTP waits for an SCTP packet on one of the raw SCTP sockets.
func recvSCTP(t *testing.T, fds ...int) (int, sctpSeen) {
	t.Helper()
	i, b := recvRaw(t, fds...)
	seen, err := parseSCTP(b)
	if err != nil {
		t.Fatal(err)
	}
	return i, seen
}

// recvPortUnreachable waits on a raw ICMP socket for a port unreachable
// about an SCTP packet to dst and returns the source port it quotes.
func recvPortUnreachable(t *testing.T, icmp int, dst netip.AddrPort) uint16 {
	t.Helper()
	for {
		_, b := recvRaw(t, icmp)
		if len(b) < 20 {
			continue
		}
		icmpMsg := b[int(b[0]&0x0f)*4:]
		if len(icmpMsg) < 8+20+4 || icmpMsg[0] != 3 {
			continue // not destination unreachable
		}
		quoted := icmpMsg[8:]
		qdst, _ := netip.AddrFromSlice(quoted[16:20])
		l4 := quoted[int(quoted[0]&0x0f)*4:]
		if quoted[9] != unix.IPPROTO_SCTP || len(l4) < 4 ||
			netip.AddrPortFrom(qdst, binary.BigEndian.Uint16(l4[2:])) != dst {
			continue
		}
		if icmpMsg[1] != 3 {
			t.Fatalf("SCTP to %s: ICMP destination unreachable code %d, want 3 (port unreachable)", dst, icmpMsg[1])
		}
		return binary.BigEndian.Uint16(l4[0:])
	}
}

// TestSCTPInitChecksum pins the checksum against the test vector of a
// known-good INIT (the CRC32c check value of RFC 3720 B.4 for the table,
// and an INIT's checksum verifying after a round trip).
func TestSCTPInitChecksum(t *testing.T) {
	if got := crc32.Checksum([]byte("123456789"), castagnoli); got != 0xe3069283 {
		t.Fatalf("CRC32c check value %#x, want 0xe3069283", got)
	}
	pkt := sctpInit(40000, 9, 0x01020304)
	ip := append([]byte{0x45, 0, 0, 52, 0, 0, 0, 0, 64, unix.IPPROTO_SCTP, 0, 0, 10, 42, 0, 10, 10, 43, 0, 20}, pkt...)
	seen, err := parseSCTP(ip)
	if err != nil {
		t.Fatal(err)
	}
	want := sctpSeen{src: netip.MustParseAddrPort("10.42.0.10:40000"), dst: netip.MustParseAddrPort("10.43.0.20:9"),
		tag: 0x01020304, chunk: 1, checksumOK: true}
	if seen != want {
		t.Fatalf("parsed %+v, want %+v", seen, want)
	}
	pkt[20]++
	if seen, _ := parseSCTP(append(ip[:20:20], pkt...)); seen.checksumOK {
		t.Fatal("a changed packet still passes the checksum")
	}
}
