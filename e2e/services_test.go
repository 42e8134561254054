package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/shoal-dev/shoal/node/localcluster"
)

// inPod runs a shell script in a pod's first container (kubectl exec through
// the given node's API, "" = node 1's) and returns its stdout.
func inPod(t testing.TB, c *localcluster.Cluster, nodeName, pod, script string) (string, error) {
	t.Helper()
	args := []string{"exec", pod, "--", "sh", "-c", script}
	if nodeName != "" {
		args = append([]string{"--server", fmt.Sprintf("https://%s:%d", node(t, c, nodeName).IP, localcluster.APIPort)}, args...)
	}
	return kubectl(t, c, args...)
}

// httpLoop is a script that makes n new HTTP connections to host:port and
// prints the first word of each answer's body (the echo pod's name), one per
// line, or "FAIL" for a connection that got no answer.
func httpLoop(host string, port, n int) string {
	return fmt.Sprintf(`i=0; while [ $i -lt %d ]; do i=$((i+1)); r=$(printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 %s %d | tail -n 1 | cut -d' ' -f1); echo "${r:-FAIL}"; done`, n, host, port)
}

func tally(out string) map[string]int {
	m := map[string]int{}
	for _, l := range strings.Fields(out) {
		m[l]++
	}
	return m
}

// echoPodOn is an echo pod pinned to a node, labelled app=echo and
// node=<node>.
func echoPodOn(name, nodeName string, annotations map[string]string) *corev1.Pod {
	p := echoPod(name, nodeName)
	p.Labels["node"] = nodeName
	p.Annotations = annotations
	return p
}

func serviceFor(name string, selector map[string]string, mutate ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{
		Selector: selector,
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
	}}
	for _, m := range mutate {
		m(s)
	}
	return s
}

// waitReadyEndpoints waits until the service's EndpointSlices list n ready
// endpoints.
func waitReadyEndpoints(t testing.TB, cs kubernetes.Interface, name string, n int) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		l, err := cs.DiscoveryV1().EndpointSlices("default").List(context.Background(),
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
		if err != nil {
			return err
		}
		ready := 0
		for _, sl := range l.Items {
			for _, e := range sl.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					ready++
				}
			}
		}
		if ready != n {
			return fmt.Errorf("service %s: %d ready endpoints, want %d", name, ready, n)
		}
		return nil
	})
}

// fakeUpstream serves DNS inside the cluster's lan namespace on its bridge
// address: example.test A 192.0.2.7, everything else NXDOMAIN. It stands in
// for the outside world's resolvers, which no test may reach.
func fakeUpstream(t *testing.T, c *localcluster.Cluster) string {
	t.Helper()
	addr := net.JoinHostPort(c.State().BridgeIP, "53")
	var pc net.PacketConn
	errc := make(chan error, 1)
	go func() { // a thread that joins the lan namespace and never returns to the pool
		runtime.LockOSThread()
		h, err := netns.GetFromName(c.State().LanNamespace)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		pc, err = net.ListenPacket("udp", addr)
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("fake upstream DNS: %v", err)
	}
	srv := &miekg.Server{PacketConn: pc, Handler: miekg.HandlerFunc(func(w miekg.ResponseWriter, r *miekg.Msg) {
		m := new(miekg.Msg)
		m.SetReply(r)
		switch {
		case len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, "example.test."):
			m.Rcode = miekg.RcodeNameError
		case r.Question[0].Qtype == miekg.TypeA:
			rr, _ := miekg.NewRR("example.test. 60 IN A 192.0.2.7")
			m.Answer = append(m.Answer, rr)
		default: // the name exists without records of this type
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return c.State().BridgeIP
}

// TestServices: ClusterIP services balanced in every node's nftables (exact
// round robin, weighted, least-connections, ClientIP affinity), NodePort
// from outside the cluster (with the client's IP kept under
// externalTrafficPolicy Local), rejection without endpoints, hairpin,
// endpoint removal, and cluster DNS from inside pods (services, headless,
// pods, PTR, negative answers, forwarding) — also on a node cut off from the
// others.
func TestServices(t *testing.T) {
	var upstream string
	c := newCluster(t, 3, func(cfg *localcluster.Config) {
		// The lan bridge (.254 of the cluster subnet) hosts the fake upstream
		// resolver started below; the agents learn it from the flag.
		p := netip.MustParsePrefix(localcluster.DefaultSubnet(cfg.Name)).Addr().As4()
		p[3] = 254
		upstream = netip.AddrFrom4(p).String()
		cfg.AgentArgs = append(cfg.AgentArgs, "--dns-upstream="+upstream)
	})
	if got := fakeUpstream(t, c); got != upstream {
		t.Fatalf("lan bridge %s, expected %s", got, upstream)
	}
	importImages(t, c, "n1")
	cs := clientset(t, c)
	ctx := context.Background()
	nodes := []string{"n1", "n2", "n3"}
	for _, n := range nodes {
		ann := map[string]string{"shoal.dev/weight": "1"}
		if n == "n3" {
			ann["shoal.dev/weight"] = "3"
		}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, echoPodOn("echo-"+n, n, ann), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The client pod also serves its own name on 8080 (for the hairpin check).
	// It is Ready while /tmp/ready exists (for the readiness check).
	client := busyboxPod("client", "n1", corev1.RestartPolicyAlways, "touch /tmp/ready; while true; do nc -l -p 8080 -e hostname; done")
	client.Labels = map[string]string{"app": "client"}
	client.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	client.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-f", "/tmp/ready"}}},
		PeriodSeconds: 1, FailureThreshold: 1,
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	podIPs := map[string]string{}
	for _, n := range append([]string{"client"}, "echo-n1", "echo-n2", "echo-n3") {
		p := waitPod(t, cs, "default", n, 90*time.Second, "Running and Ready", func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodRunning && podReady(p)
		})
		podIPs[n] = p.Status.PodIP
	}

	echo := map[string]string{"app": "echo"}
	create := func(s *corev1.Service) *corev1.Service {
		t.Helper()
		out, err := cs.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating service %s: %v", s.Name, err)
		}
		return out
	}
	svc := create(serviceFor("echo", echo, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort }))
	local := create(serviceFor("echo-local", echo, func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}))
	create(serviceFor("echo-weighted", echo, func(s *corev1.Service) { s.Annotations = map[string]string{"shoal.dev/lb-strategy": "weighted"} }))
	create(serviceFor("echo-lc", echo, func(s *corev1.Service) { s.Annotations = map[string]string{"shoal.dev/lb-strategy": "least-conn"} }))
	create(serviceFor("echo-sticky", echo, func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }))
	create(serviceFor("echo-node", echo, func(s *corev1.Service) {
		p := corev1.ServiceInternalTrafficPolicyLocal
		s.Spec.InternalTrafficPolicy = &p
	}))
	create(serviceFor("echo-headless", echo, func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }))
	create(serviceFor("echo-n1only", map[string]string{"app": "echo", "node": "n1"}))
	create(serviceFor("self", map[string]string{"app": "client"}))
	empty := create(serviceFor("empty", map[string]string{"app": "nothing"}))
	lb := create(serviceFor("echo-lb", echo, func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].Port = 8081
	}))
	for _, s := range []string{"echo", "echo-local", "echo-weighted", "echo-lc", "echo-sticky", "echo-node", "echo-headless"} {
		waitReadyEndpoints(t, cs, s, 3)
	}
	waitReadyEndpoints(t, cs, "self", 1)
	waitReadyEndpoints(t, cs, "echo-n1only", 1)

	// The client's node has the rules once every backend answers.
	eventually(t, 30*time.Second, func() error {
		out, err := inPod(t, c, "", "client", httpLoop("echo.default.svc.cluster.local", 80, 6))
		if err != nil {
			return err
		}
		if got := tally(out); len(got) != 3 || got["FAIL"] > 0 {
			return fmt.Errorf("answers %v", got)
		}
		return nil
	})

	t.Run("every node reaches every backend by name", func(t *testing.T) {
		// The echo pods on n2 and n3 are clients too (the image has a shell and
		// nc): each node balances with its own rules.
		for _, from := range []string{"echo-n2", "echo-n3"} {
			eventually(t, 30*time.Second, func() error {
				out, err := inPod(t, c, "", from, httpLoop("echo.default.svc.cluster.local", 80, 6))
				if err != nil {
					return err
				}
				if got := tally(out); len(got) != 3 || got["FAIL"] > 0 {
					return fmt.Errorf("from %s: answers %v, want all three backends", from, got)
				}
				return nil
			})
		}
	})
	t.Run("round robin is exact", func(t *testing.T) {
		out, err := inPod(t, c, "", "client", httpLoop("echo", 80, 12))
		if err != nil {
			t.Fatal(err)
		}
		if got := tally(out); got["echo-n1"] != 4 || got["echo-n2"] != 4 || got["echo-n3"] != 4 {
			t.Fatalf("12 connections over 3 backends: %v, want 4 each", got)
		}
	})
	t.Run("weighted", func(t *testing.T) {
		out, err := inPod(t, c, "", "client", httpLoop("echo-weighted", 80, 25))
		if err != nil {
			t.Fatal(err)
		}
		// Weights 1:1:3 over 25 connections: 5, 5, 15 (±1 for where the
		// rotation starts).
		got := tally(out)
		if abs(got["echo-n1"]-5) > 1 || abs(got["echo-n2"]-5) > 1 || abs(got["echo-n3"]-15) > 1 {
			t.Fatalf("weighted 1:1:3 over 25 connections: %v", got)
		}
	})
	t.Run("client IP affinity", func(t *testing.T) {
		out, err := inPod(t, c, "", "client", httpLoop("echo-sticky", 80, 9))
		if err != nil {
			t.Fatal(err)
		}
		if got := tally(out); len(got) != 1 || got["FAIL"] > 0 {
			t.Fatalf("sticky service answered from %v, want one backend", got)
		}
	})
	t.Run("internal traffic policy Local", func(t *testing.T) {
		// Every node sends ClusterIP traffic to its own backend only.
		for _, from := range []struct{ pod, want string }{{"client", "echo-n1"}, {"echo-n2", "echo-n2"}, {"echo-n3", "echo-n3"}} {
			out, err := inPod(t, c, "", from.pod, httpLoop("echo-node", 80, 6))
			if err != nil {
				t.Fatal(err)
			}
			if got := tally(out); len(got) != 1 || got[from.want] != 6 {
				t.Fatalf("from %s: answers %v, want 6 from %s", from.pod, got, from.want)
			}
		}
	})
	t.Run("least connections", func(t *testing.T) {
		// Two connections held open (a request that never ends) occupy two
		// backends; every new connection then goes to the third.
		hold := `(sleep 20 | { printf 'GET / HTTP/1.1\r\nHost: x\r\n'; cat; } | nc echo-lc 80 >/dev/null) & `
		out, err := inPod(t, c, "", "client", hold+"sleep 0.5; "+hold+"sleep 0.5; "+httpLoop("echo-lc", 80, 6)+"; kill %1 %2 2>/dev/null; true")
		if err != nil {
			t.Fatal(err)
		}
		if got := tally(out); len(got) != 1 || got["FAIL"] > 0 {
			t.Fatalf("with two backends busy, new connections went to %v, want the idle one only", got)
		}
	})
	t.Run("hairpin", func(t *testing.T) {
		out, err := inPod(t, c, "", "client", "nc -w 5 self 80 </dev/null")
		if err != nil || strings.TrimSpace(out) != "client" {
			t.Fatalf("pod reaching itself through its service: %q %v", out, err)
		}
	})
	t.Run("unready backend leaves the rules", func(t *testing.T) {
		if _, err := inPod(t, c, "", "client", "rm /tmp/ready"); err != nil {
			t.Fatal(err)
		}
		waitReadyEndpoints(t, cs, "self", 0)
		// The node's rules follow the slice: with no ready endpoint left the
		// service rejects at once.
		eventually(t, 10*time.Second, func() error {
			out, _ := inPod(t, c, "", "client", "nc -w 5 self 80 </dev/null 2>&1; true")
			if !strings.Contains(out, "refused") {
				return fmt.Errorf("unready only backend: %q, want connection refused", out)
			}
			return nil
		})
		if _, err := inPod(t, c, "", "client", "touch /tmp/ready"); err != nil {
			t.Fatal(err)
		}
		waitReadyEndpoints(t, cs, "self", 1)
		eventually(t, 10*time.Second, func() error {
			if out, _ := inPod(t, c, "", "client", "nc -w 5 self 80 </dev/null"); strings.TrimSpace(out) != "client" {
				return fmt.Errorf("ready again: %q", out)
			}
			return nil
		})
	})
	t.Run("LoadBalancer on the node addresses", func(t *testing.T) {
		var ingress []string
		eventually(t, 30*time.Second, func() error {
			s, err := cs.CoreV1().Services("default").Get(ctx, lb.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			ingress = ingress[:0]
			for _, in := range s.Status.LoadBalancer.Ingress {
				ingress = append(ingress, in.IP)
			}
			if len(ingress) != 3 {
				return fmt.Errorf("load balancer ingress %v, want the 3 node addresses", ingress)
			}
			return nil
		})
		for _, ip := range ingress {
			eventually(t, 10*time.Second, func() error {
				if body, _, err := httpFromLan(c, ip, 8081); !strings.HasPrefix(body, "echo-") {
					return fmt.Errorf("LoadBalancer %s:8081 answered %q %v", ip, body, err)
				}
				return nil
			})
		}
	})
	t.Run("no endpoints rejects", func(t *testing.T) {
		out, err := inPod(t, c, "", "client", fmt.Sprintf("nc -w 10 %s 80 </dev/null 2>&1; echo rc=$?", empty.Spec.ClusterIP))
		if err != nil || !strings.Contains(out, "refused") {
			t.Fatalf("service without endpoints: %q %v, want connection refused", out, err)
		}
	})
	t.Run("NodePort from outside", func(t *testing.T) {
		np := svc.Spec.Ports[0].NodePort
		for _, n := range nodes {
			body, _, err := httpFromLan(c, node(t, c, n).IP, int(np))
			if !strings.HasPrefix(body, "echo-") {
				t.Errorf("NodePort %d on %s: %q %v", np, n, body, err)
			}
		}
		// externalTrafficPolicy Local: the node's own backend answers and
		// sees the client's address.
		lnp := local.Spec.Ports[0].NodePort
		for _, n := range nodes {
			body, clientAddr, err := httpFromLan(c, node(t, c, n).IP, int(lnp))
			if !strings.HasPrefix(body, "echo-"+n+" ") {
				t.Errorf("Local NodePort on %s answered %q %v", n, body, err)
			}
			if !strings.HasPrefix(clientAddr, c.State().BridgeIP+":") {
				t.Errorf("Local NodePort on %s: backend saw client %q, want %s", n, clientAddr, c.State().BridgeIP)
			}
		}
	})
	t.Run("DNS", func(t *testing.T) {
		headless := []string{podIPs["echo-n1"], podIPs["echo-n2"], podIPs["echo-n3"]}
		sort.Strings(headless)
		for _, tc := range []struct{ query, want string }{
			{"echo.default.svc.cluster.local", "Address: " + svc.Spec.ClusterIP},
			{"echo-headless.default.svc.cluster.local", "Address: " + headless[0]},
			{"echo-headless.default.svc.cluster.local", "Address: " + headless[2]},
			{strings.ReplaceAll(podIPs["echo-n2"], ".", "-") + ".default.pod.cluster.local", "Address: " + podIPs["echo-n2"]},
			{svc.Spec.ClusterIP, "echo.default.svc.cluster.local"},
			{"example.test", "Address: 192.0.2.7"}, // forwarded to the upstream
		} {
			out, err := inPod(t, c, "", "client", "nslookup "+tc.query+" 2>&1")
			if err != nil || !strings.Contains(out, tc.want) {
				t.Errorf("nslookup %s: %v\n%s\nwant %q", tc.query, err, out, tc.want)
			}
		}
		out, _ := inPod(t, c, "", "client", "nslookup nosuch.default.svc.cluster.local 2>&1")
		if !strings.Contains(out, "NXDOMAIN") {
			t.Errorf("nslookup of a missing service: %s", out)
		}
		// A short name through the search path, as applications use it.
		out, err := inPod(t, c, "", "client", httpLoop("echo-n1only", 80, 1))
		if err != nil || strings.TrimSpace(out) != "echo-n1" {
			t.Errorf("short service name: %q %v", out, err)
		}
	})
	t.Run("endpoint removed", func(t *testing.T) {
		if err := cs.CoreV1().Pods("default").Delete(ctx, "echo-n3", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() error {
			_, err := cs.CoreV1().Pods("default").Get(ctx, "echo-n3", metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("echo-n3 still there (%v)", err)
			}
			return nil
		})
		out, err := inPod(t, c, "", "client", httpLoop("echo", 80, 8))
		if err != nil {
			t.Fatal(err)
		}
		if got := tally(out); got["echo-n1"] != 4 || got["echo-n2"] != 4 {
			t.Fatalf("after deleting echo-n3, 8 connections: %v, want 4 on each of echo-n1 and echo-n2", got)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		hc, err := c.HTTPClient()
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		fetch := func() {
			resp, err := hc.Get(fmt.Sprintf("https://%s:%d/metrics", node(t, c, "n1").IP, localcluster.APIPort))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ = io.ReadAll(resp.Body)
		}
		// The ClusterIP services of this test plus the kubernetes service;
		// the DNS test forwarded example.test.
		metric := func(name string) string {
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, name+" "); ok {
					return v
				}
			}
			return ""
		}
		// The DNS child reports its counters once a second: the forward
		// the DNS test made may not be counted yet.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			fetch()
			if v := metric("shoal_dns_forwarded_total"); (v != "" && v != "0") || time.Now().After(deadline) {
				break
			}
		}
		if v := metric("shoal_services_programmed"); v != "11" {
			t.Errorf("shoal_services_programmed %q, want 11", v)
		}
		if v := metric("shoal_service_sync_seconds_count"); v == "" || v == "0" {
			t.Errorf("shoal_service_sync_seconds_count %q", v)
		}
		if v := metric("shoal_dns_forwarded_total"); v == "" || v == "0" {
			t.Errorf("shoal_dns_forwarded_total %q", v)
		}
	})
	t.Run("partitioned node keeps serving", func(t *testing.T) {
		if err := c.Partition("n1"); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Heal("n1") }()
		time.Sleep(2 * time.Second) // long enough for gossip to notice; nothing waits on it
		out, err := inPod(t, c, "n1", "client", "nslookup echo-n1only.default.svc.cluster.local 2>&1; "+httpLoop("echo-n1only", 80, 3))
		if err != nil {
			t.Fatalf("exec on the cut-off node: %v", err)
		}
		if !strings.Contains(out, "Address: ") || strings.Count(out, "echo-n1\n") != 3 {
			t.Fatalf("on the cut-off node: %s", out)
		}
	})
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// httpFromLan makes one HTTP request from the lan namespace (outside the
// cluster) and returns the body's first line and the client address the
// backend saw (X-Client-Addr).
func httpFromLan(c *localcluster.Cluster, ip string, port int) (body, client string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.DialContext(ctx, "tcp", netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)).String())
	if err != nil {
		return "", "", fmt.Errorf("dialing %s:%d from the lan: %w", ip, port, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\n\r\n")
	r := bufio.NewReader(conn)
	var last string
	for {
		line, err := r.ReadString('\n')
		if v, ok := strings.CutPrefix(line, "X-Client-Addr: "); ok {
			client = strings.TrimSpace(v)
		}
		if strings.TrimSpace(line) != "" {
			last = strings.TrimSpace(line)
		}
		if err != nil {
			break
		}
	}
	return last, client, nil
}
