package netproxy

import (
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables"
)

// Transactions: a full resync rebuilds the base table and every shard
// table; an incremental update touches the base table only for hairpin
// pairs, node IPs and service ports without endpoints, and only the shard
// tables whose service ports changed (all of them when the node IPs
// change, as each holds a copy).

// ruleSource gives the rules of a service chain and the timeout of an
// affinity set by name: the state (incremental) or a flat view (full).
type ruleSource interface {
	chainRules(name string) []rule
	affinity(set string) time.Duration
}

func (rs *ruleset) chainRules(name string) []rule     { return rs.Chains[name] }
func (rs *ruleset) affinity(set string) time.Duration { return rs.Affinity[set] }

// asChange is rs as a change that adds everything.
func (rs *ruleset) asChange() *change {
	c := &change{
		AddNodeIPs: sortedKeys(rs.NodeIPs, netip.Addr.Compare),
		AddHairpin: sortedKeys(rs.Hairpin, netip.Addr.Compare),
		AddSets:    sortedKeys(rs.Affinity, strings.Compare),
		AddChains:  sortedKeys(rs.Chains, strings.Compare),
	}
	for _, k := range sortedKeys(rs.ServiceIPs, cmpIPPort) {
		c.AddServiceIPs = append(c.AddServiceIPs, ipRef{k, rs.ServiceIPs[k]})
	}
	for _, k := range sortedKeys(rs.NoEPIPs, cmpIPPort) {
		c.AddNoEPIPs = append(c.AddNoEPIPs, ipRef{k, rs.NoEPIPs[k]})
	}
	for _, k := range sortedKeys(rs.NodePorts, cmpProtoPort) {
		c.AddNodePorts = append(c.AddNodePorts, portRef{k, rs.NodePorts[k]})
	}
	for _, k := range sortedKeys(rs.NoEPPorts, cmpProtoPort) {
		c.AddNoEPPorts = append(c.AddNoEPPorts, portRef{k, rs.NoEPPorts[k]})
	}
	return c
}

// splitChange distributes c over n shards: element i is what shard i must
// do (nil: nothing). Node IPs go to every shard; hairpin pairs, the
// no-endpoint elements (base table), the CIDR flag and the UDP flush stay
// with c. Order within each list is kept.
func splitChange(c *change, n int) []*change {
	out := make([]*change, n)
	at := func(ref string) *change {
		i := shardOf(ref, n)
		if out[i] == nil {
			out[i] = &change{}
		}
		return out[i]
	}
	ipRefOf := func(r ipRef) string { return r.Ref }
	portRefOf := func(r portRef) string { return r.Ref }
	name := func(s string) string { return s }
	spread(c.DelServiceIPs, ipRefOf, at, func(d *change) *[]ipRef { return &d.DelServiceIPs })
	spread(c.AddServiceIPs, ipRefOf, at, func(d *change) *[]ipRef { return &d.AddServiceIPs })
	spread(c.DelNodePorts, portRefOf, at, func(d *change) *[]portRef { return &d.DelNodePorts })
	spread(c.AddNodePorts, portRefOf, at, func(d *change) *[]portRef { return &d.AddNodePorts })
	spread(c.DelSets, name, at, func(d *change) *[]string { return &d.DelSets })
	spread(c.AddSets, name, at, func(d *change) *[]string { return &d.AddSets })
	spread(c.FlushChains, name, at, func(d *change) *[]string { return &d.FlushChains })
	spread(c.DelChains, name, at, func(d *change) *[]string { return &d.DelChains })
	spread(c.AddChains, name, at, func(d *change) *[]string { return &d.AddChains })
	if len(c.DelNodeIPs)+len(c.AddNodeIPs) > 0 {
		for i := range out {
			if out[i] == nil {
				out[i] = &change{}
			}
			out[i].DelNodeIPs, out[i].AddNodeIPs = c.DelNodeIPs, c.AddNodeIPs
		}
	}
	return out
}

// spread appends each item of in to the list field picks in the change of
// its shard (at(ref(item))), keeping their order.
func spread[T any](in []T, ref func(T) string, at func(string) *change, field func(*change) *[]T) {
	for _, v := range in {
		l := field(at(ref(v)))
		*l = append(*l, v)
	}
}

// buildFull encodes a full resync over n shards: delete the stale shard
// tables, then create each table if missing, delete it and build it again
// from rs, all in one transaction.
func (s *schema) buildFull(t *txn, rs *ruleset, n int, stale []string) error {
	b := t.nft
	for _, name := range stale {
		tbl := &nftables.Table{Name: name, Family: nftables.TableFamilyIPv4}
		b.AddTable(tbl)
		b.DelTable(tbl)
	}
	b.AddTable(s.base)
	b.DelTable(s.base)
	b.AddTable(s.base)
	if err := s.baseSkeleton(t); err != nil {
		return err
	}
	c := rs.asChange()
	if err := s.applyBase(t, c); err != nil {
		return err
	}
	for i, sc := range splitChange(c, n) {
		sh := s.shard(i)
		b.AddTable(sh.table)
		b.DelTable(sh.table)
		b.AddTable(sh.table)
		if err := sh.skeleton(t, rs.CIDR); err != nil {
			return err
		}
		if sc == nil {
			sc = &change{}
		}
		if err := sh.apply(t, rs, sc); err != nil {
			return err
		}
	}
	return nil
}

// buildIncremental encodes the change c over n shards and returns how many
// shard tables it touches.
func (s *schema) buildIncremental(t *txn, st ruleSource, c *change, n int) (int, error) {
	if err := s.applyBase(t, c); err != nil {
		return 0, err
	}
	touched := 0
	for i, sc := range splitChange(c, n) {
		if sc == nil {
			continue
		}
		touched++
		if err := s.shard(i).apply(t, st, sc); err != nil {
			return 0, err
		}
	}
	return touched, nil
}

// applyBase encodes the base table's part of a change: hairpin pairs, node
// IPs and the no-endpoint elements, deletions first.
func (s *schema) applyBase(t *txn, c *change) error {
	type step struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}
	for _, step := range []step{
		{s.hairpin, hairpinElems(c.DelHairpin)},
		{s.noEPIPs, refElems(c.DelNoEPIPs, ipPortElem, true)}, // deletes need keys only
		{s.noEPPorts, refElems(c.DelNoEPPorts, protoPortElem, true)},
		{s.nodeIPs, addrElems(c.DelNodeIPs)},
	} {
		if err := delElems(t.nft, step.set, step.elems); err != nil {
			return err
		}
	}
	for _, step := range []step{
		{s.hairpin, hairpinElems(c.AddHairpin)},
		{s.nodeIPs, addrElems(c.AddNodeIPs)},
		{s.noEPIPs, refElems(c.AddNoEPIPs, ipPortElem, true)},
		{s.noEPPorts, refElems(c.AddNoEPPorts, protoPortElem, true)},
	} {
		if err := addElems(t.nft, step.set, step.elems); err != nil {
			return err
		}
	}
	return nil
}

// apply encodes one shard's part of a change. Order matters: map elements
// that point at chains go before the chains, chains are flushed (dropping
// their references to other chains and sets) before anything is deleted,
// and new chains and sets exist before rules and elements refer to them.
func (s *shardSchema) apply(t *txn, st ruleSource, c *change) error {
	b := t.nft
	for _, step := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{
		{s.serviceIPs, refElems(c.DelServiceIPs, ipPortElem, false)}, // deletes need keys only
		{s.nodePorts, refElems(c.DelNodePorts, protoPortElem, false)},
		{s.nodeIPs, addrElems(c.DelNodeIPs)},
	} {
		if err := delElems(b, step.set, step.elems); err != nil {
			return err
		}
	}
	for _, name := range c.FlushChains {
		b.FlushChain(s.chain(name))
	}
	for _, name := range c.DelChains {
		b.FlushChain(s.chain(name))
	}
	for _, name := range c.DelChains {
		b.DelChain(s.chain(name))
	}
	for _, name := range c.DelSets {
		b.DelSet(&nftables.Set{Table: s.table, Name: name})
	}
	for _, name := range c.AddSets {
		if err := addSet(t, s.affinitySet(name, st.affinity(name))); err != nil {
			return err
		}
	}
	for _, name := range c.AddChains {
		t.chain(s.table.Name, name)
	}
	for _, name := range c.AddChains {
		s.addRules(t, name, st.chainRules(name))
	}
	for _, name := range c.FlushChains {
		s.addRules(t, name, st.chainRules(name))
	}
	for _, step := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{
		{s.serviceIPs, refElems(c.AddServiceIPs, ipPortElem, false)},
		{s.nodePorts, refElems(c.AddNodePorts, protoPortElem, false)},
		{s.nodeIPs, addrElems(c.AddNodeIPs)},
	} {
		if err := addElems(b, step.set, step.elems); err != nil {
			return err
		}
	}
	return nil
}

// buildRemove deletes the base table and the given shard tables (creating
// each first, so the delete cannot fail when it is already gone).
func (s *schema) buildRemove(t *txn, shards []string) {
	for _, name := range append([]string{s.prefix}, shards...) {
		tbl := &nftables.Table{Name: name, Family: nftables.TableFamilyIPv4}
		t.nft.AddTable(tbl)
		t.nft.DelTable(tbl)
	}
}
