package netproxy

import (
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names of the fixed parts of the tables.
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
	chainRawPrerouting    = "raw-prerouting"
	chainRawOutput        = "raw-output"

	// rawPriority is the raw hook priority, before conntrack (-200).
	rawPriority = -300

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

// schema names the tables of one Proxy: the base table (Options.Table)
// with what all services share, and the shard tables prefix_00, prefix_01,
// … with the service chains. Sets cannot be referenced across tables, so
// every shard has its own verdict maps and its own copy of node-ips.
//
// The check for services without endpoints lives in the base table only:
// its filter chains see every packet of the node (the ct state test is
// their first rule), so one pair of them keeps that per-packet cost the
// same at any number of shards. (With a pair per shard — 16 pairs at
// 10,000 services — a node's DNS rate under dnsperf was ~10% lower.)
type schema struct {
	prefix             string
	base               *nftables.Table
	hairpin            *nftables.Set
	nodeIPs            *nftables.Set // the base table's copy, for no-endpoint node ports
	noEPIPs, noEPPorts *nftables.Set
	noTrack            []netip.AddrPort // Options.NoTrack
	shards             []*shardSchema   // created on demand
}

// shardSchema names one shard table and its sets.
type shardSchema struct {
	table                          *nftables.Table
	nodeIPs, serviceIPs, nodePorts *nftables.Set
}

func newSchema(prefix string, noTrack ...netip.AddrPort) *schema {
	t := &nftables.Table{Name: prefix, Family: nftables.TableFamilyIPv4}
	return &schema{prefix: prefix, base: t, noTrack: noTrack,
		hairpin:   &nftables.Set{Table: t, Name: setHairpin, KeyType: keyIPIP, Concatenation: true},
		nodeIPs:   &nftables.Set{Table: t, Name: setNodeIPs, KeyType: nftables.TypeIPAddr},
		noEPIPs:   verdictMap(t, mapNoEPServices, keyIPProtoPort),
		noEPPorts: verdictMap(t, mapNoEPNodePorts, keyProtoPort),
	}
}

// verdictMap is a map from key to a verdict (a goto to a chain).
func verdictMap(t *nftables.Table, name string, key nftables.SetDatatype) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: key, DataType: nftables.TypeVerdict,
		Concatenation: true}
}

// shard returns the names of shard i.
func (s *schema) shard(i int) *shardSchema {
	for len(s.shards) <= i {
		t := &nftables.Table{Name: shardTableName(s.prefix, len(s.shards)), Family: nftables.TableFamilyIPv4}
		s.shards = append(s.shards, &shardSchema{
			table:      t,
			nodeIPs:    &nftables.Set{Table: t, Name: setNodeIPs, KeyType: nftables.TypeIPAddr},
			serviceIPs: verdictMap(t, mapServiceIPs, keyIPProtoPort),
			nodePorts:  verdictMap(t, mapServiceNodePorts, keyProtoPort),
		})
	}
	return s.shards[i]
}

func (s *shardSchema) chain(name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: s.table}
}

// affinitySet is the dynamic set of sessionAffinity ClientIP entries for
// one service port: client IP . endpoint IP . endpoint port, with the
// affinity timeout.
func (s *shardSchema) affinitySet(name string, timeout time.Duration) *nftables.Set {
	return &nftables.Set{Table: s.table, Name: name, KeyType: keyIPIPPort, Concatenation: true,
		HasTimeout: true, Timeout: timeout.Round(time.Second), Dynamic: true, Size: 65535}
}

func baseChain(t *nftables.Table, name string, typ nftables.ChainType, hook *nftables.ChainHook, prio int32) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook,
		Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prio)), Policy: &accept}
}

// addSet queues a new set with an ID unique in the transaction.
func addSet(t *txn, set *nftables.Set) error {
	set.ID = t.setID()
	return t.nft.AddSet(set, nil)
}

// baseSkeleton adds the base table's content: the hairpin set and
// nat-postrouting, which masquerades hairpin traffic and packets the shard
// chains marked (the packet mark travels with the packet from table to
// table).
func (s *schema) baseSkeleton(t *txn) error {
	b := t.nft
	if err := addSet(t, s.hairpin); err != nil {
		return err
	}
	post := baseChain(s.base, chainNatPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, 100)
	b.AddChain(post)
	add := func(e ...expr.Any) { b.AddRule(&nftables.Rule{Table: s.base, Chain: post, Exprs: e}) }
	// ip saddr . ip daddr @hairpin ct status dnat masquerade fully-random
	//
	// Only connections a service rule DNATed: a node's own address is a
	// hairpin pair too (the kubernetes service's endpoint on this node), and
	// without the status test a connection from the node to itself that
	// was open before these rules existed was masqueraded mid-stream when
	// conntrack picked it up (its next packets came from a new port, and
	// `shoal image import` to a node that had just started saw its
	// connection reset).
	add(loadSaddr(reg1), loadDaddr(reg32_1),
		&expr.Lookup{SourceRegister: reg1, SetName: setHairpin},
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ctStatusDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
		&expr.Masq{FullyRandom: true})
	// meta mark & 0x4000 == 0x4000 meta mark set meta mark ^ 0x4000 masquerade fully-random
	add(&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(masqMark), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(masqMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(0)), Xor: binaryutil.NativeEndian.PutUint32(masqMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
		&expr.Masq{FullyRandom: true})
	if err := s.endpointsCheck(t); err != nil {
		return err
	}
	s.noTrackChains(t)
	return nil
}

// endpointsCheck adds the rejection of new connections to service ports
// without endpoints: node-ips and the two no-endpoint maps, whose elements
// go to reject-chain, and the filter chains that look them up.
//
//	filter-prerouting, filter-output: ct state new jump endpoints-check
//	endpoints-check: ip daddr . meta l4proto . th dport vmap @no-endpoint-services
//	                 ip daddr @node-ips meta l4proto . th dport vmap @no-endpoint-nodeports
//	reject-chain:    meta l4proto tcp reject with tcp reset
//	                 reject (ICMP port unreachable)
//
// Only TCP gets a reset: UDP and SCTP get the ICMP port unreachable of the
// second rule (what `reject with icmpx port-unreachable` sends in an inet
// table), which an SCTP stack takes as a refusal of its INIT; nftables
// cannot send an SCTP ABORT, and a TCP reset means nothing to SCTP.
func (s *schema) endpointsCheck(t *txn) error {
	b := t.nft
	for _, set := range []*nftables.Set{s.nodeIPs, s.noEPIPs, s.noEPPorts} {
		if err := addSet(t, set); err != nil {
			return err
		}
	}
	chain := func(name string) *nftables.Chain { return &nftables.Chain{Name: name, Table: s.base} }
	for _, c := range []*nftables.Chain{
		baseChain(s.base, chainFilterPrerouting, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, filterPriority),
		baseChain(s.base, chainFilterOutput, nftables.ChainTypeFilter, nftables.ChainHookOutput, filterPriority),
		chain(chainEndpointsCheck), chain(chainReject),
	} {
		b.AddChain(c)
	}
	add := func(name string, e ...expr.Any) {
		b.AddRule(&nftables.Rule{Table: s.base, Chain: chain(name), Exprs: e})
	}
	add(chainFilterPrerouting, append(ctNew(), jump(chainEndpointsCheck))...)
	add(chainFilterOutput, append(ctNew(), jump(chainEndpointsCheck))...)
	add(chainEndpointsCheck, ipVmap(mapNoEPServices)...)
	add(chainEndpointsCheck, portVmap(mapNoEPNodePorts)...)
	add(chainReject, append(matchProto(TCP), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})...)
	add(chainReject, &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpPortUnreachable})
	return nil
}

func jump(to string) expr.Any { return &expr.Verdict{Kind: expr.VerdictJump, Chain: to} }

// ctNew matches packets that open a connection: ct state new.
func ctNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

// ipVmap: ip daddr . meta l4proto . th dport vmap @m
func ipVmap(m string) []expr.Any {
	return []expr.Any{loadDaddr(reg1), loadL4proto(reg32_1), loadDport(reg32_2),
		&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: m}}
}

// portVmap: ip daddr @node-ips meta l4proto . th dport vmap @m
func portVmap(m string) []expr.Any {
	return []expr.Any{loadDaddr(reg1), &expr.Lookup{SourceRegister: reg1, SetName: setNodeIPs},
		loadL4proto(reg1), loadDport(reg32_1),
		&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: m}}
}

// noTrackChains adds, when there are Options.NoTrack services, the raw
// chains that exempt their UDP traffic from connection tracking:
//
//	raw-prerouting: ip daddr A udp dport P notrack        (queries from pods)
//	raw-output:     ip daddr A udp dport P notrack        (queries from the node)
//	                ip saddr A udp sport P notrack        (the answers)
func (s *schema) noTrackChains(t *txn) {
	if len(s.noTrack) == 0 {
		return
	}
	b := t.nft
	pre := baseChain(s.base, chainRawPrerouting, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, rawPriority)
	out := baseChain(s.base, chainRawOutput, nftables.ChainTypeFilter, nftables.ChainHookOutput, rawPriority)
	b.AddChain(pre)
	b.AddChain(out)
	match := func(ap netip.AddrPort, src bool) []expr.Any {
		addr, port := loadDaddr(reg1), loadDport(reg1)
		if src {
			addr, port = loadSaddr(reg1), loadSport(reg1)
		}
		e := []expr.Any{addr, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: addr4(ap.Addr())}}
		e = append(e, matchProto(UDP)...)
		return append(e, port, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: port16(ap.Port())}, &expr.Notrack{})
	}
	for _, ap := range s.noTrack {
		if !ap.Addr().Is4() {
			continue
		}
		b.AddRule(&nftables.Rule{Table: s.base, Chain: pre, Exprs: match(ap, false)})
		b.AddRule(&nftables.Rule{Table: s.base, Chain: out, Exprs: match(ap, false)})
		b.AddRule(&nftables.Rule{Table: s.base, Chain: out, Exprs: match(ap, true)})
	}
}

// skeleton adds the static part of a shard table: its sets and maps, base
// chains and the chain they jump to.
func (s *shardSchema) skeleton(t *txn, cidr netip.Prefix) error {
	b := t.nft
	for _, set := range []*nftables.Set{s.nodeIPs, s.serviceIPs, s.nodePorts} {
		if err := addSet(t, set); err != nil {
			return err
		}
	}
	for _, c := range []*nftables.Chain{
		baseChain(s.table, chainNatPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, -100),
		baseChain(s.table, chainNatOutput, nftables.ChainTypeNAT, nftables.ChainHookOutput, -100),
		s.chain(chainServices),
	} {
		b.AddChain(c)
	}
	add := func(chain string, e ...expr.Any) {
		b.AddRule(&nftables.Rule{Table: s.table, Chain: s.chain(chain), Exprs: e})
	}
	add(chainNatPrerouting, jump(chainServices))
	add(chainNatOutput, jump(chainServices))
	if cidr.IsValid() {
		// ip saddr != CIDR ip daddr . meta l4proto . th dport @service-ips
		//   meta mark set meta mark | 0x4000
		// Traffic to a service from outside the cluster is masqueraded;
		// a membership test of the map here saves a rule in every
		// service chain (externalTrafficPolicy Local chains clear it).
		// Only the shard holding the address's element matches.
		e := matchSaddr(cidr, false)
		e = append(e, loadDaddr(reg1), loadL4proto(reg32_1), loadDport(reg32_2),
			&expr.Lookup{SourceRegister: reg1, SetName: mapServiceIPs})
		add(chainServices, append(e, setMark(markSet)...)...)
	}
	add(chainServices, ipVmap(mapServiceIPs)...)
	add(chainServices, portVmap(mapServiceNodePorts)...)
	return nil
}

// addRules appends a service chain's rules.
func (s *shardSchema) addRules(t *txn, name string, rules []rule) {
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

// refElems turns map elements into set elements: to the chain they name
// (service maps) or, with reject, to reject-chain.
func refElems[K comparable](refs []elemRef[K], encode func(K) []byte, reject bool) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(refs))
	for _, r := range refs {
		to := r.Ref
		if reject {
			to = chainReject
		}
		out = append(out, gotoElem(encode(r.Key), to))
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

func sortedKeys[K comparable, V any](m map[K]V, cmp func(a, b K) int) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, cmp)
	return out
}
