package netproxy

import (
	"context"
	"slices"
	"sync"
)

// Fake is a Dataplane for unit tests: it records every Config it is given
// (deep copies) and returns Err.
type Fake struct {
	mu      sync.Mutex
	configs []Config
	// Err, when set, is returned by Set (the config is still recorded).
	Err error
}

var _ Dataplane = (*Fake)(nil)

// Set records cfg.
func (f *Fake) Set(ctx context.Context, cfg Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.configs = append(f.configs, cloneConfig(cfg))
	return f.Err
}

// Configs returns every recorded Config, oldest first.
func (f *Fake) Configs() []Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.configs)
}

// Last returns the most recent Config and whether there was one.
func (f *Fake) Last() (Config, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.configs) == 0 {
		return Config{}, false
	}
	return f.configs[len(f.configs)-1], true
}

// cloneConfig copies cfg deeply, so later changes by the caller do not
// alter what was recorded.
func cloneConfig(cfg Config) Config {
	out := Config{ClusterCIDR: cfg.ClusterCIDR, NodeIPs: slices.Clone(cfg.NodeIPs)}
	if cfg.Services != nil {
		out.Services = make([]Service, len(cfg.Services))
	}
	for i, s := range cfg.Services {
		s.ClusterIPs = slices.Clone(s.ClusterIPs)
		s.ExternalIPs = slices.Clone(s.ExternalIPs)
		ports := slices.Clone(s.Ports)
		for j := range ports {
			ports[j].Endpoints = slices.Clone(ports[j].Endpoints)
		}
		s.Ports = ports
		out.Services[i] = s
	}
	return out
}
