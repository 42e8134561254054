// Package netproxy is Shoal's service dataplane (kube-proxy's job): it turns
// a Config (services, their ports and endpoints) into nftables rules inside a
// network namespace, programmed over netlink, and runs userspace TCP and UDP
// proxies for services that ask for least connections. It balances TCP, UDP
// and SCTP ports. It never sees Kubernetes
// types: the node's glue translates Services and EndpointSlices into Config.
//
// # Layout
//
// netproxy owns the nftables tables (family ip) named Options.Table
// (default "shoal_svc", the base table) and Options.Table followed by "_"
// and two or more digits (the shard tables shoal_svc_00, shoal_svc_01, …),
// and never touches another. The layout stays fast at 10,000 services: no
// set or map is shared by many rules and there are no per-service sets or
// anonymous maps (adding an element walks every rule bound to the set, and
// every new set makes the kernel scan the table's sets).
//
// # Shards
//
// The kernel re-validates a whole table on every commit that adds a jump,
// goto or NAT rule or verdict element to it: every chain reachable from
// each of its base chains, through every element of its verdict maps. In
// one table, one endpoint change at 10,000 services cost ~35 ms, nearly
// all of it that validation. So each service port's chains, affinity set
// and map elements live in one of several shard tables, picked by a stable
// hash of the port's identity (the chain hash below), and an incremental
// change touches only the shard tables of the ports that changed (plus the
// base table for hairpin pairs; a node IP change touches every shard).
//
//   - The shard count is the smallest power of two that keeps the average
//     at or below 1,000 service ports per table (one table up to 1,000
//     ports, 16 at 10,000; at most 64). Measured at 10,000 services × 5
//     endpoints, one endpoint change took p50 38.7 / 10.9 / 6.8 / 4.7 /
//     4.5 / 4.3 ms with 1 / 4 / 8 / 16 / 32 / 64 shards (kernel share
//     35.9 / 7.7 / 4.0 / 2.2 / 1.7 / 1.5 ms); more shards gain little and
//     add hooks every new connection passes.
//   - The count grows while running (the Set that outgrows it is a full
//     resync over the new count); it shrinks only at a full resync (the
//     first Set of a Proxy, or after Resync or a failure). A full resync
//     deletes shard tables beyond the count.
//   - The base table holds what all services share: the hairpin set and
//     nat-postrouting, which masquerades hairpin traffic and packets that a
//     shard's chains marked (the packet mark travels with the packet from
//     table to table).
//   - Every shard table has its own base chains, verdict maps (holding only
//     its ports' elements), reject chain and a copy of the node-ips set
//     (sets cannot be referenced across tables). A service address or node
//     port is an element of exactly one shard's maps, so a packet meets
//     one matching dispatch: the lookups of the other shards miss. Once a
//     shard's nat chain has DNAT'ed a connection, the kernel does not run
//     the other nat chains of the hook; a reject stops the packet at once.
//
// Inside each shard table:
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
//   - int-<hash> exists for internalTrafficPolicy Local only: the ClusterIPs
//     go to it instead of svc-<hash>, and it balances over the node's own
//     endpoints, or drops when the node has none (kube-proxy's "has no local
//     endpoints"). svc-<hash> keeps every endpoint for external traffic
//     with externalTrafficPolicy Cluster and for pods reaching a NodePort.
//     Least-conn ports use round robin there.
//   - Masquerade: nat-postrouting (base table) masquerades packets carrying
//     the mark bit 0x4000 (set with a bitwise or, cleared with an and, so other mark bits
//     survive). Traffic to a service address from outside ClusterCIDR is
//     marked by one rule of the services chain (a membership test of
//     service-ips), not by a rule per service chain; Local ext chains clear
//     the bit again. Hairpin traffic (a pod reaching itself through its
//     service) is masqueraded through ONE set "hairpin" of EP . EP pairs
//     (base table), for DNATed connections only (`ct status dnat`): a
//     node's connection to its own address that conntrack first saw
//     mid-stream must keep its ports.
//     The bridge port of such a pod needs hairpin mode (kubelet sets it)
//     when br_netfilter bridges the DNAT'ed packet back to it.
//   - Services without endpoints are rejected at once (TCP reset, ICMP port
//     unreachable for UDP and SCTP): filter chains hooked at prerouting and output at
//     priority -110 look new connections up in ONE verdict map
//     no-endpoint-services and ONE map no-endpoint-nodeports. Prerouting
//     rather than input/forward: the reject must not depend on the node
//     having a route for the service range. When several ports without
//     endpoints claim one address, the one with the lowest
//     namespace/name:port owns the element (its shard holds it).
//   - sessionAffinity ClientIP, rare, gets a per-service-port dynamic set
//     aff-<hash> with the timeout, keyed client IP . endpoint IP . endpoint
//     port: an entry sends the client back to its endpoint (and refreshes,
//     like the iptables "recent" match), every pick records one. `nft list`
//     prints the membership test's constant parts as "[invalid type]"; the
//     update statement beside it shows the same values readably.
//   - Least connections is a userspace proxy per TCP or UDP service port
//     inside the namespace: the svc chain redirects to its socket
//     (0.0.0.0:0). The TCP proxy sends every accepted connection to the
//     endpoint with the fewest active connections (ties: round robin;
//     session affinity honoured) and splices both ways. The UDP proxy
//     does the same per session, a client address:port: each has its own
//     socket connected to the chosen endpoint and counts as active until
//     it has been quiet for 30 s; replies leave the proxy's socket from
//     the address the client's datagrams were redirected to (IP_PKTINFO),
//     so conntrack gives them the service address as their source. A
//     service port holds at most 4,096 sessions; a new client over that
//     ends the least recently active one (logged), so new clients always
//     get through. Forwarding a datagram allocates
//     nothing. SCTP ports with least-conn fall back to round robin (the
//     node may have no SCTP sockets), and so does externalTrafficPolicy
//     Local traffic (a proxy would hide the client address). A port whose
//     proxy cannot start falls back to round robin and is retried on the
//     next Set. The proxies live in the process: after Close (which leaves
//     the rules in place) the redirect rules point at closed sockets, so
//     least-conn service ports fail until the next Proxy's first Set
//     starts new proxies.
//
// # Updates
//
// The first Set is a full resync in one transaction (for the base table and
// every shard table: add it, delete it, add everything; stale shard tables
// are deleted), so traffic never sees an empty table and any earlier
// content of the tables is replaced. The state is kept per service port
// and does not depend on the shard count: a later Set compares each
// service with the last one, re-renders only what changed, and sends one
// transaction with the changed service chains (flushed and refilled), map
// elements, sets and deleted chains, each in its shard table. A failed
// transaction makes the next Set a full resync (Resync forces one); a
// change of ClusterCIDR, which the services chains use, is one too, and so
// is outgrowing the shard count. Remove deletes the base table and every
// shard table. After a
// successful Set, UDP conntrack entries DNAT'ed to removed endpoints,
// un-NAT'ed entries to service addresses that gained endpoints, and the
// entries of a port that starts or stops using a least-conn proxy (the
// old path's: a new Proxy's first Set starts new proxies on new ports) are
// deleted so the next datagram is balanced again. SCTP
// entries are left alone: associations end, as TCP connections do.
//
// google/nftables builds the messages (the service rules and chains, sent
// by the ten thousand in a full resync, are encoded directly, byte for byte
// as the library would); netproxy sends the batch itself, asking only for
// the last message's acknowledgement, with socket buffers raised to fit the
// batch and set elements in chunks that keep each message's element list
// under 64 KiB.
//
// What cannot be programmed is skipped and logged once: IPv6 addresses,
// protocols other than TCP, UDP and SCTP, port 0, conflicting claims on one
// address (the lowest namespace/name:port with endpoints wins).
package netproxy
