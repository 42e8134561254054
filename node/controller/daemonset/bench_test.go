package daemonset

import (
	"fmt"
	"testing"
)

// BenchmarkVerdict is the eligibility check of one node.
func BenchmarkVerdict(b *testing.B) {
	p := newPlacement(newDS("agent"))
	n := newNode("n1", nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.verdict(n); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSyncSettled is a sync of a settled DaemonSet on 1,000 nodes:
// what every node or pod event costs the leader.
func BenchmarkSyncSettled(b *testing.B) {
	h := newHarness(b)
	for i := range 1000 {
		h.addNode(newNode(fmt.Sprintf("n%04d", i), nil))
	}
	h.create(newDS("agent"))
	if err := h.sync("agent"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := h.sync("agent"); err != nil {
			b.Fatal(err)
		}
	}
}
