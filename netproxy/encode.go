package netproxy

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// A direct encoder for the messages a full resync sends by the ten
// thousand: service chains and their rules. google/nftables builds the
// same bytes (the tests compare them for every rule shape) but allocates
// a few dozen objects per expression, which made it most of the Go-side
// cost of a cold start at 10,000 services. Everything else (table, sets,
// elements, base chains) still goes through google/nftables.

const (
	nlaHdrLen   = 4
	nlaFNested  = unix.NLA_F_NESTED
	ruleFlags   = netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Echo | unix.NLM_F_APPEND
	chainFlags  = netlink.Request | netlink.Acknowledge | netlink.Create
	msgNewRule  = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWRULE
	msgNewChain = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWCHAIN
)

// nlenc appends netlink attributes (native-endian headers, 4-byte aligned)
// to a buffer.
type nlenc struct{ b []byte }

func (e *nlenc) hdr(typ uint16, n int) {
	e.b = binary.NativeEndian.AppendUint16(e.b, uint16(nlaHdrLen+n))
	e.b = binary.NativeEndian.AppendUint16(e.b, typ)
}

func (e *nlenc) pad() {
	for len(e.b)%4 != 0 {
		e.b = append(e.b, 0)
	}
}

func (e *nlenc) bytes(typ uint16, v []byte) {
	e.hdr(typ, len(v))
	e.b = append(e.b, v...)
	e.pad()
}

func (e *nlenc) str(typ uint16, s string) {
	e.hdr(typ, len(s)+1)
	e.b = append(e.b, s...)
	e.b = append(e.b, 0)
	e.pad()
}

func (e *nlenc) u32(typ uint16, v uint32) {
	e.hdr(typ, 4)
	e.b = binary.BigEndian.AppendUint32(e.b, v)
}

// begin opens a nested attribute; end closes it.
func (e *nlenc) begin(typ uint16) int {
	p := len(e.b)
	e.hdr(nlaFNested|typ, 0)
	return p
}

func (e *nlenc) end(p int) {
	binary.NativeEndian.PutUint16(e.b[p:], uint16(len(e.b)-p))
}

// value is a nested NFTA_DATA_VALUE.
func (e *nlenc) value(typ uint16, v []byte) {
	p := e.begin(typ)
	e.bytes(unix.NFTA_DATA_VALUE, v)
	e.end(p)
}

// expr opens one expression of a rule's list; close it with end twice
// (data, then element).
func (e *nlenc) expr(name string) (elem, data int) {
	elem = e.begin(unix.NFTA_LIST_ELEM)
	e.str(unix.NFTA_EXPR_NAME, name)
	return elem, e.begin(unix.NFTA_EXPR_DATA)
}

func (e *nlenc) done(elem, data int) {
	e.end(data)
	e.end(elem)
}

func (e *nlenc) payload(dreg uint32, base expr.PayloadBase, off, n uint32) {
	el, d := e.expr("payload")
	e.u32(unix.NFTA_PAYLOAD_DREG, dreg)
	e.u32(unix.NFTA_PAYLOAD_BASE, uint32(base))
	e.u32(unix.NFTA_PAYLOAD_OFFSET, off)
	e.u32(unix.NFTA_PAYLOAD_LEN, n)
	e.done(el, d)
}

func (e *nlenc) cmp(op expr.CmpOp, reg uint32, v []byte) {
	el, d := e.expr("cmp")
	e.u32(unix.NFTA_CMP_SREG, reg)
	e.u32(unix.NFTA_CMP_OP, uint32(op))
	e.value(unix.NFTA_CMP_DATA, v)
	e.done(el, d)
}

func (e *nlenc) bitwise(reg uint32, mask, xor []byte) {
	el, d := e.expr("bitwise")
	e.u32(unix.NFTA_BITWISE_SREG, reg)
	e.u32(unix.NFTA_BITWISE_DREG, reg)
	e.u32(unix.NFTA_BITWISE_LEN, uint32(len(mask)))
	e.value(unix.NFTA_BITWISE_MASK, mask)
	e.value(unix.NFTA_BITWISE_XOR, xor)
	e.done(el, d)
}

func (e *nlenc) immediate(dreg uint32, v []byte) {
	el, d := e.expr("immediate")
	e.u32(unix.NFTA_IMMEDIATE_DREG, dreg)
	e.value(unix.NFTA_IMMEDIATE_DATA, v)
	e.done(el, d)
}

func (e *nlenc) verdict(kind expr.VerdictKind, chain string) {
	el, d := e.expr("immediate")
	e.u32(unix.NFTA_IMMEDIATE_DREG, unix.NFT_REG_VERDICT)
	p := e.begin(unix.NFTA_IMMEDIATE_DATA)
	v := e.begin(unix.NFTA_DATA_VERDICT)
	e.u32(unix.NFTA_VERDICT_CODE, uint32(kind))
	if chain != "" {
		e.str(unix.NFTA_VERDICT_CHAIN, chain)
	}
	e.end(v)
	e.end(p)
	e.done(el, d)
}

func (e *nlenc) meta(key expr.MetaKey, reg uint32, set bool) {
	el, d := e.expr("meta")
	e.u32(unix.NFTA_META_KEY, uint32(key))
	if set {
		e.u32(unix.NFTA_META_SREG, reg)
	} else {
		e.u32(unix.NFTA_META_DREG, reg)
	}
	e.done(el, d)
}

func (e *nlenc) lookup(sreg uint32, set string) {
	el, d := e.expr("lookup")
	e.u32(unix.NFTA_LOOKUP_SREG, sreg)
	e.str(unix.NFTA_LOOKUP_SET, set)
	e.u32(unix.NFTA_LOOKUP_SET_ID, 0)
	e.done(el, d)
}

// encodeRule appends a NEWRULE message for r in table/chain; it is
// byte-for-byte what google/nftables builds from ruleExprs(r).
func encodeRule(buf []byte, table, chain string, r rule) []byte {
	e := nlenc{b: append(buf, unix.NFPROTO_IPV4, unix.NFNETLINK_V0, 0, 0)}
	e.str(unix.NFTA_RULE_TABLE, table)
	e.str(unix.NFTA_RULE_CHAIN, chain)
	list := e.begin(unix.NFTA_RULE_EXPRESSIONS)
	switch r.Saddr {
	case saddrIn:
		a := r.Prefix.Addr().As4()
		if bits := r.Prefix.Bits(); bits%8 == 0 {
			e.payload(reg1, expr.PayloadBaseNetworkHeader, 12, uint32(bits/8))
			e.cmp(expr.CmpOpEq, reg1, a[:bits/8])
		} else {
			e.payload(reg1, expr.PayloadBaseNetworkHeader, 12, 4)
			e.bitwise(reg1, binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-bits)), make([]byte, 4))
			e.cmp(expr.CmpOpEq, reg1, a[:])
		}
	case saddrAffinity:
		e.affinityKey(r.DNAT)
		e.lookup(reg1, r.AffSet)
	}
	if r.Numgen != numgenNone {
		typ := uint32(unix.NFT_NG_INCREMENTAL)
		if r.Numgen == numgenRandom {
			typ = unix.NFT_NG_RANDOM
		}
		el, d := e.expr("numgen")
		e.u32(unix.NFTA_NG_DREG, reg1)
		e.u32(unix.NFTA_NG_MODULUS, r.Mod)
		e.u32(unix.NFTA_NG_TYPE, typ)
		e.u32(unix.NFTA_NG_OFFSET, 0)
		e.done(el, d)
		if r.Less == 0 {
			e.cmp(expr.CmpOpEq, reg1, []byte{0, 0, 0, 0})
		} else {
			el, d := e.expr("byteorder")
			e.u32(unix.NFTA_BYTEORDER_SREG, reg1)
			e.u32(unix.NFTA_BYTEORDER_DREG, reg1)
			e.u32(unix.NFTA_BYTEORDER_OP, uint32(expr.ByteorderHton))
			e.u32(unix.NFTA_BYTEORDER_LEN, 4)
			e.u32(unix.NFTA_BYTEORDER_SIZE, 4)
			e.done(el, d)
			e.cmp(expr.CmpOpLt, reg1, binary.BigEndian.AppendUint32(nil, r.Less))
		}
	}
	if r.Mark != markNone {
		xor := uint32(masqMark)
		if r.Mark == markClear {
			xor = 0
		}
		e.meta(expr.MetaKeyMARK, reg1, false)
		e.bitwise(reg1, binary.NativeEndian.AppendUint32(nil, ^uint32(masqMark)), binary.NativeEndian.AppendUint32(nil, xor))
		e.meta(expr.MetaKeyMARK, reg1, true)
	}
	if r.AffUpdate {
		e.affinityKey(r.DNAT)
		el, d := e.expr("dynset")
		e.u32(unix.NFTA_DYNSET_SREG_KEY, reg1)
		e.u32(unix.NFTA_DYNSET_OP, unix.NFT_DYNSET_OP_UPDATE)
		e.str(unix.NFTA_DYNSET_SET_NAME, r.AffSet)
		e.u32(unix.NFTA_DYNSET_SET_ID, 0)
		e.u32(unix.NFTA_DYNSET_FLAGS, 0)
		e.done(el, d)
	}
	if r.DNAT.IsValid() {
		e.immediate(reg1, addr4(r.DNAT.Addr()))
		e.immediate(reg2, port16(r.DNAT.Port()))
		el, d := e.expr("nat")
		e.u32(unix.NFTA_NAT_TYPE, unix.NFT_NAT_DNAT)
		e.u32(unix.NFTA_NAT_FAMILY, unix.NFPROTO_IPV4)
		e.u32(unix.NFTA_NAT_REG_ADDR_MIN, reg1)
		e.u32(unix.NFTA_NAT_REG_ADDR_MAX, reg1)
		e.u32(unix.NFTA_NAT_REG_PROTO_MIN, reg2)
		e.u32(unix.NFTA_NAT_REG_PROTO_MAX, reg2)
		e.u32(unix.NFTA_NAT_FLAGS, unix.NF_NAT_RANGE_PROTO_SPECIFIED)
		e.done(el, d)
	}
	if r.Redirect != 0 {
		e.immediate(reg1, port16(r.Redirect))
		el, d := e.expr("redir")
		e.u32(unix.NFTA_REDIR_REG_PROTO_MIN, reg1)
		e.u32(unix.NFTA_REDIR_FLAGS, unix.NF_NAT_RANGE_PROTO_SPECIFIED)
		e.done(el, d)
	}
	if r.Goto != "" {
		e.verdict(expr.VerdictGoto, r.Goto)
	}
	if r.Drop {
		e.verdict(expr.VerdictDrop, "")
	}
	e.end(list)
	if r.Comment != "" {
		e.bytes(unix.NFTA_RULE_USERDATA, userdata.AppendString(nil, userdata.TypeComment, r.Comment))
	}
	return e.b
}

func (e *nlenc) affinityKey(ep netip.AddrPort) {
	e.payload(reg1, expr.PayloadBaseNetworkHeader, 12, 4)
	e.immediate(reg32_1, addr4(ep.Addr()))
	e.immediate(reg32_2, port16(ep.Port()))
}

// encodeChain appends a NEWCHAIN message for a regular chain.
func encodeChain(buf []byte, table, chain string) []byte {
	e := nlenc{b: append(buf, unix.NFPROTO_IPV4, unix.NFNETLINK_V0, 0, 0)}
	e.str(unix.NFTA_CHAIN_TABLE, table)
	e.str(unix.NFTA_CHAIN_NAME, chain)
	return e.b
}
