package netproxy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// state is the rendered dataplane, kept per service port so that a Set
// re-renders only the ports whose input changed and computes the
// incremental change as it goes: at 10,000 services, rendering and diffing
// everything on every Set would cost tens of milliseconds.
type state struct {
	gen     uint64
	cidr    netip.Prefix
	nodeIPs map[netip.Addr]struct{}
	ports   map[portIdent]*portEntry
	byHash  map[string]*portEntry

	// Claims on shared keys, resolved to the map elements below: the
	// lowest port ID with endpoints wins; if no claimant has endpoints, the
	// key rejects, in the shard of the lowest claimant.
	ipClaims map[ipPortKey][]claim
	npClaims map[protoPortKey][]claim
	hairpin  map[netip.Addr]int // endpoint IP → local endpoints using it

	serviceIPs map[ipPortKey]string    // → target chain
	noEPIPs    map[ipPortKey]string    // → owner hash
	nodePorts  map[protoPortKey]string // → target chain
	noEPPorts  map[protoPortKey]string // → owner hash

	// last[i] are the entries of Config.Services[i] at the last update, so
	// an unchanged service is recognised by position, without hashing.
	last, spare [][]*portEntry
}

// claim is a port's wish for a shared key: target chain, "" = reject;
// hash is the claiming port's chain hash.
type claim struct {
	id     string
	target string
	hash   string
}

// portEntry is one service port: its input (copied) and its rendering.
type portEntry struct {
	gen  uint64
	svc  Service // without Ports
	port Port
	out  *portOut
}

func newState() *state {
	return &state{
		nodeIPs:    map[netip.Addr]struct{}{},
		ports:      map[portIdent]*portEntry{},
		byHash:     map[string]*portEntry{},
		ipClaims:   map[ipPortKey][]claim{},
		npClaims:   map[protoPortKey][]claim{},
		hairpin:    map[netip.Addr]int{},
		serviceIPs: map[ipPortKey]string{},
		noEPIPs:    map[ipPortKey]string{},
		nodePorts:  map[protoPortKey]string{},
		noEPPorts:  map[protoPortKey]string{},
	}
}

// change is what an incremental transaction does to go from the previous
// state to the new one. Every list is sorted, so transactions are
// deterministic. Elements, chains and sets name the service port whose
// shard holds them; node IPs go to every shard, hairpin pairs to the base
// table.
type change struct {
	CIDR                         bool // the cluster CIDR changed (the skeleton depends on it)
	DelServiceIPs, AddServiceIPs []ipRef
	DelNodePorts, AddNodePorts   []portRef
	DelNoEPIPs, AddNoEPIPs       []ipRef
	DelNoEPPorts, AddNoEPPorts   []portRef
	DelNodeIPs, AddNodeIPs       []netip.Addr
	DelHairpin, AddHairpin       []netip.Addr
	DelSets, AddSets             []string // affinity sets (a changed timeout is both)
	FlushChains                  []string // chains whose rules changed: flushed and refilled
	DelChains, AddChains         []string
	UDP                          *udpFlush // conntrack entries to delete once applied
}

func (c *change) empty() bool {
	return !c.CIDR && len(c.DelServiceIPs)+len(c.AddServiceIPs)+len(c.DelNodePorts)+len(c.AddNodePorts)+
		len(c.DelNoEPIPs)+len(c.AddNoEPIPs)+len(c.DelNoEPPorts)+len(c.AddNoEPPorts)+
		len(c.DelNodeIPs)+len(c.AddNodeIPs)+len(c.DelHairpin)+len(c.AddHairpin)+
		len(c.DelSets)+len(c.AddSets)+len(c.FlushChains)+len(c.DelChains)+len(c.AddChains) == 0
}

// unchanged reports whether svc is exactly what produced entries (one per
// port, all programmed), so none of its ports needs a look.
func (s *state) unchanged(entries []*portEntry, svc *Service) bool {
	if len(entries) != len(svc.Ports) {
		return false
	}
	for j, e := range entries {
		if e == nil || e.gen == s.gen || e.out.WantsProxy || !samePort(&e.port, &svc.Ports[j]) {
			return false
		}
	}
	return len(entries) == 0 || sameService(&entries[0].svc, svc)
}

func sameService(a, b *Service) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.Strategy == b.Strategy &&
		a.AffinityTimeout == b.AffinityTimeout && a.ExternalLocal == b.ExternalLocal && a.InternalLocal == b.InternalLocal &&
		slices.Equal(a.ClusterIPs, b.ClusterIPs) && slices.Equal(a.ExternalIPs, b.ExternalIPs)
}

func samePort(a, b *Port) bool {
	return a.Name == b.Name && a.Protocol == b.Protocol && a.Port == b.Port && a.NodePort == b.NodePort &&
		slices.Equal(a.Endpoints, b.Endpoints)
}

// update brings the state to cfg and returns the change and what was
// skipped (one message per thing, for the caller to log once).
func (s *state) update(cfg Config, redirect redirectFunc) (*change, []string) {
	s.gen++
	var skipped []string
	skip := func(format string, args ...any) { skipped = append(skipped, fmt.Sprintf(format, args...)) }
	u := &updater{s: s, c: &change{UDP: newUDPFlush()}, chains: map[string]chainOp{}, sets: map[string]setOp{},
		ips: map[ipPortKey]bool{}, nps: map[protoPortKey]bool{}, hair: map[netip.Addr]bool{}, skip: skip}

	cidr, msg := normalizeCIDR(cfg.ClusterCIDR)
	if msg != "" {
		skip("%s", msg)
	}
	rerender := cidr != s.cidr
	if rerender {
		u.c.CIDR = true
		s.cidr = cidr
	}
	nodeIPs := make(map[netip.Addr]struct{}, len(cfg.NodeIPs))
	for _, ip := range cfg.NodeIPs {
		if ip4, ok := ipv4(ip); ok {
			nodeIPs[ip4] = struct{}{}
		} else {
			skip("node IP %s: not IPv4", ip)
		}
	}
	u.c.DelNodeIPs, u.c.AddNodeIPs = diffSets(s.nodeIPs, nodeIPs)
	s.nodeIPs = nodeIPs
	u.c.UDP.nodeIPs = nodeIPs

	seen := 0
	last := s.spare[:0]
	for i := range cfg.Services {
		svc := &cfg.Services[i]
		if !rerender && i < len(s.last) && s.unchanged(s.last[i], svc) {
			for _, e := range s.last[i] {
				e.gen = s.gen
			}
			seen += len(s.last[i])
			last = append(last, s.last[i])
			continue
		}
		var entries []*portEntry
		for j := range svc.Ports {
			p := &svc.Ports[j]
			id := identOf(svc, p)
			if !p.Protocol.supported() {
				skip("service port %s: protocol %q not supported (TCP, UDP and SCTP only)", id, p.Protocol)
				entries = append(entries, nil)
				continue
			}
			if p.Port == 0 {
				skip("service port %s: port 0", id)
				entries = append(entries, nil)
				continue
			}
			e := s.ports[id]
			if e != nil && e.gen == s.gen {
				skip("service port %s: listed twice; the first wins", id)
				entries = append(entries, nil)
				continue
			}
			if e != nil && !rerender && !e.out.WantsProxy && sameService(&e.svc, svc) && samePort(&e.port, p) {
				e.gen = s.gen
				seen++
				entries = append(entries, e)
				continue
			}
			hash := id.hash()
			if other := s.byHash[hash]; other != nil && other != e {
				skip("service port %s: chain name svc-%s already used by %s (hash collision); ignored", id, hash, other.out.ID)
				entries = append(entries, nil)
				continue
			}
			ne := &portEntry{gen: s.gen, svc: *svc, port: *p}
			ne.svc.Ports = nil
			ne.svc.ClusterIPs = slices.Clone(svc.ClusterIPs)
			ne.svc.ExternalIPs = slices.Clone(svc.ExternalIPs)
			ne.port.Endpoints = slices.Clone(p.Endpoints)
			ne.out = renderPort(svc, p, id, hash, s.cidr, redirect, skip)
			var old *portOut
			if e != nil {
				old = e.out
			}
			u.replace(old, ne.out)
			s.ports[id] = ne
			s.byHash[hash] = ne
			seen++
			entries = append(entries, ne)
		}
		last = append(last, entries)
	}
	if seen != len(s.ports) {
		for id, e := range s.ports {
			if e.gen != s.gen {
				u.replace(e.out, nil)
				delete(s.ports, id)
				delete(s.byHash, e.out.Hash)
			}
		}
	}
	s.spare, s.last = s.last, last
	u.resolve()
	return u.c, skipped
}

type chainOp uint8

const (
	chainAdd chainOp = iota + 1
	chainFlush
	chainDel
)

type setOp struct{ del, add bool }

// updater accumulates one update's change.
type updater struct {
	s      *state
	c      *change
	chains map[string]chainOp
	sets   map[string]setOp
	ips    map[ipPortKey]bool
	nps    map[protoPortKey]bool
	hair   map[netip.Addr]bool // endpoint IP → was in the hairpin set before
	skip   func(string, ...any)
}

func (u *updater) chain(name string, old, cur []rule) {
	switch {
	case old == nil && cur == nil:
	case old == nil:
		u.chains[name] = chainAdd
	case cur == nil:
		u.chains[name] = chainDel
	case !slices.Equal(old, cur):
		u.chains[name] = chainFlush
	}
}

// replace swaps a port's contribution (old or cur may be nil).
func (u *updater) replace(old, cur *portOut) {
	s := u.s
	var none portOut
	o, n := old, cur
	if o == nil {
		o = &none
	}
	if n == nil {
		n = &none
	}
	hash := o.Hash
	if hash == "" {
		hash = n.Hash
	}
	u.chain("svc-"+hash, o.SvcRules, n.SvcRules)
	u.chain("ext-"+hash, o.ExtRules, n.ExtRules)
	u.chain("int-"+hash, o.IntRules, n.IntRules)
	if o.Affinity != n.Affinity {
		set := "aff-" + hash
		op := u.sets[set]
		if o.Affinity > 0 {
			op.del = true
			// Chains that stay must drop their references to the set
			// before it goes.
			if o.SvcRules != nil && n.SvcRules != nil && u.chains["svc-"+hash] == 0 {
				u.chains["svc-"+hash] = chainFlush
			}
			if o.ExtRules != nil && n.ExtRules != nil && u.chains["ext-"+hash] == 0 {
				u.chains["ext-"+hash] = chainFlush
			}
			if o.IntRules != nil && n.IntRules != nil && u.chains["int-"+hash] == 0 {
				u.chains["int-"+hash] = chainFlush
			}
		}
		if n.Affinity > 0 {
			op.add = true
		}
		u.sets[set] = op
	}
	for _, c := range o.IPs {
		s.ipClaims[c.Key] = dropClaim(s.ipClaims[c.Key], o.ID, c.Target)
		u.ips[c.Key] = true
	}
	for _, c := range n.IPs {
		s.ipClaims[c.Key] = append(s.ipClaims[c.Key], claim{n.ID, c.Target, n.Hash})
		u.ips[c.Key] = true
	}
	if o.NodePort.Port != 0 {
		s.npClaims[o.NodePort] = dropClaim(s.npClaims[o.NodePort], o.ID, o.NodeTarget)
		u.nps[o.NodePort] = true
	}
	if n.NodePort.Port != 0 {
		s.npClaims[n.NodePort] = append(s.npClaims[n.NodePort], claim{n.ID, n.NodeTarget, n.Hash})
		u.nps[n.NodePort] = true
	}
	for _, ip := range o.Hairpin {
		u.noteHairpin(ip)
		if s.hairpin[ip]--; s.hairpin[ip] <= 0 {
			delete(s.hairpin, ip)
		}
	}
	for _, ip := range n.Hairpin {
		u.noteHairpin(ip)
		s.hairpin[ip]++
	}
	u.c.UDP.compare(old, cur)
}

func (u *updater) noteHairpin(ip netip.Addr) {
	if _, seen := u.hair[ip]; !seen {
		u.hair[ip] = u.s.hairpin[ip] > 0
	}
}

func dropClaim(cs []claim, id, target string) []claim {
	for i, c := range cs {
		if c.id == id && c.target == target {
			return slices.Delete(cs, i, i+1)
		}
	}
	return cs
}

// winner resolves a key's claims: the target of the lowest ID with
// endpoints, or "" (reject) if none has endpoints, with the hash of the
// winning port (the owner: its shard holds the element); ok is false
// without claims.
func winner(cs []claim) (target, owner string, ok bool) {
	if len(cs) == 0 {
		return "", "", false
	}
	best, low := -1, 0
	for i, c := range cs {
		if c.target != "" && (best < 0 || c.id < cs[best].id) {
			best = i
		}
		if c.id < cs[low].id {
			low = i
		}
	}
	if best < 0 {
		return "", cs[low].hash, true
	}
	return cs[best].target, cs[best].hash, true
}

// noteConflict reports a key claimed by more than one service port.
func (u *updater) noteConflict(what string, cs []claim) {
	if len(cs) < 2 {
		return
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.id)
	}
	slices.Sort(ids)
	target, _, _ := winner(cs)
	u.skip("%s is claimed by %s; it goes to %q", what, strings.Join(ids, ", "), cmp.Or(target, "reject (no endpoints)"))
}

// resolve turns the touched keys, chains and sets into the change lists.
func (u *updater) resolve() {
	s, c := u.s, u.c
	for k := range u.ips {
		u.noteConflict(k.String(), s.ipClaims[k])
		resolveKey(k, s.ipClaims, s.serviceIPs, s.noEPIPs, &c.DelServiceIPs, &c.AddServiceIPs, &c.DelNoEPIPs, &c.AddNoEPIPs)
	}
	for k := range u.nps {
		u.noteConflict("node port "+k.String(), s.npClaims[k])
		resolveKey(k, s.npClaims, s.nodePorts, s.noEPPorts, &c.DelNodePorts, &c.AddNodePorts, &c.DelNoEPPorts, &c.AddNoEPPorts)
	}
	for ip, was := range u.hair {
		is := s.hairpin[ip] > 0
		switch {
		case was && !is:
			c.DelHairpin = append(c.DelHairpin, ip)
		case !was && is:
			c.AddHairpin = append(c.AddHairpin, ip)
		}
	}
	for name, op := range u.chains {
		switch op {
		case chainAdd:
			c.AddChains = append(c.AddChains, name)
		case chainFlush:
			c.FlushChains = append(c.FlushChains, name)
		case chainDel:
			c.DelChains = append(c.DelChains, name)
		}
	}
	for name, op := range u.sets {
		if op.del {
			c.DelSets = append(c.DelSets, name)
		}
		if op.add {
			c.AddSets = append(c.AddSets, name)
		}
	}
	for _, l := range [][]ipRef{c.DelServiceIPs, c.AddServiceIPs, c.DelNoEPIPs, c.AddNoEPIPs} {
		slices.SortFunc(l, func(a, b ipRef) int { return cmpIPPort(a.Key, b.Key) })
	}
	for _, l := range [][]portRef{c.DelNodePorts, c.AddNodePorts, c.DelNoEPPorts, c.AddNoEPPorts} {
		slices.SortFunc(l, func(a, b portRef) int { return cmpProtoPort(a.Key, b.Key) })
	}
	for _, l := range [][]netip.Addr{c.DelHairpin, c.AddHairpin} {
		slices.SortFunc(l, netip.Addr.Compare)
	}
	for _, l := range [][]string{c.AddChains, c.FlushChains, c.DelChains, c.DelSets, c.AddSets} {
		slices.Sort(l)
	}
}

// resolveKey brings the elements of key k (in the service map svc and the
// reject map rej) in line with its claims, recording what is deleted and
// added. An element whose target or owner changed is deleted and added
// again (perhaps in another shard).
func resolveKey[K comparable](k K, claims map[K][]claim, svc, rej map[K]string, delSvc, addSvc, delRej, addRej *[]elemRef[K]) {
	target, owner, ok := winner(claims[k])
	if !ok {
		delete(claims, k)
	}
	oldT, wasSvc := svc[k]
	oldO, wasRej := rej[k]
	isSvc, isRej := ok && target != "", ok && target == ""
	if wasSvc && (!isSvc || oldT != target) {
		*delSvc = append(*delSvc, elemRef[K]{k, oldT})
		delete(svc, k)
	}
	if wasRej && (!isRej || oldO != owner) {
		*delRej = append(*delRej, elemRef[K]{k, oldO})
		delete(rej, k)
	}
	if isSvc && (!wasSvc || oldT != target) {
		*addSvc = append(*addSvc, elemRef[K]{k, target})
		svc[k] = target
	}
	if isRej && (!wasRej || oldO != owner) {
		*addRej = append(*addRej, elemRef[K]{k, owner})
		rej[k] = owner
	}
}

func diffSets(old, cur map[netip.Addr]struct{}) (del, add []netip.Addr) {
	for a := range old {
		if _, ok := cur[a]; !ok {
			del = append(del, a)
		}
	}
	for a := range cur {
		if _, ok := old[a]; !ok {
			add = append(add, a)
		}
	}
	slices.SortFunc(del, netip.Addr.Compare)
	slices.SortFunc(add, netip.Addr.Compare)
	return del, add
}

func cmpIPPort(a, b ipPortKey) int {
	if c := a.IP.Compare(b.IP); c != 0 {
		return c
	}
	if c := strings.Compare(string(a.Proto), string(b.Proto)); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}

func cmpProtoPort(a, b protoPortKey) int {
	if c := strings.Compare(string(a.Proto), string(b.Proto)); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}

// chainRules returns the rules of a service-level chain of the state.
func (s *state) chainRules(name string) []rule {
	kind, hash, _ := strings.Cut(name, "-")
	e := s.byHash[hash]
	if e == nil {
		return nil
	}
	switch kind {
	case "ext":
		return e.out.ExtRules
	case "int":
		return e.out.IntRules
	}
	return e.out.SvcRules
}

// affinity returns the timeout of an affinity set of the state.
func (s *state) affinity(set string) time.Duration {
	if e := s.byHash[strings.TrimPrefix(set, "aff-")]; e != nil {
		return e.out.Affinity
	}
	return 0
}

// view flattens the state (for the full resync and the tests).
func (s *state) view() *ruleset {
	rs := newRuleset()
	rs.CIDR = s.cidr
	for _, e := range s.byHash {
		o := e.out
		if o.SvcRules != nil {
			rs.Chains["svc-"+o.Hash] = o.SvcRules
		}
		if o.ExtRules != nil {
			rs.Chains["ext-"+o.Hash] = o.ExtRules
		}
		if o.IntRules != nil {
			rs.Chains["int-"+o.Hash] = o.IntRules
		}
		if o.Affinity > 0 && o.SvcRules != nil {
			rs.Affinity["aff-"+o.Hash] = o.Affinity
		}
		if o.LeastConn != nil {
			rs.LeastConn["svc-"+o.Hash] = *o.LeastConn
		}
		if o.UDP != nil {
			rs.UDP["svc-"+o.Hash] = *o.UDP
		}
	}
	for k, v := range s.serviceIPs {
		rs.ServiceIPs[k] = v
	}
	for k, v := range s.nodePorts {
		rs.NodePorts[k] = v
	}
	for k, v := range s.noEPIPs {
		rs.NoEPIPs[k] = v
	}
	for k, v := range s.noEPPorts {
		rs.NoEPPorts[k] = v
	}
	for ip := range s.nodeIPs {
		rs.NodeIPs[ip] = struct{}{}
	}
	for ip := range s.hairpin {
		rs.Hairpin[ip] = struct{}{}
	}
	return rs
}

// render is the pure rendering of a whole Config (tests and benchmarks).
func render(cfg Config, redirect redirectFunc) (*ruleset, []string) {
	s := newState()
	_, skipped := s.update(cfg, redirect)
	return s.view(), skipped
}
