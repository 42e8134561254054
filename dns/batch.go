package dns

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched UDP I/O for the fast loop: recvmmsg reads every query waiting on
// the socket in one system call, sendmmsg sends the replies in one. Under
// load that divides the system calls (and the scheduler wake-ups between
// them) by the batch size; when idle it costs the same as recvfrom. Both
// calls are non-blocking (MSG_DONTWAIT; waiting is the runtime poller's
// job), so they are made as raw system calls: the runtime does not hand
// the thread's P to another thread during them, which under load costs
// more than the calls themselves.

// batchSize is the number of datagrams read or written per system call.
const batchSize = 32

// batchReplySize is the reply buffer per datagram; larger replies go
// through the general path.
const batchReplySize = 4096

// mmsghdr is struct mmsghdr from <sys/socket.h>.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// udpBatch holds the buffers of one fast loop. It is allocated on the heap
// and never moves; the kernel reads and writes it during the calls only.
type udpBatch struct {
	in    [batchSize]mmsghdr
	inIov [batchSize]unix.Iovec
	from  [batchSize]unix.RawSockaddrInet6 // large enough for IPv4 too
	inBuf [batchSize][udpReadSize]byte

	out    [batchSize]mmsghdr
	outIov [batchSize]unix.Iovec
	outBuf [batchSize][batchReplySize]byte
}

func newUDPBatch() *udpBatch {
	b := new(udpBatch)
	for i := range b.in {
		b.inIov[i].Base = &b.inBuf[i][0]
		b.inIov[i].SetLen(udpReadSize)
		b.in[i].hdr.Iov = &b.inIov[i]
		b.in[i].hdr.SetIovlen(1)
		b.in[i].hdr.Name = (*byte)(unsafe.Pointer(&b.from[i]))
		b.out[i].hdr.Iov = &b.outIov[i]
		b.out[i].hdr.SetIovlen(1)
	}
	return b
}

// recv reads up to batchSize datagrams, waiting (through the runtime's
// poller, so deadlines and Close apply) until at least one is there.
func (b *udpBatch) recv(rc syscall.RawConn) (int, error) {
	for i := range b.in {
		b.in[i].hdr.Namelen = uint32(unsafe.Sizeof(b.from[i]))
		b.in[i].hdr.Flags = 0
	}
	var n int
	var errno syscall.Errno
	err := rc.Read(func(fd uintptr) bool {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.in[0])), batchSize, unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false
		}
		n, errno = int(r), e
		return true
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

// packet returns datagram i of the last recv.
func (b *udpBatch) packet(i int) []byte {
	return b.inBuf[i][:b.in[i].n]
}

// sender returns the source address of datagram i.
func (b *udpBatch) sender(i int) netip.AddrPort {
	sa := &b.from[i]
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
	}
	return netip.AddrPort{}
}

// queue sets reply slot k to the len bytes of outBuf[k], addressed to the
// sender of datagram i.
func (b *udpBatch) queue(k, i, n int) {
	b.outIov[k].Base = &b.outBuf[k][0]
	b.outIov[k].SetLen(n)
	b.out[k].hdr.Name = b.in[i].hdr.Name
	b.out[k].hdr.Namelen = b.in[i].hdr.Namelen
}

// send writes the first k queued replies. A reply the kernel refuses (e.g.
// an unreachable sender) is skipped; the rest are still sent.
func (b *udpBatch) send(rc syscall.RawConn, k int) error {
	for sent := 0; sent < k; {
		var n int
		var errno syscall.Errno
		err := rc.Write(func(fd uintptr) bool {
			r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.out[sent])), uintptr(k-sent), unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN || e == unix.EINTR {
				return false
			}
			n, errno = int(r), e
			return true
		})
		if err != nil {
			return err
		}
		if errno != 0 {
			sent++ // the first pending reply failed: drop it
			continue
		}
		sent += n
	}
	return nil
}
