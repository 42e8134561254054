package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// Certificate lifetimes and subject conventions.
const (
	// CAValidity is the lifetime of a cluster CA created by [NewCA].
	CAValidity = 10 * 365 * 24 * time.Hour
	// DefaultNodeCertTTL is used by [CA.IssueNode] when ttl <= 0.
	DefaultNodeCertTTL = 365 * 24 * time.Hour
	// DefaultClientCertTTL is used by [CA.IssueClient] when ttl <= 0.
	DefaultClientCertTTL = 365 * 24 * time.Hour
	// ClockSkew is how far NotBefore is backdated on every certificate, so a
	// peer whose clock is slightly behind the issuer's still accepts it.
	ClockSkew = 5 * time.Minute

	// NodeCommonNamePrefix + node name is a node certificate's CN.
	NodeCommonNamePrefix = "system:node:"
	// NodesGroup is the organization of every node certificate.
	NodesGroup = "system:nodes"
	// MastersGroup is the organization of admin client certificates.
	MastersGroup = "system:masters"

	nodeURIScheme = "shoal"
	nodeURIHost   = "node"
	hashPrefix    = "sha256:"
)

var (
	// ErrNoCAKey is returned when issuing from a CA parsed without its key.
	ErrNoCAKey = errors.New("CA has no private key")
	// ErrNotCA is returned by [ParseCA] for a certificate that cannot sign.
	ErrNotCA = errors.New("certificate is not a CA")
)

// CA is the cluster certificate authority. Key is nil when the CA was parsed
// for verification only. A CA is immutable and safe for concurrent use.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA creates a self-signed ECDSA P-256 cluster CA valid for [CAValidity]
// from now. It may sign leaf certificates only (no intermediates).
func NewCA(commonName string, now time.Time) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("creating CA: empty common name")
	}
	key, keyPEM, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-ClockSkew).UTC(),
		NotAfter:              now.Add(CAValidity).UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: EncodeCertificatePEM(der), KeyPEM: keyPEM}, nil
}

// ParseCA parses a CA certificate and, when keyPEM is not nil, its private
// key, which must match the certificate. With a nil keyPEM the CA can only
// verify (Key is nil and issuing returns [ErrNoCAKey]).
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parsing CA: %w", err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("parsing CA %q: %w", cert.Subject.CommonName, ErrNotCA)
	}
	ca := &CA{Cert: cert, CertPEM: EncodeCertificatePEM(cert.Raw)}
	if keyPEM == nil {
		return ca, nil
	}
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parsing CA: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("parsing CA: private key does not match certificate")
	}
	ca.Key = key
	ca.KeyPEM = append([]byte(nil), keyPEM...)
	return ca, nil
}

// Hash returns "sha256:" followed by the lowercase hex SHA-256 of the
// certificate's SubjectPublicKeyInfo. It pins a key, not a certificate: a CA
// re-issued with the same key keeps its hash. Hash(nil) is "".
func Hash(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hashPrefix + hex.EncodeToString(sum[:])
}

// Hash returns [Hash] of the CA certificate.
func (ca *CA) Hash() string { return Hash(ca.Cert) }

// Pool returns a new certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueNode signs a node certificate for pub, usable for both server and
// client authentication: CN "system:node:<nodeName>", O "system:nodes", URI
// SAN "shoal://node/<nodeID>", IP SANs ips plus 127.0.0.1 and ::1, DNS SANs
// dnsNames plus "localhost". ttl <= 0 means [DefaultNodeCertTTL]; NotAfter
// never exceeds the CA's. nodeID must pass [ValidateNodeID].
func (ca *CA) IssueNode(nodeID, nodeName string, ips []net.IP, dnsNames []string, pub crypto.PublicKey, now time.Time, ttl time.Duration) (certPEM []byte, err error) {
	if err := ValidateNodeID(nodeID); err != nil {
		return nil, fmt.Errorf("issuing node certificate: %w", err)
	}
	if nodeName == "" {
		return nil, fmt.Errorf("issuing node certificate for %s: empty node name", nodeID)
	}
	if ttl <= 0 {
		ttl = DefaultNodeCertTTL
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			CommonName:   NodeCommonNamePrefix + nodeName,
			Organization: []string{NodesGroup},
		},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{NodeURI(nodeID)},
		IPAddresses: uniqueIPs(append(append([]net.IP(nil), ips...), net.IPv4(127, 0, 0, 1), net.IPv6loopback)),
		DNSNames:    uniqueStrings(append(append([]string(nil), dnsNames...), "localhost")),
	}
	certPEM, err = ca.issue(tmpl, pub, now, ttl)
	if err != nil {
		return nil, fmt.Errorf("issuing node certificate for %s: %w", nodeID, err)
	}
	return certPEM, nil
}

// IssueClient signs a client-auth-only certificate for pub, for example
// CN "admin", O ["system:masters"]. ttl <= 0 means [DefaultClientCertTTL];
// NotAfter never exceeds the CA's.
func (ca *CA) IssueClient(commonName string, orgs []string, pub crypto.PublicKey, now time.Time, ttl time.Duration) ([]byte, error) {
	if commonName == "" {
		return nil, errors.New("issuing client certificate: empty common name")
	}
	if ttl <= 0 {
		ttl = DefaultClientCertTTL
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			CommonName:   commonName,
			Organization: append([]string(nil), orgs...),
		},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	certPEM, err := ca.issue(tmpl, pub, now, ttl)
	if err != nil {
		return nil, fmt.Errorf("issuing client certificate for %q: %w", commonName, err)
	}
	return certPEM, nil
}

// issue fills in the fields common to every leaf and signs tmpl.
func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey, now time.Time, ttl time.Duration) ([]byte, error) {
	if ca.Key == nil {
		return nil, ErrNoCAKey
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	if now.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("CA expired at %s", ca.Cert.NotAfter.Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-ClockSkew).UTC()
	tmpl.NotAfter = notAfter.UTC()
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return EncodeCertificatePEM(der), nil
}

// NodeURI returns the URI SAN identifying a node: shoal://node/<nodeID>.
func NodeURI(nodeID string) *url.URL {
	return &url.URL{Scheme: nodeURIScheme, Host: nodeURIHost, Path: "/" + nodeID}
}

// NodeIDFromCert returns the node ID from the first shoal://node/<id> URI
// SAN of c, and false when c carries none.
func NodeIDFromCert(c *x509.Certificate) (string, bool) {
	if c == nil {
		return "", false
	}
	for _, u := range c.URIs {
		if u.Scheme != nodeURIScheme || u.Host != nodeURIHost || u.User != nil ||
			u.RawQuery != "" || u.Fragment != "" {
			continue
		}
		id, ok := strings.CutPrefix(u.Path, "/")
		if ok && validNodeID(id) {
			return id, true
		}
	}
	return "", false
}

// ValidateNodeID checks that id can name a node in a certificate: 1 to 128
// letters, digits, '.', '_' or '-', and not "." or "..". UUIDs qualify.
func ValidateNodeID(id string) error {
	if !validNodeID(id) {
		return fmt.Errorf("invalid node ID %q: want 1-128 letters, digits, '.', '_' or '-'", id)
	}
	return nil
}

func validNodeID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return id != "." && id != ".."
}

// newSerial returns a random positive 127-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func uniqueIPs(ips []net.IP) []net.IP {
	out := make([]net.IP, 0, len(ips))
	seen := make(map[string]bool, len(ips))
	for _, ip := range ips {
		if ip == nil {
			continue
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if k := string(ip); !seen[k] {
			seen[k] = true
			out = append(out, ip)
		}
	}
	return out
}

func uniqueStrings(ss []string) []string {
	out := make([]string, 0, len(ss))
	seen := make(map[string]bool, len(ss))
	for _, s := range ss {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// ServiceAccountKey returns the key that signs service-account tokens. It
// is derived from the CA key (HKDF-SHA256 to an Ed25519 seed), so every
// node that holds the CA has the same one without another secret in the
// replica, and it never signs certificates.
func (ca *CA) ServiceAccountKey() (ed25519.PrivateKey, error) {
	ek, ok := ca.Key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("service-account key: unsupported CA key type %T", ca.Key)
	}
	dk, err := ek.ECDH()
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}
	seed, err := hkdf.Key(sha256.New, dk.Bytes(), nil, "shoal service-account token signing key v1", ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
