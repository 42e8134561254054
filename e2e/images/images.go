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
//   - Busybox: the plain busybox image (image.BusyboxImage).
//
// BuildEcho runs `go build`, so it needs the go tool and the working
// directory inside the Shoal module (tests and benchmarks of this
// repository are). Functions are safe for concurrent use.
package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/shoal-dev/shoal/node/container/image"
)

// Default image refs of the test images.
const (
	EchoRef    = "shoal.dev/echo:v1"
	BusyboxRef = "shoal.dev/busybox:v1"
)

// EchoPath is the echo binary in its image; EchoPort the port it listens
// on when $PORT is unset.
const (
	EchoPath = "/echo"
	EchoPort = 8080
)

// echoPackage is the echo server's package, relative to the module root.
const echoPackage = "./examples/echo"

// BuildEcho compiles examples/echo and writes an OCI archive of an image
// called ref to w.
func BuildEcho(ctx context.Context, w io.Writer, ref string) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return fmt.Errorf("building echo image: %w", err)
	}
	dir, err := os.MkdirTemp("", "shoal-echo-*")
	if err != nil {
		return fmt.Errorf("building echo image: %w", err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "echo")
	// No VCS stamp: the binary (and so the image digest) depends on the
	// source alone, not on the state of the working tree.
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", bin, echoPackage)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building echo image: go build %s: %w\n%s", echoPackage, err, out)
	}

	files := []image.File{{Path: EchoPath, Mode: 0o755, SourcePath: bin}}
	busybox, err := image.BusyboxFiles()
	switch {
	case errors.Is(err, image.ErrNoStaticBusybox):
		// An image without a shell still serves; see the package doc.
	case err != nil:
		return fmt.Errorf("building echo image: %w", err)
	default:
		files = append(files, busybox...)
	}
	cfg := image.Config{Entrypoint: []string{EchoPath}, Env: []string{image.DefaultPath}}
	if _, err := image.BuildArchive(w, ref, files, cfg); err != nil {
		return fmt.Errorf("building echo image: %w", err)
	}
	return nil
}

// HasBusybox reports whether BuildEcho includes busybox, i.e. whether the
// host has a static one (image.CheckStaticBusybox says why not).
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
