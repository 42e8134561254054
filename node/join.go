package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/shoal-dev/shoal/node/pki"
	"github.com/shoal-dev/shoal/node/state"
)

const joinPath = "/internal/v1/join"

// joinRequest is what a joining node sends once it has checked the CA pin.
type joinRequest struct {
	TokenID       string `json:"tokenID"`
	TokenSecret   string `json:"tokenSecret"`
	NodeID        string `json:"nodeID"`
	NodeName      string `json:"nodeName"`
	AdvertiseAddr string `json:"advertiseAddr"`
	PublicKeyPEM  string `json:"publicKeyPEM"`
}

// joinResponse carries what a new member needs: its certificate, the CA,
// the cluster's at-rest keyring and the gossip key, and gossip seeds.
type joinResponse struct {
	ClusterID   string   `json:"clusterID"`
	CACertPEM   string   `json:"caCertPEM"`
	NodeCertPEM string   `json:"nodeCertPEM"`
	Keyring     []byte   `json:"keyring"`
	GossipKey   []byte   `json:"gossipKey"`
	Seeds       []string `json:"seeds"`
}

type joinError struct {
	Message string `json:"message"`
}

// clusterInfo is stored in the replica under clusterInfoKey.
type clusterInfo struct {
	ClusterID string `json:"clusterID"`
	CACertPEM string `json:"caCertPEM"`
}

const (
	clusterInfoKey = "cluster/info"
	caKeyKey       = "cluster/ca-key" // sealed
	caKeyAAD       = "shoal cluster CA key"
)

// joinLimiter rate-limits failed join attempts per source address.
type joinLimiter struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func (l *joinLimiter) get(addr string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*rate.Limiter{}
	}
	if len(l.m) > 10000 { // bound memory under a flood of sources
		l.m = map[string]*rate.Limiter{}
	}
	lim, ok := l.m[addr]
	if !ok {
		// 5 failures at once, then one every 2 seconds.
		lim = rate.NewLimiter(rate.Every(2*time.Second), 5)
		l.m[addr] = lim
	}
	return lim
}

func writeJoinError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, joinError{Message: fmt.Sprintf(format, args...)})
}

// handleJoin admits a new node that proves a join token.
func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJoinError(w, http.StatusMethodNotAllowed, "POST only")
		return
	}
	src, _, _ := net.SplitHostPort(r.RemoteAddr)
	lim := n.joinLimit.get(src)
	if lim.Tokens() < 1 {
		w.Header().Set("Retry-After", "2")
		writeJoinError(w, http.StatusTooManyRequests, "too many failed join attempts from %s; try again later", src)
		return
	}
	fail := func(code int, format string, args ...any) {
		lim.Allow() // spend one failure
		n.log.Warn("join refused", "from", src, "reason", fmt.Sprintf(format, args...))
		writeJoinError(w, code, format, args...)
	}
	var req joinRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		fail(http.StatusBadRequest, "malformed join request: %v", err)
		return
	}
	if errs := validation.IsDNS1123Subdomain(req.NodeName); len(errs) > 0 {
		fail(http.StatusBadRequest, "invalid node name %q: %s", req.NodeName, strings.Join(errs, "; "))
		return
	}
	ip := net.ParseIP(req.AdvertiseAddr)
	if ip == nil {
		fail(http.StatusBadRequest, "invalid advertise address %q", req.AdvertiseAddr)
		return
	}
	pub, err := pki.ParsePublicKeyPEM([]byte(req.PublicKeyPEM))
	if err != nil {
		fail(http.StatusBadRequest, "invalid public key: %v", err)
		return
	}
	if err := pki.ValidateNodeID(req.NodeID); err != nil {
		fail(http.StatusBadRequest, "invalid node ID: %v", err)
		return
	}
	if other, ok := n.store.Get("nodes", "", req.NodeName); ok && other.GetAnnotations()[annNodeID] != req.NodeID {
		fail(http.StatusConflict, "node name %q is already used by another node (ID %s); pick another --node-name or run 'shoal leave' there", req.NodeName, other.GetAnnotations()[annNodeID])
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.ProposeTimeout)
	defer cancel()
	_, err = n.proposer.Propose(ctx, state.UseToken(req.TokenID, pki.HashSecret(req.TokenID, req.TokenSecret), n.now().Unix()))
	var re *state.ResultError
	switch {
	case errors.As(err, &re):
		fail(http.StatusUnauthorized, "join refused: %s", re.Message)
		return
	case err != nil:
		writeJoinError(w, http.StatusServiceUnavailable, "cluster cannot admit nodes right now: %v", err)
		return
	}
	ca, err := n.clusterCA()
	if err != nil {
		writeJoinError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	ips, names := nodeCertSANs(ip)
	certPEM, err := ca.IssueNode(req.NodeID, req.NodeName, ips, names, pub, n.now(), nodeCertTTL)
	if err != nil {
		writeJoinError(w, http.StatusInternalServerError, "issuing node certificate: %v", err)
		return
	}
	ring, err := n.keyring.Marshal()
	if err != nil {
		writeJoinError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	resp := joinResponse{
		ClusterID:   n.id.ClusterID,
		CACertPEM:   string(n.creds.caPEM),
		NodeCertPEM: string(certPEM),
		Keyring:     ring,
		GossipKey:   n.gossipKey,
		Seeds:       n.gossipSeeds(),
	}
	n.log.Info("node admitted", "name", req.NodeName, "id", req.NodeID, "addr", req.AdvertiseAddr, "token", req.TokenID)
	writeJSON(w, http.StatusOK, resp)
}

const nodeCertTTL = 365 * 24 * time.Hour

// clusterCA returns the CA with its key, opened from the replica.
func (n *Node) clusterCA() (*pki.CA, error) {
	sealed, ok := n.store.GetKV(caKeyKey)
	if !ok {
		return nil, errors.New("the cluster CA key is not in this node's replica yet")
	}
	keyPEM, err := n.keyring.Open(sealed, []byte(caKeyAAD))
	if err != nil {
		return nil, fmt.Errorf("opening the cluster CA key: %w", err)
	}
	return pki.ParseCA(n.creds.caPEM, keyPEM)
}

// requestJoin runs on a node that joins: it checks the CA pin before sending
// the token secret and returns what the cluster answered.
func requestJoin(ctx context.Context, addr string, tok pki.Token, req joinRequest) (*joinResponse, *x509.Certificate, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = hostPort(addr, DefaultAPIPort)
	}
	tr := &http.Transport{TLSClientConfig: pki.PinnedTLSConfig(tok.CAHash), ForceAttemptHTTP2: false}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	req.TokenID, req.TokenSecret = tok.ID, tok.Secret
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+joinPath, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, nil, fmt.Errorf("joining via %s: %w", addr, err)
	}
	defer resp.Body.Close()
	var jr joinResponse
	if err := decodeAnswer(resp, "join", &jr); err != nil {
		return nil, nil, fmt.Errorf("joining via %s: %w", addr, err)
	}
	ca, err := pki.PeerCA(*resp.TLS)
	if err != nil {
		return nil, nil, err
	}
	return &jr, ca, nil
}
