// Package netproxy is Shoal's service dataplane (kube-proxy's job): it turns
// a Config (services, their ports and endpoints) into nftables rules inside a
// network namespace, programmed over netlink, and runs a userspace TCP proxy
// for services that ask for least connections. It never sees Kubernetes
// types: the node's glue translates Services and EndpointSlices into Config.
//
// # Layout
//
// netproxy owns one nftables table (family ip, default "shoal_svc") and never
// touches another. The layout stays fast at 10,000 services: no set or map is
// shared by many rules and there are no per-service sets or anonymous maps
// (adding an element walks every rule bound to the set, and every new set
// makes the kernel scan the table's sets).
//
//   - nat-prerouting (dstnat) and nat-output (-100) jump to "services", where
//     ONE verdict map service-ips (ipv4_addr . inet_proto . inet_service)
//     sends ClusterIP and external-IP traffic to the service port's chain,
//     and ONE map service-nodeports (inet_proto . inet_service), used only
//     for destinations in the set node-ips, does the same for NodePorts.
//   - svc-<hash>, one chain per service port (hash: a stable hash of
//     namespace/name/port name/protocol, as kube-proxy names chains), holds
//     plain rules, one per endpoint. Round robin is the "nth" trick: rule k
//     of N matches `numgen inc mod (N-k) 0`, and each rule's counter
//     advances only when the rule is evaluated, so N×k new connections
//     reach every endpoint exactly k times. Random uses `numgen random` the
//     same way; weighted rule k matches `numgen inc mod (W_k+…+W_N-1) < W_k`,
//     which gives exact proportions. The last rule is unconditional.
//   - ext-<hash> takes NodePort and external-IP traffic: externalTrafficPolicy
//     Cluster marks it for masquerade and goes to svc-<hash>; Local keeps the
//     client address and balances over the node's own endpoints only (pods
//     of the cluster excepted: they get the Cluster behaviour), and drops
//     when the node has none.
//   - Masquerade: nat-postrouting masquerades packets carrying the mark bit
//     0x4000 (set with a bitwise or, cleared with an and, so other mark bits
//     survive). Traffic to a service address from outside ClusterCIDR is
//     marked by one rule of the services chain (a membership test of
//     service-ips), not by a rule per service chain; Local ext chains clear
//     the bit again. Hairpin traffic (a pod reaching itself through its
//     service) is masqueraded through ONE set "hairpin" of EP . EP pairs.
//     The bridge port of such a pod needs hairpin mode (kubelet sets it)
//     when br_netfilter bridges the DNAT'ed packet back to it.
//   - Services without endpoints are rejected at once (TCP reset, ICMP port
//     unreachable for UDP): filter chains hooked at prerouting and output at
//     priority -110 look new connections up in ONE verdict map
//     no-endpoint-services and ONE map no-endpoint-nodeports. Prerouting
//     rather than input/forward: the reject must not depend on the node
//     having a route for the service range.
//   - sessionAffinity ClientIP, rare, gets a per-service-port dynamic set
//     aff-<hash> with the timeout, keyed client IP . endpoint IP . endpoint
//     port: an entry sends the client back to its endpoint (and refreshes,
//     like the iptables "recent" match), every pick records one. `nft list`
//     prints the membership test's constant parts as "[invalid type]"; the
//     update statement beside it shows the same values readably.
//   - Least connections (TCP) is a userspace proxy per service port inside
//     the namespace: the svc chain redirects to its listener (0.0.0.0:0),
//     which sends every accepted connection to the endpoint with the fewest
//     active connections (ties: round robin; session affinity honoured) and
//     splices both ways. UDP ports with least-conn fall back to round
//     robin, and so does externalTrafficPolicy Local traffic (a proxy would
//     hide the client address). A port whose proxy cannot start falls back
//     to round robin and is retried on the next Set.
//
// # Updates
//
// The first Set is a full resync in one transaction (add table, delete it,
// add everything), so traffic never sees an empty table and any earlier
// content of the table is replaced. The state is kept per service port: a
// later Set compares each service with the last one, re-renders only what
// changed, and sends one transaction with the changed service chains
// (flushed and refilled), map elements, sets and deleted chains. A failed
// transaction makes the next Set a full resync (Resync forces one); a change
// of ClusterCIDR, which the services chain uses, is one too. After a
// successful Set, UDP conntrack entries DNAT'ed to removed endpoints, and
// un-NAT'ed entries to service addresses that gained endpoints, are deleted
// so the next datagram is balanced again.
//
// google/nftables builds the messages (the service rules and chains, sent
// by the ten thousand in a full resync, are encoded directly, byte for byte
// as the library would); netproxy sends the batch itself, asking only for
// the last message's acknowledgement, with socket buffers raised to fit the
// batch and set elements in chunks that keep each message's element list
// under 64 KiB.
//
// What cannot be programmed is skipped and logged once: IPv6 addresses,
// protocols other than TCP and UDP, port 0, conflicting claims on one
// address (the lowest namespace/name:port with endpoints wins).
package netproxy
