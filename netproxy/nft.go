package netproxy

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names of the fixed parts of the table.
const (
	setNodeIPs          = "node-ips"
	setHairpin          = "hairpin"
	mapServiceIPs       = "service-ips"
	mapServiceNodePorts = "service-nodeports"
	mapNoEPServices     = "no-endpoint-services"
	mapNoEPNodePorts    = "no-endpoint-nodeports"

	chainNatPrerouting    = "nat-prerouting"
	chainNatOutput        = "nat-output"
	chainNatPostrouting   = "nat-postrouting"
	chainFilterPrerouting = "filter-prerouting"
	chainFilterOutput     = "filter-output"
	chainServices         = "services"
	chainEndpointsCheck   = "endpoints-check"
	chainReject           = "reject-chain"

	// filterPriority runs the no-endpoint check before the dstnat (-100)
	// and filter (0) priorities, after conntrack (-200).
	filterPriority = -110
	// elemBudget bounds the encoded elements of one message: the element
	// list is one netlink attribute, whose length is 16 bits.
	elemBudget = 60000

	icmpPortUnreachable = 3 // ICMP destination unreachable code
)

var (
	keyIPProtoPort = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	keyProtoPort   = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	keyIPIP        = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)
	keyIPIPPort    = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeInetService)
)

// schema names the table and its shared sets for one Proxy.
type schema struct {
	table                                                       *nftables.Table
	nodeIPs, hairpin, serviceIPs, nodePorts, noEPIPs, noEPPorts *nftables.Set
}

func newSchema(table string) *schema {
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}
	vmap := func(id uint32, name string, key nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, ID: id, Name: name, IsMap: true, KeyType: key, DataType: nftables.TypeVerdict,
			Concatenation: true}
	}
	return &schema{
		table:      t,
		nodeIPs:    &nftables.Set{Table: t, ID: 1, Name: setNodeIPs, KeyType: nftables.TypeIPAddr},
		hairpin:    &nftables.Set{Table: t, ID: 2, Name: setHairpin, KeyType: keyIPIP, Concatenation: true},
		serviceIPs: vmap(3, mapServiceIPs, keyIPProtoPort),
		nodePorts:  vmap(4, mapServiceNodePorts, keyProtoPort),
		noEPIPs:    vmap(5, mapNoEPServices, keyIPProtoPort),
		noEPPorts:  vmap(6, mapNoEPNodePorts, keyProtoPort),
	}
}

func (s *schema) chain(name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: s.table}
}

// affinitySet is the dynamic set of sessionAffinity ClientIP entries for
// one service port: client IP . endpoint IP . endpoint port, with the
// affinity timeout.
func (s *schema) affinitySet(name string, timeout time.Duration, id uint32) *nftables.Set {
	return &nftables.Set{Table: s.table, ID: id, Name: name, KeyType: keyIPIPPort, Concatenation: true,
		HasTimeout: true, Timeout: timeout.Round(time.Second), Dynamic: true, Size: 65535}
}

func baseChain(s *schema, name string, typ nftables.ChainType, hook *nftables.ChainHook, prio int32) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: name, Table: s.table, Type: typ, Hooknum: hook,
		Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prio)), Policy: &accept}
}

// skeleton adds the static part of the table: shared sets and maps, base
// chains and the chains they jump to.
func (s *schema) skeleton(t *txn, cidr netip.Prefix) error {
	b := t.nft
	for _, set := range []*nftables.Set{s.nodeIPs, s.hairpin, s.serviceIPs, s.nodePorts, s.noEPIPs, s.noEPPorts} {
		if err := b.AddSet(set, nil); err != nil {
			return err
		}
	}
	chains := []*nftables.Chain{
		baseChain(s, chainNatPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, -100),
		baseChain(s, chainNatOutput, nftables.ChainTypeNAT, nftables.ChainHookOutput, -100),
		baseChain(s, chainNatPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, 100),
		baseChain(s, chainFilterPrerouting, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, filterPriority),
		baseChain(s, chainFilterOutput, nftables.ChainTypeFilter, nftables.ChainHookOutput, filterPriority),
		s.chain(chainServices), s.chain(chainEndpointsCheck), s.chain(chainReject),
	}
	for _, c := range chains {
		b.AddChain(c)
	}
	add := func(chain string, e ...expr.Any) {
		b.AddRule(&nftables.Rule{Table: s.table, Chain: s.chain(chain), Exprs: e})
	}
	jump := func(to string) expr.Any { return &expr.Verdict{Kind: expr.VerdictJump, Chain: to} }
	ctNew := []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
	add(chainNatPrerouting, jump(chainServices))
	add(chainNatOutput, jump(chainServices))
	add(chainFilterPrerouting, append(slices.Clone(ctNew), jump(chainEndpointsCheck))...)
	add(chainFilterOutput, append(slices.Clone(ctNew), jump(chainEndpointsCheck))...)

	// ip daddr . meta l4proto . th dport vmap @M
	ipVmap := func(m string) []expr.Any {
		return []expr.Any{loadDaddr(reg1), loadL4proto(reg32_1), loadDport(reg32_2),
			&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: m}}
	}
	// ip daddr @node-ips meta l4proto . th dport vmap @M
	portVmap := func(m string) []expr.Any {
		return []expr.Any{loadDaddr(reg1), &expr.Lookup{SourceRegister: reg1, SetName: setNodeIPs},
			loadL4proto(reg1), loadDport(reg32_1),
			&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: m}}
	}
	if cidr.IsValid() {
		// ip saddr != CIDR ip daddr . meta l4proto . th dport @service-ips
		//   meta mark set meta mark | 0x4000
		// Traffic to a service from outside the cluster is masqueraded;
		// a membership test of the map here saves a rule in every
		// service chain (externalTrafficPolicy Local chains clear it).
		e := matchSaddr(cidr, false)
		e = append(e, loadDaddr(reg1), loadL4proto(reg32_1), loadDport(reg32_2),
			&expr.Lookup{SourceRegister: reg1, SetName: mapServiceIPs})
		add(chainServices, append(e, setMark(markSet)...)...)
	}
	add(chainServices, ipVmap(mapServiceIPs)...)
	add(chainServices, portVmap(mapServiceNodePorts)...)
	add(chainEndpointsCheck, ipVmap(mapNoEPServices)...)
	add(chainEndpointsCheck, portVmap(mapNoEPNodePorts)...)

	add(chainReject, append(matchProto(TCP), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})...)
	add(chainReject, &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpPortUnreachable})

	// ip saddr . ip daddr @hairpin masquerade fully-random
	add(chainNatPostrouting, loadSaddr(reg1), loadDaddr(reg32_1),
		&expr.Lookup{SourceRegister: reg1, SetName: setHairpin}, &expr.Masq{FullyRandom: true})
	// meta mark & 0x4000 == 0x4000 meta mark set meta mark ^ 0x4000 masquerade fully-random
	add(chainNatPostrouting,
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(masqMark), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(masqMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(0)), Xor: binaryutil.NativeEndian.PutUint32(masqMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
		&expr.Masq{FullyRandom: true})
	return nil
}

// addRules appends a service chain's rules.
func (s *schema) addRules(t *txn, name string, rules []rule) {
	for _, r := range rules {
		t.rule(s.table.Name, name, r)
	}
}

// Element encodings. Concatenated fields are padded to 4 bytes.

func ipPortElem(k ipPortKey) []byte {
	a := k.IP.As4()
	return []byte{a[0], a[1], a[2], a[3], protoNum(k.Proto), 0, 0, 0, byte(k.Port >> 8), byte(k.Port), 0, 0}
}

func protoPortElem(k protoPortKey) []byte {
	return []byte{protoNum(k.Proto), 0, 0, 0, byte(k.Port >> 8), byte(k.Port), 0, 0}
}

func gotoElem(key []byte, chain string) nftables.SetElement {
	return nftables.SetElement{Key: key, VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}}
}

// elemSize estimates an element's encoded size for chunking.
func elemSize(e nftables.SetElement) int {
	n := 24 + len(e.Key)
	if e.VerdictData != nil {
		n += 32 + len(e.VerdictData.Chain)
	}
	return n
}

// addElems adds elements in messages of at most elemBudget bytes each.
func addElems(b *batchBuilder, set *nftables.Set, elems []nftables.SetElement) error {
	return chunk(elems, func(part []nftables.SetElement) error { return b.SetAddElements(set, part) })
}

// delElems deletes elements (only keys matter) in bounded messages.
func delElems(b *batchBuilder, set *nftables.Set, elems []nftables.SetElement) error {
	return chunk(elems, func(part []nftables.SetElement) error { return b.SetDeleteElements(set, part) })
}

func chunk(elems []nftables.SetElement, send func([]nftables.SetElement) error) error {
	start, size := 0, 0
	for i, e := range elems {
		n := elemSize(e)
		if size+n > elemBudget && i > start {
			if err := send(elems[start:i]); err != nil {
				return err
			}
			start, size = i, 0
		}
		size += n
	}
	if start < len(elems) {
		return send(elems[start:])
	}
	return nil
}

func ipPortElems(keys []ipPortKey, target func(ipPortKey) string) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(keys))
	for _, k := range keys {
		out = append(out, gotoElem(ipPortElem(k), target(k)))
	}
	return out
}

func protoPortElems(keys []protoPortKey, target func(protoPortKey) string) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(keys))
	for _, k := range keys {
		out = append(out, gotoElem(protoPortElem(k), target(k)))
	}
	return out
}

func addrElems(addrs []netip.Addr) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, nftables.SetElement{Key: addr4(a)})
	}
	return out
}

func hairpinElems(addrs []netip.Addr) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, nftables.SetElement{Key: append(addr4(a), addr4(a)...)})
	}
	return out
}

func toReject[K any](K) string { return chainReject }

func sortedKeys[K comparable, V any](m map[K]V, cmp func(a, b K) int) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, cmp)
	return out
}

// buildFull encodes a full resync: create the table if missing, delete it
// and build it again from rs, all in one transaction.
func (s *schema) buildFull(t *txn, rs *ruleset) error {
	b := t.nft
	b.AddTable(s.table)
	b.DelTable(s.table)
	b.AddTable(s.table)
	if err := s.skeleton(t, rs.CIDR); err != nil {
		return err
	}
	id := uint32(100)
	for _, name := range sortedKeys(rs.Affinity, strings.Compare) {
		id++
		if err := b.AddSet(s.affinitySet(name, rs.Affinity[name], id), nil); err != nil {
			return err
		}
	}
	names := sortedKeys(rs.Chains, strings.Compare)
	for _, name := range names {
		t.chain(s.table.Name, name)
	}
	for _, name := range names {
		s.addRules(t, name, rs.Chains[name])
	}
	return s.addElements(t, rs.ServiceIPs, rs.NodePorts,
		sortedKeys(rs.ServiceIPs, cmpIPPort), sortedKeys(rs.NodePorts, cmpProtoPort),
		sortedKeys(rs.NoEPIPs, cmpIPPort), sortedKeys(rs.NoEPPorts, cmpProtoPort),
		sortedKeys(rs.NodeIPs, netip.Addr.Compare), sortedKeys(rs.Hairpin, netip.Addr.Compare))
}

// addElements adds the given elements of rs to the shared sets and maps.
func (s *schema) addElements(t *txn, svcTargets map[ipPortKey]string, npTargets map[protoPortKey]string, svcIPs []ipPortKey, nodePorts []protoPortKey,
	noEPIPs []ipPortKey, noEPPorts []protoPortKey, nodeIPs, hairpin []netip.Addr) error {
	for _, step := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{
		{s.serviceIPs, ipPortElems(svcIPs, func(k ipPortKey) string { return svcTargets[k] })},
		{s.nodePorts, protoPortElems(nodePorts, func(k protoPortKey) string { return npTargets[k] })},
		{s.noEPIPs, ipPortElems(noEPIPs, toReject)},
		{s.noEPPorts, protoPortElems(noEPPorts, toReject)},
		{s.nodeIPs, addrElems(nodeIPs)},
		{s.hairpin, hairpinElems(hairpin)},
	} {
		if len(step.elems) == 0 {
			continue
		}
		if err := addElems(t.nft, step.set, step.elems); err != nil {
			return err
		}
	}
	return nil
}

// buildIncremental encodes the change from old to cur. Order matters: map
// elements that point at chains go before the chains, chains are flushed
// (dropping their references to other chains and sets) before anything is
// deleted, and new chains and sets exist before rules and elements refer to
// them.
func (s *schema) buildIncremental(t *txn, st *state, c *change) error {
	b := t.nft
	for _, step := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{
		{s.serviceIPs, ipPortElems(c.DelServiceIPs, toReject)}, // deletes need keys only
		{s.nodePorts, protoPortElems(c.DelNodePorts, toReject)},
		{s.noEPIPs, ipPortElems(c.DelNoEPIPs, toReject)},
		{s.noEPPorts, protoPortElems(c.DelNoEPPorts, toReject)},
		{s.nodeIPs, addrElems(c.DelNodeIPs)},
		{s.hairpin, hairpinElems(c.DelHairpin)},
	} {
		if len(step.elems) == 0 {
			continue
		}
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
	id := uint32(100)
	for _, name := range c.AddSets {
		id++
		if err := b.AddSet(s.affinitySet(name, st.affinity(name), id), nil); err != nil {
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
	return s.addElements(t, st.serviceIPs, st.nodePorts, c.AddServiceIPs, c.AddNodePorts, c.AddNoEPIPs, c.AddNoEPPorts, c.AddNodeIPs, c.AddHairpin)
}

// buildRemove deletes the table (creating it first, so the delete cannot
// fail when it is already gone).
func (s *schema) buildRemove(t *txn) {
	t.nft.AddTable(s.table)
	t.nft.DelTable(s.table)
}
