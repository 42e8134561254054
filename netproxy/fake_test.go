package netproxy

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

func TestFakeRecordsCopies(t *testing.T) {
	var f Fake
	var dp Dataplane = &f
	if _, ok := f.Last(); ok {
		t.Fatal("an empty Fake has a last config")
	}
	cfg := Config{NodeIPs: []netip.Addr{a4("192.168.1.10")}, Services: []Service{webService(ep("10.42.0.2", 8080))}}
	if err := dp.Set(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Services[0].Ports[0].Endpoints[0].Port = 1 // the caller reuses its slices
	cfg.NodeIPs[0] = a4("192.168.1.99")
	f.Err = errors.New("boom")
	if err := dp.Set(context.Background(), Config{}); err == nil {
		t.Error("Set did not return Err")
	}
	got := f.Configs()
	if len(got) != 2 {
		t.Fatalf("%d configs recorded, want 2", len(got))
	}
	if p := got[0].Services[0].Ports[0].Endpoints[0].Port; p != 8080 {
		t.Errorf("recorded endpoint port changed with the caller's slice: %d", p)
	}
	if got[0].NodeIPs[0] != a4("192.168.1.10") {
		t.Errorf("recorded node IP changed with the caller's slice: %s", got[0].NodeIPs[0])
	}
	if last, ok := f.Last(); !ok || len(last.Services) != 0 {
		t.Errorf("Last = %+v, %v", last, ok)
	}
}
