package main

// Service dataplane benchmarks (benchNFT): netproxy programming 1,000 and
// 10,000 services × 5 endpoints into nftables (cold, in a fresh network
// namespace; at 10,000 the service chains are sharded over 16 tables plus
// the base table), then one endpoint of one service changed at 10,000
// services (one incremental transaction to one shard table);
// side by side, in the same run, the equivalent kube-proxy iptables-mode
// ruleset (KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-*, statistic mode random)
// loaded with iptables-legacy-restore (cold, and a one-service change,
// which kube-proxy's iptables mode applies as a full restore) and
// iptables-nft-restore. Every namespace is created here and removed at the
// end; nothing touches the machine's root namespace.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/netproxy"
)

const (
	nftEndpoints     = 5
	nftChanges       = 50                // netproxy one-endpoint changes timed at 10k
	nftLegacyChanges = 5                 // full iptables-legacy restores timed at 10k
	nftRestoreLimit  = 120 * time.Second // iptables-nft-restore at 10k (NOTES: 762 s)
)

// benchNFT runs the service dataplane benchmarks and adds their rows.
func benchNFT(t *table) error {
	if os.Geteuid() != 0 {
		return errors.New("nft benchmarks need root (network namespaces)")
	}
	cold := map[int]time.Duration{}
	for _, n := range []int{1000, 10000} {
		d, kernel, err := nftNetproxyCold(n)
		if err != nil {
			return fmt.Errorf("netproxy cold %d: %w", n, err)
		}
		cold[n] = d
		fmt.Fprintf(os.Stderr, "  netproxy cold %d services: %s (kernel %s)\n", n, nftDur(d), nftDur(kernel))
	}
	changes, kernelP50, tables, err := nftNetproxyChanges(10000, nftChanges)
	if err != nil {
		return fmt.Errorf("netproxy changes: %w", err)
	}

	legacyCold := map[int]time.Duration{}
	for _, n := range []int{1000, 10000} {
		d, err := nftIptablesCold("iptables-legacy-restore", n, 0)
		if err != nil {
			return fmt.Errorf("iptables-legacy-restore %d: %w", n, err)
		}
		legacyCold[n] = d
	}
	legacyChanges, err := nftIptablesChanges("iptables-legacy-restore", 10000, nftLegacyChanges)
	if err != nil {
		return fmt.Errorf("iptables-legacy-restore changes: %w", err)
	}
	nftCold1k, err := nftIptablesCold("iptables-nft-restore", 1000, 0)
	if err != nil {
		return fmt.Errorf("iptables-nft-restore 1k: %w", err)
	}
	nftCold10k, nftErr := nftIptablesCold("iptables-nft-restore", 10000, nftRestoreLimit)
	nft10k := nftDur(nftCold10k)
	if errors.Is(nftErr, context.DeadlineExceeded) {
		nft10k = fmt.Sprintf("> %.0f s (timed out)", nftRestoreLimit.Seconds())
	} else if nftErr != nil {
		nft10k = "failed: " + nftErr.Error()
	}

	legacyP50 := pct(legacyChanges, 50)
	p50, p99 := pct(changes, 50), pct(changes, 99)
	t.add("netproxy cold: 1,000 services × 5 endpoints (nftables, one transaction)", nftDur(cold[1000]),
		fmt.Sprintf("iptables-legacy-restore here: %s; iptables-nft-restore: %s", nftDur(legacyCold[1000]), nftDur(nftCold1k)))
	t.add("netproxy cold: 10,000 services × 5 endpoints", nftDur(cold[10000]),
		fmt.Sprintf("≤ faster iptables-restore (here: legacy %s, nft %s)", nftDur(legacyCold[10000]), nft10k))
	t.add(fmt.Sprintf("netproxy one endpoint change at 10,000 services (%d changes)", len(changes)),
		fmt.Sprintf("p50 %s  p99 %s  (kernel p50 %s; %d tables; %.0f× faster than legacy)", ms(p50), ms(p99), ms(kernelP50),
			tables, float64(legacyP50)/float64(max(p50, 1))),
		fmt.Sprintf("≤ 20 ms and ≥ 20× faster than legacy (legacy full restore here: p50 %s)", nftDur(legacyP50)))
	t.add("iptables-legacy-restore cold: 1,000 / 10,000 services", nftDur(legacyCold[1000])+" / "+nftDur(legacyCold[10000]),
		"NOTES: 0.07–0.1 s / 1.1 s")
	t.add(fmt.Sprintf("iptables-legacy-restore one-service change at 10,000 (full restore, %d runs)", len(legacyChanges)),
		fmt.Sprintf("p50 %s  max %s", nftDur(legacyP50), nftDur(pct(legacyChanges, 100))), "NOTES: 2.6–3.1 s")
	t.add("iptables-nft-restore cold: 1,000 / 10,000 services", nftDur(nftCold1k)+" / "+nft10k, "NOTES: 0.2–0.3 s / 762 s")
	return nil
}

func nftDur(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return ms(d)
}

// nftNetNS creates a network namespace for one measurement; remove deletes
// it.
func nftNetNS() (name, path string, remove func(), err error) {
	name = fmt.Sprintf("shoal-bench-nft-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", "", nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	return name, "/run/netns/" + name, func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: ip netns del %s: %v: %s\n", name, err, out)
		}
	}, nil
}

// nftServices is n ClusterIP services (10.43.x.y:80) with 5 endpoints each
// (10.42.x.y:8080 and on).
func nftServices(n int) netproxy.Config {
	cfg := netproxy.Config{ClusterCIDR: netip.MustParsePrefix("10.42.0.0/16"), NodeIPs: []netip.Addr{netip.MustParseAddr("192.168.50.1")}}
	for i := 0; i < n; i++ {
		s := netproxy.Service{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i),
			ClusterIPs: []netip.Addr{nftClusterIP(i)}}
		p := netproxy.Port{Name: "http", Protocol: netproxy.TCP, Port: 80}
		for e := 0; e < nftEndpoints; e++ {
			p.Endpoints = append(p.Endpoints, netproxy.Endpoint{IP: nftEndpointIP(i, e), Port: 8080})
		}
		s.Ports = []netproxy.Port{p}
		cfg.Services = append(cfg.Services, s)
	}
	return cfg
}

func nftClusterIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 43, byte(i >> 8), byte(i)}) }

func nftEndpointIP(i, e int) netip.Addr {
	j := i*nftEndpoints + e
	return netip.AddrFrom4([4]byte{10, 42, byte(j >> 8), byte(j)})
}

// nftNetproxyCold times the first Set of n services in a fresh namespace.
func nftNetproxyCold(n int) (total, kernel time.Duration, err error) {
	_, path, remove, err := nftNetNS()
	if err != nil {
		return 0, 0, err
	}
	defer remove()
	p, err := netproxy.New(netproxy.Options{NetNS: path})
	if err != nil {
		return 0, 0, err
	}
	defer p.Close()
	cfg := nftServices(n)
	start := time.Now()
	if err := p.Set(context.Background(), cfg); err != nil {
		return 0, 0, err
	}
	return time.Since(start), p.LastStats().Kernel, nil
}

// nftNetproxyChanges programs n services, then changes one endpoint of one
// service `changes` times, timing each Set; it returns the sorted times,
// the median kernel share and the number of nftables tables netproxy
// spread the services over (base table and shards).
func nftNetproxyChanges(n, changes int) ([]time.Duration, time.Duration, int, error) {
	ns, path, remove, err := nftNetNS()
	if err != nil {
		return nil, 0, 0, err
	}
	defer remove()
	p, err := netproxy.New(netproxy.Options{NetNS: path})
	if err != nil {
		return nil, 0, 0, err
	}
	defer p.Close()
	cfg := nftServices(n)
	if err := p.Set(context.Background(), cfg); err != nil {
		return nil, 0, 0, err
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "tables", "ip").Output()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("listing the tables: %w", err)
	}
	tables := strings.Count(string(out), " "+netproxy.DefaultTable)
	var ds, ks []time.Duration
	for i := 0; i < changes; i++ {
		svc := (i * 7919) % n // a different service each time
		ep := &cfg.Services[svc].Ports[0].Endpoints[i%nftEndpoints]
		ep.IP = netip.AddrFrom4([4]byte{10, 41, byte(i >> 8), byte(i)}) // the pod was replaced
		start := time.Now()
		if err := p.Set(context.Background(), cfg); err != nil {
			return nil, 0, 0, err
		}
		ds = append(ds, time.Since(start))
		st := p.LastStats()
		if st.Full || st.Messages == 0 {
			return nil, 0, 0, fmt.Errorf("change %d was not an incremental update: %+v", i, st)
		}
		ks = append(ks, st.Kernel)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	return ds, pct(ks, 50), tables, nil
}

// nftChain names a kube-proxy chain: prefix + 16 base32 characters of a
// hash, as kube-proxy does.
func nftChain(prefix, key string) string {
	sum := sha256.Sum256([]byte(key))
	return prefix + base32.StdEncoding.EncodeToString(sum[:])[:16]
}

// nftIptablesRules renders kube-proxy's iptables-mode nat ruleset for n
// services × 5 endpoints; changed (≥ 0) replaces one endpoint of that
// service, as nftNetproxyChanges does.
func nftIptablesRules(n, changed int) []byte {
	var b bytes.Buffer
	b.Grow(n * 2600)
	b.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	b.WriteString(":KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n")
	type sep struct{ name, ip string }
	var rules bytes.Buffer
	for i := 0; i < n; i++ {
		svcName := fmt.Sprintf("bench/svc-%d:http", i)
		svcChain := nftChain("KUBE-SVC-", svcName+"tcp")
		fmt.Fprintf(&b, ":%s - [0:0]\n", svcChain)
		var seps []sep
		for e := 0; e < nftEndpoints; e++ {
			ip := nftEndpointIP(i, e)
			if i == changed && e == 0 {
				ip = netip.AddrFrom4([4]byte{10, 41, 0, 1})
			}
			s := sep{nftChain("KUBE-SEP-", svcName+"tcp"+ip.String()), ip.String()}
			seps = append(seps, s)
			fmt.Fprintf(&b, ":%s - [0:0]\n", s.name)
		}
		cip := nftClusterIP(i)
		fmt.Fprintf(&rules, "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport 80 -j %s\n", cip, svcName, svcChain)
		fmt.Fprintf(&rules, "-A %s ! -s 10.42.0.0/16 -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ\n", svcChain, cip, svcName)
		for k, s := range seps {
			if left := nftEndpoints - k; left > 1 {
				fmt.Fprintf(&rules, "-A %s -m comment --comment \"%s -> %s:8080\" -m statistic --mode random --probability %.11f -j %s\n",
					svcChain, svcName, s.ip, 1/float64(left), s.name)
			} else {
				fmt.Fprintf(&rules, "-A %s -m comment --comment \"%s -> %s:8080\" -j %s\n", svcChain, svcName, s.ip, s.name)
			}
			fmt.Fprintf(&rules, "-A %s -s %s/32 -m comment --comment \"%s\" -j KUBE-MARK-MASQ\n", s.name, s.ip, svcName)
			fmt.Fprintf(&rules, "-A %s -p tcp -m comment --comment \"%s\" -m tcp -j DNAT --to-destination %s:8080\n", s.name, svcName, s.ip)
		}
	}
	b.WriteString("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
	b.WriteString("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
	b.WriteString("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n")
	b.WriteString("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n")
	b.WriteString("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n")
	b.WriteString("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n")
	b.WriteString("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n")
	b.Write(rules.Bytes())
	b.WriteString("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n")
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// nftRestore loads rules with the given restore binary inside the
// namespace (limit > 0: killed after limit, returning
// context.DeadlineExceeded).
func nftRestore(ns, bin string, rules []byte, noflush bool, limit time.Duration) (time.Duration, error) {
	ctx := context.Background()
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	args := []string{"netns", "exec", ns, bin}
	if noflush {
		args = append(args, "--noflush")
	}
	cmd := exec.CommandContext(ctx, "ip", args...) // ip netns exec execs bin: the killed PID is ours
	cmd.Stdin = bytes.NewReader(rules)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if ctx.Err() != nil {
		return d, context.DeadlineExceeded
	}
	if err != nil {
		return d, fmt.Errorf("%s: %v: %s", bin, err, strings.TrimSpace(lastLinesOf(stderr.String(), 3)))
	}
	return d, nil
}

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// nftIptablesCold times loading n services into a fresh namespace.
func nftIptablesCold(bin string, n int, limit time.Duration) (time.Duration, error) {
	if _, err := exec.LookPath(bin); err != nil {
		return 0, fmt.Errorf("%s not installed (apt: iptables)", bin)
	}
	ns, _, remove, err := nftNetNS()
	if err != nil {
		return 0, err
	}
	defer remove()
	return nftRestore(ns, bin, nftIptablesRules(n, -1), false, limit)
}

// nftIptablesChanges loads n services, then times `runs` one-service
// changes, each a full restore as kube-proxy's iptables mode does.
func nftIptablesChanges(bin string, n, runs int) ([]time.Duration, error) {
	ns, _, remove, err := nftNetNS()
	if err != nil {
		return nil, err
	}
	defer remove()
	if _, err := nftRestore(ns, bin, nftIptablesRules(n, -1), false, 0); err != nil {
		return nil, err
	}
	var ds []time.Duration
	for i := 0; i < runs; i++ {
		rules := nftIptablesRules(n, (i*7919)%n)
		d, err := nftRestore(ns, bin, rules, true, 0)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds, nil
}
