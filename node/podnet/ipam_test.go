package podnet

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// These tests need no privileges: the allocator is plain files.

// save writes the table as Network.commit does, for a single caller.
func (a *ipam) save() error {
	b, gen, err := a.encode()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(a.path, b); err != nil {
		return err
	}
	a.saved = max(a.saved, gen)
	return nil
}

func TestIPAMAllocatePersistRelease(t *testing.T) {
	dir := t.TempDir()
	cidr := mustCIDR("10.42.3.0/24")
	a, err := openIPAM(dir, cidr)
	if err != nil {
		t.Fatal(err)
	}
	r1, _, err := a.put("p1", podRecord{NetNS: "/ns/p1"}, true)
	if err != nil {
		t.Fatal(err)
	}
	r2, _, err := a.put("p2", podRecord{NetNS: "/ns/p2"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if a.saved != 0 {
		t.Errorf("put wrote the table (saved gen %d); commits do that", a.saved)
	}
	if err := a.save(); err != nil {
		t.Fatal(err)
	}
	if r1.IP != "10.42.3.2" || r2.IP != "10.42.3.3" {
		t.Errorf("first IPs = %s, %s; want 10.42.3.2, 10.42.3.3 (.1 is the gateway)", r1.IP, r2.IP)
	}
	if r1.Veth == r2.Veth || !strings.HasPrefix(r1.Veth, hostVethPrefix) || len(r1.Veth) > 15 {
		t.Errorf("veth names %q %q", r1.Veth, r2.Veth)
	}

	// A fresh allocator on the same dir sees the same table.
	b, err := openIPAM(dir, cidr)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a.snapshot(), b.snapshot()); diff != "" {
		t.Errorf("reloaded table differs:\n%s", diff)
	}
	got, _ := b.get("p1")
	if got.NetNS != "/ns/p1" || got.Veth != r1.Veth {
		t.Errorf("reloaded p1 = %+v", got)
	}

	// Next-fit: a freed address is not the next one handed out.
	gen := b.remove("p1")
	r3, _, err := b.put("p3", podRecord{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if b.gen != gen+1 {
		t.Errorf("generations: remove %d, then put → %d", gen, b.gen)
	}
	if r3.IP != "10.42.3.4" {
		t.Errorf("after freeing .2, next = %s; want 10.42.3.4 (next-fit)", r3.IP)
	}
	if g := b.remove("never"); g != b.gen || g != gen+1 {
		t.Errorf("removing an unknown pod changed the generation to %d", g)
	}
	if err := b.save(); err != nil {
		t.Fatal(err)
	}
	c, err := openIPAM(dir, cidr)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]net.IP{"p2": net.ParseIP("10.42.3.3").To4(), "p3": net.ParseIP("10.42.3.4").To4()}, c.snapshot()); diff != "" {
		t.Errorf("persisted after release (-want +got):\n%s", diff)
	}
	// The cursor survives too.
	r4, _, _ := c.put("p4", podRecord{}, true)
	if r4.IP != "10.42.3.5" {
		t.Errorf("after reload next = %s, want 10.42.3.5", r4.IP)
	}
}

func TestIPAMNeverTwiceAndExhaustion(t *testing.T) {
	a, err := openIPAM(t.TempDir(), mustCIDR("10.42.3.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for i := range 253 { // .2 ... .254
		id := fmt.Sprintf("p%d", i)
		r, _, err := a.put(id, podRecord{}, true)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if other, dup := seen[r.IP]; dup {
			t.Fatalf("%s handed to %s and %s", r.IP, other, id)
		}
		if r.IP == "10.42.3.0" || r.IP == "10.42.3.1" || r.IP == "10.42.3.255" {
			t.Fatalf("handed out reserved address %s", r.IP)
		}
		seen[r.IP] = id
	}
	_, _, err = a.put("extra", podRecord{}, true)
	if !errors.Is(err, ErrNoFreeIP) {
		t.Fatalf("full CIDR: %v, want ErrNoFreeIP", err)
	}
	if want := "all 253 addresses of 10.42.3.0/24 are allocated"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
	if _, ok := a.get("extra"); ok {
		t.Error("failed allocation left a record")
	}
	// Churn: release and reallocate many times; live addresses stay unique.
	for i := range 300 {
		victim := fmt.Sprintf("p%d", i%253)
		a.remove(victim)
		r, _, err := a.put(victim, podRecord{}, true)
		if err != nil {
			t.Fatal(err)
		}
		if owner := a.byIP[ip4ToU32(net.ParseIP(r.IP))]; owner != victim {
			t.Fatalf("%s owned by %s, want %s", r.IP, owner, victim)
		}
	}
	if len(a.byIP) != 253 || len(a.pods) != 253 {
		t.Errorf("indexes out of step: %d addresses, %d pods", len(a.byIP), len(a.pods))
	}
}

func TestIPAMRejectsBadState(t *testing.T) {
	cidr := mustCIDR("10.42.3.0/24")
	for name, content := range map[string]string{
		"garbage":      "{not json",
		"version":      `{"version": 9, "pods": {}}`,
		"bad ip":       `{"version": 1, "pods": {"a": {"ip": "nope"}}}`,
		"duplicate ip": `{"version": 1, "pods": {"a": {"ip": "10.42.3.7"}, "b": {"ip": "10.42.3.7"}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := openIPAM(dir, cidr); err == nil {
				t.Error("loaded a bad state file; resetting it could hand out live addresses twice")
			}
		})
	}
}

func TestIPAMOutOfRangeRecordKept(t *testing.T) {
	dir := t.TempDir()
	old, _ := openIPAM(dir, mustCIDR("10.42.3.0/24"))
	if _, _, err := old.put("p", podRecord{NetNS: "/ns/p"}, true); err != nil {
		t.Fatal(err)
	}
	if err := old.save(); err != nil {
		t.Fatal(err)
	}
	// The node's CIDR changed: the record stays (for teardown) but reserves
	// nothing in the new range.
	a, err := openIPAM(dir, mustCIDR("10.42.4.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	r, ok := a.get("p")
	if !ok || a.inRange("p", r) {
		t.Fatalf("record %+v ok=%v inRange=%v", r, ok, a.inRange("p", r))
	}
	r2, _, err := a.put("q", podRecord{}, true)
	if err != nil || r2.IP != "10.42.4.2" {
		t.Errorf("new allocation %q %v", r2.IP, err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.PodCIDR, ok.StateDir = "10.42.3.0/24", "/var/lib/shoal/podnet"
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if got := (Config{PodCIDR: "10.42.3.0/24", StateDir: "/s", Mode: ModeVXLAN, NodeIP: "10.0.0.1"}).withDefaults(); got.MTU != 1450 || got.Bridge != "shoal0" || got.NetNSDir != "/s/netns" {
		t.Errorf("vxlan defaults = %+v", got)
	}
	for name, mut := range map[string]func(*Config){
		"no pod cidr":         func(c *Config) { c.PodCIDR = "" },
		"host bits":           func(c *Config) { c.PodCIDR = "10.42.3.1/24" },
		"ipv6":                func(c *Config) { c.PodCIDR = "fd00::/64" },
		"outside cluster":     func(c *Config) { c.PodCIDR = "10.50.0.0/24" },
		"mode":                func(c *Config) { c.Mode = "wireguard" },
		"vxlan without node":  func(c *Config) { c.Mode = ModeVXLAN },
		"bad node ip":         func(c *Config) { c.NodeIP = "x" },
		"no state dir":        func(c *Config) { c.StateDir = "" },
		"long bridge":         func(c *Config) { c.Bridge = "a-very-long-bridge-name" },
		"tiny mtu":            func(c *Config) { c.MTU = 100 },
		"relative netns dir":  func(c *Config) { c.NetNSDir = "netns" },
		"pod cidr too narrow": func(c *Config) { c.PodCIDR = "10.42.3.0/31" },
	} {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}

func TestNFTScript(t *testing.T) {
	want := `table ip shoal_podnet {}
delete table ip shoal_podnet
table ip shoal_podnet {
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		ip saddr 10.42.3.0/24 ip daddr != 10.42.0.0/16 masquerade
	}
}
`
	if got := nftScript(mustCIDR("10.42.3.0/24"), mustCIDR("10.42.0.0/16")); got != want {
		t.Errorf("script:\n%s\nwant:\n%s", got, want)
	}
	if got := nftScript(mustCIDR("10.42.3.0/24"), nil); got != "table ip shoal_podnet {}\ndelete table ip shoal_podnet\n" {
		t.Errorf("disabled script:\n%s", got)
	}
}

// TestCommitGroupsWrites checks commit's group commit without namespaces:
// changes made while a write is in flight share the next write, every
// caller returns with its change on disk, and a failed write is retried
// by the next commit.
func TestCommitGroupsWrites(t *testing.T) {
	dir := t.TempDir()
	cidr := mustCIDR("10.42.3.0/24")
	a, err := openIPAM(dir, cidr)
	if err != nil {
		t.Fatal(err)
	}
	n := &Network{ipam: a}

	const pods = 10
	n.saveMu.Lock() // a write in flight
	var wg sync.WaitGroup
	errs := make(chan error, pods)
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("p%d", i)
			n.mu.Lock()
			r, gen, err := n.ipam.put(id, podRecord{}, true)
			n.mu.Unlock()
			if err == nil {
				err = n.commit(gen)
			}
			if err != nil {
				errs <- err
				return
			}
			onDisk, err := openIPAM(dir, cidr)
			if err != nil {
				errs <- err
				return
			}
			if got, _ := onDisk.get(id); got.IP != r.IP {
				errs <- fmt.Errorf("commit of %s returned before its record (%s) was on disk: %+v", id, r.IP, got)
			}
		}()
	}
	for {
		n.mu.Lock()
		gen := n.ipam.gen
		n.mu.Unlock()
		if gen == pods {
			break
		}
		time.Sleep(time.Millisecond)
	}
	n.saveMu.Unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n.writes != 1 {
		t.Errorf("%d changes made during one write took %d writes, want 1", pods, n.writes)
	}
	if n.ipam.saved != pods {
		t.Errorf("saved generation %d, want %d", n.ipam.saved, pods)
	}
	if err := n.commit(n.ipam.gen); err != nil || n.writes != 1 {
		t.Errorf("commit with nothing new: err %v, writes %d (want no write)", err, n.writes)
	}

	// A failed write keeps the change in memory; the next commit saves it.
	n.ipam.path = filepath.Join(dir, "missing-dir", stateFileName)
	gen := n.ipam.remove("p0")
	if err := n.commit(gen); err == nil {
		t.Fatal("commit into a missing directory succeeded")
	}
	n.ipam.path = filepath.Join(dir, stateFileName)
	if _, ok := n.ipam.get("p0"); ok {
		t.Error("failed commit brought p0 back")
	}
	if err := n.commit(n.ipam.gen); err != nil {
		t.Fatal(err)
	}
	onDisk, err := openIPAM(dir, cidr)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := onDisk.get("p0"); ok || len(onDisk.pods) != pods-1 {
		t.Errorf("after the retried commit the file holds %v", onDisk.ids())
	}
}
