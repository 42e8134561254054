package netproxy

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Expression building blocks, encoded the way the nft tool encodes the same
// statements, so `nft list` shows them in their usual syntax.

// Registers: reg 1 is the first 16-byte register; a concatenation is laid
// out in its 4-byte parts reg 1 (= 32-bit register 8), 9, 10, …
const (
	reg1    = unix.NFT_REG_1
	reg2    = unix.NFT_REG_2
	reg32_1 = unix.NFT_REG32_01 // second word of reg 1
	reg32_2 = unix.NFT_REG32_02 // third word of reg 1
)

func loadSaddr(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
}

func loadDaddr(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
}

func loadSport(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2}
}

func loadDport(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

func loadL4proto(reg uint32) expr.Any {
	return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg}
}

// protoNum is the IP protocol number of p (the l4proto in map keys and
// matches). Only the protocols state.update lets through reach it; anything
// else would be a bug, and gets 0 (IPPROTO_IP, which no packet's l4proto
// matches) rather than another protocol's number.
func protoNum(p Protocol) byte {
	switch p {
	case TCP:
		return unix.IPPROTO_TCP
	case UDP:
		return unix.IPPROTO_UDP
	case SCTP:
		return unix.IPPROTO_SCTP
	}
	return 0
}

// matchProto is `meta l4proto tcp|udp|sctp`.
func matchProto(p Protocol) []expr.Any {
	return []expr.Any{loadL4proto(reg1), &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{protoNum(p)}}}
}

// matchSaddr is `ip saddr [!=] prefix`.
func matchSaddr(p netip.Prefix, eq bool) []expr.Any {
	op := expr.CmpOpEq
	if !eq {
		op = expr.CmpOpNeq
	}
	a := p.Addr().As4()
	bits := p.Bits()
	if bits%8 == 0 {
		n := uint32(bits / 8)
		return []expr.Any{
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: n},
			&expr.Cmp{Op: op, Register: reg1, Data: a[:n]},
		}
	}
	mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-bits))
	return []expr.Any{
		loadSaddr(reg1),
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: reg1, Data: a[:]},
	}
}

func addr4(a netip.Addr) []byte {
	b := a.As4()
	return b[:]
}

func port16(p uint16) []byte { return binaryutil.BigEndian.PutUint16(p) }

// affinityKey loads `ip saddr . EP . port` into reg 1.
func affinityKey(ep netip.AddrPort) []expr.Any {
	return []expr.Any{
		loadSaddr(reg1),
		&expr.Immediate{Register: reg32_1, Data: addr4(ep.Addr())},
		&expr.Immediate{Register: reg32_2, Data: port16(ep.Port())},
	}
}

// dnat is `dnat to EP`. The protocol needs no match: the maps that lead
// to a service chain are keyed by it.
func dnat(ep netip.AddrPort) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: addr4(ep.Addr())},
		&expr.Immediate{Register: reg2, Data: port16(ep.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4,
			RegAddrMin: reg1, RegAddrMax: reg1, RegProtoMin: reg2, RegProtoMax: reg2, Specified: true},
	}
}

// setMark changes the masquerade mark bit, leaving the others alone:
// `meta mark set meta mark | 0x4000` or `… & 0xffffbfff`.
func setMark(op markOp) []expr.Any {
	xor := uint32(masqMark)
	if op == markClear {
		xor = 0
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(masqMark)), Xor: binaryutil.NativeEndian.PutUint32(xor)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// ruleExprs encodes a service-chain rule.
func ruleExprs(r rule) []expr.Any {
	var e []expr.Any
	switch r.Saddr {
	case saddrIn:
		e = append(e, matchSaddr(r.Prefix, true)...)
	case saddrAffinity:
		e = append(e, affinityKey(r.DNAT)...)
		e = append(e, &expr.Lookup{SourceRegister: reg1, SetName: r.AffSet})
	}
	if r.Numgen != numgenNone {
		typ := uint32(unix.NFT_NG_INCREMENTAL)
		if r.Numgen == numgenRandom {
			typ = unix.NFT_NG_RANDOM
		}
		e = append(e, &expr.Numgen{Register: reg1, Modulus: r.Mod, Type: typ})
		if r.Less == 0 {
			e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: make([]byte, 4)})
		} else {
			// cmp compares bytes: turn the host-order number into network
			// order first, as nft does.
			e = append(e,
				&expr.Byteorder{SourceRegister: reg1, DestRegister: reg1, Op: expr.ByteorderHton, Len: 4, Size: 4},
				&expr.Cmp{Op: expr.CmpOpLt, Register: reg1, Data: binaryutil.BigEndian.PutUint32(r.Less)})
		}
	}
	if r.Mark != markNone {
		e = append(e, setMark(r.Mark)...)
	}
	if r.AffUpdate {
		e = append(e, affinityKey(r.DNAT)...)
		e = append(e, &expr.Dynset{SrcRegKey: reg1, SetName: r.AffSet, Operation: unix.NFT_DYNSET_OP_UPDATE})
	}
	if r.DNAT.IsValid() {
		e = append(e, dnat(r.DNAT)...)
	}
	if r.Redirect != 0 {
		e = append(e,
			&expr.Immediate{Register: reg1, Data: port16(r.Redirect)},
			&expr.Redir{RegisterProtoMin: reg1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED})
	}
	if r.Goto != "" {
		e = append(e, &expr.Verdict{Kind: expr.VerdictGoto, Chain: r.Goto})
	}
	if r.Drop {
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	}
	return e
}

// comment is a rule's user data carrying an nft comment.
func comment(s string) []byte {
	if s == "" {
		return nil
	}
	return userdata.AppendString(nil, userdata.TypeComment, s)
}
