package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSubPath(t *testing.T) {
	vol := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(vol, "nginx.conf"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(vol, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nginx.conf", filepath.Join(vol, "alias")); err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.EvalSymlinks(vol)
	for _, tc := range []struct {
		sub, want, err string
	}{
		{sub: "nginx.conf", want: root + "/nginx.conf"}, // a configMap key mounted as a file
		{sub: "data/sub", want: root + "/data/sub"},     // missing: made as a directory
		{sub: "alias", want: root + "/nginx.conf"},      // a link inside the volume
		{sub: "escape", err: "outside the volume"},      // a planted link to a host path
		{sub: "escape/x", err: "outside the volume"},
		{sub: "../x", err: "relative path inside the volume"},
		{sub: "/etc", err: "relative path inside the volume"},
	} {
		got, err := subPath(vol, tc.sub)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("subPath(%q) = %q, %v; want an error with %q", tc.sub, got, err, tc.err)
			}
		case err != nil || got != tc.want:
			t.Errorf("subPath(%q) = %q, %v; want %q", tc.sub, got, err, tc.want)
		}
	}
	if fi, err := os.Stat(filepath.Join(vol, "data/sub")); err != nil || !fi.IsDir() {
		t.Errorf("the missing subPath was not made a directory: %v", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("something was created outside the volume: %v", ents)
	}
}
