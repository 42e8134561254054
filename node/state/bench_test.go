package state

import (
	"fmt"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/node/state/statetest"
)

// BenchmarkFSMApplyCreate measures what every replica does per ConfigMap
// create: decode the protobuf object, insert, publish the event.
func BenchmarkFSMApplyCreate(b *testing.B) {
	payload := strings.Repeat("x", 200)
	cmds := make([][]byte, b.N)
	for i := range cmds {
		cmd, err := EncodeOps([]Op{Create(cm("default", fmt.Sprintf("cm-%d", i), map[string]string{"payload": payload}))}, statetest.Sealer{})
		if err != nil {
			b.Fatal(err)
		}
		cmds[i] = cmd
	}
	f := NewFSM(NewStore(0), statetest.Sealer{})
	w, _ := f.Store().Watch(WatchOptions{Resource: "configmaps", Buffer: b.N + 1})
	defer w.Stop()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.Apply(uint64(i+1), cmds[i])
	}
}

// BenchmarkEncodeOps measures the proposer's side of a create.
func BenchmarkEncodeOps(b *testing.B) {
	obj := cm("default", "a", map[string]string{"payload": strings.Repeat("x", 200)})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := EncodeOps([]Op{Create(obj)}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList100k lists 100,000 ConfigMaps in 100 namespaces, as a new
// leader's controllers do for every kind when they start.
func BenchmarkList100k(b *testing.B) {
	s := NewStore(0)
	m := s.objs["configmaps"]
	for i := range 100_000 {
		o := cm(fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("cm-%d", i), nil)
		m[objKey(o.Namespace, o.Name)] = o
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if objs, _ := s.List("configmaps", ""); len(objs) != 100_000 {
			b.Fatalf("listed %d", len(objs))
		}
	}
}
