package dns

import (
	"net/netip"
	"strconv"
	"strings"

	miekg "github.com/miekg/dns"
)

// maxKeyLen bounds the names looked up in a zone's map without allocating:
// a domain name is at most 255 octets on the wire, so its presentation form
// without escapes is at most 254 characters.
const maxKeyLen = 256

// lowerInto writes the ASCII-lower-case form of name into buf and returns
// it, or false when name does not fit.
func lowerInto(buf *[maxKeyLen]byte, name string) ([]byte, bool) {
	if len(name) > len(buf) {
		return nil, false
	}
	b := buf[:len(name)]
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return b, true
}

// lowerASCII lower-cases the ASCII letters of s (DNS names compare
// case-insensitively for ASCII only).
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// canonicalQName returns the lower-case fully qualified presentation form of
// a question name. Escapes (\065, \.) are resolved through the wire form so
// that "\097bc." and "abc." are the same name.
func canonicalQName(name string) (string, bool) {
	name = miekg.Fqdn(name)
	if strings.IndexByte(name, '\\') >= 0 {
		var buf [256]byte
		off, err := miekg.PackDomainName(name, buf[:], 0, nil, false)
		if err != nil {
			return "", false
		}
		s, _, err := miekg.UnpackDomainName(buf[:off], 0)
		if err != nil {
			return "", false
		}
		name = s
	}
	return lowerASCII(name), true
}

// validLabel reports whether s (already lower case) is a DNS-1123 label:
// 1–63 characters of a–z, 0–9 and '-'. Kubernetes object names, namespace
// names, hostnames and port names all satisfy it.
func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// dashedIP is the label Kubernetes DNS derives from an IP: dots (IPv4) or
// colons (IPv6) replaced by dashes, e.g. 10-42-1-5 or fd00--1.
func dashedIP(ip netip.Addr) string {
	s := ip.WithZone("").String()
	if ip.Is4() {
		return strings.ReplaceAll(s, ".", "-")
	}
	return strings.ReplaceAll(s, ":", "-")
}

// parseDashedIP is the inverse of dashedIP, accepting any spelling of an
// IPv6 address (fd00-0-0-0-0-0-0-1 as well as fd00--1).
func parseDashedIP(label string) (netip.Addr, bool) {
	if strings.Count(label, "-") == 3 {
		if ip, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ".")); err == nil && ip.Is4() {
			return ip, true
		}
	}
	ip, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ":"))
	if err != nil || !ip.Is6() || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip, true
}

// normIP returns ip without zone, IPv4-mapped IPv6 addresses unmapped.
func normIP(ip netip.Addr) netip.Addr { return ip.Unmap().WithZone("") }

// reverseName is the PTR owner name of ip (lower case, fully qualified).
func reverseName(ip netip.Addr) string {
	ip = normIP(ip)
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(a[i])))
			b.WriteByte('.')
		}
		b.WriteString("in-addr.arpa.")
		return b.String()
	}
	a := ip.As16()
	const hex = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[a[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString("ip6.arpa.")
	return b.String()
}

// reverseApex is the name of the reverse zone that holds prefix: the longest
// label boundary (8 bits for IPv4, 4 for IPv6) at or above the prefix
// length. aligned reports whether the prefix ends exactly on that boundary,
// so that every name under the apex belongs to the prefix.
func reverseApex(p netip.Prefix) (apex string, aligned bool) {
	p = p.Masked()
	step, suffix := 8, "in-addr.arpa."
	if p.Addr().Is6() {
		step, suffix = 4, "ip6.arpa."
	}
	labels := p.Bits() / step
	aligned = p.Bits()%step == 0
	var parts []string
	if p.Addr().Is4() {
		a := p.Addr().As4()
		for i := 0; i < labels; i++ {
			parts = append(parts, strconv.Itoa(int(a[i])))
		}
	} else {
		a := p.Addr().As16()
		const hex = "0123456789abcdef"
		for i := 0; i < labels; i++ {
			n := a[i/2]
			if i%2 == 0 {
				n >>= 4
			}
			parts = append(parts, string(hex[n&0xf]))
		}
	}
	var b strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteString(parts[i])
		b.WriteByte('.')
	}
	b.WriteString(suffix)
	return b.String(), aligned
}

// parseReverse parses a lower-case reverse name (full or partial, e.g.
// "1.42.10.in-addr.arpa.") into the prefix it names.
func parseReverse(name string) (netip.Prefix, bool) {
	var v6 bool
	switch {
	case strings.HasSuffix(name, ".in-addr.arpa."):
		name = strings.TrimSuffix(name, ".in-addr.arpa.")
	case strings.HasSuffix(name, ".ip6.arpa."):
		name, v6 = strings.TrimSuffix(name, ".ip6.arpa."), true
	default:
		return netip.Prefix{}, false
	}
	labels := strings.Split(name, ".")
	if v6 {
		if len(labels) > 32 {
			return netip.Prefix{}, false
		}
		var a [16]byte
		for i := range labels {
			l := labels[len(labels)-1-i]
			if len(l) != 1 {
				return netip.Prefix{}, false
			}
			n, err := strconv.ParseUint(l, 16, 8)
			if err != nil {
				return netip.Prefix{}, false
			}
			if i%2 == 0 {
				a[i/2] |= byte(n) << 4
			} else {
				a[i/2] |= byte(n)
			}
		}
		return netip.PrefixFrom(netip.AddrFrom16(a), 4*len(labels)), true
	}
	if len(labels) > 4 {
		return netip.Prefix{}, false
	}
	var a [4]byte
	for i := range labels {
		l := labels[len(labels)-1-i]
		n, err := strconv.ParseUint(l, 10, 8)
		if err != nil || (len(l) > 1 && l[0] == '0') {
			return netip.Prefix{}, false
		}
		a[i] = byte(n)
	}
	return netip.PrefixFrom(netip.AddrFrom4(a), 8*len(labels)), true
}

// parent returns the name with its first label removed ("" for the root).
func parent(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 || i == len(name)-1 {
		return ""
	}
	return name[i+1:]
}

// isSubdomain reports whether name equals zone or lies below it (both lower
// case, fully qualified).
func isSubdomain(name, zone string) bool {
	if len(name) == len(zone) {
		return name == zone
	}
	return len(name) > len(zone) && name[len(name)-len(zone)-1] == '.' && name[len(name)-len(zone):] == zone
}

// wireLen is the length of a (valid, escape-free) fully qualified name on
// the wire: one length octet per label plus the root octet.
func wireLen(name string) int {
	if name == "." {
		return 1
	}
	return len(name) + 1
}
