// Command grpchealth is Shoal's gRPC test server: it serves the standard
// health service, grpc.health.v1.Health, for tests of gRPC probes.
// e2e/images packs it into an image.
//
// It listens on $PORT (default 9090). Check answers for the server as a
// whole (service "") and for every name in $SERVICES (comma-separated);
// other names get NotFound, as from grpc-go's health server. The answer is
// SERVING, or NOT_SERVING while the file $UNHEALTHY_FILE (default
// /tmp/unhealthy) exists: it is looked at on every Check, so a test flips
// the server with a file, and back. Watch is not implemented (probes do not
// use it).
//
// The same binary flips its state where no shell is at hand:
//
//	grpchealth fail   creates the file (NOT_SERVING from now on)
//	grpchealth pass   removes it (SERVING again)
//
// e.g. `kubectl exec POD -- /grpchealth fail`. SIGTERM or SIGINT stop the
// server gracefully (in-flight calls finish) and it exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("grpchealth: ")
	file := os.Getenv("UNHEALTHY_FILE")
	if file == "" {
		file = "/tmp/unhealthy"
	}
	var err error
	switch args := os.Args[1:]; {
	case len(args) == 0:
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		err = serve(ctx, file)
	case len(args) == 1 && args[0] == "fail":
		err = os.WriteFile(file, nil, 0o644)
	case len(args) == 1 && args[0] == "pass":
		if err = os.Remove(file); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: grpchealth [fail|pass]")
		os.Exit(2)
	}
	if err != nil {
		log.Fatal(err)
	}
}

func serve(ctx context.Context, file string) error {
	port := os.Getenv("PORT")
	if port == "" {
		port = "9090"
	}
	h := &health{file: file, services: map[string]bool{"": true}}
	for _, s := range strings.Split(os.Getenv("SERVICES"), ",") {
		if s = strings.TrimSpace(s); s != "" {
			h.services[s] = true
		}
	}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, h)
	log.Printf("listening on %s; NOT_SERVING while %s exists", ln.Addr(), file)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	log.Print("shutting down")
	srv.GracefulStop()
	return <-done
}

// health answers Check from the presence of a file.
type health struct {
	healthpb.UnimplementedHealthServer
	file     string
	services map[string]bool // the names Check knows; read-only

	mu   sync.Mutex
	last healthpb.HealthCheckResponse_ServingStatus // guarded by mu: the latest answer, to log changes
}

func (h *health) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if !h.services[req.GetService()] {
		return nil, status.Error(codes.NotFound, "unknown service")
	}
	st := healthpb.HealthCheckResponse_SERVING
	if _, err := os.Stat(h.file); err == nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	h.mu.Lock()
	if st != h.last {
		log.Printf("now %s", st)
		h.last = st
	}
	h.mu.Unlock()
	return &healthpb.HealthCheckResponse{Status: st}, nil
}
