package netproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// google/nftables builds the messages; netproxy sends them itself. The
// library's Flush asks the kernel to acknowledge and echo every message and
// reads one reply per message: at 10,000 services that is ~70,000 acks plus
// the echoed rules queued on the socket before the first is read, which
// overflows any sane receive buffer (and the echoes confuse its ack
// matching). Here only the last message of a batch asks for an
// acknowledgement, errors carry no copy of the request (NETLINK_CAP_ACK) but
// do carry the kernel's explanation (NETLINK_EXT_ACK), and the socket's send
// buffer is raised to fit the whole batch, which the kernel handles as one
// transaction inside the sendmsg call.

const (
	minSockBuf     = 32 << 20 // SO_SNDBUFFORCE / SO_RCVBUFFORCE
	replyTimeout   = 10 * time.Second
	nlmsgHdrLen    = unix.SizeofNlMsghdr
	nfgenmsgLen    = 4
	nlmsgAlignMask = 3
)

// batchBuilder queues messages through google/nftables. Its Conn never
// touches a socket: Flush hands the finished batch to capture.
type batchBuilder struct {
	*nftables.Conn
	mu       sync.Mutex
	captured []netlink.Message
}

func newBatchBuilder() *batchBuilder {
	b := &batchBuilder{}
	b.Conn, _ = nftables.New(nftables.WithTestDial(b.capture)) // never fails without a real dial
	return b
}

// capture receives the batch (req != nil) and then, once per message,
// Flush's wait for an acknowledgement (req == nil): each gets a success.
func (b *batchBuilder) capture(req []netlink.Message) ([]netlink.Message, error) {
	if req != nil {
		b.mu.Lock()
		b.captured = append(b.captured[:0], req...)
		b.mu.Unlock()
	}
	return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4)}}, nil
}

// take returns the queued messages without the BATCH_BEGIN/END wrapper.
func (b *batchBuilder) take() ([]netlink.Message, error) {
	b.mu.Lock()
	b.captured = nil
	b.mu.Unlock()
	if err := b.Flush(); err != nil {
		return nil, fmt.Errorf("encoding nftables messages: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.captured) < 2 {
		return nil, nil
	}
	return b.captured[1 : len(b.captured)-1], nil
}

// txn assembles one transaction from google/nftables messages and directly
// encoded service chains and rules, in the order they are queued.
type txn struct {
	nft   *batchBuilder // queue library-built messages here
	msgs  []netlink.Message
	arena []byte
	err   error
	setNo uint32
}

func newTxn() *txn { return &txn{nft: newBatchBuilder()} }

// setID returns a set ID unique in the transaction (new sets are
// referred to by it until the transaction commits).
func (t *txn) setID() uint32 {
	t.setNo++
	return t.setNo
}

// sync moves the messages queued on t.nft into the transaction.
func (t *txn) sync() {
	if t.err != nil {
		return
	}
	m, err := t.nft.take()
	if err != nil {
		t.err = err
		return
	}
	t.msgs = append(t.msgs, m...)
}

func (t *txn) raw(typ netlink.HeaderType, flags netlink.HeaderFlags, encode func([]byte) []byte) {
	t.sync()
	if cap(t.arena)-len(t.arena) < 4096 {
		t.arena = make([]byte, 0, 1<<16)
	}
	start := len(t.arena)
	t.arena = encode(t.arena)
	t.msgs = append(t.msgs, netlink.Message{Header: netlink.Header{Type: typ, Flags: flags}, Data: t.arena[start:len(t.arena):len(t.arena)]})
}

// rule queues a service-chain rule.
func (t *txn) rule(table, chain string, r rule) {
	t.raw(msgNewRule, ruleFlags, func(b []byte) []byte { return encodeRule(b, table, chain, r) })
}

// chain queues a regular chain.
func (t *txn) chain(table, name string) {
	t.raw(msgNewChain, chainFlags, func(b []byte) []byte { return encodeChain(b, table, name) })
}

// batch returns the whole transaction, BATCH_BEGIN … BATCH_END, or nil
// when nothing was queued.
func (t *txn) batch() ([]netlink.Message, error) {
	t.sync()
	if t.err != nil {
		return nil, t.err
	}
	if len(t.msgs) == 0 {
		return nil, nil
	}
	wrap := func(typ uint16) netlink.Message {
		return netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
			Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}}
	}
	out := make([]netlink.Message, 0, len(t.msgs)+2)
	out = append(out, wrap(unix.NFNL_MSG_BATCH_BEGIN))
	out = append(out, t.msgs...)
	return append(out, wrap(unix.NFNL_MSG_BATCH_END)), nil
}

// nfSocket is a NETLINK_NETFILTER socket inside the proxy's namespace.
type nfSocket struct {
	mu     sync.Mutex
	fd     int
	sndbuf int
	seq    uint32
	rbuf   []byte
}

func dialNetfilter(nsfd int) (*nfSocket, error) {
	fd := -1
	err := inNetNS(nsfd, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink socket: %w", err)
	}
	s := &nfSocket{fd: fd, seq: uint32(time.Now().Unix()), rbuf: make([]byte, 1<<16)}
	if err := s.setup(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return s, nil
}

func (s *nfSocket) setup() error {
	if err := unix.Bind(s.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind netfilter netlink socket: %w", err)
	}
	for _, o := range []struct {
		level, opt, val int
		name            string
	}{
		{unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1, "NETLINK_CAP_ACK"},
		{unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1, "NETLINK_EXT_ACK"},
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, minSockBuf, "SO_SNDBUFFORCE"},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, minSockBuf, "SO_RCVBUFFORCE"},
	} {
		if err := unix.SetsockoptInt(s.fd, o.level, o.opt, o.val); err != nil {
			return fmt.Errorf("netlink socket option %s: %w", o.name, err)
		}
	}
	s.sndbuf = minSockBuf
	tv := unix.NsecToTimeval(replyTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("netlink socket receive timeout: %w", err)
	}
	return nil
}

func (s *nfSocket) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// send sends one batch (as built by batchBuilder) as a single transaction
// and returns the kernel's verdict: nil when it committed.
func (s *nfSocket) send(batch []netlink.Message) error {
	if len(batch) < 3 {
		return nil // BATCH_BEGIN, BATCH_END and nothing between
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return errors.New("netfilter socket closed")
	}
	s.drain()

	size := 0
	for _, m := range batch {
		size += (nlmsgHdrLen + len(m.Data) + nlmsgAlignMask) &^ nlmsgAlignMask
	}
	if size+(1<<16) > s.sndbuf {
		want := size + (1 << 20)
		if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, want); err != nil {
			return fmt.Errorf("raising the netlink send buffer to %d bytes: %w", want, err)
		}
		s.sndbuf = want
	}
	buf := make([]byte, 0, size)
	first := s.seq + 1
	last := first + uint32(len(batch)) - 2 // the last message before BATCH_END
	for _, m := range batch {
		s.seq++
		flags := m.Header.Flags &^ (netlink.Acknowledge | netlink.Echo)
		if s.seq == last {
			flags |= netlink.Acknowledge
		}
		n := nlmsgHdrLen + len(m.Data)
		buf = binary.NativeEndian.AppendUint32(buf, uint32(n))
		buf = binary.NativeEndian.AppendUint16(buf, uint16(m.Header.Type))
		buf = binary.NativeEndian.AppendUint16(buf, uint16(flags))
		buf = binary.NativeEndian.AppendUint32(buf, s.seq)
		buf = binary.NativeEndian.AppendUint32(buf, 0)
		buf = append(buf, m.Data...)
		for len(buf)%4 != 0 {
			buf = append(buf, 0)
		}
	}
	if err := unix.Sendto(s.fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sending nftables transaction (%d messages, %d bytes): %w", len(batch), len(buf), err)
	}
	return s.await(batch, first, last)
}

// await reads the kernel's answers to the batch whose messages carry
// sequence numbers first-1 (BATCH_BEGIN) … last+1 (BATCH_END) until the
// acknowledgement of the last message. Errors of any message are collected;
// any error means the kernel aborted the whole transaction.
func (s *nfSocket) await(batch []netlink.Message, first, last uint32) error {
	var errs []error
	for {
		n, _, err := unix.Recvfrom(s.fd, s.rbuf, 0)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ENOBUFS {
			// Only errors queue up (successes are not acknowledged), so
			// the batch failed; the kernel dropped some of its errors.
			s.drain()
			return errors.Join(append(errs, errors.New("nftables transaction failed (more errors than the socket could hold)"))...)
		}
		if err != nil {
			return fmt.Errorf("waiting for the kernel's answer to the nftables transaction: %w", err)
		}
		done := false
		for b := s.rbuf[:n]; len(b) >= nlmsgHdrLen; {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			if l < nlmsgHdrLen || l > len(b) {
				break
			}
			typ := binary.NativeEndian.Uint16(b[4:6])
			flags := binary.NativeEndian.Uint16(b[6:8])
			seq := binary.NativeEndian.Uint32(b[8:12])
			body := b[nlmsgHdrLen:l]
			b = b[min((l+nlmsgAlignMask)&^nlmsgAlignMask, len(b)):]
			if typ != unix.NLMSG_ERROR || len(body) < 4 {
				continue
			}
			errno := -int32(binary.NativeEndian.Uint32(body[0:4]))
			if errno != 0 {
				errs = append(errs, describeError(batch, first, seq, unix.Errno(errno), flags, body))
			}
			if seq == last || seq == first-1 || seq < first-1 || seq > last+1 {
				// The last message's answer, or an error about the batch
				// as a whole: nothing else follows.
				done = true
			}
		}
		if done {
			return errors.Join(errs...)
		}
	}
}

// drain discards anything left on the socket (answers to an earlier batch
// that timed out).
func (s *nfSocket) drain() {
	for {
		_, _, err := unix.Recvfrom(s.fd, s.rbuf, unix.MSG_DONTWAIT)
		if err != nil && err != unix.EINTR {
			return
		}
	}
}

// describeError names the failed message: its type, the table/chain/set
// names it carries, and the kernel's extended-ack message.
func describeError(batch []netlink.Message, first, seq uint32, errno unix.Errno, flags uint16, body []byte) error {
	what := "batch"
	if i := int(seq) - int(first) + 1; i > 0 && i < len(batch)-1 {
		m := batch[i]
		what = fmt.Sprintf("message %d (%s%s)", i, msgTypeName(uint16(m.Header.Type)), msgNames(m.Data))
	}
	extack := ""
	if flags&unix.NLM_F_ACK_TLVS != 0 && len(body) >= 4+nlmsgHdrLen {
		for tlv := body[4+nlmsgHdrLen:]; len(tlv) >= 4; {
			l := int(binary.NativeEndian.Uint16(tlv[0:2]))
			t := binary.NativeEndian.Uint16(tlv[2:4]) & 0x3fff
			if l < 4 || l > len(tlv) {
				break
			}
			if t == unix.NLMSGERR_ATTR_MSG {
				extack = ": " + strings.TrimRight(string(tlv[4:l]), "\x00")
			}
			tlv = tlv[min((l+3)&^3, len(tlv)):]
		}
	}
	return fmt.Errorf("nftables %s: %w%s", what, errno, extack)
}

var msgTypes = map[uint16]string{
	unix.NFT_MSG_NEWTABLE: "add table", unix.NFT_MSG_DELTABLE: "delete table",
	unix.NFT_MSG_NEWCHAIN: "add chain", unix.NFT_MSG_DELCHAIN: "delete chain",
	unix.NFT_MSG_NEWRULE: "add rule", unix.NFT_MSG_DELRULE: "flush chain",
	unix.NFT_MSG_NEWSET: "add set", unix.NFT_MSG_DELSET: "delete set",
	unix.NFT_MSG_NEWSETELEM: "add element", unix.NFT_MSG_DELSETELEM: "delete element",
}

func msgTypeName(t uint16) string {
	if n, ok := msgTypes[t&0xff]; ok {
		return n
	}
	return fmt.Sprintf("type %#x", t)
}

// msgNames lists the NUL-terminated string attributes of an nftables
// message (table, chain or set names) after the nfgenmsg header.
func msgNames(data []byte) string {
	if len(data) < nfgenmsgLen {
		return ""
	}
	var names []string
	for a := data[nfgenmsgLen:]; len(a) >= 4; {
		l := int(binary.NativeEndian.Uint16(a[0:2]))
		if l < 4 || l > len(a) {
			break
		}
		if v := a[4:l]; len(v) > 1 && v[len(v)-1] == 0 && isPrintable(v[:len(v)-1]) {
			names = append(names, string(v[:len(v)-1]))
		}
		a = a[min((l+3)&^3, len(a)):]
	}
	if len(names) == 0 {
		return ""
	}
	return " " + strings.Join(names, " ")
}

func isPrintable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}
