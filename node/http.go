package node

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/version"

	"github.com/shoal-dev/shoal/gossip"
	"github.com/shoal-dev/shoal/node/apiserver"
	"github.com/shoal-dev/shoal/node/pki"
	"github.com/shoal-dev/shoal/node/state"
)

// ServerVersion is what /version reports: a Kubernetes minor that the
// machine's kubectl dispatcher has a binary for (NOTES: 1.27–1.33).
var ServerVersion = version.Info{
	Major: "1", Minor: "33", GitVersion: KubeletVersion,
	GoVersion: runtime.Version(), Compiler: runtime.Compiler, Platform: runtime.GOOS + "/" + runtime.GOARCH,
}

func slogErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}

// httpHandler is everything served on the API port: health and metrics,
// node-internal endpoints, and the Kubernetes API.
func (n *Node) httpHandler() (http.Handler, *apiserver.Server, error) {
	n.metrics.registerNodeGauges(n)
	api, err := apiserver.New(apiserver.Config{
		Store:           n.store,
		Proposer:        n.proposer,
		Now:             n.now,
		NewUID:          newUID,
		Registerer:      n.metrics.reg,
		MaxRequestBytes: 3 << 20,
		Version:         ServerVersion,
		ConsistentRead:  n.consistentRead,
		PodStreams:      n.servePodStream,
		Tokens:          &n.tokens,
	})
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", n.handleHealth)
	mux.HandleFunc("/livez", n.handleHealth)
	mux.HandleFunc("/readyz", n.handleReady)
	mux.Handle("/metrics", n.requireCluster(promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{})))
	mux.HandleFunc(joinPath, n.handleJoin)
	mux.Handle("/internal/v1/tokens", n.requireCluster(http.HandlerFunc(n.handleTokens)))
	mux.Handle("/internal/v1/tokens/", n.requireCluster(http.HandlerFunc(n.handleTokens)))
	mux.Handle("/internal/v1/kubeconfig", n.requireCluster(http.HandlerFunc(n.handleKubeconfig)))
	mux.Handle("/internal/v1/members", n.requireCluster(http.HandlerFunc(n.handleMembers)))
	mux.Handle("/internal/v1/leave", n.requireCluster(http.HandlerFunc(n.handleLeave)))
	mux.Handle("/internal/v1/images", n.requireCluster(http.HandlerFunc(n.handleImages)))
	mux.Handle(internalPodsPath, n.requireNode(http.HandlerFunc(n.handleInternalPod)))
	mux.Handle("/v2/", n.requireNode(n.registryHandler()))
	mux.Handle("/debug/pprof/", n.requireCluster(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", n.requireCluster(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/trace", n.requireCluster(http.HandlerFunc(pprof.Trace)))
	mux.Handle("/", api)
	return mux, api, nil
}

// consistentRead waits until this replica holds everything the leader had
// committed when it was called (raft read index), for reads of the latest
// state. It gives up after a second: a node cut off from the leader serves
// its replica (the API adds a warning).
func (n *Node) consistentRead(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	idx, err := n.raft.ReadIndex(ctx)
	if err != nil {
		return err
	}
	return n.raft.WaitApplied(ctx, idx)
}

func (n *Node) handleHealth(w http.ResponseWriter, r *http.Request) {
	_, _ = io.WriteString(w, "ok")
}

func (n *Node) handleReady(w http.ResponseWriter, r *http.Request) {
	if !n.ready.Load() {
		http.Error(w, "not ready: replica catching up or node not registered", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok")
}

// requireCluster admits nodes (system:nodes) and admins (system:masters)
// presenting a certificate of the cluster CA.
func (n *Node) requireCluster(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "a client certificate of the cluster CA is required", http.StatusUnauthorized)
			return
		}
		c := r.TLS.VerifiedChains[0][0]
		if !slices.Contains(c.Subject.Organization, "system:nodes") && !slices.Contains(c.Subject.Organization, "system:masters") {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// requireNode admits other nodes only (system:nodes certificates).
func (n *Node) requireNode(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "a node certificate of the cluster CA is required", http.StatusUnauthorized)
			return
		}
		if !slices.Contains(r.TLS.VerifiedChains[0][0].Subject.Organization, "system:nodes") {
			http.Error(w, "forbidden: nodes only", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, state.ErrUnavailable):
		code = http.StatusServiceUnavailable
	case state.IsCode(err, state.CodeNotFound):
		code = http.StatusNotFound
	case state.IsCode(err, state.CodeConflict), state.IsCode(err, state.CodeAlreadyExists):
		code = http.StatusConflict
	}
	writeJSON(w, code, joinError{Message: err.Error()})
}

// TokenRequest asks for a new join token.
type TokenRequest struct {
	TTL         time.Duration `json:"ttl"`
	Uses        int           `json:"uses"`
	Description string        `json:"description"`
}

// TokenInfo describes a join token, never its secret.
type TokenInfo struct {
	ID          string    `json:"id"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires,omitzero"`
	Uses        int       `json:"uses,omitempty"`
	Used        int       `json:"used"`
	Revoked     bool      `json:"revoked,omitempty"`
	Token       string    `json:"token,omitempty"` // only when created
}

func (n *Node) handleTokens(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/internal/v1/tokens"), "/")
	switch {
	case r.Method == http.MethodPost && id == "":
		var req TokenRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, joinError{Message: "malformed request: " + err.Error()})
			return
		}
		if req.TTL < 0 || req.Uses < 0 {
			writeJSON(w, http.StatusBadRequest, joinError{Message: "ttl and uses must not be negative"})
			return
		}
		tok, err := n.createToken(r.Context(), req.TTL, req.Uses, req.Description)
		if err != nil {
			httpError(w, err)
			return
		}
		info := n.tokenInfo(tok.ID)
		info.Token = tok.String()
		writeJSON(w, http.StatusCreated, info)
	case r.Method == http.MethodGet && id == "":
		var out []TokenInfo
		for k := range n.store.ListKV("tokens/") {
			out = append(out, n.tokenInfo(strings.TrimPrefix(k, "tokens/")))
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
		writeJSON(w, http.StatusOK, out)
	case r.Method == http.MethodDelete && id != "":
		if err := n.revokeToken(r.Context(), id); err != nil {
			httpError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, n.tokenInfo(id))
	default:
		writeJSON(w, http.StatusMethodNotAllowed, joinError{Message: "method not allowed"})
	}
}

func (n *Node) tokenInfo(id string) TokenInfo {
	var rec state.TokenRecord
	if b, ok := n.store.GetKV(state.TokenKey(id)); ok {
		_ = json.Unmarshal(b, &rec)
	}
	return TokenInfo{ID: rec.ID, Description: rec.Description, Created: rec.Created, Expires: rec.Expires, Uses: rec.Uses, Used: rec.Used, Revoked: rec.Revoked}
}

// createToken stores a new join token (hashed) and returns it.
func (n *Node) createToken(ctx context.Context, ttl time.Duration, uses int, desc string) (pki.Token, error) {
	tok, err := pki.NewToken(pki.Hash(n.creds.ca))
	if err != nil {
		return tok, err
	}
	if ttl == 0 {
		ttl = 24 * time.Hour
	}
	now := n.now().UTC().Truncate(time.Second)
	rec := state.TokenRecord{ID: tok.ID, SecretHash: pki.HashSecret(tok.ID, tok.Secret), Description: desc,
		Created: now, Expires: now.Add(ttl), Uses: uses}
	b, _ := json.Marshal(rec)
	_, err = n.proposer.Propose(ctx, state.CreateKV(state.TokenKey(tok.ID), b))
	return tok, err
}

func (n *Node) revokeToken(ctx context.Context, id string) error {
	for {
		raw, ok := n.store.GetKV(state.TokenKey(id))
		if !ok {
			return &state.ResultError{Code: state.CodeNotFound, Message: fmt.Sprintf("no join token %q", id)}
		}
		var rec state.TokenRecord
		if err := json.Unmarshal(raw, &rec); err != nil {
			return err
		}
		rec.Revoked = true
		b, _ := json.Marshal(rec)
		_, err := n.proposer.Propose(ctx, state.PutKV(state.TokenKey(id), b))
		return err
	}
}

// KubeconfigRequest asks the node to sign a client certificate.
type KubeconfigRequest struct {
	PublicKeyPEM string   `json:"publicKeyPEM"`
	User         string   `json:"user"`
	Groups       []string `json:"groups"`
	TTL          time.Duration
}

// KubeconfigResponse is a signed client certificate and where to use it.
type KubeconfigResponse struct {
	Server    string `json:"server"`
	CACertPEM string `json:"caCertPEM"`
	CertPEM   string `json:"certPEM"`
	ClusterID string `json:"clusterID"`
}

func (n *Node) handleKubeconfig(w http.ResponseWriter, r *http.Request) {
	var req KubeconfigRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || r.Method != http.MethodPost {
		writeJSON(w, http.StatusBadRequest, joinError{Message: "POST a KubeconfigRequest"})
		return
	}
	pub, err := pki.ParsePublicKeyPEM([]byte(req.PublicKeyPEM))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, joinError{Message: err.Error()})
		return
	}
	if req.User == "" {
		req.User, req.Groups = "admin", []string{"system:masters"}
	}
	if req.TTL <= 0 {
		req.TTL = 365 * 24 * time.Hour
	}
	ca, err := n.clusterCA()
	if err != nil {
		httpError(w, err)
		return
	}
	cert, err := ca.IssueClient(req.User, req.Groups, pub, n.now(), req.TTL)
	if err != nil {
		httpError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, KubeconfigResponse{
		Server: "https://" + hostPort(n.cfg.AdvertiseAddr, n.cfg.APIPort), CACertPEM: string(n.creds.caPEM),
		CertPEM: string(cert), ClusterID: n.id.ClusterID,
	})
}

// MemberInfo is one line of `shoal members`.
type MemberInfo struct {
	Name     string `json:"name"`
	ID       string `json:"id"`
	API      string `json:"api"`
	Raft     string `json:"raft"`
	Gossip   string `json:"gossip"`
	Role     string `json:"role"` // leader, voter, non-voter, none
	Version  string `json:"version"`
	ThisNode bool   `json:"thisNode,omitempty"`
}

func (n *Node) handleMembers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.members())
}

func (n *Node) members() []MemberInfo {
	roles := map[string]string{}
	raftAddr := map[string]string{}
	if servers, err := n.raft.Servers(); err == nil {
		for _, s := range servers {
			roles[s.ID], raftAddr[s.ID] = "non-voter", s.Address
			if s.Voter {
				roles[s.ID] = "voter"
			}
		}
	}
	leaderID, _ := n.raft.Leader()
	if leaderID != "" {
		roles[leaderID] = "leader"
	}
	seen := map[string]bool{}
	var out []MemberInfo
	for _, m := range n.gossip.Members() {
		meta, _ := parseMeta(m.Meta)
		seen[m.Name] = true
		role := roles[m.Name]
		if role == "" {
			role = "none"
		}
		out = append(out, MemberInfo{Name: meta.Name, ID: m.Name, API: meta.API, Raft: meta.Raft, Gossip: m.State.String(),
			Role: role, Version: meta.Version, ThisNode: m.Name == n.id.NodeID})
	}
	for id, role := range roles { // in raft but unknown to gossip (yet)
		if !seen[id] {
			mi := MemberInfo{ID: id, Raft: raftAddr[id], Gossip: "unknown", Role: role}
			if node := n.nodeByID(id); node != nil {
				mi.Name = node.Name
			}
			out = append(out, mi)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// handleLeave removes this node from the cluster for good: its Node object
// and raft membership go, gossip hears it leave, and the node stops.
func (n *Node) handleLeave(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, joinError{Message: "POST only"})
		return
	}
	if id, ok := peerNodeID(r.TLS.VerifiedChains[0][0]); ok && id != n.id.NodeID {
		writeJSON(w, http.StatusForbidden, joinError{Message: "a node can only be told to leave by itself or an admin"})
		return
	}
	if err := n.leave(r.Context()); err != nil {
		httpError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "left"})
}

func peerNodeID(c *x509.Certificate) (string, bool) { return pki.NodeIDFromCert(c) }

func (n *Node) leave(ctx context.Context) error {
	if !n.leaving.CompareAndSwap(false, true) {
		return errors.New("already leaving")
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if obj, ok := n.store.Get("nodes", "", n.id.NodeName); ok {
		if _, err := n.proposer.Propose(ctx, state.Delete(nodeKind, "", n.id.NodeName, 0, string(obj.GetUID()))); err != nil && !state.IsCode(err, state.CodeNotFound) {
			n.leaving.Store(false)
			return fmt.Errorf("deleting the Node object: %w", err)
		}
	}
	if n.raft.IsLeader() {
		if err := n.raft.RemoveServer(n.id.NodeID); err != nil {
			n.log.Warn("leave: removing self from raft", "err", err)
		}
	}
	if err := n.dir.write(leftFile, []byte(n.now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return err
	}
	if err := n.gossip.Leave(3 * time.Second); err != nil {
		n.log.Warn("leave: gossip", "err", err)
	}
	n.log.Info("left the cluster")
	go func() { time.Sleep(200 * time.Millisecond); n.stop() }()
	return nil
}

var _ = gossip.StateAlive
