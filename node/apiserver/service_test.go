package apiserver

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const services = "/api/v1/namespaces/default/services"

func service(name, typ, ip string, nodePorts ...int32) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceType(typ), ClusterIP: ip, Selector: map[string]string{"app": name}}}
	s.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80}}
	if len(nodePorts) > 0 {
		s.Spec.Ports[0].NodePort = nodePorts[0]
		for i, np := range nodePorts[1:] {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", i), Port: int32(81 + i), NodePort: np})
		}
	}
	return s
}

func TestServiceAllocation(t *testing.T) {
	e := newEnv(t)
	var a, b corev1.Service
	e.ok(req{method: "POST", path: services, body: service("a", "", "")}, 201, &a)
	ip, err := netip.ParseAddr(a.Spec.ClusterIP)
	if err != nil || !DefaultServiceCIDR.Contains(ip) || ip == DefaultDNSIP || ip == netip.MustParseAddr("10.43.0.1") {
		t.Fatalf("allocated clusterIP %q", a.Spec.ClusterIP)
	}
	if !slices.Equal(a.Spec.ClusterIPs, []string{a.Spec.ClusterIP}) || len(a.Spec.IPFamilies) != 1 || a.Spec.IPFamilies[0] != corev1.IPv4Protocol {
		t.Fatalf("clusterIPs %v families %v", a.Spec.ClusterIPs, a.Spec.IPFamilies)
	}
	// A requested IP is honoured, a taken one refused with a field error.
	e.ok(req{method: "POST", path: services, body: service("b", "NodePort", "10.43.7.7")}, 201, &b)
	if b.Spec.ClusterIP != "10.43.7.7" {
		t.Fatalf("requested IP not honoured: %s", b.Spec.ClusterIP)
	}
	np := b.Spec.Ports[0].NodePort
	if np < DefaultNodePortMin || np > DefaultNodePortMax {
		t.Fatalf("node port %d", np)
	}
	for _, tc := range []struct {
		name string
		svc  *corev1.Service
		want string // cause field
		msg  string
	}{
		{"taken IP", service("c", "", "10.43.7.7"), "spec.clusterIPs", "already allocated"},
		{"IP outside the range", service("c", "", "10.44.0.1"), "spec.clusterIPs", "not in the valid range"},
		{"DNS IP", service("c", "", "10.43.0.10"), "spec.clusterIPs", "reserved"},
		{"broadcast", service("c", "", "10.43.255.255"), "spec.clusterIPs", "broadcast"},
		{"taken node port", service("c", "NodePort", "", np), "spec.ports[0].nodePort", "already allocated"},
		{"node port out of range", service("c", "NodePort", "", 8080), "spec.ports[0].nodePort", "valid range"},
		{"node port on ClusterIP", service("c", "ClusterIP", "", 30555), "spec.ports[0].nodePort", "may not be used"},
	} {
		w := e.do(req{method: "POST", path: services, body: tc.svc})
		st := status(t, w)
		if w.Code != 422 || !slices.Contains(causes(st), tc.want) || !strings.Contains(st.Message, tc.msg) {
			t.Errorf("%s: %d %v %s", tc.name, w.Code, causes(st), st.Message)
		}
	}
	// Headless holds nothing; two headless services coexist.
	var h corev1.Service
	e.ok(req{method: "POST", path: services, body: service("h1", "", "None")}, 201, &h)
	e.ok(req{method: "POST", path: services, body: service("h2", "", "None")}, 201, nil)
	if !slices.Equal(h.Spec.ClusterIPs, []string{"None"}) {
		t.Fatalf("headless clusterIPs %v", h.Spec.ClusterIPs)
	}

	// A PUT of the original manifest keeps the allocated IP and node port;
	// changing the IP is refused.
	put := service("b", "NodePort", "")
	e.ok(req{method: "PUT", path: services + "/b", body: put}, 200, &b)
	if b.Spec.ClusterIP != "10.43.7.7" || b.Spec.Ports[0].NodePort != np {
		t.Fatalf("update lost allocations: %s %d", b.Spec.ClusterIP, b.Spec.Ports[0].NodePort)
	}
	w := e.do(req{method: "PUT", path: services + "/b", body: service("b", "NodePort", "10.43.7.8")})
	if st := status(t, w); w.Code != 422 || !strings.Contains(st.Message, "immutable") {
		t.Fatalf("changing the clusterIP: %d %s", w.Code, st.Message)
	}
	// NodePort → ClusterIP releases the node port; another service may take it.
	e.ok(req{method: "PUT", path: services + "/b", body: service("b", "ClusterIP", "")}, 200, &b)
	if b.Spec.Ports[0].NodePort != 0 {
		t.Fatalf("node port kept on a ClusterIP service: %d", b.Spec.Ports[0].NodePort)
	}
	e.ok(req{method: "POST", path: services, body: service("d", "NodePort", "", np)}, 201, nil)
	// Deleting frees the IP.
	e.ok(req{method: "DELETE", path: services + "/b"}, 200, nil)
	e.ok(req{method: "POST", path: services, body: service("c", "", "10.43.7.7")}, 201, nil)
}

// Concurrent creates never share an IP or node port, even in a range so
// small that their random picks collide (the FSM refuses, create re-picks).
func TestServiceAllocationConcurrent(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ServiceCIDR = netip.MustParsePrefix("10.43.0.0/25") })
	const n = 64
	var wg sync.WaitGroup
	out := make([]corev1.Service, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := e.do(req{method: "POST", path: services, body: service(fmt.Sprintf("s%d", i), "NodePort", "")})
			if w.Code != 201 {
				t.Errorf("create %d: %d %s", i, w.Code, w.Body.String())
			}
			_ = jsonUnmarshal(w.Body.Bytes(), &out[i])
		}()
	}
	wg.Wait()
	ips, ports := map[string]bool{}, map[int32]bool{}
	for _, s := range out {
		if ips[s.Spec.ClusterIP] || ports[s.Spec.Ports[0].NodePort] {
			t.Fatalf("duplicate allocation: %s %d", s.Spec.ClusterIP, s.Spec.Ports[0].NodePort)
		}
		ips[s.Spec.ClusterIP], ports[s.Spec.Ports[0].NodePort] = true, true
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
