package dns

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestUpstreamsFromResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := `# generated
search default.svc.cluster.local svc.cluster.local
nameserver 10.43.0.10
nameserver 192.0.2.53 # office
nameserver   2001:db8::53
nameserver 192.0.2.53
nameserver not-an-ip
; nameserver 192.0.2.99
nameserver
options ndots:5
nameserver 198.51.100.1
`
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := UpstreamsFromResolvConf(path, mustAddr("10.43.0.10"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"192.0.2.53:53", "[2001:db8::53]:53", "198.51.100.1:53"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	// Every entry is accepted by NewServer.
	if _, err := NewServer(Config{Upstreams: got}); err != nil {
		t.Errorf("NewServer rejects the upstreams: %v", err)
	}

	got, err = UpstreamsFromResolvConf(path)
	if err != nil || len(got) != 4 || got[0] != "10.43.0.10:53" {
		t.Errorf("without exclusions: %q, %v", got, err)
	}

	if _, err := UpstreamsFromResolvConf(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("no error for a missing file")
	}
}
