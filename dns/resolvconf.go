package dns

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// UpstreamsFromResolvConf returns the nameservers of a resolv.conf file as
// "ip:53" upstreams (IPv6 as "[ip]:53"), in file order, without duplicates
// and without the excluded addresses (the cluster DNS IP itself, so the
// server never forwards to itself). A file without nameservers gives an
// empty list.
func UpstreamsFromResolvConf(path string, exclude ...netip.Addr) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dns: reading upstreams: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		ip, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue // glibc ignores what it cannot parse, too
		}
		ip = ip.Unmap()
		if slices.ContainsFunc(exclude, func(x netip.Addr) bool { return x.Unmap().WithZone("") == ip.WithZone("") }) {
			continue
		}
		up := netip.AddrPortFrom(ip, 53).String()
		if !slices.Contains(out, up) {
			out = append(out, up)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dns: reading upstreams from %s: %w", path, err)
	}
	return out, nil
}
