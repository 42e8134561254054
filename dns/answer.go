package dns

import (
	"bytes"
	"sync"
	"sync/atomic"

	miekg "github.com/miekg/dns"
)

// answer is a precomputed reply body: the records of the answer, authority
// and additional sections, and the same sections packed to wire format so
// that serving a query is a copy. The packing is done once, by the first
// query that needs it, so that building a zone is cheap and names nobody
// asks for cost no packing.
type answer struct {
	rcode      int
	an, ns, ex []miekg.RR
	// owner is the canonical (lower-case) name the answer records are owned
	// by; replies rename them to the question's spelling. "" for negative
	// answers, whose records are owned by the zone apex.
	owner  string
	counts [3]uint16 // answer, authority, additional
	wire   atomic.Pointer[packedWire]
}

// packedWire holds the packed sections after the question; b is nil when
// packing failed (the reply is then built record by record). For an owned
// answer the sections may point into the question (name compression), so b
// is only valid after a question name of qlen octets: the canonical owner
// spelled in any case. Negative answers are packed without compression and
// fit after any question (qlen 0).
type packedWire struct {
	b    []byte
	qlen int
}

// newAnswer builds an answer owned by owner ("" for a negative answer).
func newAnswer(owner string, rcode int, an, ns, ex []miekg.RR) *answer {
	return &answer{rcode: rcode, an: an, ns: ns, ex: ex, owner: owner,
		counts: [3]uint16{uint16(min(len(an), 0xffff)), uint16(min(len(ns), 0xffff)), uint16(min(len(ex), 0xffff))}}
}

// packed returns the packed sections, packing them on first use.
// Concurrent first uses may both pack; they store equal results.
func (a *answer) packed() *packedWire {
	if p := a.wire.Load(); p != nil {
		return p
	}
	p := a.pack()
	a.wire.Store(p)
	return p
}

// packPool holds scratch buffers for packing answers.
var packPool = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

func (a *answer) pack() *packedWire {
	if len(a.an) > 0xffff || len(a.ns) > 0xffff || len(a.ex) > 0xffff {
		return &packedWire{}
	}
	q := a.owner
	if q == "" {
		q = "."
	}
	m := &miekg.Msg{Compress: a.owner != ""}
	m.Question = []miekg.Question{{Name: q, Qtype: miekg.TypeA, Qclass: miekg.ClassINET}}
	m.Answer, m.Ns, m.Extra = a.an, a.ns, a.ex
	bp := packPool.Get().(*[]byte)
	defer packPool.Put(bp)
	buf, err := m.PackBuffer(*bp)
	start := headerLen + wireLen(q) + 4
	if err != nil || len(buf) < start {
		return &packedWire{}
	}
	p := &packedWire{b: bytes.Clone(buf[start:])}
	if p.b == nil {
		p.b = []byte{}
	}
	if a.owner != "" {
		p.qlen = wireLen(q)
	}
	return p
}

// headerLen is the size of the DNS message header.
const headerLen = 12

// optLen is the size of the OPT record the server adds for EDNS clients.
const optLen = 11

// renamed returns the records with every one owned by from renamed to to,
// copying only those it changes.
func renamed(rrs []miekg.RR, from, to string) []miekg.RR {
	if from == "" || from == to {
		return rrs
	}
	out := make([]miekg.RR, len(rrs))
	for i, rr := range rrs {
		if rr.Header().Name == from {
			rr = miekg.Copy(rr)
			rr.Header().Name = to
		}
		out[i] = rr
	}
	return out
}
