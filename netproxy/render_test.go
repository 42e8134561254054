package netproxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestChainNamesAreStable pins the naming scheme: chain names must not
// change between versions, or an upgraded agent would rebuild every chain.
func TestChainNamesAreStable(t *testing.T) {
	for _, c := range []struct {
		svc  Service
		port Port
		want string
	}{
		{Service{Namespace: "default", Name: "web"}, Port{Name: "http", Protocol: TCP, Port: 80}, "PK5WNJDG7Q"},
		{Service{Namespace: "default", Name: "dns"}, Port{Protocol: UDP, Port: 53}, "JHCB6HKBBE"},
	} {
		if got := identOf(&c.svc, &c.port).hash(); got != c.want {
			t.Errorf("hash of %s/%s %+v = %s, want %s", c.svc.Namespace, c.svc.Name, c.port, got, c.want)
		}
	}
	a := identOf(&Service{Namespace: "a", Name: "b"}, &Port{Name: "p", Protocol: TCP, Port: 1})
	b := identOf(&Service{Namespace: "a", Name: "b"}, &Port{Name: "p", Protocol: TCP, Port: 2})
	if a.hash() != b.hash() {
		t.Error("a named port's chain name changed with its number: renumbering would rebuild the chain under a new name")
	}
	c := identOf(&Service{Namespace: "a", Name: "b"}, &Port{Name: "p", Protocol: UDP, Port: 1})
	if a.hash() == c.hash() {
		t.Error("TCP and UDP ports of one name share a chain name")
	}
	d := identOf(&Service{Namespace: "a", Name: "b"}, &Port{Name: "p", Protocol: SCTP, Port: 1})
	if d.hash() == a.hash() || d.hash() == c.hash() {
		t.Error("an SCTP port shares a chain name with a TCP or UDP port of the same name")
	}
}

const (
	web     = "PK5WNJDG7Q" // default/web:http/TCP
	webSCTP = "BVUGVNBA7E" // default/web:assoc/SCTP
)

func webService(eps ...Endpoint) Service {
	return Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{a4("10.43.0.10")},
		Ports: []Port{{Name: "http", Protocol: TCP, Port: 80, Endpoints: eps}}}
}

func TestRender(t *testing.T) {
	three := []Endpoint{ep("10.42.0.2", 8080), ep("10.42.0.3", 8080), ep("10.42.0.4", 8080)}
	cases := []struct {
		name    string
		cfg     Config
		want    string
		skipped []string
	}{{
		name: "round robin: the nth trick",
		cfg:  Config{ClusterCIDR: cidr, Services: []Service{webService(three...)}},
		want: `chain svc-PK5WNJDG7Q:
  numgen inc mod 3 0 dnat to 10.42.0.2:8080 comment "default/web:http/tcp"
  numgen inc mod 2 0 dnat to 10.42.0.3:8080
  dnat to 10.42.0.4:8080
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
`,
	}, {
		name: "one endpoint",
		cfg:  Config{Services: []Service{webService(ep("10.42.0.2", 8080))}},
		want: `chain svc-PK5WNJDG7Q:
  dnat to 10.42.0.2:8080 comment "default/web:http/tcp"
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
`,
	}, {
		name: "random",
		cfg: func() Config {
			s := webService(three...)
			s.Strategy = Random
			return Config{Services: []Service{s}}
		}(),
		want: `chain svc-PK5WNJDG7Q:
  numgen random mod 3 0 dnat to 10.42.0.2:8080 comment "default/web:http/tcp"
  numgen random mod 2 0 dnat to 10.42.0.3:8080
  dnat to 10.42.0.4:8080
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
`,
	}, {
		name: "weighted: rule k takes W_k of the remaining weight; weight 0 counts as 1",
		cfg: func() Config {
			s := webService(Endpoint{IP: a4("10.42.0.2"), Port: 8080, Weight: 3}, Endpoint{IP: a4("10.42.0.3"), Port: 8080},
				Endpoint{IP: a4("10.42.0.4"), Port: 8080, Weight: 2})
			s.Strategy = Weighted
			return Config{Services: []Service{s}}
		}(),
		want: `chain svc-PK5WNJDG7Q:
  numgen inc mod 6 < 3 dnat to 10.42.0.2:8080 comment "default/web:http/tcp"
  numgen inc mod 3 < 1 dnat to 10.42.0.3:8080
  dnat to 10.42.0.4:8080
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
`,
	}, {
		name: "session affinity: known clients first, every pick recorded",
		cfg: func() Config {
			s := webService(ep("10.42.0.2", 8080), ep("10.42.0.3", 8080))
			s.AffinityTimeout = 3 * time.Hour
			return Config{Services: []Service{s}}
		}(),
		want: `chain svc-PK5WNJDG7Q:
  ip saddr . 10.42.0.2 . 8080 @aff-PK5WNJDG7Q update @aff-PK5WNJDG7Q { ip saddr . 10.42.0.2 . 8080 } dnat to 10.42.0.2:8080 comment "default/web:http/tcp"
  ip saddr . 10.42.0.3 . 8080 @aff-PK5WNJDG7Q update @aff-PK5WNJDG7Q { ip saddr . 10.42.0.3 . 8080 } dnat to 10.42.0.3:8080
  numgen inc mod 2 0 update @aff-PK5WNJDG7Q { ip saddr . 10.42.0.2 . 8080 } dnat to 10.42.0.2:8080
  update @aff-PK5WNJDG7Q { ip saddr . 10.42.0.3 . 8080 } dnat to 10.42.0.3:8080
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
set aff-PK5WNJDG7Q timeout 3h0m0s
`,
	}, {
		name: "node port, Cluster policy: mark for masquerade, then the service chain",
		cfg: func() Config {
			s := webService(ep("10.42.0.2", 8080), localEP("10.42.0.3", 8080))
			s.Ports[0].NodePort = 30080
			return Config{ClusterCIDR: cidr, NodeIPs: []netip.Addr{a4("192.168.1.10"), a4("fd00::1")}, Services: []Service{s}}
		}(),
		want: `chain ext-PK5WNJDG7Q:
  meta mark set meta mark | 0x00004000 goto svc-PK5WNJDG7Q comment "default/web:http/tcp"
chain svc-PK5WNJDG7Q:
  numgen inc mod 2 0 dnat to 10.42.0.2:8080 comment "default/web:http/tcp"
  dnat to 10.42.0.3:8080
hairpin 10.42.0.3 . 10.42.0.3
node-ips 192.168.1.10
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
service-nodeports tcp . 30080 : goto ext-PK5WNJDG7Q
`,
		skipped: []string{"node IP fd00::1: not IPv4"},
	}, {
		name: "external IP, Local policy: unmarked, pods get Cluster, others the local endpoints",
		cfg: func() Config {
			s := webService(ep("10.42.1.2", 8080), localEP("10.42.0.3", 8080), localEP("10.42.0.4", 8080))
			s.ExternalIPs = []netip.Addr{a4("192.168.1.100")}
			s.ExternalLocal = true
			return Config{ClusterCIDR: cidr, Services: []Service{s}}
		}(),
		want: `chain ext-PK5WNJDG7Q:
  meta mark set meta mark & 0xffffbfff comment "default/web:http/tcp"
  ip saddr 10.42.0.0/16 goto svc-PK5WNJDG7Q
  numgen inc mod 2 0 dnat to 10.42.0.3:8080
  dnat to 10.42.0.4:8080
chain svc-PK5WNJDG7Q:
  numgen inc mod 3 0 dnat to 10.42.1.2:8080 comment "default/web:http/tcp"
  numgen inc mod 2 0 dnat to 10.42.0.3:8080
  dnat to 10.42.0.4:8080
hairpin 10.42.0.3 . 10.42.0.3
hairpin 10.42.0.4 . 10.42.0.4
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
service-ips 192.168.1.100 . tcp . 80 : goto ext-PK5WNJDG7Q
`,
	}, {
		name: "Local policy without local endpoints drops external traffic (no CIDR: no pod short-circuit)",
		cfg: func() Config {
			s := webService(ep("10.42.1.2", 8080))
			s.Ports[0].NodePort = 30080
			s.ExternalLocal = true
			return Config{Services: []Service{s}}
		}(),
		want: `chain ext-PK5WNJDG7Q:
  meta mark set meta mark & 0xffffbfff comment "default/web:http/tcp"
  drop
chain svc-PK5WNJDG7Q:
  dnat to 10.42.1.2:8080 comment "default/web:http/tcp"
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
service-nodeports tcp . 30080 : goto ext-PK5WNJDG7Q
`,
	}, {
		name: "no endpoints: rejected through the no-endpoint maps, no chains",
		cfg: func() Config {
			s := webService()
			s.Ports[0].NodePort = 30080
			s.ExternalIPs = []netip.Addr{a4("192.168.1.100")}
			return Config{ClusterCIDR: cidr, Services: []Service{s}}
		}(),
		want: `no-endpoint-nodeports tcp . 30080 (owner PK5WNJDG7Q)
no-endpoint-services 10.43.0.10 . tcp . 80 (owner PK5WNJDG7Q)
no-endpoint-services 192.168.1.100 . tcp . 80 (owner PK5WNJDG7Q)
`,
	}, {
		name: "several ports without endpoints claim one address: the lowest ID owns the reject (its shard holds it)",
		cfg: Config{Services: []Service{
			{Namespace: "b", Name: "second", ClusterIPs: []netip.Addr{a4("10.43.0.10")},
				Ports: []Port{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080}}},
			{Namespace: "a", Name: "first", ClusterIPs: []netip.Addr{a4("10.43.0.10")},
				Ports: []Port{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080}}},
		}},
		want: `no-endpoint-nodeports tcp . 30080 (owner WTMMNZMXEX)
no-endpoint-services 10.43.0.10 . tcp . 80 (owner WTMMNZMXEX)
`,
		skipped: []string{
			`10.43.0.10 . tcp . 80 is claimed by a/first:http/tcp, b/second:http/tcp; it goes to "reject (no endpoints)"`,
			`node port tcp . 30080 is claimed by a/first:http/tcp, b/second:http/tcp; it goes to "reject (no endpoints)"`,
		},
	}, {
		name: "least connections: the chains redirect to the TCP and UDP proxies",
		cfg: Config{Services: []Service{{
			Namespace: "default", Name: "web", Strategy: LeastConn, ClusterIPs: []netip.Addr{a4("10.43.0.10")},
			Ports: []Port{
				{Name: "http", Protocol: TCP, Port: 80, Endpoints: three[:2]},
				{Name: "dns", Protocol: UDP, Port: 53, Endpoints: []Endpoint{ep("10.42.0.2", 53), ep("10.42.0.3", 53)}},
			},
		}}},
		want: `chain svc-PK5WNJDG7Q:
  redirect to :40000 comment "default/web:http/tcp"
chain svc-TZVDRAGU6A:
  redirect to :40001 comment "default/web:dns/udp"
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
service-ips 10.43.0.10 . udp . 53 : goto svc-TZVDRAGU6A
`,
	}, {
		name: "SCTP beside TCP on one port number and node port: keys of their own; least-conn SCTP is round robin",
		cfg: Config{ClusterCIDR: cidr, NodeIPs: []netip.Addr{a4("192.168.1.10")}, Services: []Service{{
			Namespace: "default", Name: "web", Strategy: LeastConn, ClusterIPs: []netip.Addr{a4("10.43.0.10")},
			Ports: []Port{
				{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080, Endpoints: three[:2]},
				{Name: "assoc", Protocol: SCTP, Port: 80, NodePort: 30080, Endpoints: three[1:]},
			},
		}}},
		want: `chain ext-` + webSCTP + `:
  meta mark set meta mark | 0x00004000 goto svc-` + webSCTP + ` comment "default/web:assoc/sctp"
chain ext-PK5WNJDG7Q:
  meta mark set meta mark | 0x00004000 goto svc-PK5WNJDG7Q comment "default/web:http/tcp"
chain svc-` + webSCTP + `:
  numgen inc mod 2 0 dnat to 10.42.0.3:8080 comment "default/web:assoc/sctp"
  dnat to 10.42.0.4:8080
chain svc-PK5WNJDG7Q:
  redirect to :40000 comment "default/web:http/tcp"
node-ips 192.168.1.10
service-ips 10.43.0.10 . sctp . 80 : goto svc-` + webSCTP + `
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
service-nodeports sctp . 30080 : goto ext-` + webSCTP + `
service-nodeports tcp . 30080 : goto ext-PK5WNJDG7Q
`,
		skipped: []string{"service port default/web:assoc/sctp: least-conn is not available for SCTP, using round robin"},
	}, {
		name: "SCTP without endpoints is rejected on its own keys; TCP on the same port number is served",
		cfg: Config{Services: []Service{{
			Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{a4("10.43.0.10")},
			Ports: []Port{
				{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080, Endpoints: three[:1]},
				{Name: "assoc", Protocol: SCTP, Port: 80, NodePort: 30080},
			},
		}}},
		want: `chain ext-PK5WNJDG7Q:
  meta mark set meta mark | 0x00004000 goto svc-PK5WNJDG7Q comment "default/web:http/tcp"
chain svc-PK5WNJDG7Q:
  dnat to 10.42.0.2:8080 comment "default/web:http/tcp"
no-endpoint-nodeports sctp . 30080 (owner ` + webSCTP + `)
no-endpoint-services 10.43.0.10 . sctp . 80 (owner ` + webSCTP + `)
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
service-nodeports tcp . 30080 : goto ext-PK5WNJDG7Q
`,
	}, {
		name: "what cannot be programmed is skipped",
		cfg: Config{ClusterCIDR: netip.MustParsePrefix("fd00::/64"), Services: []Service{
			{Namespace: "v6", Name: "only", ClusterIPs: []netip.Addr{a4("fd00::10")},
				Ports: []Port{{Protocol: TCP, Port: 80, Endpoints: []Endpoint{ep("fd00::2", 80)}}}},
			{Namespace: "default", Name: "dccp", ClusterIPs: []netip.Addr{a4("10.43.0.20")},
				Ports: []Port{{Protocol: "DCCP", Port: 9, Endpoints: three}, {Name: "zero", Protocol: TCP}}},
			{Namespace: "default", Name: "web", Strategy: "fastest", ClusterIPs: []netip.Addr{a4("fd00::10"), a4("10.43.0.10")},
				Ports: []Port{{Name: "http", Protocol: TCP, Port: 80, Endpoints: []Endpoint{ep("fd00::2", 80), ep("10.42.0.2", 0), ep("10.42.0.3", 8080)}}}},
		}},
		want: `chain svc-PK5WNJDG7Q:
  dnat to 10.42.0.3:8080 comment "default/web:http/tcp"
service-ips 10.43.0.10 . tcp . 80 : goto svc-PK5WNJDG7Q
`,
		skipped: []string{
			"cluster CIDR fd00::/64: not IPv4, nothing is masqueraded by source",
			"service port v6/only:80/tcp: endpoint fd00::2 port 80: not an IPv4 address and port",
			`service port default/dccp:9/dccp: protocol "DCCP" not supported (TCP, UDP and SCTP only)`,
			"service port default/dccp:zero/tcp: port 0",
			"service port default/web:http/tcp: endpoint fd00::2 port 80: not an IPv4 address and port",
			"service port default/web:http/tcp: endpoint 10.42.0.2 port 0: not an IPv4 address and port",
			`service port default/web:http/tcp: unknown strategy "fastest", using round robin`,
		},
	}, {
		name: "two services claim one address: the lower ID with endpoints wins",
		cfg: Config{Services: []Service{
			{Namespace: "b", Name: "second", ClusterIPs: []netip.Addr{a4("10.43.0.10")},
				Ports: []Port{{Name: "http", Protocol: TCP, Port: 80, Endpoints: three[:1]}}},
			{Namespace: "a", Name: "first", ClusterIPs: []netip.Addr{a4("10.43.0.10")},
				Ports: []Port{{Name: "http", Protocol: TCP, Port: 80, Endpoints: three[1:2]}}},
			{Namespace: "a", Name: "empty", ClusterIPs: []netip.Addr{a4("10.43.0.10")},
				Ports: []Port{{Name: "http", Protocol: TCP, Port: 80}}},
		}},
		want: `chain svc-WTMMNZMXEX:
  dnat to 10.42.0.3:8080 comment "a/first:http/tcp"
chain svc-YS7WBDPJPA:
  dnat to 10.42.0.2:8080 comment "b/second:http/tcp"
service-ips 10.43.0.10 . tcp . 80 : goto svc-WTMMNZMXEX
`,
		skipped: []string{`10.43.0.10 . tcp . 80 is claimed by a/empty:http/tcp, a/first:http/tcp, b/second:http/tcp; it goes to "svc-WTMMNZMXEX"`},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rs, skipped := render(c.cfg, func(chain string, spec leastConnPort) uint16 {
				if spec.Protocol == UDP {
					return 40001 // the UDP proxy's
				}
				return 40000
			})
			if diff := cmp.Diff(c.want, describe(rs)); diff != "" {
				t.Errorf("rendering (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(c.skipped, skipped); diff != "" {
				t.Errorf("skipped (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRenderLeastConnFallsBack: without a proxy (it could not start), a
// least-conn port is round robin, and asks again next time.
func TestRenderLeastConnFallsBack(t *testing.T) {
	s := webService(ep("10.42.0.2", 8080), ep("10.42.0.3", 8080))
	s.Strategy = LeastConn
	st := newState()
	st.update(Config{Services: []Service{s}}, func(string, leastConnPort) uint16 { return 0 })
	got := chainText(st.view().Chains["svc-"+web])
	want := "numgen inc mod 2 0 dnat to 10.42.0.2:8080 comment \"default/web:http/tcp\"\ndnat to 10.42.0.3:8080\n"
	if got != want {
		t.Fatalf("fallback chain:\n%s\nwant:\n%s", got, want)
	}
	calls := 0
	c, _ := st.update(Config{Services: []Service{s}}, func(string, leastConnPort) uint16 { calls++; return 40001 })
	if calls != 1 || !strings.Contains(chainText(st.view().Chains["svc-"+web]), "redirect to :40001") {
		t.Fatalf("the next Set did not retry the proxy (calls %d):\n%s", calls, chainText(st.view().Chains["svc-"+web]))
	}
	if len(c.FlushChains) != 1 {
		t.Errorf("retry change flushes %v, want the svc chain", c.FlushChains)
	}
}

// TestRenderLocalLeastConnIsRoundRobin: a proxy would hide the client
// address, so Local external traffic is balanced in the kernel.
func TestRenderLocalLeastConnIsRoundRobin(t *testing.T) {
	s := webService(localEP("10.42.0.2", 8080), localEP("10.42.0.3", 8080))
	s.Strategy = LeastConn
	s.ExternalLocal = true
	s.Ports[0].NodePort = 30080
	rs, _ := render(Config{Services: []Service{s}}, func(string, leastConnPort) uint16 { return 40000 })
	want := "meta mark set meta mark & 0xffffbfff comment \"default/web:http/tcp\"\nnumgen inc mod 2 0 dnat to 10.42.0.2:8080\ndnat to 10.42.0.3:8080\n"
	if got := chainText(rs.Chains["ext-"+web]); got != want {
		t.Errorf("ext chain:\n%s\nwant:\n%s", got, want)
	}
	if got := chainText(rs.Chains["svc-"+web]); got != "redirect to :40000 comment \"default/web:http/tcp\"\n" {
		t.Errorf("svc chain: %s", got)
	}
}
