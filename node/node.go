package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/consensus"
	"github.com/shoal-dev/shoal/dns"
	"github.com/shoal-dev/shoal/gossip"
	"github.com/shoal-dev/shoal/node/agent"
	"github.com/shoal-dev/shoal/node/apiserver"
	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/controller/apiservice"
	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/pki"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/sysmon"
)

// Version is the Shoal version, set by the linker.
var Version = "0.1.0-dev"

// Annotations Shoal puts on Node objects.
const (
	annNodeID = "shoal.dev/node-id"
)

// Node is one running Shoal node.
type Node struct {
	cfg       Config
	log       *slog.Logger
	dir       dataDir
	id        Identity
	creds     *credentials
	keyring   *pki.Keyring
	tokens    clusterTokens // service-account tokens (tokens.go)
	gossipKey []byte

	store    *state.Store
	fsm      *state.FSM
	raft     *consensus.Node
	gossip   *gossip.Gossip
	proposer *raftProposer
	metrics  *metrics
	// runtime is nil when the node has no container runtime.
	runtime        container.Runtime
	runtimeVersion string
	registry       http.Handler // the runtime's images for peers; nil without one

	agent    atomic.Pointer[agent.Agent] // the kubelet role, once running
	dnsSrv   atomic.Pointer[dns.Child]   // cluster DNS (a child process), once running
	peerOnce sync.Once
	peerHTTP *http.Client

	joinLimit joinLimiter
	now       func() time.Time

	apiCert   atomic.Pointer[tls.Certificate]
	ready     atomic.Bool // the replica caught up and the Node object is registered
	leaving   atomic.Bool
	stopOnce  sync.Once
	stopCh    chan struct{} // closed to stop the node from inside (shoal leave)
	bootstrap bool          // this start created the cluster
	pendingCA *pki.CA       // the new cluster's CA until its key is in the replica
	changed   chan struct{} // membership changed (gossip event): poke the leader

	peersMu    sync.Mutex
	savedPeers []string // guarded by peersMu: last peer list written

	// printJoin is where a new cluster prints how to join it.
	printJoin func(string)
}

// New prepares a node: it creates the cluster (empty data dir, no Join),
// joins one (empty data dir and Join), or resumes (identity on disk). It
// starts nothing that listens; Run does.
func New(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	n := &Node{cfg: cfg, log: cfg.Logger, dir: dataDir(cfg.DataDir), now: time.Now, stopCh: make(chan struct{}), changed: make(chan struct{}, 1)}
	n.tokens.ca = n.clusterCA
	n.printJoin = func(s string) { fmt.Fprintln(os.Stderr, s) }
	if n.dir.exists(leftFile) {
		return nil, fmt.Errorf("this node left its cluster; remove %s to start afresh", cfg.DataDir)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	var err error
	switch id, ierr := n.dir.identity(); {
	case ierr == nil:
		if cfg.Join != "" {
			n.log.Warn("data dir holds a node already: ignoring --join", "cluster", id.ClusterID)
		}
		n.id = id
		if id.NodeName != cfg.NodeName && cfg.NodeName != DefaultConfig().NodeName {
			n.log.Warn("ignoring --node-name: the node keeps its name", "name", id.NodeName)
		}
		err = n.loadSecrets()
	case !errors.Is(ierr, os.ErrNotExist):
		return nil, ierr
	default:
		empty, eerr := n.dir.empty()
		if eerr != nil {
			return nil, eerr
		}
		if !empty {
			return nil, fmt.Errorf("data dir %s is not empty but holds no node identity (an interrupted first start?): remove it to start afresh", cfg.DataDir)
		}
		if cfg.Join == "" {
			err = n.initCluster()
		} else {
			err = n.join(ctx)
		}
	}
	if err != nil {
		return nil, err
	}
	return n, nil
}

func (n *Node) loadSecrets() error {
	var err error
	if n.creds, err = n.dir.credentials(); err != nil {
		return err
	}
	if n.keyring, err = pki.LoadOrCreateKeyring(n.dir.path(keyringFile)); err != nil {
		return err
	}
	if n.gossipKey, err = n.dir.read(gossipKey); err != nil {
		return err
	}
	return nil
}

// initCluster creates the trust material of a new cluster. The CA key goes
// into the replica (sealed) once raft runs: see bootstrapState.
func (n *Node) initCluster() error {
	now := time.Now()
	ca, err := pki.NewCA("shoal-ca", now)
	if err != nil {
		return err
	}
	n.id = Identity{NodeID: uuid.NewString(), NodeName: n.cfg.NodeName, ClusterID: uuid.NewString()}
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return err
	}
	ips, names := nodeCertSANs(net.ParseIP(n.cfg.AdvertiseAddr))
	certPEM, err := ca.IssueNode(n.id.NodeID, n.id.NodeName, ips, names, key.Public(), now, nodeCertTTL)
	if err != nil {
		return err
	}
	if n.creds, err = newCredentials(ca.CertPEM, certPEM, keyPEM); err != nil {
		return err
	}
	if n.keyring, err = pki.NewKeyring(); err != nil {
		return err
	}
	if n.gossipKey, err = pki.NewGossipKey(); err != nil {
		return err
	}
	n.bootstrap = true
	n.pendingCA = ca
	return n.persistSecrets()
}

func (n *Node) persistSecrets() error {
	if err := n.dir.writeCredentials(n.creds); err != nil {
		return err
	}
	if err := n.keyring.Save(n.dir.path(keyringFile)); err != nil {
		return err
	}
	return n.dir.write(gossipKey, n.gossipKey, 0o600)
}

// join asks a member to admit this node.
func (n *Node) join(ctx context.Context) error {
	tok, err := pki.ParseToken(n.cfg.Token)
	if err != nil {
		return err
	}
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return err
	}
	pubPEM, err := pki.MarshalPublicKeyPEM(key.Public())
	if err != nil {
		return err
	}
	nodeID := uuid.NewString()
	resp, ca, err := requestJoin(ctx, n.cfg.Join, tok, joinRequest{
		NodeID: nodeID, NodeName: n.cfg.NodeName, AdvertiseAddr: n.cfg.AdvertiseAddr, PublicKeyPEM: string(pubPEM),
	})
	if err != nil {
		return err
	}
	if pki.Hash(ca) != tok.CAHash {
		return fmt.Errorf("cluster CA mismatch after join") // PinnedTLSConfig already refused this
	}
	if n.creds, err = newCredentials([]byte(resp.CACertPEM), []byte(resp.NodeCertPEM), keyPEM); err != nil {
		return err
	}
	if n.keyring, err = pki.UnmarshalKeyring(resp.Keyring); err != nil {
		return err
	}
	n.gossipKey = resp.GossipKey
	n.id = Identity{NodeID: nodeID, NodeName: n.cfg.NodeName, ClusterID: resp.ClusterID}
	if err := n.persistSecrets(); err != nil {
		return err
	}
	if err := n.dir.writePeers(resp.Seeds); err != nil {
		return err
	}
	n.id.APIAddr = hostPort(n.cfg.AdvertiseAddr, n.cfg.APIPort)
	if err := n.dir.writeIdentity(n.id); err != nil {
		return err
	}
	n.log.Info("joined cluster", "cluster", n.id.ClusterID, "node", n.id.NodeName, "id", n.id.NodeID)
	return nil
}

// Run starts every part of the node and blocks until ctx ends (clean stop:
// the node stays a member) or the node leaves the cluster.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.metrics = newMetrics()
	if d := n.cfg.SysmonTimerSlack; d > 0 {
		if tid, err := sysmon.SetSlack(d); err != nil {
			n.log.Info("runtime monitor keeps the kernel's timer slack", "thread", tid, "err", err)
		} else {
			n.log.Debug("runtime monitor timer slack set", "thread", tid, "slack", d)
		}
	}
	defaults.DefaultTolerationSeconds = n.cfg.DefaultTolerationSeconds
	n.store = state.NewStore(0)
	n.fsm = state.NewFSM(n.store, sealer{n.keyring})

	rcfg := consensus.DefaultConfig()
	rcfg.ID = n.id.NodeID
	rcfg.DataDir = n.dir.path(raftDir)
	rcfg.BindAddr = hostPort(n.cfg.bindIP(), n.cfg.RaftPort)
	rcfg.AdvertiseAddr = hostPort(n.cfg.AdvertiseAddr, n.cfg.RaftPort)
	rcfg.TLS = n.mTLSConfig()
	rcfg.Bootstrap = n.bootstrap
	rcfg.FSM = n.fsm
	// Zero values leave the consensus defaults in place.
	rcfg.SnapshotThreshold, rcfg.SnapshotInterval, rcfg.CommitTimeout = n.cfg.SnapshotThreshold, n.cfg.SnapshotInterval, n.cfg.CommitTimeout
	if hb := n.cfg.HeartbeatTimeout; hb > 0 {
		rcfg.HeartbeatTimeout, rcfg.ElectionTimeout, rcfg.LeaderLeaseTimeout = hb, hb, hb
	}
	var err error
	if n.raft, err = consensus.New(rcfg); err != nil {
		return fmt.Errorf("starting raft: %w", err)
	}
	defer n.raft.Shutdown()
	n.proposer = &raftProposer{raft: n.raft, store: n.store, sealer: sealer{n.keyring}, timeout: n.cfg.ProposeTimeout, metrics: n.metrics}

	gcfg := gossip.DefaultConfig()
	gcfg.Name = n.id.NodeID
	gcfg.BindAddr = n.cfg.bindIP()
	gcfg.BindPort = n.cfg.GossipPort
	gcfg.AdvertiseAddr = n.cfg.AdvertiseAddr
	gcfg.AdvertisePort = n.cfg.GossipPort
	gcfg.SecretKey = n.gossipKey
	gcfg.Meta = n.gossipMeta()
	if n.gossip, err = gossip.New(gcfg); err != nil {
		return fmt.Errorf("starting gossip: %w", err)
	}
	defer n.gossip.Shutdown()

	stopRuntime := n.startRuntime(ctx)
	defer stopRuntime()

	apiLn, err := net.Listen("tcp", hostPort(n.cfg.bindIP(), n.cfg.APIPort))
	if err != nil {
		return fmt.Errorf("API listener: %w", err)
	}
	handler, api, err := n.httpHandler()
	if err != nil {
		return err
	}
	defer api.Close()
	srv := &http.Server{Handler: handler, TLSConfig: n.apiTLSConfig(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slogErrorLog(n.log)}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.ServeTLS(yieldListener{apiLn}, "", "") }()
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_ = srv.Shutdown(sctx)
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(4)
	go func() { defer wg.Done(); n.watchGossip(ctx) }()
	go func() { defer wg.Done(); n.joinGossip(ctx) }()
	go func() { defer wg.Done(); n.runLeadership(ctx) }()
	go func() { defer wg.Done(); n.runNodeSelf(ctx) }()

	n.log.Info("node running", "name", n.id.NodeName, "id", n.id.NodeID, "cluster", n.id.ClusterID,
		"api", hostPort(n.cfg.AdvertiseAddr, n.cfg.APIPort))
	select {
	case <-ctx.Done():
		n.log.Info("stopping")
		return nil
	case <-n.stopCh:
		return nil
	case err := <-srvErr:
		return fmt.Errorf("API server: %w", err)
	}
}

// stop ends Run from inside.
func (n *Node) stop() { n.stopOnce.Do(func() { close(n.stopCh) }) }

// mTLSConfig is the raft port's configuration: both ends present node
// certificates of the cluster CA.
func (n *Node) mTLSConfig() *tls.Config {
	c := pki.ServerTLSConfig(n.creds.pool, n.creds.cert, true)
	c.RootCAs = n.creds.pool
	return c
}

// apiTLSConfig serves the current node certificate, which refreshCert may
// replace while the node runs.
func (n *Node) apiTLSConfig() *tls.Config {
	c := pki.ServerTLSConfig(n.creds.pool, n.creds.cert, false)
	n.apiCert.Store(&n.creds.cert)
	c.Certificates = nil
	c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return n.apiCert.Load(), nil }
	return c
}

// nodeCertSANs are the addresses and names a node's certificate carries:
// its own address, and the kubernetes service's cluster IP and DNS names,
// through which pods reach the API (client-go's in-cluster config checks
// the certificate against them).
func nodeCertSANs(ip net.IP) ([]net.IP, []string) {
	svc := apiservice.FirstIP(apiserver.DefaultServiceCIDR)
	return []net.IP{ip, net.IP(svc.AsSlice())},
		[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
}

// refreshCert issues this node a new certificate when its address, or a
// name nodeCertSANs adds, is not in the current one (a restart with a new
// --advertise-addr, or a certificate from before those names): clients
// such as kubectl check that the certificate names what they dialled.
func (n *Node) refreshCert() error {
	ip := net.ParseIP(n.cfg.AdvertiseAddr)
	ips, names := nodeCertSANs(ip)
	leaf := n.creds.cert.Leaf
	if slices.ContainsFunc(leaf.IPAddresses, ip.Equal) && slices.Contains(leaf.DNSNames, names[len(names)-1]) {
		return nil
	}
	ca, err := n.clusterCA()
	if err != nil {
		return err
	}
	certPEM, err := ca.IssueNode(n.id.NodeID, n.id.NodeName, ips, names, n.creds.cert.Leaf.PublicKey, n.now(), nodeCertTTL)
	if err != nil {
		return err
	}
	creds, err := newCredentials(n.creds.caPEM, certPEM, n.creds.keyPEM)
	if err != nil {
		return err
	}
	if err := n.dir.writeCredentials(creds); err != nil {
		return err
	}
	n.apiCert.Store(&creds.cert)
	n.log.Info("issued a new node certificate", "addr", n.cfg.AdvertiseAddr)
	return nil
}

// gossipMetaV1 is what a node tells the others about itself over gossip.
type gossipMetaV1 struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	API     string `json:"api"`
	Raft    string `json:"raft"`
	Version string `json:"v"`
}

func (n *Node) gossipMeta() []byte {
	b, _ := json.Marshal(gossipMetaV1{
		ID: n.id.NodeID, Name: n.id.NodeName,
		API:     hostPort(n.cfg.AdvertiseAddr, n.cfg.APIPort),
		Raft:    hostPort(n.cfg.AdvertiseAddr, n.cfg.RaftPort),
		Version: Version,
	})
	return b
}

func parseMeta(b []byte) (gossipMetaV1, bool) {
	var m gossipMetaV1
	return m, json.Unmarshal(b, &m) == nil && m.ID != ""
}

// joinGossip joins the gossip pool through every address this node knows,
// retrying until one answers, and keeps the peer list on disk current.
func (n *Node) joinGossip(ctx context.Context) {
	delay := 200 * time.Millisecond
	for {
		seeds := n.gossipSeedsFromDisk()
		if len(seeds) == 0 {
			break
		}
		if _, err := n.gossip.Join(seeds); err == nil {
			break
		} else if len(n.gossip.Alive()) > 1 {
			break
		} else {
			n.log.Debug("gossip join", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		if delay < 5*time.Second {
			delay *= 2
		}
	}
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		n.savePeers()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// gossipSeedsFromDisk is who to gossip with after a restart: the members
// seen last (peers.json) and every server in the raft configuration (its
// host with our gossip port), which covers a node killed before it ever
// wrote a peer list.
func (n *Node) gossipSeedsFromDisk() []string {
	seen := map[string]bool{}
	var seeds []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			seeds = append(seeds, s)
		}
	}
	for _, p := range n.dir.peers() {
		add(p)
	}
	if servers, err := n.raft.Servers(); err == nil {
		for _, s := range servers {
			if host, _, err := net.SplitHostPort(s.Address); err == nil && s.ID != n.id.NodeID {
				add(hostPort(host, n.cfg.GossipPort))
			}
		}
	}
	return seeds
}

func (n *Node) savePeers() {
	var seeds []string
	for _, m := range n.gossip.Alive() {
		if m.Name == n.id.NodeID {
			continue
		}
		seeds = append(seeds, net.JoinHostPort(m.Addr.String(), fmt.Sprint(m.Port)))
	}
	if len(seeds) == 0 {
		return
	}
	sort.Strings(seeds)
	// Called from two goroutines (the ticker and gossip events).
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if slices.Equal(seeds, n.savedPeers) {
		return // an idle node does not rewrite (and fsync) the same list
	}
	if err := n.dir.writePeers(seeds); err == nil {
		n.savedPeers = seeds
	}
}

func (n *Node) gossipSeeds() []string {
	var seeds []string
	for _, m := range n.gossip.Alive() {
		seeds = append(seeds, net.JoinHostPort(m.Addr.String(), fmt.Sprint(m.Port)))
	}
	return seeds
}

// runNodeSelf registers this node's Node object once the replica has caught
// up, keeps its addresses current, and marks the node ready.
func (n *Node) runNodeSelf(ctx context.Context) {
	if err := n.waitCaughtUp(ctx); err != nil {
		return
	}
	if n.bootstrap {
		if err := n.bootstrapState(ctx); err != nil {
			n.log.Error("bootstrapping cluster state", "err", err)
			n.stop()
			return
		}
	}
	if err := n.refreshCert(); err != nil {
		n.log.Warn("refreshing the node certificate", "err", err)
	}
	for {
		err := n.registerNode(ctx)
		if err == nil {
			break
		}
		n.log.Warn("registering Node object", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	n.id.APIAddr = hostPort(n.cfg.AdvertiseAddr, n.cfg.APIPort)
	if err := n.dir.writeIdentity(n.id); err != nil {
		n.log.Error("writing identity", "err", err)
	}
	n.ready.Store(true)
	n.log.Info("node ready")
	n.runAgent(ctx)
}

// waitCaughtUp waits until a leader is known and this replica has applied
// what the leader had committed when we asked.
func (n *Node) waitCaughtUp(ctx context.Context) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		idx, err := n.raft.ReadIndex(rctx)
		if err == nil {
			err = n.raft.WaitApplied(rctx, idx)
		}
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n.log.Debug("waiting for the replica to catch up", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// bootstrapState writes the initial state of a new cluster: its identity,
// the sealed CA key, the built-in namespaces and a first join token.
func (n *Node) bootstrapState(ctx context.Context) error {
	if _, ok := n.store.GetKV(clusterInfoKey); !ok {
		info, _ := json.Marshal(clusterInfo{ClusterID: n.id.ClusterID, CACertPEM: string(n.creds.caPEM)})
		ops := []state.Op{
			state.CreateKV(clusterInfoKey, info),
			state.PutKV(caKeyKey, n.keyring.Seal(n.pendingCA.KeyPEM, []byte(caKeyAAD))),
		}
		for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
			ops = append(ops, state.Create(&corev1.Namespace{
				ObjectMeta: metav1.ObjectMeta{Name: ns, UID: newUID(), CreationTimestamp: metav1.NewTime(n.now()),
					Labels: map[string]string{"kubernetes.io/metadata.name": ns}},
				Spec:   corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}},
				Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
			}))
		}
		if _, err := n.proposer.Propose(ctx, ops...); err != nil {
			return err
		}
	}
	n.pendingCA = nil
	tok, err := n.createToken(ctx, 24*time.Hour, 0, "created with the cluster")
	if err != nil {
		return err
	}
	n.id.APIAddr = hostPort(n.cfg.AdvertiseAddr, n.cfg.APIPort)
	if err := n.dir.writeIdentity(n.id); err != nil {
		return err
	}
	n.bootstrap = false
	n.printJoin(fmt.Sprintf("Cluster %s created. Join more nodes with:\n  shoal agent --data-dir /var/lib/shoal --advertise-addr <IP> --join %s --token %s",
		n.id.ClusterID, hostPort(n.cfg.AdvertiseAddr, n.cfg.APIPort), tok))
	return nil
}
