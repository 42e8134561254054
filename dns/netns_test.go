package dns

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"testing"
)

// TestServeInNetNS starts the server inside a network namespace the test
// creates, on 10.43.0.10 (an address on that namespace's loopback), and
// queries it from inside the namespace over UDP and TCP.
func TestServeInNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	name := testNetNS(t)
	s := newTestServer(t, Config{Addrs: []string{"10.43.0.10:53"}, NetNS: "/run/netns/" + name}, testZoneConfig())
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if got := s.Addrs(); len(got) != 1 || got[0].String() != "10.43.0.10:53" {
		t.Errorf("Addrs %v", got)
	}
	if len(s.fastUDP) != DefaultUDPSockets {
		t.Errorf("%d sockets on the fast loop, want %d", len(s.fastUDP), DefaultUDPSockets)
	}
	err := inNetNS("/run/netns/"+name, func() error {
		queryServer(t, "10.43.0.10:53")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// IPv6 (::1 comes with lo in a new namespace).
	v6, err := NewServer(Config{Addrs: []string{"[::1]:53"}, NetNS: "/run/netns/" + name})
	if err != nil {
		t.Fatal(err)
	}
	v6.SetZone(NewZone(testZoneConfig()))
	if err := v6.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v6.Close() })
	err = inNetNS("/run/netns/"+name, func() error {
		queryServer(t, "[::1]:53")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A wildcard address is served by miekg's server (which replies from
	// the address a query came to), the same answers.
	wild, err := NewServer(Config{Addrs: []string{"0.0.0.0:5353"}, NetNS: "/run/netns/" + name})
	if err != nil {
		t.Fatal(err)
	}
	wild.SetZone(NewZone(testZoneConfig()))
	if err := wild.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wild.Close() })
	if len(wild.fastUDP) != 0 {
		t.Errorf("%d wildcard sockets on the fast loop", len(wild.fastUDP))
	}
	err = inNetNS("/run/netns/"+name, func() error {
		queryServer(t, "10.43.0.10:5353")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The address is not in the caller's namespace: without NetNS the
	// same configuration cannot bind.
	s2, err := NewServer(Config{Addrs: []string{"10.43.0.10:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(); err == nil {
		s2.Close()
		t.Error("bound 10.43.0.10 outside the namespace: is it configured on this host?")
	}
	if s3, _ := NewServer(Config{Addrs: []string{"10.43.0.10:53"}, NetNS: "/run/netns/" + name + "-missing"}); s3.Start() == nil {
		s3.Close()
		t.Error("Start in a missing namespace succeeded")
	}
}

// testNetNS creates a network namespace with lo up and 10.43.0.10/32 on
// it, removed when the test ends.
func testNetNS(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "shoaltest-dns-" + hex.EncodeToString(b)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("removing namespace %s: %v\n%s", name, err, out)
		}
	})
	run("-n", name, "link", "set", "lo", "up")
	run("-n", name, "addr", "add", "10.43.0.10/32", "dev", "lo")
	return name
}
