package agent

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"
)

// grpcServer serves the services register adds on a fresh 127.0.0.1 port
// until the test ends and returns the port, and the User-Agent of every call
// answered so far.
func grpcServer(t *testing.T, register func(*grpc.Server)) (port int32, answered func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		// Recorded once answered, so that a test seeing a call knows
		// which status the caller got.
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		seen = append(seen, strings.Join(md.Get("user-agent"), ","))
		mu.Unlock()
		return resp, err
	}))
	register(srv)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return int32(ln.Addr().(*net.TCPAddr).Port), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// healthServer serves the standard health service with the given statuses
// (by service name, "" for the server as a whole).
func healthServer(t *testing.T, statuses map[string]healthpb.HealthCheckResponse_ServingStatus) (port int32, agents func() []string) {
	t.Helper()
	hs := health.NewServer()
	for svc, st := range statuses {
		hs.SetServingStatus(svc, st)
	}
	return grpcServer(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
}

// stuckHealth answers no Check until the caller gives up.
type stuckHealth struct {
	healthpb.UnimplementedHealthServer
}

func (stuckHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// firstCallsFail answers NOT_SERVING to its first n Checks, then SERVING.
type firstCallsFail struct {
	healthpb.UnimplementedHealthServer
	n     int32
	calls atomic.Int32
}

func (f *firstCallsFail) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if f.calls.Add(1) <= f.n {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// grpcProbe is a gRPC probe of port (and service, unless empty) with a
// timeout of timeoutSeconds.
func grpcProbe(port int32, service string, timeoutSeconds int32) *corev1.Probe {
	g := &corev1.GRPCAction{Port: port}
	if service != "" {
		g.Service = &service
	}
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: g}, TimeoutSeconds: timeoutSeconds}
}

// probeOnceAt runs pr once against host as probeLoop does (bounded by the
// probe's timeout) and returns its verdict and how long it took.
func probeOnceAt(t *testing.T, pr *corev1.Probe, host string) (error, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), secondsOr(pr.TimeoutSeconds, 1))
	defer cancel()
	c := ctr("app")
	start := time.Now()
	err := (&podWorker{}).probeOnce(ctx, pr, &c, "", host)
	return err, time.Since(start)
}

func TestGRPCProbe(t *testing.T) {
	t.Parallel()
	port, _ := healthServer(t, map[string]healthpb.HealthCheckResponse_ServingStatus{
		"":         healthpb.HealthCheckResponse_SERVING,
		"live":     healthpb.HealthCheckResponse_SERVING,
		"draining": healthpb.HealthCheckResponse_NOT_SERVING,
	})
	// A server that never answers: TCP connections are accepted (by the
	// kernel, into the backlog) but nothing speaks HTTP/2 on them.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	silentPort := int32(silent.Addr().(*net.TCPAddr).Port)
	// No listener: a port that was just free.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := int32(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	stuckPort, _ := grpcServer(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, stuckHealth{}) })
	noHealthPort, _ := grpcServer(t, func(*grpc.Server) {})

	for _, tc := range []struct {
		name    string
		probe   *corev1.Probe
		wantErr string // "" = success; else the exact message, or its prefix when it ends in "…"
		slow    bool   // the verdict comes only at the timeout
	}{
		{name: "serving", probe: grpcProbe(port, "", 1)},
		{name: "named service serving", probe: grpcProbe(port, "live", 1)},
		{name: "not serving", probe: grpcProbe(port, "draining", 1), wantErr: `service unhealthy (responded with "NOT_SERVING")`},
		{name: "unknown service", probe: grpcProbe(port, "nosuch", 1),
			wantErr: "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"},
		{name: "no health service", probe: grpcProbe(noHealthPort, "", 1),
			wantErr: "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): …"},
		{name: "no listener", probe: grpcProbe(closedPort, "", 1),
			wantErr: `error: failed to connect service at "127.0.0.1:` + strconv.Itoa(int(closedPort)) + `": …`},
		{name: "no answer to connect", probe: grpcProbe(silentPort, "", 1), slow: true,
			wantErr: `timeout: failed to connect service "127.0.0.1:` + strconv.Itoa(int(silentPort)) + `" within 1s`},
		{name: "no answer to the rpc", probe: grpcProbe(stuckPort, "", 2), slow: true,
			wantErr: "timeout: health rpc did not complete within 2s"},
		{name: "invalid port", probe: grpcProbe(0, "", 1), wantErr: "invalid port 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err, took := probeOnceAt(t, tc.probe, "127.0.0.1")
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("probe failed: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("probe succeeded, want %q", tc.wantErr)
			case tc.wantErr != "" && strings.HasSuffix(tc.wantErr, "…"):
				if !strings.HasPrefix(err.Error(), strings.TrimSuffix(tc.wantErr, "…")) {
					t.Errorf("probe error %q, want %q", err, tc.wantErr)
				}
			case tc.wantErr != "" && err.Error() != tc.wantErr:
				t.Errorf("probe error %q, want %q", err, tc.wantErr)
			}
			// The probe's timeout bounds every verdict; only servers that
			// never answer take that long (slack for a loaded machine).
			timeout := secondsOr(tc.probe.TimeoutSeconds, 1)
			if limit := timeout + time.Second; took > limit {
				t.Errorf("verdict after %v, want within %v", took, limit)
			}
			if !tc.slow && took >= timeout {
				t.Errorf("verdict after %v: waited for the timeout (%v) although the server answered", took, timeout)
			}
		})
	}

	t.Run("user agent", func(t *testing.T) {
		t.Parallel()
		p, answered := healthServer(t, map[string]healthpb.HealthCheckResponse_ServingStatus{"": healthpb.HealthCheckResponse_SERVING})
		if err, _ := probeOnceAt(t, grpcProbe(p, "", 1), "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		// grpc-go appends its own name and version, as on a kubelet.
		if ua := answered(); len(ua) != 1 || !strings.HasPrefix(ua[0], "kube-probe/1.33 ") {
			t.Errorf("user agents %q, want one starting kube-probe/1.33", ua)
		}
	})
}

// TestGRPCProbePlumbing: gRPC probes drive readiness, liveness and startup
// like the other actions. The pods use the host network so that the agent
// probes the test's servers on 127.0.0.1.
func TestGRPCProbePlumbing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	cfg.HostIP = "127.0.0.1"
	h.start(cfg)
	// server serves the health service, NOT_SERVING at first, to one pod.
	server := func(t *testing.T) (hs *health.Server, port int32, answered func() []string) {
		hs = health.NewServer()
		hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		port, answered = grpcServer(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
		return hs, port, answered
	}
	// probed waits until the agent got an answer from the server.
	probed := func(answered func() []string) {
		h.waitFor("a probe", func() bool { return len(answered()) > 0 })
	}
	hostPod := func(name string, set func(*corev1.Container, *corev1.Probe), port int32) *corev1.Pod {
		pr := grpcProbe(port, "", 1)
		pr.PeriodSeconds, pr.FailureThreshold, pr.SuccessThreshold = 1, 1, 1
		c := ctr("app")
		set(&c, pr)
		p := newPod(name, c)
		p.Spec.HostNetwork = true
		p.Spec.TerminationGracePeriodSeconds = new(int64(1))
		return p
	}

	t.Run("readiness", func(t *testing.T) {
		t.Parallel()
		hs, port, answered := server(t)
		h.create(hostPod("grpc-ready", func(c *corev1.Container, pr *corev1.Probe) { c.ReadinessProbe = pr }, port))
		probed(answered)
		h.waitPod("grpc-ready", "running, not ready", all(running("app", 0), isReady(false)))
		hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		h.waitPod("grpc-ready", "ready", isReady(true))
		hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		h.waitPod("grpc-ready", "not ready again", all(isReady(false), running("app", 0)))
	})

	t.Run("liveness", func(t *testing.T) {
		t.Parallel()
		// Only the first run is unhealthy: the agent restarts it once.
		port, _ := grpcServer(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, &firstCallsFail{n: 1}) })
		h.create(hostPod("grpc-live", func(c *corev1.Container, pr *corev1.Probe) { c.LivenessProbe = pr }, port))
		p := h.waitPod("grpc-live", "restarted", running("app", 1))
		lt := status(p, "app").LastTerminationState.Terminated
		want := `Container app failed liveness probe, will be restarted: service unhealthy (responded with "NOT_SERVING")`
		if lt == nil || lt.Message != want {
			t.Errorf("lastState %+v, want message %q", lt, want)
		}
	})

	t.Run("startup", func(t *testing.T) {
		t.Parallel()
		hs, port, answered := server(t)
		pod := hostPod("grpc-start", func(c *corev1.Container, pr *corev1.Probe) { c.StartupProbe = pr }, port)
		pod.Spec.Containers[0].StartupProbe.FailureThreshold = 1000
		h.create(pod)
		probed(answered)
		p := h.waitPod("grpc-start", "running, not started", all(running("app", 0), isReady(false)))
		if cs := status(p, "app"); *cs.Started {
			t.Error("started before the startup probe succeeded")
		}
		hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		p = h.waitPod("grpc-start", "started and ready", isReady(true))
		if cs := status(p, "app"); !*cs.Started || cs.RestartCount != 0 {
			t.Errorf("started %v, restarts %d; want started, never restarted", *cs.Started, cs.RestartCount)
		}
	})
}
