package dns

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	miekg "github.com/miekg/dns"
)

// forwarder sends questions for names outside the zone to upstream
// servers: UDP first, TCP when the answer is truncated, the next upstream
// when one fails.
type forwarder struct {
	upstreams []string
	timeout   time.Duration
	udp, tcp  *miekg.Client
	next      atomic.Uint32 // index of the upstream to try first: the last that answered
}

func newForwarder(upstreams []string, timeout time.Duration) *forwarder {
	return &forwarder{
		upstreams: upstreams,
		timeout:   timeout,
		udp:       &miekg.Client{Net: "udp", Timeout: timeout},
		tcp:       &miekg.Client{Net: "tcp", Timeout: timeout},
	}
}

// forward answers a question for a name outside the zone from the cache or
// the upstreams. name is the lower-case question name.
func (s *Server) forward(w miekg.ResponseWriter, req *request, name string) {
	if s.fwd == nil {
		s.replyRcode(w, req.r, req, miekg.RcodeRefused)
		return
	}
	key := cacheKey{name: name, qtype: req.q.Qtype, qclass: req.q.Qclass, do: req.do, cd: req.r.CheckingDisabled}
	if s.cache != nil {
		if c, ttl, ok := s.cache.get(key, s.now()); ok {
			s.stats.cacheHits.Add(1)
			s.replyCached(w, req, c, ttl)
			return
		}
	}
	s.stats.forwarded.Add(1)
	resp, err := s.fwd.resolve(s.ctx, req.q, req.do, req.r.CheckingDisabled)
	if err != nil {
		s.stats.upstreamFailures.Add(1)
		s.warnUpstreams(req.q, err)
		s.replyRcode(w, req.r, req, miekg.RcodeServerFailure)
		return
	}
	c := newCached(resp, s.now(), s.cfg.CacheMaxTTL)
	if s.cache != nil {
		s.cache.put(key, c)
	}
	ttl := c.ttl
	if ttl == 0 {
		ttl = ^uint32(0) // not cacheable: pass the TTLs through
	}
	s.replyCached(w, req, c, ttl)
}

// replyCached answers with an upstream answer whose TTLs are capped at ttl.
func (s *Server) replyCached(w miekg.ResponseWriter, req *request, c *cached, ttl uint32) {
	m := new(miekg.Msg)
	m.SetReply(req.r)
	m.Rcode = c.rcode
	m.Authoritative = c.aa
	m.AuthenticatedData = c.ad && (req.do || req.r.AuthenticatedData)
	m.RecursionAvailable = true
	m.Answer = withTTL(c.answer, ttl)
	m.Ns = withTTL(c.ns, ttl)
	m.Extra = withTTL(c.extra, ttl)
	s.send(w, req, m)
}

// warnUpstreams logs that every upstream failed, at most every 10 seconds
// (each failure is logged at debug level).
func (s *Server) warnUpstreams(q miekg.Question, err error) {
	s.log.Debug("dns: upstreams failed", "name", q.Name, "type", miekg.TypeToString[q.Qtype], "err", err)
	now := s.now().UnixNano()
	last := s.lastWarn.Load()
	if now-last < int64(10*time.Second) || !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("dns: every upstream failed", "name", q.Name, "err", err)
}

// resolve asks the upstreams, starting with the last one that answered,
// until one gives a usable answer.
func (f *forwarder) resolve(ctx context.Context, q miekg.Question, do, cd bool) (*miekg.Msg, error) {
	m := new(miekg.Msg)
	m.Id = miekg.Id()
	m.RecursionDesired = true
	m.CheckingDisabled = cd
	m.Question = []miekg.Question{q}
	m.SetEdns0(ednsUDPSize, do)
	n := len(f.upstreams)
	first := int(f.next.Load()) % n
	var errs []error
	for i := 0; i < n && ctx.Err() == nil; i++ {
		idx := (first + i) % n
		resp, err := f.exchange(ctx, m, f.upstreams[idx])
		if err == nil {
			if idx != first {
				f.next.Store(uint32(idx))
			}
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", f.upstreams[idx], err))
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// exchange asks one upstream, over TCP again when the UDP answer is
// truncated, and checks that the answer is for the question.
func (f *forwarder) exchange(ctx context.Context, m *miekg.Msg, addr string) (*miekg.Msg, error) {
	resp, err := f.exchangeOver(ctx, f.udp, m, addr)
	if err == nil && resp.Truncated {
		resp, err = f.exchangeOver(ctx, f.tcp, m, addr)
	}
	if err != nil {
		return nil, err
	}
	q := m.Question[0]
	if !resp.Response || resp.Opcode != miekg.OpcodeQuery || len(resp.Question) != 1 ||
		!strings.EqualFold(resp.Question[0].Name, q.Name) ||
		resp.Question[0].Qtype != q.Qtype || resp.Question[0].Qclass != q.Qclass {
		return nil, errors.New("answer does not match the question")
	}
	if resp.Rcode != miekg.RcodeSuccess && resp.Rcode != miekg.RcodeNameError {
		return nil, fmt.Errorf("answered %s", miekg.RcodeToString[resp.Rcode])
	}
	return resp, nil
}

// exchangeOver does one exchange with its own connection, abandoned when
// ctx is cancelled (Server.Close) or the timeout passes.
func (f *forwarder) exchangeOver(ctx context.Context, c *miekg.Client, m *miekg.Msg, addr string) (*miekg.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	co, err := c.DialContext(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { co.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, m, co)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Net, err)
	}
	return r, nil
}
