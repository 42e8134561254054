package consensus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var serial = struct {
	sync.Mutex
	n int64
}{}

func nextSerial() *big.Int {
	serial.Lock()
	defer serial.Unlock()
	serial.n++
	return big.NewInt(serial.n)
}

func newTestCA(tb testing.TB, name string) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue creates a node certificate with server and client auth for 127.0.0.1.
func (ca *testCA) issue(tb testing.TB, cn string) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (ca *testCA) tlsConfig(tb testing.TB, cn string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{ca.issue(tb, cn)},
		RootCAs:      ca.pool,
		ClientCAs:    ca.pool,
	}
}

// record is one command as the test FSM saw it.
type record struct {
	Index uint64
	Cmd   string
}

// testFSM is an append-only list of commands.
type testFSM struct {
	mu       sync.Mutex
	records  []record // guarded by mu
	restores int      // guarded by mu
}

func (f *testFSM) Apply(index uint64, cmd []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records = append(f.records, record{index, string(cmd)})
	return []byte("ok:" + string(cmd))
}

// gateFSM calls before with each command before applying it.
type gateFSM struct {
	FSM
	before func(cmd []byte)
}

func (g *gateFSM) Apply(index uint64, cmd []byte) []byte {
	g.before(cmd)
	return g.FSM.Apply(index, cmd)
}

func (f *testFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return listSnapshot(slices.Clone(f.records)), nil
}

func (f *testFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var recs []record
	if err := json.NewDecoder(rc).Decode(&recs); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records = recs
	f.restores++
	return nil
}

func (f *testFSM) snapshotRecords() []record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.records)
}

func (f *testFSM) restoreCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

type listSnapshot []record

func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]record(s)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (listSnapshot) Release() {}

// testLogWriter forwards logs to t.Log until the test ends.
type testLogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testLogger(tb testing.TB, name string) hclog.Logger {
	w := &testLogWriter{t: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	level := hclog.Warn
	if l := os.Getenv("SHOAL_TEST_LOG"); l != "" {
		level = hclog.LevelFromString(l)
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: level, Output: w})
}

// testNode is a Node with its test FSM and what it takes to restart it.
type testNode struct {
	*Node
	fsm *testFSM
	id  string
	dir string
}

type nodeOpt func(*Config)

var sharedCA = sync.OnceValue(func() *testCA { return newTestCA(&panicTB{}, "shoal test CA") })

// panicTB lets a package-level helper use newTestCA.
type panicTB struct{ testing.TB }

func (*panicTB) Helper()           {}
func (*panicTB) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

func testConfig(tb testing.TB, id, dir, bind string, bootstrap bool, fsm FSM) Config {
	cfg := DefaultConfig()
	cfg.ID = id
	cfg.DataDir = dir
	cfg.BindAddr = bind
	cfg.TLS = sharedCA().tlsConfig(tb, id)
	cfg.Bootstrap = bootstrap
	cfg.FSM = fsm
	cfg.Logger = testLogger(tb, id)
	return cfg
}

// startNode starts a node; bind "" means a free port on 127.0.0.1.
func startNode(tb testing.TB, id, dir, bind string, bootstrap bool, opts ...nodeOpt) *testNode {
	tb.Helper()
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	fsm := &testFSM{}
	cfg := testConfig(tb, id, dir, bind, bootstrap, fsm)
	for _, o := range opts {
		o(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		tb.Fatalf("starting %s: %v", id, err)
	}
	tb.Cleanup(func() { _ = n.Shutdown() })
	return &testNode{Node: n, fsm: fsm, id: id, dir: dir}
}

// restart starts a stopped node again from its data dir on its old address.
func (tn *testNode) restart(tb testing.TB, bootstrap bool, opts ...nodeOpt) *testNode {
	tb.Helper()
	return startNode(tb, tn.id, tn.dir, tn.Addr(), bootstrap, opts...)
}

// waitFor polls cond until it holds or the timeout expires.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLeader waits until exactly one of nodes leads and all of them agree.
func waitLeader(tb testing.TB, nodes ...*testNode) *testNode {
	tb.Helper()
	var leader *testNode
	waitFor(tb, 15*time.Second, "a leader all nodes agree on", func() bool {
		leader = nil
		for _, n := range nodes {
			if n.IsLeader() {
				if leader != nil {
					return false
				}
				leader = n
			}
		}
		if leader == nil {
			return false
		}
		for _, n := range nodes {
			if id, _ := n.Leader(); id != leader.id {
				return false
			}
		}
		return true
	})
	return leader
}

// newCluster starts size nodes: the first bootstraps, the others join as
// non-voters, catch up and are promoted.
func newCluster(tb testing.TB, size int, opts ...nodeOpt) []*testNode {
	tb.Helper()
	first := startNode(tb, "node-0", tb.TempDir(), "", true, opts...)
	waitLeader(tb, first)
	nodes := []*testNode{first}
	for i := 1; i < size; i++ {
		n := startNode(tb, fmt.Sprintf("node-%d", i), tb.TempDir(), "", false, opts...)
		join(tb, nodes, n)
		nodes = append(nodes, n)
	}
	waitLeader(tb, nodes...)
	return nodes
}

// join adds n to the cluster of members the careful way: as a non-voter,
// then a voter once caught up, through whichever member leads. A loaded
// machine (-race, parallel packages) can make the leader step down
// mid-join; each step is then retried with the new leader.
func join(tb testing.TB, members []*testNode, n *testNode) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	step := func(what string, f func(leader *testNode) error) {
		tb.Helper()
		waitFor(tb, 30*time.Second, what, func() bool {
			leader := waitLeader(tb, members...)
			err := f(leader)
			if err != nil && !errors.Is(err, ErrNotLeader) {
				tb.Fatalf("%s: %v", what, err)
			}
			return err == nil
		})
	}
	step("AddNonvoter("+n.id+")", func(l *testNode) error { return l.AddNonvoter(n.id, n.Addr()) })
	waitFor(tb, 30*time.Second, n.id+" to catch up", func() bool {
		leader := waitLeader(tb, members...)
		st, err := leader.FetchStats(ctx, n.Addr())
		return err == nil && st.AppliedIndex >= leader.Stats().CommitIndex && st.LeaderID == leader.id
	})
	step("AddVoter("+n.id+")", func(l *testNode) error { return l.AddVoter(n.id, n.Addr()) })
}

func followersOf(leader *testNode, nodes []*testNode) []*testNode {
	var out []*testNode
	for _, n := range nodes {
		if n != leader {
			out = append(out, n)
		}
	}
	return out
}

// waitConverged waits until every node's FSM holds exactly want.
func waitConverged(tb testing.TB, want []record, nodes ...*testNode) {
	tb.Helper()
	waitFor(tb, 15*time.Second, "FSMs to converge", func() bool {
		for _, n := range nodes {
			if !slices.Equal(n.fsm.snapshotRecords(), want) {
				return false
			}
		}
		return true
	})
}

func ctxTimeout(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

func mustPropose(tb testing.TB, n *testNode, cmd string) uint64 {
	tb.Helper()
	idx, resp, err := n.Propose(ctxTimeout(tb, 15*time.Second), []byte(cmd))
	if err != nil {
		tb.Fatalf("Propose(%q) on %s: %v", cmd, n.id, err)
	}
	if string(resp) != "ok:"+cmd {
		tb.Fatalf("Propose(%q) on %s: response %q", cmd, n.id, resp)
	}
	return idx
}
