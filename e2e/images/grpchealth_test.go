package images

import (
	"archive/tar"
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestGRPCHealthArchive checks the grpchealth image's content, then runs its
// /grpchealth on the host (no root needed), checks its health answers and
// flips them with `grpchealth fail` and `grpchealth pass`.
func TestGRPCHealthArchive(t *testing.T) {
	start := time.Now()
	var buf bytes.Buffer
	if err := BuildGRPCHealth(context.Background(), &buf, GRPCHealthRef); err != nil {
		t.Fatal(err)
	}
	t.Logf("grpchealth archive: %d bytes, built in %v", buf.Len(), time.Since(start).Round(time.Millisecond))
	img := openArchive(t, buf.Bytes())
	if img.name != GRPCHealthRef {
		t.Errorf("image name %q, want %q", img.name, GRPCHealthRef)
	}
	if !slices.Equal(img.config.Config.Entrypoint, []string{GRPCHealthPath}) || len(img.config.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want [%s] and none", img.config.Config.Entrypoint, img.config.Config.Cmd, GRPCHealthPath)
	}
	if img.config.Architecture != runtime.GOARCH || img.config.OS != "linux" {
		t.Errorf("platform %s/%s", img.config.OS, img.config.Architecture)
	}
	name := strings.TrimPrefix(GRPCHealthPath, "/")
	if h := img.hdrs[name]; h == nil || h.Typeflag != tar.TypeReg || h.Mode != 0o755 {
		t.Fatalf("%s entry %+v, want a regular file, mode 0755", GRPCHealthPath, h)
	}
	if h := img.hdrs["tmp/"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode&0o1777 != 0o1777 {
		t.Errorf("/tmp entry %+v, want a directory, mode 1777", h)
	}
	if HasBusybox() {
		if h := img.hdrs["bin/touch"]; h == nil || h.Linkname != "busybox" {
			t.Error("busybox on the host, but no /bin/touch -> busybox in the image")
		}
	}

	// Run the very binary of the image on the host, on a free port.
	env := []string{"UNHEALTHY_FILE=" + filepath.Join(t.TempDir(), "unhealthy")}
	prog := startHostProgram(t, name, img.files[name], append(env, "SERVICES=app, other")...)
	port := prog.port
	conn, err := grpc.Dial("127.0.0.1:"+port, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	check := func(service string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil || resp.GetStatus() != want {
			t.Errorf("Check(%q) = %v, %v; want %v", service, resp.GetStatus(), err, want)
		}
	}
	flip := func(arg string) {
		t.Helper()
		c := exec.Command(prog.path, arg)
		c.Env = env
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("grpchealth %s: %v\n%s", arg, err, out)
		}
	}
	for _, s := range []string{"", "app", "other"} {
		check(s, healthpb.HealthCheckResponse_SERVING)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nosuch"}); status.Code(err) != codes.NotFound {
		t.Errorf("Check(nosuch): %v, want NotFound", err)
	}
	flip("fail")
	check("", healthpb.HealthCheckResponse_NOT_SERVING)
	check("app", healthpb.HealthCheckResponse_NOT_SERVING)
	flip("pass")
	check("", healthpb.HealthCheckResponse_SERVING)
	flip("pass") // passing twice is fine

	prog.stopGracefully(t) // SIGTERM: a graceful exit 0
	for _, want := range []string{"now SERVING", "now NOT_SERVING", "shutting down"} {
		if !strings.Contains(prog.stderr.String(), want) {
			t.Errorf("stderr %q lacks %q", prog.stderr.String(), want)
		}
	}
}
