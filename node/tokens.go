package node

import (
	"crypto/ed25519"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/node/pki"
	"github.com/shoal-dev/shoal/node/satoken"
)

// clusterTokens issues and verifies service-account tokens with the key
// derived from the cluster CA, loaded on first use (a joining node holds
// the CA key once its replica caught up).
type clusterTokens struct {
	ca func() (*pki.CA, error)

	mu       sync.Mutex
	signer   *satoken.Signer
	verifier *satoken.Verifier
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
