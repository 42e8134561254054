package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/node/container"
)

// prober runs the probes of one run of one container. Verdicts are read by
// the pod worker, which it pokes whenever one changes.
type prober struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	started bool   // the startup probe succeeded (or there is none)
	ready   bool   // the readiness verdict
	kill    string // why the run must be restarted ("" = it must not)
}

func (p *prober) stop() {
	p.cancel()
	<-p.done
}

func (p *prober) status() (started, ready bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started, p.ready
}

func (p *prober) killVerdict() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kill
}

// probeUserAgent is the User-Agent of httpGet and gRPC probes: the one of
// the kubelet release whose API Shoal serves, since applications may
// recognise probes by it.
const probeUserAgent = "kube-probe/1.33"

// probeClient is shared by every httpGet probe: no keep-alive (each probe
// is a fresh connection, as on a kubelet) and no certificate checks.
var probeClient = &http.Client{
	Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // kubelet does not verify probe targets either
		Proxy:             nil,
	},
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return http.ErrUseLastResponse
		}
		return nil
	},
}

// startProbes starts the probes of run id of container c.
func (pw *podWorker) startProbes(pod *corev1.Pod, c *corev1.Container, cs *ctrState, id string) {
	ctx, cancel := context.WithCancel(pw.podCtx)
	p := &prober{cancel: cancel, done: make(chan struct{}), started: c.StartupProbe == nil}
	cs.probes = p
	podIP := ""
	if pw.net != nil && pw.net.IP != nil {
		podIP = pw.net.IP.String()
	}
	run := func(kind string, pr *corev1.Probe) func() {
		return func() { pw.probeLoop(ctx, p, kind, pr, c, id, podIP) }
	}
	var loops []func()
	if c.StartupProbe != nil {
		loops = append(loops, run("Startup", c.StartupProbe))
	}
	if c.LivenessProbe != nil {
		loops = append(loops, run("Liveness", c.LivenessProbe))
	}
	if c.ReadinessProbe != nil {
		loops = append(loops, run("Readiness", c.ReadinessProbe))
	} else {
		p.ready = true
	}
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Add(1)
		go func() { defer wg.Done(); l() }()
	}
	go func() { wg.Wait(); close(p.done) }()
}

// probeLoop runs one probe until ctx ends, recording its verdicts.
func (pw *podWorker) probeLoop(ctx context.Context, p *prober, kind string, pr *corev1.Probe, c *corev1.Container, id, podIP string) {
	period := secondsOr(pr.PeriodSeconds, 10)
	timeout := secondsOr(pr.TimeoutSeconds, 1)
	success := int(max(pr.SuccessThreshold, 1))
	failure := int(max(pr.FailureThreshold, 1))
	if pr.FailureThreshold == 0 {
		failure = 3
	}
	// Liveness and readiness wait for the startup probe.
	if kind != "Startup" {
		for {
			if s, _ := p.status(); s {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if d := time.Duration(pr.InitialDelaySeconds) * time.Second; d > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
	okRun, failRun := 0, 0
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := pw.probeOnce(pctx, pr, c, id, podIP)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			okRun, failRun = okRun+1, 0
		} else {
			okRun, failRun = 0, failRun+1
		}
		changed := false
		p.mu.Lock()
		switch kind {
		case "Startup":
			if okRun >= 1 {
				p.started, changed = true, true
			} else if failRun >= failure {
				p.kill, changed = fmt.Sprintf("Container %s failed startup probe, will be restarted: %v", c.Name, err), true
			}
		case "Liveness":
			if failRun >= failure {
				p.kill, changed = fmt.Sprintf("Container %s failed liveness probe, will be restarted: %v", c.Name, err), true
			}
		case "Readiness":
			if okRun >= success && !p.ready {
				p.ready, changed = true, true
			} else if failRun >= failure && p.ready {
				p.ready, changed = false, true
			}
		}
		stopNow := p.kill != "" || kind == "Startup" && p.started
		p.mu.Unlock()
		if err != nil {
			pod, _ := pw.snapshot()
			pw.a.event(pod, c.Name, false, corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %v", kind, err)
		}
		if changed {
			pw.poke()
		}
		if stopNow {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func secondsOr(v int32, def int) time.Duration {
	if v <= 0 {
		return time.Duration(def) * time.Second
	}
	return time.Duration(v) * time.Second
}

// probeOnce runs a probe handler once, within ctx's deadline (the probe's
// timeout): nil means success.
func (pw *podWorker) probeOnce(ctx context.Context, pr *corev1.Probe, c *corev1.Container, id, podIP string) error {
	if pr.GRPC != nil {
		// gRPC is a probe action only (a lifecycle hook cannot name one),
		// so it is not in runHandler; its messages quote the timeout.
		return probeGRPC(ctx, podIP, pr.GRPC, secondsOr(pr.TimeoutSeconds, 1))
	}
	return pw.runHandler(ctx, pr.ProbeHandler, c, id, podIP)
}

// probeGRPC runs a gRPC probe as the kubelet does (pkg/probe/grpc): one
// grpc.health.v1.Health/Check for g.Service over a new plaintext connection
// to host:g.Port, bounded by ctx, whose deadline is the probe's timeout.
// SERVING is success; any other status, an RPC error (NotFound for a service
// the server does not know, Unimplemented for a server without the health
// service), a refused connection or the timeout is a failure, with the
// kubelet's message.
func probeGRPC(ctx context.Context, host string, g *corev1.GRPCAction, timeout time.Duration) error {
	if g.Port <= 0 || g.Port > 65535 {
		return fmt.Errorf("invalid port %d", g.Port)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(g.Port)))
	service := ""
	if g.Service != nil {
		service = *g.Service
	}
	// Unlike the kubelet, the dial does not block until the connection is
	// up: the RPC waits for it instead, and fails at once (fail-fast) when
	// the connection is refused, with the dial error in its status.
	conn, err := grpc.DialContext(ctx, addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()), // the kubelet has no TLS for gRPC probes either
		grpc.WithUserAgent(probeUserAgent),
		// A pod is never reached through the node's HTTPS_PROXY (httpGet
		// probes ignore it too).
		grpc.WithNoProxy(),
	)
	if err != nil {
		return fmt.Errorf("error: failed to connect service at %q: %w", addr, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		st, _ := grpcstatus.FromError(err)
		switch st.Code() {
		case codes.Unavailable:
			return fmt.Errorf("error: failed to connect service at %q: %s", addr, st.Message())
		case codes.Unimplemented:
			return fmt.Errorf("error: this server does not implement the grpc health protocol (grpc.health.v1.Health): %s", st.Message())
		case codes.DeadlineExceeded:
			if conn.GetState() != connectivity.Ready {
				// Connected over TCP (or still trying) but no HTTP/2
				// handshake within the timeout.
				return fmt.Errorf("timeout: failed to connect service %q within %v", addr, timeout)
			}
			return fmt.Errorf("timeout: health rpc did not complete within %v", timeout)
		}
		return fmt.Errorf("error: health rpc probe failed: %w", err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("service unhealthy (responded with %q)", s.String())
	}
	return nil
}

// runHandler runs a probe or lifecycle-hook action.
func (pw *podWorker) runHandler(ctx context.Context, h corev1.ProbeHandler, c *corev1.Container, id, podIP string) error {
	switch {
	case h.Exec != nil:
		var out bytes.Buffer
		code, err := pw.a.cfg.Runtime.Exec(ctx, id, container.ExecSpec{Cmd: h.Exec.Command, Stdout: &out, Stderr: &out})
		if err != nil {
			return err
		}
		if code != 0 {
			msg := strings.TrimSpace(out.String())
			if len(msg) > 200 {
				msg = msg[:200]
			}
			return fmt.Errorf("command %q exited with %d: %s", strings.Join(h.Exec.Command, " "), code, msg)
		}
		return nil
	case h.HTTPGet != nil:
		g := h.HTTPGet
		port, err := resolvePort(g.Port, c)
		if err != nil {
			return err
		}
		host := g.Host
		if host == "" {
			host = podIP
		}
		scheme := strings.ToLower(string(g.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
		path := g.Path
		if path == "" {
			path = "/"
		}
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		full := u.String() + path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, full, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", probeUserAgent)
		req.Header.Set("Accept", "*/*")
		for _, hd := range g.HTTPHeaders {
			if strings.EqualFold(hd.Name, "Host") {
				req.Host = hd.Value
				continue
			}
			req.Header.Add(hd.Name, hd.Value)
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.CopyN(io.Discard, resp.Body, 10<<10)
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case h.TCPSocket != nil:
		port, err := resolvePort(h.TCPSocket.Port, c)
		if err != nil {
			return err
		}
		host := h.TCPSocket.Host
		if host == "" {
			host = podIP
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case h.GRPC != nil:
		// Only probes have gRPC actions, and probeOnce runs them.
		return fmt.Errorf("a gRPC action is valid in probes only")
	}
	return fmt.Errorf("probe has no handler")
}

// resolvePort turns a port number or a container port name into a number.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		if p.IntVal <= 0 || p.IntVal > 65535 {
			return 0, fmt.Errorf("invalid port %d", p.IntVal)
		}
		return int(p.IntVal), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("port %q not found in container %s", p.StrVal, c.Name)
}

// runPreStop runs the container's preStop hook, bounded by the grace period.
func (pw *podWorker) runPreStop(ctx context.Context, pod *corev1.Pod, name, id string, grace time.Duration) {
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			c = &pod.Spec.Containers[i]
		}
	}
	if c == nil || c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		return
	}
	h := c.Lifecycle.PreStop
	if h.Sleep != nil {
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(h.Sleep.Seconds)*time.Second, grace)):
		}
		return
	}
	hctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	podIP := ""
	if pw.net != nil && pw.net.IP != nil {
		podIP = pw.net.IP.String()
	}
	ph := corev1.ProbeHandler{Exec: h.Exec, HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket}
	if err := pw.runHandler(hctx, ph, c, id, podIP); err != nil {
		pw.a.log.Info("agent: preStop hook failed", "pod", pod.Namespace+"/"+pod.Name, "container", name, "err", err)
	}
}
