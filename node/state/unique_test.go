package state

import (
	"bytes"
	"context"
	"io"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func svc(ns, name, ip string, nodePorts ...int32) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	s.Spec.ClusterIP = ip
	if ip != "" {
		s.Spec.ClusterIPs = []string{ip}
	}
	for i, np := range nodePorts {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Port: int32(80 + i), NodePort: np})
	}
	return s
}

func TestUniqueServiceKeys(t *testing.T) {
	fsm := NewFSM(NewStore(0), nil)
	p := NewLocalProposer(fsm)
	ctx := context.Background()
	propose := func(ops ...Op) error {
		_, err := p.Propose(ctx, ops...)
		return err
	}
	if err := propose(Create(svc("a", "one", "10.43.0.5", 30001))); err != nil {
		t.Fatal(err)
	}
	// Another service may not take the IP or the node port, in any namespace.
	if err := propose(Create(svc("b", "two", "10.43.0.5"))); !IsCode(err, CodeTaken) {
		t.Fatalf("same IP: %v, want Taken", err)
	}
	if err := propose(Create(svc("b", "two", "10.43.0.6", 30001))); !IsCode(err, CodeTaken) {
		t.Fatalf("same node port: %v, want Taken", err)
	}
	// Headless services hold nothing.
	if err := propose(Create(svc("a", "h1", "None")), Create(svc("a", "h2", "None"))); err != nil {
		t.Fatal(err)
	}
	// An update keeps its own keys and may change them; the old ones are freed.
	cur, _ := fsm.Store().Get("services", "a", "one")
	next := svc("a", "one", "10.43.0.7", 30002)
	next.UID = cur.GetUID()
	if err := propose(Update(next, rvOf(cur))); err != nil {
		t.Fatal(err)
	}
	if err := propose(Create(svc("b", "two", "10.43.0.5", 30001))); err != nil {
		t.Fatalf("freed keys: %v", err)
	}
	// A failed command leaves the index as it was (undo).
	if err := propose(Create(svc("c", "x", "10.43.0.9")), Create(svc("c", "y", "10.43.0.7"))); !IsCode(err, CodeTaken) {
		t.Fatalf("atomic: %v", err)
	}
	if _, ok := fsm.Store().UniqueOwner(ServiceIPKey("10.43.0.9")); ok {
		t.Fatal("rolled-back create left its IP in the index")
	}
	// Deleting frees; the index survives a snapshot restore.
	if err := propose(Delete(kindFor(t, "services"), "b", "two", 0, "")); err != nil {
		t.Fatal(err)
	}
	if o, ok := fsm.Store().UniqueOwner(ServiceIPKey("10.43.0.5")); ok {
		t.Fatalf("deleted service still holds its IP (%s)", o)
	}
	snap, err := fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.(*snapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	fsm2 := NewFSM(NewStore(0), nil)
	if err := fsm2.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if o, ok := fsm2.Store().UniqueOwner(NodePortKey(30002)); !ok || o != "services/a/one" {
		t.Fatalf("restored index: %q %v", o, ok)
	}
	if _, ok := fsm2.Store().UniqueOwner(NodePortKey(30001)); ok {
		t.Fatal("restored index holds a freed node port")
	}
}

func kindFor(t *testing.T, res string) *Kind {
	k, ok := KindFor(res)
	if !ok {
		t.Fatalf("no kind %s", res)
	}
	return k
}
