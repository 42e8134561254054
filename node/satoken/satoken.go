// Package satoken issues and verifies service-account tokens: JWTs with
// the claims Kubernetes puts in its own (subject
// system:serviceaccount:NS:NAME, a "kubernetes.io" claim naming the
// namespace, the service account and its UID, and the pod a token is bound
// to), signed with EdDSA by a key every node derives from the cluster CA
// (see pki.CA.ServiceAccountKey), so any node can check a token another
// node issued. Verification checks the signature, issuer, audience and
// validity window; the caller checks that the service account (and pod)
// still exist with the UIDs the token names, which is how deleting them
// revokes its tokens.
package satoken

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is the iss claim, and the audience tokens get by default: the API
// server's in-cluster URL, as Kubernetes uses it.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// Limits of a token's lifetime, as Kubernetes' TokenRequest has them.
const (
	MinExpiration     = 10 * time.Minute
	DefaultExpiration = time.Hour
	MaxExpiration     = 48 * time.Hour
)

// leeway tolerates clock differences between nodes.
const leeway = time.Minute

// Claims are what a token says.
type Claims struct {
	Namespace, ServiceAccount, ServiceAccountUID string
	PodName, PodUID                              string // empty: not bound to a pod
	Audiences                                    []string
	IssuedAt, Expiry                             time.Time
}

// User is the user name the API server sees for a service account.
func User(namespace, name string) string { return "system:serviceaccount:" + namespace + ":" + name }

// ParseUser splits a service account's user name
// (system:serviceaccount:NAMESPACE:NAME) into its namespace and name; ok is
// false for any other user name.
func ParseUser(user string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	namespace, name, ok = strings.Cut(rest, ":")
	if !ok || namespace == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return namespace, name, true
}

// Groups are the groups of a service account's user.
func Groups(namespace string) []string {
	return []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace}
}

type k8sRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

type k8sClaims struct {
	Namespace      string  `json:"namespace"`
	ServiceAccount k8sRef  `json:"serviceaccount"`
	Pod            *k8sRef `json:"pod,omitempty"`
}

type private struct {
	Kubernetes k8sClaims `json:"kubernetes.io"`
}

// Signer issues tokens.
type Signer struct{ s jose.Signer }

// NewSigner returns a signer with key.
func NewSigner(key ed25519.PrivateKey) (*Signer, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("satoken: %w", err)
	}
	return &Signer{s: s}, nil
}

// Issue signs a token for c.
func (s *Signer) Issue(c Claims) (string, error) {
	if c.Namespace == "" || c.ServiceAccount == "" || c.ServiceAccountUID == "" {
		return "", errors.New("satoken: a token needs the service account's namespace, name and UID")
	}
	if !c.Expiry.After(c.IssuedAt) {
		return "", errors.New("satoken: expiry must be after issue")
	}
	std := jwt.Claims{
		Issuer: Issuer, Subject: User(c.Namespace, c.ServiceAccount), Audience: jwt.Audience(c.Audiences),
		IssuedAt: jwt.NewNumericDate(c.IssuedAt), NotBefore: jwt.NewNumericDate(c.IssuedAt), Expiry: jwt.NewNumericDate(c.Expiry),
	}
	p := private{Kubernetes: k8sClaims{Namespace: c.Namespace, ServiceAccount: k8sRef{Name: c.ServiceAccount, UID: c.ServiceAccountUID}}}
	if c.PodName != "" {
		p.Kubernetes.Pod = &k8sRef{Name: c.PodName, UID: c.PodUID}
	}
	tok, err := jwt.Signed(s.s).Claims(std).Claims(p).Serialize()
	if err != nil {
		return "", fmt.Errorf("satoken: signing: %w", err)
	}
	return tok, nil
}

// Verifier checks tokens.
type Verifier struct{ pub ed25519.PublicKey }

// NewVerifier returns a verifier for tokens signed by pub's key.
func NewVerifier(pub ed25519.PublicKey) *Verifier { return &Verifier{pub: pub} }

// LooksLikeToken reports whether a bearer token is a JWT at all (three
// dot-separated parts), so other kinds of tokens can be told apart.
func LooksLikeToken(s string) bool { return strings.Count(s, ".") == 2 }

// Verify checks token's signature, issuer, validity at now and that its
// audiences include one of audiences, and returns its claims.
func (v *Verifier) Verify(token string, now time.Time, audiences []string) (*Claims, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, fmt.Errorf("malformed token: %w", err)
	}
	var std jwt.Claims
	var p private
	if err := tok.Claims(v.pub, &std, &p); err != nil {
		return nil, errors.New("token signature is invalid")
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: Issuer, Time: now}, leeway); err != nil {
		return nil, fmt.Errorf("token is not valid: %w", err)
	}
	if std.Expiry == nil {
		return nil, errors.New("token has no expiry")
	}
	if !slices.ContainsFunc(audiences, std.Audience.Contains) {
		return nil, fmt.Errorf("token audiences %v are not this server's (%v)", []string(std.Audience), audiences)
	}
	k := p.Kubernetes
	if std.Subject != User(k.Namespace, k.ServiceAccount.Name) || k.ServiceAccount.UID == "" {
		return nil, errors.New("token subject does not match its service account")
	}
	c := &Claims{
		Namespace: k.Namespace, ServiceAccount: k.ServiceAccount.Name, ServiceAccountUID: k.ServiceAccount.UID,
		Audiences: std.Audience, Expiry: std.Expiry.Time(),
	}
	if std.IssuedAt != nil {
		c.IssuedAt = std.IssuedAt.Time()
	}
	if k.Pod != nil {
		c.PodName, c.PodUID = k.Pod.Name, k.Pod.UID
	}
	return c, nil
}
