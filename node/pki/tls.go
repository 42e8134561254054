package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrCAMismatch is returned (wrapped) by a [PinnedTLSConfig] handshake when
// the server does not present the pinned cluster CA.
var ErrCAMismatch = errors.New("cluster CA mismatch")

// ServerTLSConfig returns a server configuration presenting cert and, when
// requireClientCert is set, demanding a client certificate that chains to ca
// with client-auth usage (RequireAndVerifyClientCert); otherwise a certificate
// is verified if given (VerifyClientCertIfGiven), which is what the join
// endpoint needs. TLS 1.2 is the minimum; 1.3 is negotiated when offered.
func ServerTLSConfig(ca *x509.CertPool, cert tls.Certificate, requireClientCert bool) *tls.Config {
	auth := tls.VerifyClientCertIfGiven
	if requireClientCert {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    ca,
		ClientAuth:   auth,
	}
}

// ClientTLSConfig returns a client configuration that accepts a server only
// if its chain verifies against ca with server-auth usage. Host names and IPs
// are not checked: nodes are addressed by IP and identified by their
// certificate (see [PeerNodeID]). cert, when not nil, is offered as the client
// certificate.
func ClientTLSConfig(ca *x509.CertPool, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Standard verification would check the server name; VerifyConnection
		// below does the chain verification instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeerChain(ca, cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
		},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// verifyPeerChain verifies certs[0] against roots, using the rest of certs as
// intermediates, for the given usage.
func verifyPeerChain(roots *x509.CertPool, certs []*x509.Certificate, usage x509.ExtKeyUsage) error {
	if len(certs) == 0 {
		return errors.New("peer presented no certificate")
	}
	if roots == nil {
		return errors.New("verifying peer certificate: no cluster CA configured")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return fmt.Errorf("verifying peer certificate %q against cluster CA: %w", certs[0].Subject.CommonName, err)
	}
	return nil
}

// PinnedTLSConfig returns a client configuration for a node joining a cluster
// whose CA it does not have yet. The handshake succeeds only if the server's
// chain contains a self-signed CA certificate whose [Hash] equals caHash
// ("sha256:<hex>" or bare hex) and the server's leaf verifies against that CA
// with server-auth usage. Otherwise it fails before any application data is
// sent, with an error wrapping [ErrCAMismatch] such as
// "cluster CA mismatch: token pins sha256:…, server presented sha256:…".
// After the handshake, [PeerCA] returns the CA for the joiner to store.
func PinnedTLSConfig(caHash string) *tls.Config {
	want, perr := ParseHash(caHash)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The CA is not known in advance; VerifyConnection checks the pin and
		// the chain.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if perr != nil {
				return perr
			}
			_, err := verifyPinned(want, cs.PeerCertificates)
			return err
		},
	}
}

// verifyPinned finds the CA with hash want in certs[1:] and verifies certs[0]
// against it.
func verifyPinned(want string, certs []*x509.Certificate) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: token pins %s, server presented no certificate", ErrCAMismatch, want)
	}
	var (
		ca        *x509.Certificate
		presented []string
	)
	for _, c := range certs[1:] {
		if !c.BasicConstraintsValid || !c.IsCA {
			continue
		}
		h := Hash(c)
		presented = append(presented, h)
		if ca == nil && h == want {
			ca = c
		}
	}
	if ca == nil {
		got := "no CA certificate"
		if len(presented) > 0 {
			got = strings.Join(presented, ", ")
		}
		return nil, fmt.Errorf("%w: token pins %s, server presented %s", ErrCAMismatch, want, got)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("pinned cluster CA %s is not a valid self-signed CA: %w", want, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		if c != ca {
			inter.AddCert(c)
		}
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("verifying server certificate against pinned cluster CA %s: %w", want, err)
	}
	return ca, nil
}

// PeerCA returns the CA certificate that issued the peer's leaf: the root of
// the first verified chain when standard verification ran, otherwise the
// self-signed CA certificate in the presented chain that signed the leaf (the
// one a [PinnedTLSConfig] handshake checked). Callers that did not use
// PinnedTLSConfig must compare its [Hash] themselves before trusting it.
func PeerCA(cs tls.ConnectionState) (*x509.Certificate, error) {
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		chain := cs.VerifiedChains[0]
		return chain[len(chain)-1], nil
	}
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("peer CA: peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	for _, c := range cs.PeerCertificates[1:] {
		if !c.BasicConstraintsValid || !c.IsCA {
			continue
		}
		if c.CheckSignatureFrom(c) == nil && leaf.CheckSignatureFrom(c) == nil {
			return c, nil
		}
	}
	return nil, errors.New("peer CA: the peer's chain holds no self-signed CA that issued its certificate")
}

// PeerNodeID returns the node ID in the peer's leaf certificate (see
// [NodeIDFromCert]). Use it only on a connection whose chain was verified.
func PeerNodeID(cs tls.ConnectionState) (string, bool) {
	if len(cs.PeerCertificates) == 0 {
		return "", false
	}
	return NodeIDFromCert(cs.PeerCertificates[0])
}

// TLSCertificate builds a tls.Certificate from a leaf certificate and its
// key, with the CA certificate appended to the chain so that joining nodes can
// check their pin ([PinnedTLSConfig]). It fails if the leaf was not issued by
// the CA. With a nil caPEM the chain is the leaf alone.
func TLSCertificate(certPEM, keyPEM, caPEM []byte) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loading key pair: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("loading key pair: %w", err)
		}
	}
	if caPEM == nil {
		return cert, nil
	}
	ca, err := ParseCertificatePEM(caPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loading key pair: CA: %w", err)
	}
	if err := cert.Leaf.CheckSignatureFrom(ca); err != nil {
		return tls.Certificate{}, fmt.Errorf("loading key pair: certificate %q was not issued by CA %q: %w",
			cert.Leaf.Subject.CommonName, ca.Subject.CommonName, err)
	}
	for _, der := range cert.Certificate[1:] {
		if bytes.Equal(der, ca.Raw) {
			return cert, nil
		}
	}
	cert.Certificate = append(cert.Certificate, ca.Raw)
	return cert, nil
}

// ParseHash validates a CA hash, "sha256:<64 hex>" or the bare hex, and
// returns it in the canonical form [Hash] produces.
func ParseHash(s string) (string, error) {
	h := strings.TrimPrefix(strings.ToLower(s), hashPrefix)
	if len(h) != 64 {
		return "", fmt.Errorf("invalid CA hash %q: want %s followed by 64 hex digits", s, hashPrefix)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("invalid CA hash %q: %w", s, err)
	}
	return hashPrefix + h, nil
}
