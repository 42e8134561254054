package consensus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// serverTLS derives the config for accepted connections: TLS 1.3 and a
// client certificate that chains to ClientCAs (RootCAs when unset).
func serverTLS(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.ClientAuth = tls.RequireAndVerifyClientCert
	if c.ClientCAs == nil {
		c.ClientCAs = c.RootCAs
	}
	c.MinVersion = max(c.MinVersion, tls.VersionTLS13)
	return c
}

// clientTLS derives the config for dialing peers. Peers are addressed by IP
// and their certificates need not name that IP, so the standard host name
// check is replaced by verifying the chain against RootCAs ourselves.
func clientTLS(base *tls.Config) *tls.Config {
	c := base.Clone()
	roots := c.RootCAs
	next := c.VerifyConnection
	// The chain is verified in VerifyConnection below, which crypto/tls runs
	// even with InsecureSkipVerify; the handshake still proves the peer holds
	// the certificate's key.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verifyPeerChain(cs.PeerCertificates, roots, x509.ExtKeyUsageServerAuth); err != nil {
			return err
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	if c.GetClientCertificate == nil && len(c.Certificates) == 0 && c.GetCertificate != nil {
		// A node rotating its certificate through GetCertificate presents
		// the same certificate when dialing.
		get := c.GetCertificate
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return get(&tls.ClientHelloInfo{})
		}
	}
	c.MinVersion = max(c.MinVersion, tls.VersionTLS13)
	return c
}

// verifyPeerChain checks that the leaf chains to roots, ignoring host names.
func verifyPeerChain(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	if len(certs) == 0 {
		return errors.New("consensus: peer presented no certificate")
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return fmt.Errorf("consensus: verifying peer certificate: %w", err)
	}
	return nil
}
