// Command mkimages writes the images of Shoal's demo and tests as OCI
// archives, built here with no registry: DIR/echo.tar (shoal.dev/echo:v1,
// the echo server of examples/echo plus busybox) and DIR/busybox.tar
// (shoal.dev/busybox:v1). Import them with `shoal image import`.
//
//	go run ./examples/mkimages DIR
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shoal-dev/shoal/e2e/images"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mkimages DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimages:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, im := range []struct {
		file  string
		build func(*os.File) error
	}{
		{"echo.tar", func(f *os.File) error { return images.BuildEcho(context.Background(), f, images.EchoRef) }},
		{"busybox.tar", func(f *os.File) error { return images.Busybox(f, images.BusyboxRef) }},
	} {
		p := filepath.Join(dir, im.file)
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		if err := im.build(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Println(p)
	}
	return nil
}
