// Package localcluster runs a real multi-node Shoal cluster on one machine,
// each node in a network namespace of its own. It is the machinery behind
// `shoal local` and the end-to-end tests.
//
// # Topology
//
// For a cluster named N with k nodes:
//
//	netns "N-lan"   bridge "br0" (.254/24) — kubectl, tests and Cluster.DialContext live here
//	netns "N-n1"    "eth0" (.1/24) ── veth "veth1" on br0 in N-lan
//	   …
//	netns "N-nk"    "eth0" (.k/24) ── veth "vethk" on br0 in N-lan
//
// Each node namespace also has lo up and a default route via the bridge
// address, which leads nowhere: a packet for an address outside the subnet is
// dropped in the lan namespace. Interface names never depend on the cluster
// name. Nothing is ever added to the machine's root network namespace: a
// process in the root namespace reaches the nodes only through
// Cluster.DialContext (a socket created inside the lan namespace) or a
// program started with Cluster.Command.
//
// # Agents
//
// Every node runs the real `shoal agent` under `nsenter --net` (its network
// namespace only: it stays in the machine's mount namespace, so the pod
// namespaces it bind-mounts outlive a killed agent), in a session of its own, with stdout and stderr appended to its log file.
// Agents outlive the process that started them; the PIDs (and process start
// times, to guard against PID reuse) are recorded in DIR/cluster.json so that
// Load can pick the cluster up from another process. Down stops the agents,
// then kills whatever is still running inside the cluster's namespaces (and
// its descendants, e.g. containerd shims and containers), and deletes the
// namespaces and DIR.
//
// # Concurrency
//
// A Cluster is safe for concurrent use by several goroutines of one process;
// its state is guarded by Cluster.mu and saved to DIR/cluster.json after each
// change. Two processes changing the same cluster at the same time (two
// `shoal local` commands) are not coordinated: the last save wins.
//
// This package must not import other Shoal packages: it speaks to the agent
// only through its command line and HTTPS API.
package localcluster
