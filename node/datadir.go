package node

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/shoal-dev/shoal/node/pki"
)

// Files in the data dir. Everything secret is 0600.
const (
	identityFile = "node.json"    // Identity, written last when a node first starts
	leftFile     = "left"         // present once the node left the cluster for good
	caCertFile   = "pki/ca.crt"   // cluster CA certificate (the key lives sealed in the replica)
	nodeCertFile = "pki/node.crt" // this node's certificate (server+client)
	nodeKeyFile  = "pki/node.key"
	keyringFile  = "keyring.json" // at-rest encryption keys for the replica
	gossipKey    = "gossip.key"
	peersFile    = "peers.json" // last known members, for rejoining gossip after a restart
	raftDir      = "raft"
)

// Identity is the node's persistent identity.
type Identity struct {
	NodeID    string `json:"nodeID"`
	NodeName  string `json:"nodeName"`
	ClusterID string `json:"clusterID"`
	// APIAddr is where this node's API listened last ("ip:port"): client
	// commands run on the node (shoal token, kubeconfig, leave) dial it.
	APIAddr string `json:"apiAddr"`
}

// dataDir gives typed access to the files of a node's data dir.
type dataDir string

func (d dataDir) path(name string) string { return filepath.Join(string(d), name) }

func (d dataDir) read(name string) ([]byte, error) { return os.ReadFile(d.path(name)) }

func (d dataDir) write(name string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(d.path(name)), 0o700); err != nil {
		return err
	}
	return pki.WriteFileAtomic(d.path(name), data, perm)
}

func (d dataDir) exists(name string) bool {
	_, err := os.Stat(d.path(name))
	return err == nil
}

// empty reports whether the data dir has no node state at all.
func (d dataDir) empty() (bool, error) {
	ents, err := os.ReadDir(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return len(ents) == 0, nil
}

func (d dataDir) identity() (Identity, error) {
	var id Identity
	b, err := d.read(identityFile)
	if err != nil {
		return id, err
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("%s: %w", d.path(identityFile), err)
	}
	if id.NodeID == "" || id.ClusterID == "" {
		return id, fmt.Errorf("%s: incomplete identity", d.path(identityFile))
	}
	return id, nil
}

func (d dataDir) writeIdentity(id Identity) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	return d.write(identityFile, b, 0o600)
}

// credentials is what a node needs for mTLS.
type credentials struct {
	caPEM   []byte
	ca      *x509.Certificate
	pool    *x509.CertPool
	certPEM []byte
	keyPEM  []byte
	cert    tls.Certificate // leaf + CA chain
}

func (d dataDir) credentials() (*credentials, error) {
	caPEM, err := d.read(caCertFile)
	if err != nil {
		return nil, err
	}
	certPEM, err := d.read(nodeCertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := d.read(nodeKeyFile)
	if err != nil {
		return nil, err
	}
	return newCredentials(caPEM, certPEM, keyPEM)
}

func newCredentials(caPEM, certPEM, keyPEM []byte) (*credentials, error) {
	ca, err := pki.ParseCertificatePEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	cert, err := pki.TLSCertificate(certPEM, keyPEM, caPEM)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &credentials{caPEM: caPEM, ca: ca, pool: pool, certPEM: certPEM, keyPEM: keyPEM, cert: cert}, nil
}

func (d dataDir) writeCredentials(c *credentials) error {
	if err := d.write(caCertFile, c.caPEM, 0o644); err != nil {
		return err
	}
	if err := d.write(nodeKeyFile, c.keyPEM, 0o600); err != nil {
		return err
	}
	return d.write(nodeCertFile, c.certPEM, 0o644)
}

func (d dataDir) peers() []string {
	var p []string
	if b, err := d.read(peersFile); err == nil {
		_ = json.Unmarshal(b, &p)
	}
	return p
}

func (d dataDir) writePeers(p []string) error {
	b, _ := json.Marshal(p)
	return d.write(peersFile, b, 0o600)
}
