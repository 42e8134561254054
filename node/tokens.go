package node

import (
	"crypto/ed25519"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/node/admission"

	"github.com/shoal-dev/shoal/node/pki"
	"github.com/shoal-dev/shoal/node/satoken"
)

// clusterTokens issues and verifies service-account tokens with the key
// derived from the cluster CA, loaded on first use (a joining node holds
// the CA key once its replica caught up).
type clusterTokens struct {
	ca func() (*pki.CA, error) // set once, by New

	mu       sync.Mutex
	signer   *satoken.Signer
	verifier *satoken.Verifier
}

// podToken mints the token of a pod's projected serviceAccountToken
// source: for the pod's service account, bound to the pod, so that
// deleting either revokes it.
func (n *Node) podToken(pod *corev1.Pod, audience string, expirationSeconds int64) (string, error) {
	name := pod.Spec.ServiceAccountName
	if name == "" {
		name = admission.DefaultServiceAccount
	}
	sa, ok := n.store.Get("serviceaccounts", pod.Namespace, name)
	if !ok {
		return "", fmt.Errorf("serviceaccount %q not found", name)
	}
	aud := []string{satoken.Issuer}
	if audience != "" {
		aud = []string{audience}
	}
	now := n.now()
	ttl := min(max(time.Duration(expirationSeconds)*time.Second, satoken.MinExpiration), satoken.MaxExpiration)
	return n.tokens.Issue(satoken.Claims{
		Namespace: pod.Namespace, ServiceAccount: name, ServiceAccountUID: string(sa.GetUID()),
		PodName: pod.Name, PodUID: string(pod.UID), Audiences: aud, IssuedAt: now, Expiry: now.Add(ttl),
	})
}

func (t *clusterTokens) load() (*satoken.Signer, *satoken.Verifier, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.signer != nil {
		return t.signer, t.verifier, nil
	}
	ca, err := t.ca()
	if err != nil {
		return nil, nil, err
	}
	key, err := ca.ServiceAccountKey()
	if err != nil {
		return nil, nil, err
	}
	s, err := satoken.NewSigner(key)
	if err != nil {
		return nil, nil, err
	}
	t.signer, t.verifier = s, satoken.NewVerifier(key.Public().(ed25519.PublicKey))
	return t.signer, t.verifier, nil
}

func (t *clusterTokens) Issue(c satoken.Claims) (string, error) {
	s, _, err := t.load()
	if err != nil {
		return "", err
	}
	return s.Issue(c)
}

func (t *clusterTokens) Verify(token string, now time.Time, audiences []string) (*satoken.Claims, error) {
	_, v, err := t.load()
	if err != nil {
		return nil, err
	}
	return v.Verify(token, now, audiences)
}
