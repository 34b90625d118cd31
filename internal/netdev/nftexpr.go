package netdev

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Expression builders. Everything loads into register 1 and compares there,
// which is how nft(8) compiles the same rules.

const reg = 1

func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func metaCmp(key expr.MetaKey, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg},
		&expr.Cmp{Op: op, Register: reg, Data: data},
	}
}

func iifname(name string) match {
	return match{text: "iifname " + strconv.Quote(name), exprs: metaCmp(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameBytes(name))}
}

func oifname(name string, eq bool) match {
	if eq {
		return match{text: "oifname " + strconv.Quote(name), exprs: metaCmp(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameBytes(name))}
	}
	return match{text: "oifname != " + strconv.Quote(name), exprs: metaCmp(expr.MetaKeyOIFNAME, expr.CmpOpNeq, ifnameBytes(name))}
}

// ifnamePrefix matches interface names starting with prefix, like nft's
// "iifname tap-fc*": the comparison covers only the prefix's bytes.
func ifnamePrefix(key expr.MetaKey, keyText, prefix string) match {
	return match{text: keyText + " " + strconv.Quote(prefix+"*"), exprs: metaCmp(key, expr.CmpOpEq, []byte(prefix))}
}

// ipAddr matches the source or destination address. In an inet table the
// network header may be IPv4 or IPv6, so the family is checked first.
func ipAddr(a netip.Addr, dst bool) match {
	proto, fam, off := byte(unix.NFPROTO_IPV4), "ip", uint32(12)
	if a.Is6() {
		proto, fam, off = unix.NFPROTO_IPV6, "ip6", 8
	}
	dir := "saddr"
	if dst {
		dir = "daddr"
		off += uint32(len(a.AsSlice()))
	}
	ex := metaCmp(expr.MetaKeyNFPROTO, expr.CmpOpEq, []byte{proto})
	ex = append(ex,
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(len(a.AsSlice()))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: a.AsSlice()},
	)
	return match{text: fam + " " + dir + " " + a.String(), exprs: ex}
}

func ipSaddr(a netip.Addr) match { return ipAddr(a, false) }
func ipDaddr(a netip.Addr) match { return ipAddr(a, true) }

func dport(proto uint8, port uint16) match {
	name := "tcp"
	if proto == unix.IPPROTO_UDP {
		name = "udp"
	}
	ex := metaCmp(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{proto})
	ex = append(ex,
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: binaryutil.BigEndian.PutUint16(port)},
	)
	return match{text: fmt.Sprintf("%s dport %d", name, port), exprs: ex}
}

// ctState matches when the connection's state is any of bits; conntrack
// state is a host-endian bitmask.
func ctState(bits uint32, text string) match {
	return match{text: "ct state " + text, exprs: []expr.Any{
		&expr.Ct{Register: reg, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: binaryutil.NativeEndian.PutUint32(0)},
	}}
}

func accept() match {
	return match{text: "accept", exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}}
}

func drop() match {
	return match{text: "drop", exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}}
}

func masquerade() match {
	return match{text: "masquerade", exprs: []expr.Any{&expr.Masq{}}}
}

func payload(base expr.PayloadBase, off, n uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: base, Offset: off, Len: n}
}

func iifnameNot(name string) match {
	return match{text: "iifname != " + fmt.Sprintf("%q", name), exprs: metaCmp(expr.MetaKeyIIFNAME, expr.CmpOpNeq, ifnameBytes(name))}
}

func etherSaddr(mac net.HardwareAddr) match {
	return match{text: "ether saddr " + mac.String(), exprs: []expr.Any{
		payload(expr.PayloadBaseLLHeader, 6, 6),
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte(mac)},
	}}
}

func etherType(t uint16, name string) match {
	return match{text: "ether type " + name, exprs: []expr.Any{
		payload(expr.PayloadBaseLLHeader, 12, 2),
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{byte(t >> 8), byte(t)}},
	}}
}

// bridgeIPSaddr matches the IPv4 source in the bridge family, where the
// ethertype match before it has already said the network header is IPv4.
func bridgeIPSaddr(a netip.Addr) match {
	return match{text: "ip saddr " + a.String(), exprs: []expr.Any{
		payload(expr.PayloadBaseNetworkHeader, 12, 4),
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: a.AsSlice()},
	}}
}

// arpEthIPv4 matches an ARP header for Ethernet and IPv4 (htype 1, ptype
// 0x0800, hlen 6, plen 4), so the sender fields sit where arpSender reads
// them.
func arpEthIPv4() match {
	return match{text: "arp htype 1 arp ptype ip arp hlen 6 arp plen 4", exprs: []expr.Any{
		payload(expr.PayloadBaseNetworkHeader, 0, 6),
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{0, 1, 0x08, 0x00, 6, 4}},
	}}
}

// arpSender matches the sender hardware and protocol addresses, which sit
// next to each other (offsets 8 and 14), in one comparison.
func arpSender(mac net.HardwareAddr, a netip.Addr) match {
	return match{text: "arp saddr ether " + mac.String() + " arp saddr ip " + a.String(), exprs: []expr.Any{
		payload(expr.PayloadBaseNetworkHeader, 8, 10),
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: append(append([]byte{}, mac...), a.AsSlice()...)},
	}}
}

// ipDaddrPrefix matches an IPv4 destination inside p.
func ipDaddrPrefix(p netip.Prefix) match {
	mask := net.CIDRMask(p.Bits(), 32)
	ex := metaCmp(expr.MetaKeyNFPROTO, expr.CmpOpEq, []byte{unix.NFPROTO_IPV4})
	ex = append(ex,
		payload(expr.PayloadBaseNetworkHeader, 16, 4),
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: p.Addr().AsSlice()},
	)
	return match{text: "ip daddr " + p.String(), exprs: ex}
}

// ipSaddrPrefix matches an IPv4 source inside p.
func ipSaddrPrefix(p netip.Prefix) match {
	mask := net.CIDRMask(p.Bits(), 32)
	ex := metaCmp(expr.MetaKeyNFPROTO, expr.CmpOpEq, []byte{unix.NFPROTO_IPV4})
	ex = append(ex,
		payload(expr.PayloadBaseNetworkHeader, 12, 4),
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: p.Masked().Addr().AsSlice()},
	)
	return match{text: "ip saddr " + p.String(), exprs: ex}
}

func jump(chain string) match {
	return match{text: "jump " + chain, exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}}
}

func ret() match {
	return match{text: "return", exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}}
}

func dedupPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	seen := map[netip.Prefix]bool{}
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}
