package consensus

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPropose measures committed proposals per second with many
// concurrent proposers.
func BenchmarkPropose(b *testing.B) {
	b.Run("1node", func(b *testing.B) {
		n := startNode(b, "solo", b.TempDir(), "", true)
		waitLeader(b, n)
		benchPropose(b, n, n)
	})
	b.Run("3nodes-leader", func(b *testing.B) {
		nodes := newCluster(b, 3)
		leader := waitLeader(b, nodes...)
		benchPropose(b, leader, leader)
	})
	b.Run("3nodes-follower", func(b *testing.B) {
		nodes := newCluster(b, 3)
		leader := waitLeader(b, nodes...)
		benchPropose(b, followersOf(leader, nodes)[0], leader)
	})
}

// BenchmarkProposeSequential is one client writing in sequence: ns/op is
// the commit latency through raft alone (real TLS transport, fsyncs on
// three disks), without the API in front.
func BenchmarkProposeSequential(b *testing.B) {
	for _, via := range []string{"leader", "follower"} {
		b.Run("3nodes-"+via, func(b *testing.B) {
			nodes := newCluster(b, 3)
			leader := waitLeader(b, nodes...)
			n := leader
			if via == "follower" {
				n = followersOf(leader, nodes)[0]
			}
			cmd := make([]byte, 256)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			b.ResetTimer()
			for b.Loop() {
				idx, _, err := n.Propose(ctx, cmd)
				if err != nil {
					b.Fatal(err)
				}
				if err := n.WaitApplied(ctx, idx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchPropose(b *testing.B, via, leader *testNode) {
	cmd := make([]byte, 256)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before := leader.Stats()
	var failed atomic.Int64
	b.SetParallelism(32) // 32 × GOMAXPROCS proposers
	b.SetBytes(int64(len(cmd)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := via.Propose(ctx, cmd); err != nil {
				failed.Add(1)
			}
		}
	})
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d proposals failed", f)
	}
	after := leader.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	if e := after.ProposedEntries - before.ProposedEntries; e > 0 {
		b.ReportMetric(float64(after.ProposedCommands-before.ProposedCommands)/float64(e), "cmds/entry")
	}
}
