package dns

import (
	"sync"
	"time"

	miekg "github.com/miekg/dns"
)

// cacheKey identifies a forwarded answer: the same question with a
// different DO or CD bit may get a different answer.
type cacheKey struct {
	name          string // lower case
	qtype, qclass uint16
	do, cd        bool
}

// cached is an upstream answer as it is stored: immutable once built.
type cached struct {
	rcode             int
	aa, ad            bool
	answer, ns, extra []miekg.RR // no OPT
	stored            time.Time
	ttl               uint32 // seconds the answer stays valid; 0 = not cacheable
}

// newCached strips the transport records (OPT, TSIG) from an upstream
// reply and computes how long it may be cached: the smallest TTL of its
// records for a positive answer, the SOA's negative TTL (RFC 2308) for
// NXDOMAIN and NODATA, nothing for other rcodes; capped at maxTTL.
func newCached(m *miekg.Msg, now time.Time, maxTTL time.Duration) *cached {
	c := &cached{rcode: m.Rcode, aa: m.Authoritative, ad: m.AuthenticatedData,
		answer: m.Answer, ns: m.Ns, stored: now}
	for _, rr := range m.Extra {
		switch rr.Header().Rrtype {
		case miekg.TypeOPT, miekg.TypeTSIG:
		default:
			c.extra = append(c.extra, rr)
		}
	}
	ttl := uint32(maxTTL / time.Second)
	switch {
	case m.Rcode == miekg.RcodeSuccess && len(m.Answer) > 0:
		for _, sec := range [][]miekg.RR{c.answer, c.ns, c.extra} {
			for _, rr := range sec {
				ttl = min(ttl, rr.Header().Ttl)
			}
		}
	case m.Rcode == miekg.RcodeSuccess || m.Rcode == miekg.RcodeNameError:
		soa := findSOA(m.Ns)
		if soa == nil {
			ttl = 0
		} else {
			ttl = min(ttl, soa.Hdr.Ttl, soa.Minttl)
		}
	default:
		ttl = 0
	}
	c.ttl = ttl
	return c
}

func findSOA(rrs []miekg.RR) *miekg.SOA {
	for _, rr := range rrs {
		if soa, ok := rr.(*miekg.SOA); ok {
			return soa
		}
	}
	return nil
}

// remaining is how many seconds of validity the answer has left at now.
func (c *cached) remaining(now time.Time) (uint32, bool) {
	age := now.Sub(c.stored)
	if age < 0 {
		age = 0
	}
	secs := uint32(age / time.Second)
	if secs >= c.ttl {
		return 0, false
	}
	return c.ttl - secs, true
}

// withTTL returns copies of rrs whose TTLs are at most ttl.
func withTTL(rrs []miekg.RR, ttl uint32) []miekg.RR {
	if len(rrs) == 0 {
		return nil
	}
	out := make([]miekg.RR, len(rrs))
	for i, rr := range rrs {
		if rr.Header().Ttl > ttl {
			rr = miekg.Copy(rr)
			rr.Header().Ttl = ttl
		}
		out[i] = rr
	}
	return out
}

// cache is a size-bounded LRU of forwarded answers.
type cache struct {
	mu    sync.Mutex
	max   int
	items map[cacheKey]*cacheItem
	lru   cacheItem // sentinel: lru.next is the most recently used
}

type cacheItem struct {
	key        cacheKey
	val        *cached
	prev, next *cacheItem
}

func newCache(size int) *cache {
	c := &cache{max: size, items: make(map[cacheKey]*cacheItem)}
	c.lru.next, c.lru.prev = &c.lru, &c.lru
	return c
}

// get returns a valid answer for key and its remaining TTL.
func (c *cache) get(key cacheKey, now time.Time) (*cached, uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	it := c.items[key]
	if it == nil {
		return nil, 0, false
	}
	ttl, ok := it.val.remaining(now)
	if !ok {
		c.remove(it)
		return nil, 0, false
	}
	c.unlink(it)
	c.pushFront(it)
	return it.val, ttl, true
}

// put stores a cacheable answer, evicting the least recently used one when
// full.
func (c *cache) put(key cacheKey, v *cached) {
	if v.ttl == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if it := c.items[key]; it != nil {
		it.val = v
		c.unlink(it)
		c.pushFront(it)
		return
	}
	for len(c.items) >= c.max && c.lru.prev != &c.lru {
		c.remove(c.lru.prev)
	}
	it := &cacheItem{key: key, val: v}
	c.items[key] = it
	c.pushFront(it)
}

// len returns the number of cached answers.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

func (c *cache) remove(it *cacheItem) {
	c.unlink(it)
	delete(c.items, it.key)
}

func (c *cache) unlink(it *cacheItem) {
	it.prev.next, it.next.prev = it.next, it.prev
	it.prev, it.next = nil, nil
}

func (c *cache) pushFront(it *cacheItem) {
	it.prev, it.next = &c.lru, c.lru.next
	c.lru.next.prev = it
	c.lru.next = it
}
