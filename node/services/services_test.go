package services

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/dns"
	"github.com/shoal-dev/shoal/netproxy"
	"github.com/shoal-dev/shoal/node/state"
)

// fakeProxy records the configurations it is given.
type fakeProxy struct {
	mu   sync.Mutex
	last netproxy.Config
	n    int
	ch   chan struct{}
}

func (f *fakeProxy) Set(_ context.Context, cfg netproxy.Config) error {
	f.mu.Lock()
	f.last, f.n = cfg, f.n+1
	f.mu.Unlock()
	select {
	case f.ch <- struct{}{}:
	default:
	}
	return nil
}

// fakeZone keeps the last zone configuration and counts them; answers
// builds the zone from it, as the DNS child does.
type fakeZone struct {
	mu sync.Mutex
	zc *dns.ZoneConfig
	n  int
}

func (f *fakeZone) SetZoneConfig(zc dns.ZoneConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.zc, f.n = &zc, f.n+1
}

type env struct {
	t     *testing.T
	store *state.Store
	prop  *state.LocalProposer
	proxy *fakeProxy
	zone  *fakeZone
}

func newEnv(t *testing.T) *env {
	store := state.NewStore(0)
	e := &env{t: t, store: store, prop: state.NewLocalProposer(state.NewFSM(store, nil)),
		proxy: &fakeProxy{ch: make(chan struct{}, 1)}, zone: &fakeZone{}}
	ctx, cancel := context.WithCancel(context.Background())
	l := New(Config{Store: store, NodeName: "n1", ClusterCIDR: netip.MustParsePrefix("10.42.0.0/16"),
		Proxy: e.proxy, DNS: e.zone, ZoneInterval: time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func (e *env) put(obj state.Object) {
	e.t.Helper()
	cur, ok := e.store.Get(kindKey(obj), obj.GetNamespace(), obj.GetName())
	var op state.Op
	if ok {
		obj.SetUID(cur.GetUID())
		op = state.Update(obj, 0)
	} else {
		op = state.Create(obj)
	}
	if _, err := e.prop.Propose(context.Background(), op); err != nil {
		e.t.Fatal(err)
	}
}

func kindKey(obj state.Object) string {
	k, _ := state.KindOf(obj)
	return k.Key()
}

// waitProxy waits until the last configuration satisfies cond.
func (e *env) waitProxy(what string, cond func(netproxy.Config) bool) netproxy.Config {
	e.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		e.proxy.mu.Lock()
		cfg, n := e.proxy.last, e.proxy.n
		e.proxy.mu.Unlock()
		if n > 0 && cond(cfg) {
			return cfg
		}
		select {
		case <-e.proxy.ch:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			e.t.Fatalf("timed out waiting for %s; last config %+v", what, cfg)
		}
	}
}

func find(cfg netproxy.Config, ns, name string) (netproxy.Service, bool) {
	for _, s := range cfg.Services {
		if s.Namespace == ns && s.Name == name {
			return s, true
		}
	}
	return netproxy.Service{}, false
}

func ptr[T any](v T) *T { return &v }

func svc(name string, mutate ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: "10.43.0.50", ClusterIPs: []string{"10.43.0.50"}, Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	for _, m := range mutate {
		m(s)
	}
	return s
}

type ep struct {
	ip, node, pod               string
	ready, serving, terminating bool
}

func slice(svcName, name string, port int32, eps ...ep) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
		Labels: map[string]string{ServiceNameLabel: svcName}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(port)}}}
	for _, e := range eps {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.ip}, NodeName: ptr(e.node),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: e.pod},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(e.ready), Serving: ptr(e.serving), Terminating: ptr(e.terminating)}})
	}
	return sl
}

func ips(p netproxy.Port) []string {
	var out []string
	for _, e := range p.Endpoints {
		out = append(out, e.IP.String())
	}
	return out
}

func TestProxyConfigFollowsSlices(t *testing.T) {
	e := newEnv(t)
	e.put(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "192.168.7.1"}, {Type: corev1.NodeHostName, Address: "n1"}}}})
	e.put(svc("web"))
	e.put(slice("web", "web-a", 8080,
		ep{"10.42.1.5", "n1", "p1", true, true, false},
		ep{"10.42.2.5", "n2", "p2", true, true, false},
		ep{"10.42.3.5", "n3", "p3", false, false, false}))
	// The node, service and slice watches run independently: wait for all three.
	cfg := e.waitProxy("web with two ready endpoints and the node's address", func(c netproxy.Config) bool {
		s, ok := find(c, "default", "web")
		return ok && len(s.Ports) == 1 && len(s.Ports[0].Endpoints) == 2 && len(c.NodeIPs) == 1
	})
	s, _ := find(cfg, "default", "web")
	if got := ips(s.Ports[0]); got[0] != "10.42.1.5" || got[1] != "10.42.2.5" {
		t.Fatalf("endpoints %v", got)
	}
	if p := s.Ports[0]; p.Port != 80 || p.Endpoints[0].Port != 8080 || !p.Endpoints[0].Local || p.Endpoints[1].Local || p.Protocol != netproxy.Protocol("TCP") {
		t.Fatalf("port %+v", p)
	}
	if len(cfg.NodeIPs) != 1 || cfg.NodeIPs[0].String() != "192.168.7.1" || cfg.ClusterCIDR.String() != "10.42.0.0/16" {
		t.Fatalf("node IPs %v cidr %v", cfg.NodeIPs, cfg.ClusterCIDR)
	}

	// Only terminating-but-serving endpoints left: they are used.
	e.put(slice("web", "web-a", 8080, ep{"10.42.1.5", "n1", "p1", false, true, true}, ep{"10.42.2.5", "n2", "p2", false, false, true}))
	e.waitProxy("terminating fallback", func(c netproxy.Config) bool {
		s, ok := find(c, "default", "web")
		return ok && len(s.Ports[0].Endpoints) == 1 && s.Ports[0].Endpoints[0].IP.String() == "10.42.1.5"
	})
	// Weighted services read pod weights, and follow weight changes.
	e.put(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "p1", Annotations: map[string]string{WeightAnnotation: "3"}}})
	e.put(svc("web", func(s *corev1.Service) {
		s.Annotations = map[string]string{StrategyAnnotation: "weighted"}
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(60))}}
	}))
	e.put(slice("web", "web-a", 8080, ep{"10.42.1.5", "n1", "p1", true, true, false}, ep{"10.42.2.5", "n2", "p2", true, true, false}))
	e.waitProxy("weights and affinity", func(c netproxy.Config) bool {
		s, ok := find(c, "default", "web")
		return ok && s.Strategy == netproxy.Weighted && s.AffinityTimeout == time.Minute && len(s.Ports[0].Endpoints) == 2 &&
			s.Ports[0].Endpoints[0].Weight == 3 && s.Ports[0].Endpoints[1].Weight == 1
	})
	e.put(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "p1", Annotations: map[string]string{WeightAnnotation: "5"}}})
	e.waitProxy("weight change", func(c netproxy.Config) bool {
		s, ok := find(c, "default", "web")
		return ok && s.Ports[0].Endpoints[0].Weight == 5
	})
	// Headless and ExternalName services are not proxied; deleting removes.
	e.put(svc("h", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }))
	e.put(svc("x", func(s *corev1.Service) {
		s.Spec.Type, s.Spec.ExternalName, s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ServiceTypeExternalName, "example.org", "", nil
	}))
	k, _ := state.KindFor("services")
	if _, err := e.prop.Propose(context.Background(), state.Delete(k, "default", "web", 0, "")); err != nil {
		t.Fatal(err)
	}
	e.waitProxy("web removed", func(c netproxy.Config) bool {
		_, ok := find(c, "default", "web")
		return !ok && len(c.Services) == 0
	})
}

func TestNodePortAndLoadBalancer(t *testing.T) {
	e := newEnv(t)
	e.put(svc("lb", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30080
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.ExternalIPs = []string{"192.168.7.100"}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.168.7.1"}}
	}))
	e.waitProxy("lb", func(c netproxy.Config) bool {
		s, ok := find(c, "default", "lb")
		return ok && s.ExternalLocal && s.Ports[0].NodePort == 30080 && len(s.ExternalIPs) == 2 &&
			s.ExternalIPs[0].String() == "192.168.7.100" && s.ExternalIPs[1].String() == "192.168.7.1"
	})
}

func TestInternalTrafficPolicy(t *testing.T) {
	e := newEnv(t)
	local := corev1.ServiceInternalTrafficPolicyLocal
	e.put(svc("agent", func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = &local }))
	e.put(svc("web", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.43.0.51", []string{"10.43.0.51"} }))
	e.waitProxy("agent Local, web Cluster", func(c netproxy.Config) bool {
		a, ok1 := find(c, "default", "agent")
		w, ok2 := find(c, "default", "web")
		return ok1 && ok2 && a.InternalLocal && !w.InternalLocal
	})
}

// TestProtocolsOfOnePortNumber: TCP, UDP and SCTP ports with one number
// reach netproxy with their own protocol and the endpoints of the slice
// port of that name and protocol (SCTP is not mistaken for TCP), and a
// least-conn service keeps its strategy for every protocol (netproxy
// decides what each protocol can do).
func TestProtocolsOfOnePortNumber(t *testing.T) {
	s := svc("multi", func(s *corev1.Service) {
		s.Annotations = map[string]string{StrategyAnnotation: "least-conn"}
		s.Spec.Ports = []corev1.ServicePort{
			{Name: "tcp", Port: 9, Protocol: corev1.ProtocolTCP},
			{Name: "udp", Port: 9, Protocol: corev1.ProtocolUDP},
			{Name: "sctp", Port: 9, Protocol: corev1.ProtocolSCTP},
		}
	})
	sl := slice("multi", "multi-a", 0, ep{"10.42.1.5", "n1", "p1", true, true, false})
	sl.Ports = []discoveryv1.EndpointPort{
		{Name: ptr("tcp"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(9001))},
		{Name: ptr("udp"), Protocol: ptr(corev1.ProtocolUDP), Port: ptr(int32(9002))},
		{Name: ptr("sctp"), Protocol: ptr(corev1.ProtocolSCTP), Port: ptr(int32(9003))},
	}
	out, ok := proxyService(s, endpointsByPort([]*discoveryv1.EndpointSlice{sl}), "n1", func(string, string) *corev1.Pod { return nil })
	if !ok || out.Strategy != netproxy.LeastConn || len(out.Ports) != 3 {
		t.Fatalf("translated %+v", out)
	}
	for i, want := range []struct {
		proto  netproxy.Protocol
		epPort uint16
	}{{netproxy.TCP, 9001}, {netproxy.UDP, 9002}, {netproxy.SCTP, 9003}} {
		p := out.Ports[i]
		if p.Protocol != want.proto || p.Port != 9 || len(p.Endpoints) != 1 || p.Endpoints[0].Port != want.epPort {
			t.Errorf("port %d: %+v, want protocol %s, port 9, endpoint port %d", i, p, want.proto, want.epPort)
		}
	}
}

// recorder is a miekg.ResponseWriter that keeps the reply.
type recorder struct{ msg *miekg.Msg }

func (r *recorder) LocalAddr() net.Addr         { return &net.UDPAddr{IP: net.IPv4(10, 43, 0, 10), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr        { return &net.UDPAddr{IP: net.IPv4(10, 42, 1, 9), Port: 5353} }
func (r *recorder) WriteMsg(m *miekg.Msg) error { r.msg = m; return nil }
func (r *recorder) Write(b []byte) (int, error) {
	m := new(miekg.Msg)
	if err := m.Unpack(b); err != nil {
		return 0, err
	}
	r.msg = m
	return len(b), nil
}
func (r *recorder) Close() error        { return nil }
func (r *recorder) TsigStatus() error   { return nil }
func (r *recorder) TsigTimersOnly(bool) {}
func (r *recorder) Hijack()             {}

// answers asks the zone built from the configuration last given to the
// fake for name's A records.
func (e *env) answers(name string) ([]string, int) {
	e.zone.mu.Lock()
	zc := e.zone.zc
	e.zone.mu.Unlock()
	if zc == nil {
		return nil, -1
	}
	z := dns.NewZone(*zc)
	srv, err := dns.NewServer(dns.Config{Addrs: []string{"127.0.0.1:0"}})
	if err != nil {
		e.t.Fatal(err)
	}
	srv.SetZone(z)
	q := new(miekg.Msg)
	q.SetQuestion(name, miekg.TypeA)
	var w recorder
	srv.ServeDNS(&w, q)
	if w.msg == nil {
		return nil, -1
	}
	var out []string
	for _, rr := range w.msg.Answer {
		if a, ok := rr.(*miekg.A); ok {
			out = append(out, a.A.String())
		}
	}
	sort.Strings(out)
	return out, w.msg.Rcode
}

func (e *env) waitAnswer(name string, want ...string) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, rcode := e.answers(name)
		if rcode == miekg.RcodeSuccess && slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: %v (rcode %d), want %v", name, got, rcode, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestZoneFollowsReplica(t *testing.T) {
	e := newEnv(t)
	e.put(svc("web"))
	e.put(svc("db", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }))
	e.put(slice("db", "db-a", 5432, ep{"10.42.1.7", "n1", "db-0", true, true, false}, ep{"10.42.2.7", "n2", "db-1", false, false, false}))
	e.put(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db-0"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.42.1.7", PodIPs: []corev1.PodIP{{IP: "10.42.1.7"}}}})
	e.waitAnswer("web.default.svc.cluster.local.", "10.43.0.50")
	e.waitAnswer("db.default.svc.cluster.local.", "10.42.1.7") // only the ready endpoint
	e.waitAnswer("10-42-1-7.default.pod.cluster.local.", "10.42.1.7")
	// The second endpoint turns ready: the headless answer follows.
	e.put(slice("db", "db-a", 5432, ep{"10.42.1.7", "n1", "db-0", true, true, false}, ep{"10.42.2.7", "n2", "db-1", true, true, false}))
	e.waitAnswer("db.default.svc.cluster.local.", "10.42.1.7", "10.42.2.7")
	k, _ := state.KindFor("services")
	if _, err := e.prop.Propose(context.Background(), state.Delete(k, "default", "web", 0, "")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, rcode := e.answers("web.default.svc.cluster.local."); rcode == miekg.RcodeNameError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("deleted service still resolves")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestZoneConfigOnChange: a new zone configuration is handed over when DNS
// records change, not when only the endpoints of a ClusterIP service do.
func TestZoneConfigOnChange(t *testing.T) {
	e := newEnv(t)
	e.put(svc("web"))
	e.waitAnswer("web.default.svc.cluster.local.", "10.43.0.50")
	e.put(slice("web", "web-a", 8080, ep{"10.42.1.5", "n1", "p1", true, true, false}))
	e.waitProxy("web's endpoint", func(c netproxy.Config) bool {
		s, ok := find(c, "default", "web")
		return ok && len(s.Ports[0].Endpoints) == 1
	})
	e.zone.mu.Lock()
	n := e.zone.n
	e.zone.mu.Unlock()
	time.Sleep(50 * time.Millisecond) // 50 zone intervals
	e.zone.mu.Lock()
	after, zc := e.zone.n, e.zone.zc
	e.zone.mu.Unlock()
	if after != n {
		t.Errorf("%d zone configurations after an endpoint change of a ClusterIP service, want none", after-n)
	}
	if len(zc.Services) != 1 || zc.Services[0].Name != "web" || len(zc.Services[0].Endpoints) != 0 {
		t.Errorf("zone services %+v", zc.Services)
	}
	e.put(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "p1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.42.1.5", PodIPs: []corev1.PodIP{{IP: "10.42.1.5"}}}})
	e.waitAnswer("10-42-1-5.default.pod.cluster.local.", "10.42.1.5")
}
