package netproxy

import (
	"fmt"
	"strings"

	"github.com/google/nftables"
)

// Sharding: the service chains are spread over several tables because the
// kernel re-validates a whole table (every chain reachable from its base
// chains, through every verdict-map element) on each commit that adds a
// jump, goto or NAT rule to it. With all chains in one table, one endpoint
// change at 10,000 services cost ~15 ms of validation per hook. A service
// port lives in the shard picked by its chain hash, so an incremental
// change touches only the shards of the ports that changed.

const (
	// portsPerShard is the number of service ports one shard table is
	// sized for: the shard count is the smallest power of two that keeps
	// the average at or below it (measured: see doc.go).
	portsPerShard = 1000
	// maxShards bounds the shard count (every shard adds hooks that each
	// new connection passes).
	maxShards = 64
	// maxTableName is the longest Options.Table: nftables names hold 255
	// bytes, and shard tables add "_NN".
	maxTableName = 255 - 3
)

// shardCount is the number of shard tables for the given number of
// service ports: a power of two, at least 1, at most maxShards, with at
// most perShard ports per table on average.
func shardCount(ports, perShard int) int {
	n := 1
	for n < maxShards && n*perShard < ports {
		n *= 2
	}
	return n
}

// shardOfHash is the shard of the service port whose chain hash is h (the
// base32 characters of portIdent.hash): the first four characters, 20
// uniformly distributed bits, modulo n.
func shardOfHash(h string, n int) int {
	v := 0
	for i := 0; i < 4 && i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'A' && c <= 'Z':
			v = v<<5 | int(c-'A')
		case c >= '2' && c <= '7':
			v = v<<5 | int(c-'2'+26)
		default:
			v <<= 5
		}
	}
	return v % n
}

// refHash returns the service port hash in a reference: a chain or set
// name (svc-H, ext-H, int-H, aff-H) or a bare hash.
func refHash(ref string) string {
	if i := strings.LastIndexByte(ref, '-'); i >= 0 {
		return ref[i+1:]
	}
	return ref
}

// shardOf is the shard that holds whatever ref names (see refHash).
func shardOf(ref string, n int) int { return shardOfHash(refHash(ref), n) }

// shardTableName names shard i of the tables with the given prefix:
// prefix_00, prefix_01, …
func shardTableName(prefix string, i int) string { return fmt.Sprintf("%s_%02d", prefix, i) }

// isShardTableName reports whether name is a shard table of prefix
// (prefix_ followed by two or more digits): only such tables, and the
// base table itself, are ever deleted.
func isShardTableName(prefix, name string) bool {
	rest, ok := strings.CutPrefix(name, prefix+"_")
	return ok && len(rest) >= 2 && strings.Trim(rest, "0123456789") == ""
}

// listShardTables returns the names of the shard tables of prefix that
// exist in the namespace open at nsfd (-1: the caller's).
func listShardTables(nsfd int, prefix string) ([]string, error) {
	var opts []nftables.ConnOption
	if nsfd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsfd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink socket for listing tables: %w", err)
	}
	defer c.CloseLasting()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	var out []string
	for _, t := range tables {
		if isShardTableName(prefix, t.Name) {
			out = append(out, t.Name)
		}
	}
	return out, nil
}
