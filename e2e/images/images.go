// Package images builds Shoal's test images from source, with no registry
// and no download: OCI archives (image.BuildArchive) that a node imports.
//
//   - BuildEcho: the echo server of examples/echo (an HTTP server answering
//     with its pod name and IP), compiled static for the host's
//     architecture, at /echo with Entrypoint ["/echo"], on top of the host's
//     static busybox so that `kubectl exec` into it finds sh, wget, cat, ...
//     Without busybox-static on the host the image holds /echo alone (no
//     error: the server still runs, only exec into it has no shell);
//     HasBusybox tells which.
//   - BuildGRPCHealth: the gRPC health server of examples/grpchealth (for
//     gRPC probes; NOT_SERVING while /tmp/unhealthy exists, which
//     `/grpchealth fail` creates), the same way at /grpchealth, with
//     busybox when the host has it and a /tmp in any case.
//   - Busybox: the plain busybox image (image.BusyboxImage).
//
// BuildEcho and BuildGRPCHealth run `go build`, so they need the go tool
// and the working directory inside the Shoal module (tests and benchmarks
// of this repository are). Functions are safe for concurrent use.
package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/shoal-dev/shoal/node/container/image"
)

// Default image refs of the test images.
const (
	EchoRef       = "shoal.dev/echo:v1"
	GRPCHealthRef = "shoal.dev/grpchealth:v1"
	BusyboxRef    = "shoal.dev/busybox:v1"
)

// EchoPath is the echo binary in its image; EchoPort the port it listens
// on when $PORT is unset.
const (
	EchoPath = "/echo"
	EchoPort = 8080
)

// GRPCHealthPath is the gRPC health server in its image; GRPCHealthPort
// the port it listens on when $PORT is unset.
const (
	GRPCHealthPath = "/grpchealth"
	GRPCHealthPort = 9090
)

// The servers' packages, relative to the module root.
const (
	echoPackage       = "./examples/echo"
	grpcHealthPackage = "./examples/grpchealth"
)

// BuildEcho compiles examples/echo and writes an OCI archive of an image
// called ref to w.
func BuildEcho(ctx context.Context, w io.Writer, ref string) error {
	if err := buildServerImage(ctx, w, ref, echoPackage, EchoPath, nil); err != nil {
		return fmt.Errorf("building echo image: %w", err)
	}
	return nil
}

// BuildGRPCHealth compiles examples/grpchealth and writes an OCI archive of
// an image called ref to w.
func BuildGRPCHealth(ctx context.Context, w io.Writer, ref string) error {
	// Its state file needs a /tmp, which busybox brings.
	tmp := []image.File{{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777}}
	if err := buildServerImage(ctx, w, ref, grpcHealthPackage, GRPCHealthPath, tmp); err != nil {
		return fmt.Errorf("building grpchealth image: %w", err)
	}
	return nil
}

// buildServerImage compiles pkg, static, and writes an image called ref of
// it at path (the entrypoint) on top of busybox when the host has a static
// one, else with the files of bare alone.
func buildServerImage(ctx context.Context, w io.Writer, ref, pkg, path string, bare []image.File) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "shoal-image-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, filepath.Base(path))
	// No VCS stamp: the binary (and so the image digest) depends on the
	// source alone, not on the state of the working tree.
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", bin, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}

	files := []image.File{{Path: path, Mode: 0o755, SourcePath: bin}}
	busybox, err := image.BusyboxFiles()
	switch {
	case errors.Is(err, image.ErrNoStaticBusybox):
		// An image without a shell still serves; see the package doc.
		files = append(files, bare...)
	case err != nil:
		return err
	default:
		files = append(files, busybox...)
	}
	cfg := image.Config{Entrypoint: []string{path}, Env: []string{image.DefaultPath}}
	_, err = image.BuildArchive(w, ref, files, cfg)
	return err
}

// HasBusybox reports whether BuildEcho and BuildGRPCHealth include
// busybox, i.e. whether the host has a static one (image.CheckStaticBusybox
// says why not).
func HasBusybox() bool { return image.CheckStaticBusybox() == nil }

// Busybox writes an OCI archive of the busybox image called ref to w.
func Busybox(w io.Writer, ref string) error {
	if _, err := image.BusyboxImage(w, ref); err != nil {
		return fmt.Errorf("building busybox image: %w", err)
	}
	return nil
}

// moduleRoot is the directory of the main module's go.mod, as `go env GOMOD`
// reports it from the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the Shoal repository")
	}
	root := filepath.Dir(gomod)
	if _, err := os.Stat(filepath.Join(root, echoPackage, "main.go")); err != nil {
		return "", fmt.Errorf("module %s has no %s: run from the Shoal repository", root, echoPackage)
	}
	return root, nil
}
