package gossip

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Name = "node-1"
	c.SecretKey = make([]byte, KeySize)
	return c
}

func TestDefaultConfigUsable(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig with Name and SecretKey: %v", err)
	}
	if c.BindPort != DefaultPort {
		t.Errorf("BindPort = %d, want %d", c.BindPort, DefaultPort)
	}
	if c.Logger != nil {
		t.Error("default Logger must be nil (quiet)")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"kernel-chosen port", func(c *Config) { c.BindPort = 0 }, ""},
		{"advertise", func(c *Config) { c.AdvertiseAddr, c.AdvertisePort = "10.0.0.1", 8000 }, ""},
		{"ipv6 bind", func(c *Config) { c.BindAddr = "::1" }, ""},
		{"max meta", func(c *Config) { c.Meta = make([]byte, MetaMaxSize) }, ""},
		{"no reclaim", func(c *Config) { c.DeadNodeReclaimTime = 0 }, ""},
		{"no name", func(c *Config) { c.Name = "" }, "Name is empty"},
		{"bind host name", func(c *Config) { c.BindAddr = "localhost" }, "BindAddr"},
		{"empty bind", func(c *Config) { c.BindAddr = "" }, "BindAddr"},
		{"bad advertise", func(c *Config) { c.AdvertiseAddr = "10.0.0" }, "AdvertiseAddr"},
		{"port range", func(c *Config) { c.BindPort = 70000 }, "BindPort"},
		{"advertise port range", func(c *Config) { c.AdvertisePort = -1 }, "AdvertisePort"},
		{"no key", func(c *Config) { c.SecretKey = nil }, "SecretKey"},
		{"aes-128 key", func(c *Config) { c.SecretKey = make([]byte, 16) }, "SecretKey"},
		{"meta too large", func(c *Config) { c.Meta = make([]byte, MetaMaxSize+1) }, "Meta"},
		{"probe interval", func(c *Config) { c.ProbeInterval = 0 }, "ProbeInterval"},
		{"probe timeout above interval", func(c *Config) { c.ProbeTimeout = c.ProbeInterval }, "ProbeTimeout"},
		{"suspicion", func(c *Config) { c.SuspicionMult = 0 }, "SuspicionMult"},
		{"gossip interval", func(c *Config) { c.GossipInterval = 0 }, "GossipInterval"},
		{"push pull", func(c *Config) { c.PushPullInterval = 0 }, "PushPullInterval"},
		{"reclaim", func(c *Config) { c.DeadNodeReclaimTime = -time.Second }, "DeadNodeReclaimTime"},
		{"tcp timeout", func(c *Config) { c.TCPTimeout = 0 }, "TCPTimeout"},
		{"broadcast timeout", func(c *Config) { c.BroadcastTimeout = 0 }, "BroadcastTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want error mentioning %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	var c Config
	err := c.Validate()
	for _, want := range []string{"Name", "BindAddr", "SecretKey", "ProbeInterval", "BroadcastTimeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(zero Config) = %v, want it to mention %s", err, want)
		}
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	c := validConfig()
	c.SecretKey = nil
	if _, err := New(c); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New with no key = %v, want ErrInvalidConfig", err)
	}
}

func TestNormalizeSeed(t *testing.T) {
	tests := []struct {
		in, want string // want "" means ErrInvalidSeed
	}{
		{"10.0.0.1", "10.0.0.1:7946"},
		{"10.0.0.1:8000", "10.0.0.1:8000"},
		{" 10.0.0.1 ", "10.0.0.1:7946"},
		{"::1", "[::1]:7946"},
		{"[::1]", "[::1]:7946"},
		{"[fd00::1]:8000", "[fd00::1]:8000"},
		{"node-a.lan", "node-a.lan:7946"},
		{"node-a.lan:1", "node-a.lan:1"},
		{"", ""},
		{"10.0.0.1:", ""},
		{":7946", ""},
		{"10.0.0.1:0", ""},
		{"10.0.0.1:65536", ""},
		{"10.0.0.1:http", ""},
		{"fd00::zz", ""},
		{"[]", ""},
	}
	for _, tt := range tests {
		got, err := normalizeSeed(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrInvalidSeed) {
				t.Errorf("normalizeSeed(%q) = %q, %v; want ErrInvalidSeed", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("normalizeSeed(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestStrings(t *testing.T) {
	for v, want := range map[State]string{StateAlive: "alive", StateSuspect: "suspect", StateDead: "dead", StateLeft: "left", 9: "State(9)"} {
		if got := v.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(v), got, want)
		}
	}
	for v, want := range map[EventType]string{EventJoin: "join", EventUpdate: "update", EventLeave: "leave", EventDead: "dead", 9: "EventType(9)"} {
		if got := v.String(); got != want {
			t.Errorf("EventType(%d).String() = %q, want %q", int(v), got, want)
		}
	}
}

func TestMetaHeader(t *testing.T) {
	tests := []struct {
		meta    []byte
		leaving bool
	}{
		{nil, false},
		{nil, true},
		{[]byte("x"), false},
		{make([]byte, MetaMaxSize), true},
	}
	for _, tt := range tests {
		wire := encodeMeta(tt.meta, tt.leaving)
		if len(wire) > memberlist.MetaMaxSize {
			t.Errorf("encoded meta is %d bytes, over memberlist's %d", len(wire), memberlist.MetaMaxSize)
		}
		meta, leaving := decodeMeta(wire)
		if !bytes.Equal(meta, tt.meta) || leaving != tt.leaving || (len(meta) == 0 && meta != nil) {
			t.Errorf("decodeMeta(encodeMeta(%q, %t)) = %q, %t", tt.meta, tt.leaving, meta, leaving)
		}
	}
	// Unknown flags are ignored; a header-less meta means nothing.
	if meta, leaving := decodeMeta([]byte{0xfe, 'm'}); string(meta) != "m" || leaving {
		t.Errorf("decodeMeta with unknown flags = %q, %t", meta, leaving)
	}
	if meta, leaving := decodeMeta(nil); meta != nil || leaving {
		t.Errorf("decodeMeta(nil) = %q, %t", meta, leaving)
	}
}
