package dns

import (
	"encoding/binary"
	"net"
	"slices"
	"sync"

	miekg "github.com/miekg/dns"
)

// ednsUDPSize is the UDP payload size the server advertises in its OPT
// record (the DNS flag day 2020 value) and asks upstreams for.
const ednsUDPSize = 1232

// request is a validated query.
type request struct {
	r     *miekg.Msg
	q     miekg.Question
	edns  bool // the query had an OPT record: the reply gets one
	do    bool // DNSSEC OK
	limit int  // the largest reply the client accepts
}

// ServeDNS answers one query; it is the miekg handler of the server's
// sockets and is exported for tests and fuzzing. It never panics on a
// message miekg can unpack, and it never answers a response.
func (s *Server) ServeDNS(w miekg.ResponseWriter, r *miekg.Msg) {
	if r == nil || r.Response {
		return // answering responses invites loops and reflection
	}
	if r.Opcode != miekg.OpcodeQuery {
		s.replyRcode(w, r, nil, miekg.RcodeNotImplemented)
		return
	}
	if len(r.Question) != 1 {
		s.replyRcode(w, r, nil, miekg.RcodeFormatError)
		return
	}
	req := request{r: r, q: r.Question[0], limit: miekg.MinMsgSize}
	if rcode := req.parseEDNS(); rcode != miekg.RcodeSuccess {
		s.replyRcode(w, r, &req, rcode)
		return
	}
	if isTCP(w) {
		req.limit = miekg.MaxMsgSize
	}
	switch req.q.Qtype {
	case miekg.TypeOPT, miekg.TypeTSIG, miekg.TypeTKEY:
		s.replyRcode(w, r, &req, miekg.RcodeFormatError)
		return
	case miekg.TypeAXFR, miekg.TypeIXFR:
		s.replyRcode(w, r, &req, miekg.RcodeRefused)
		return
	}
	if req.q.Qclass != miekg.ClassINET && req.q.Qclass != miekg.ClassANY {
		s.replyRcode(w, r, &req, miekg.RcodeRefused)
		return
	}
	z := s.zone.Load()
	if z == nil {
		s.replyRcode(w, r, &req, miekg.RcodeServerFailure)
		return
	}

	// Fast path: the name as asked, lower-cased on the stack.
	var buf [maxKeyLen]byte
	if key, ok := lowerInto(&buf, req.q.Name); ok {
		if e := z.names[string(key)]; e != nil {
			s.reply(w, &req, e.answerFor(req.q.Qtype), true)
			return
		}
	}

	name, ok := canonicalQName(req.q.Name)
	if !ok {
		s.replyRcode(w, r, &req, miekg.RcodeFormatError)
		return
	}
	e, auth := z.find(name)
	switch {
	case e != nil:
		s.reply(w, &req, e.answerFor(req.q.Qtype), true)
	case auth == z.cluster:
		if canon, e := z.podAlias(name); e != nil {
			ans := e.answerFor(req.q.Qtype)
			if ans.owner == canon {
				s.reply(w, &req, ans, false)
				return
			}
		}
		s.reply(w, &req, auth.nxdomain, false)
	case auth != nil:
		s.reply(w, &req, auth.nxdomain, false)
	default:
		s.forward(w, &req, name)
	}
}

// parseEDNS reads the query's OPT record; a non-success rcode rejects the
// query (FORMERR for several OPT records, BADVERS for EDNS versions above 0).
func (req *request) parseEDNS() int {
	var opt *miekg.OPT
	for _, rr := range req.r.Extra {
		if o, ok := rr.(*miekg.OPT); ok {
			if opt != nil || o.Hdr.Name != "." {
				return miekg.RcodeFormatError
			}
			opt = o
		}
	}
	if opt == nil {
		return miekg.RcodeSuccess
	}
	req.edns, req.do = true, opt.Do()
	if opt.Version() != 0 {
		return miekg.RcodeBadVers
	}
	req.limit = max(int(opt.UDPSize()), miekg.MinMsgSize)
	return miekg.RcodeSuccess
}

func isTCP(w miekg.ResponseWriter) bool {
	_, ok := w.LocalAddr().(*net.TCPAddr)
	return ok
}

// reply sends a precomputed answer. exact says the question name is the
// answer's owner spelled in any case, so the packed sections fit after it.
func (s *Server) reply(w miekg.ResponseWriter, req *request, ans *answer, exact bool) {
	if p := ans.packed(); p.b != nil && (exact || p.qlen == 0) && s.writeFast(w, req, ans.rcode, ans.counts, p) {
		return
	}
	m := new(miekg.Msg)
	m.SetReply(req.r)
	m.Authoritative = true
	m.RecursionAvailable = s.ra
	m.Rcode = ans.rcode
	m.Answer = renamed(ans.an, ans.owner, req.q.Name)
	m.Ns = ans.ns
	m.Extra = slices.Clip(ans.ex) // appending the OPT must not touch the shared slice
	s.send(w, req, m)
}

// bufPool holds reply buffers for the fast path.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// writeFast writes header + the question as asked + the packed sections
// (+ OPT). It reports false, having written nothing, when the reply must
// be built record by record: it does not fit the client's limit (the slow
// path truncates), or the question does not pack to the expected length.
func (s *Server) writeFast(w miekg.ResponseWriter, req *request, rcode int, counts [3]uint16, p *packedWire) bool {
	if p.qlen != 0 && headerLen+p.qlen+4+len(p.b) > req.limit {
		return false // cannot fit: truncate record by record
	}
	need := headerLen + 256 + 4 + len(p.b) + optLen
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	b := *bp
	if need > len(b) {
		b = make([]byte, need)
	}
	off, ok := packPlainName(req.q.Name, b, headerLen)
	if !ok {
		var err error
		if off, err = miekg.PackDomainName(req.q.Name, b, headerLen, nil, false); err != nil {
			return false
		}
	}
	if p.qlen != 0 && off-headerLen != p.qlen {
		return false
	}
	total := off + 4 + len(p.b)
	if req.edns {
		total += optLen
	}
	if total > req.limit {
		return false
	}
	r := req.r
	putHeader(b, r.Id, r.RecursionDesired, r.CheckingDisabled, s.ra, rcode, counts, req.edns)
	binary.BigEndian.PutUint16(b[off:], req.q.Qtype)
	binary.BigEndian.PutUint16(b[off+2:], req.q.Qclass)
	off += 4
	off += copy(b[off:], p.b)
	if req.edns {
		off = putOPT(b, off, req.do)
	}
	if _, err := w.Write(b[:off]); err != nil {
		s.log.Debug("dns: writing reply", "err", err)
	}
	return true
}

// packPlainName packs a fully qualified name without escapes at b[off:]
// (which has room for 255 octets), as miekg.PackDomainName would, only
// faster; false means the name needs the general packer.
func packPlainName(name string, b []byte, off int) (int, bool) {
	if len(name) == 0 || len(name) > 254 || name[len(name)-1] != '.' {
		return 0, false
	}
	if name == "." {
		b[off] = 0
		return off + 1, true
	}
	start := 0
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '\\':
			return 0, false
		case '.':
			n := i - start
			if n == 0 || n > 63 {
				return 0, false
			}
			b[off] = byte(n)
			off += 1 + copy(b[off+1:], name[start:i])
			start = i + 1
		}
	}
	b[off] = 0
	return off + 1, true
}

// putOPT writes the server's OPT record (no options) at b[off:].
func putOPT(b []byte, off int, do bool) int {
	b[off] = 0 // root owner
	binary.BigEndian.PutUint16(b[off+1:], miekg.TypeOPT)
	binary.BigEndian.PutUint16(b[off+3:], ednsUDPSize)
	b[off+5], b[off+6] = 0, 0 // extended rcode, version
	var flags uint16
	if do {
		flags = 0x8000
	}
	binary.BigEndian.PutUint16(b[off+7:], flags)
	binary.BigEndian.PutUint16(b[off+9:], 0) // no options
	return off + optLen
}

// send adds the OPT record for EDNS clients, truncates to the client's
// limit and writes m.
func (s *Server) send(w miekg.ResponseWriter, req *request, m *miekg.Msg) {
	if req != nil && req.edns {
		m.SetEdns0(ednsUDPSize, req.do)
	}
	limit := miekg.MinMsgSize
	if req != nil {
		limit = req.limit
	}
	nAn, nNs := len(m.Answer), len(m.Ns)
	m.Truncate(limit)
	if m.Truncated && len(m.Answer) == nAn && len(m.Ns) == nNs {
		// Only additional data was left out: not a reason to retry over
		// TCP (RFC 2181 section 9).
		m.Truncated = false
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("dns: writing reply", "err", err)
	}
}

// replyRcode answers with an empty message and rcode.
func (s *Server) replyRcode(w miekg.ResponseWriter, r *miekg.Msg, req *request, rcode int) {
	m := new(miekg.Msg)
	m.SetRcode(r, rcode)
	m.RecursionAvailable = s.ra
	s.send(w, req, m)
}
