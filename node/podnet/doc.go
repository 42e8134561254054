// Package podnet gives pods on one node their network: a network namespace,
// a veth pair whose host side hangs off the node bridge (default "shoal0"),
// an address from the node's pod CIDR, and a default route through the
// bridge. It also routes other nodes' pod CIDRs (host-gw routes, or a
// flannel-style VXLAN device with static FDB and ARP entries) and
// masquerades pod traffic that leaves the cluster CIDR.
//
// podnet is a leaf: it knows nothing of pods, nodes or the API. The agent
// translates cluster objects into a [Config], pod IDs and [Peer] lists.
//
// # Where it programs
//
// Everything happens inside the network namespace named by Config.HostNS (the
// agent passes its own, tests pass throwaway ones). Netlink sockets are opened
// inside that namespace; sysctls, the nft program and namespace creation run
// on a goroutine that locks its OS thread, switches namespace and exits
// without unlocking, so the Go runtime discards the thread and no other
// goroutine ever runs in a namespace it did not choose.
//
// # Declarative and idempotent
//
// Setup converges a pod's network to the wanted state from whatever exists
// (nothing, half-built after a crash, or complete). SetPeers converges routes,
// FDB and ARP entries to exactly the given peer set and removes stale ones,
// identifying its routes by a route protocol of its own
// (RouteProtocol). Teardown of what is gone is success.
//
// podnet adds no filter rules: a host whose forwarding is blocked elsewhere
// (an iptables FORWARD policy of DROP, say) blocks pod traffic too.
//
// # State
//
// Address allocations live in Config.StateDir/podnet.json, rewritten
// atomically (write, fsync, rename, fsync dir) before any host object is
// created, and released only after the pod's objects are gone: an address is
// never handed out twice, even across crashes. One Network owns a StateDir at
// a time (an flock held until Close).
//
// # Concurrency
//
// A Network is safe for concurrent use. Setup and Teardown of the same pod
// ID serialize; different pods proceed in parallel. SetPeers calls serialize
// with each other and touch no pod state. GC takes each victim's pod lock, and
// never collects a pod whose Setup started after the GC call began. Config is
// copied by New and never mutated afterwards.
package podnet
