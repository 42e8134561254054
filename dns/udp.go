package dns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"time"

	miekg "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// The UDP fast path. A socket bound to a specific address is served by a
// loop that reads queries in batches (batch.go) and answers the common one
// (one question, a plain name of the zone, at most an OPT record) straight
// from the packet bytes: no unpacking, no goroutine, no allocation; the
// replies go out in one batch too. The reply copies the question
// octets as asked, so it echoes their case exactly. Every other packet is
// unpacked and handed to ServeDNS on a goroutine of its own, so slow work
// (forwarding) never holds up the loop. Sockets on a wildcard address are
// served by miekg's server, which picks the reply's source address.

// maxSlowQueries bounds the UDP queries served off the fast loop at once
// (forwarded ones wait for upstreams); more are dropped, and their clients
// retry.
const maxSlowQueries = 4096

// serveUDP runs the fast loop on conn until Close.
func (s *Server) serveUDP(conn *net.UDPConn) {
	defer s.wg.Done()
	rc, err := conn.SyscallConn()
	if err != nil {
		s.log.Error("dns: serving UDP", "err", err)
		return
	}
	b := newUDPBatch()
	for {
		n, err := b.recv(rc)
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("dns: reading UDP", "err", err)
			time.Sleep(time.Millisecond) // a persistent error must not spin
			continue
		}
		k := 0
		for i := 0; i < n; i++ {
			if b.in[i].hdr.Flags&unix.MSG_TRUNC != 0 {
				continue // larger than any sane query
			}
			pkt := b.packet(i)
			if reply, handled := s.answerPacket(pkt, b.outBuf[k][:]); handled {
				if reply != nil {
					b.queue(k, i, len(reply))
					k++
				}
				continue
			}
			s.serveSlow(conn, pkt, b.sender(i))
		}
		if k > 0 {
			if err := b.send(rc, k); err != nil && !s.stopping.Load() {
				s.log.Debug("dns: writing replies", "err", err)
			}
		}
	}
}

// serveSlow serves a packet the fast path declined on a goroutine of its
// own, or drops it when too many are in flight (the client retries).
func (s *Server) serveSlow(conn *net.UDPConn, pkt []byte, from netip.AddrPort) {
	select {
	case s.slow <- struct{}{}:
	default:
		s.log.Debug("dns: too many queries in flight, dropping one", "from", from)
		return
	}
	pkt = bytes.Clone(pkt)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.slow }()
		s.servePacket(&udpWriter{conn: conn, to: from}, pkt)
	}()
}

// servePacket unpacks a query and serves it with ServeDNS. A packet that
// is not a well-formed query gets FORMERR when its header can be read and
// is not a response, and nothing otherwise (as miekg's server does).
func (s *Server) servePacket(w miekg.ResponseWriter, pkt []byte) {
	if len(pkt) < headerLen || pkt[2]&0x80 != 0 {
		return
	}
	m := new(miekg.Msg)
	if err := m.Unpack(pkt); err != nil {
		reply := new(miekg.Msg)
		reply.Id = binary.BigEndian.Uint16(pkt)
		reply.Response = true
		reply.Opcode = int(pkt[2]>>3) & 0xf
		reply.Rcode = miekg.RcodeFormatError
		if err := w.WriteMsg(reply); err != nil {
			s.log.Debug("dns: writing reply", "err", err)
		}
		return
	}
	s.ServeDNS(w, m)
}

// answerPacket answers a raw query from the zone's packed answers into out.
// handled false means the packet needs the general path (ServeDNS); handled
// with a nil reply means it is dropped (a response).
func (s *Server) answerPacket(pkt, out []byte) (reply []byte, handled bool) {
	if len(pkt) < headerLen+5 {
		return nil, false
	}
	flags := binary.BigEndian.Uint16(pkt[2:])
	if flags&0x8000 != 0 {
		return nil, true // never answer a response
	}
	if flags&0x7800 != 0 { // opcode other than QUERY
		return nil, false
	}
	qd, an, ns, ar := binary.BigEndian.Uint16(pkt[4:]), binary.BigEndian.Uint16(pkt[6:]),
		binary.BigEndian.Uint16(pkt[8:]), binary.BigEndian.Uint16(pkt[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return nil, false
	}

	// The question name, lower-cased into its presentation form.
	var key [maxKeyLen]byte
	k, off := 0, headerLen
	for {
		if off >= len(pkt) {
			return nil, false
		}
		l := int(pkt[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(pkt) || k+l+1 > len(key) {
			return nil, false // compression pointer, or too long
		}
		for _, c := range pkt[off : off+l] {
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			default:
				return nil, false // anything that would need escaping
			}
			key[k] = c
			k++
		}
		key[k] = '.'
		k++
		off += l
	}
	if k == 0 {
		key[0] = '.'
		k = 1
	}
	qEnd := off + 4 // end of the question section
	if qEnd > len(pkt) {
		return nil, false
	}
	qtype, qclass := binary.BigEndian.Uint16(pkt[off:]), binary.BigEndian.Uint16(pkt[off+2:])
	switch qtype {
	case miekg.TypeOPT, miekg.TypeTSIG, miekg.TypeTKEY, miekg.TypeAXFR, miekg.TypeIXFR:
		return nil, false
	}
	if qclass != miekg.ClassINET && qclass != miekg.ClassANY {
		return nil, false
	}

	// At most one record after the question: an EDNS version 0 OPT.
	limit, edns, do := miekg.MinMsgSize, false, false
	if ar == 1 {
		o := qEnd
		if o+11 > len(pkt) || pkt[o] != 0 || binary.BigEndian.Uint16(pkt[o+1:]) != miekg.TypeOPT || pkt[o+6] != 0 ||
			o+11+int(binary.BigEndian.Uint16(pkt[o+9:])) != len(pkt) {
			return nil, false
		}
		// The options must be well formed (code, length, data) and fill
		// the record exactly, or the packet is not a query ServeDNS
		// would answer (it gets FORMERR there).
		for opt := pkt[o+11:]; len(opt) > 0; {
			if len(opt) < 4 || 4+int(binary.BigEndian.Uint16(opt[2:])) > len(opt) {
				return nil, false
			}
			opt = opt[4+int(binary.BigEndian.Uint16(opt[2:])):]
		}
		limit = max(int(binary.BigEndian.Uint16(pkt[o+3:])), miekg.MinMsgSize)
		edns, do = true, pkt[o+7]&0x80 != 0
	} else if qEnd != len(pkt) {
		return nil, false
	}

	z := s.zone.Load()
	if z == nil {
		return nil, false
	}
	var ans *answer
	if e := z.names[string(key[:k])]; e != nil {
		ans = e.answerFor(qtype)
	} else if z.isClusterNXDOMAIN(key[:k]) {
		ans = z.cluster.nxdomain
	} else {
		return nil, false
	}
	p := ans.packed()
	if p.b == nil || (p.qlen != 0 && qEnd-4-headerLen != p.qlen) {
		return nil, false
	}
	total := qEnd + len(p.b)
	if edns {
		total += optLen
	}
	if total > limit || total > len(out) {
		return nil, false // truncation is done record by record
	}
	putHeader(out, binary.BigEndian.Uint16(pkt), flags&0x0100 != 0, flags&0x0010 != 0, s.ra, ans.rcode, ans.counts, edns)
	o := headerLen + copy(out[headerLen:], pkt[headerLen:qEnd])
	o += copy(out[o:], p.b)
	if edns {
		o = putOPT(out, o, do)
	}
	return out[:o], true
}

// putHeader writes a reply header: QR and AA set, RD and CD copied from
// the query, one question, the answer's section counts (+1 additional for
// the OPT record).
func putHeader(b []byte, id uint16, rd, cd, ra bool, rcode int, counts [3]uint16, edns bool) {
	binary.BigEndian.PutUint16(b[0:], id)
	flags := uint16(0x8000 | 0x0400 | rcode&0xf) // QR, AA, rcode
	if rd {
		flags |= 0x0100
	}
	if ra {
		flags |= 0x0080
	}
	if cd {
		flags |= 0x0010
	}
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint16(b[4:], 1)
	binary.BigEndian.PutUint16(b[6:], counts[0])
	binary.BigEndian.PutUint16(b[8:], counts[1])
	ar := counts[2]
	if edns {
		ar++
	}
	binary.BigEndian.PutUint16(b[10:], ar)
}

// isClusterNXDOMAIN reports whether a lower-case name that is not in the
// zone is NXDOMAIN under the cluster domain without further checks: pod
// names are left to the general path, which knows other spellings of IPv6
// addresses.
func (z *Zone) isClusterNXDOMAIN(name []byte) bool {
	d, pod := z.domain, z.podSuffix
	if len(name) <= len(d) || name[len(name)-len(d)-1] != '.' || string(name[len(name)-len(d):]) != d {
		return false
	}
	return len(name) < len(pod) || string(name[len(name)-len(pod):]) != pod
}

// udpWriter is the miekg.ResponseWriter of a packet served off the fast
// loop.
type udpWriter struct {
	conn *net.UDPConn
	to   netip.AddrPort
}

func (w *udpWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *udpWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.to) }

func (w *udpWriter) WriteMsg(m *miekg.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func (w *udpWriter) Write(b []byte) (int, error) { return w.conn.WriteToUDPAddrPort(b, w.to) }
func (w *udpWriter) Close() error                { return nil }
func (w *udpWriter) TsigStatus() error           { return nil }
func (w *udpWriter) TsigTimersOnly(bool)         {}
func (w *udpWriter) Hijack()                     {}
