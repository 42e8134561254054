package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// PEM block types written by this package. Private keys are always written as
// SEC1 "EC PRIVATE KEY"; parsers also accept PKCS#8 "PRIVATE KEY".
const (
	pemCertificate  = "CERTIFICATE"
	pemECPrivateKey = "EC PRIVATE KEY"
	pemPKCS8Key     = "PRIVATE KEY"
	pemPublicKey    = "PUBLIC KEY"
)

// ErrUnsupportedKey is returned for keys this package will not sign or use:
// anything but ECDSA (P-256/P-384/P-521), Ed25519 or RSA of at least 2048 bits.
var ErrUnsupportedKey = errors.New("unsupported key type")

// NewKey generates an ECDSA P-256 private key and returns it with its PEM
// encoding (SEC1, block type "EC PRIVATE KEY").
func NewKey() (key *ecdsa.PrivateKey, keyPEM []byte, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating key: %w", err)
	}
	keyPEM, err = MarshalPrivateKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return key, keyPEM, nil
}

// MarshalPrivateKeyPEM encodes an ECDSA private key as a SEC1
// "EC PRIVATE KEY" PEM block.
func MarshalPrivateKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshaling private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemECPrivateKey, Bytes: der}), nil
}

// ParsePrivateKeyPEM parses the first private key block in keyPEM: SEC1
// "EC PRIVATE KEY" or PKCS#8 "PRIVATE KEY". Other blocks (such as
// "EC PARAMETERS") are skipped.
func ParsePrivateKeyPEM(keyPEM []byte) (crypto.Signer, error) {
	rest := keyPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("parsing private key: no private key PEM block found")
		}
		var (
			k   any
			err error
		)
		switch b.Type {
		case pemECPrivateKey:
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case pemPKCS8Key:
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parsing private key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parsing private key: %T: %w", k, ErrUnsupportedKey)
		}
		if err := checkPublicKey(s.Public()); err != nil {
			return nil, fmt.Errorf("parsing private key: %w", err)
		}
		return s, nil
	}
}

// MarshalPublicKeyPEM encodes a public key as a PKIX "PUBLIC KEY" PEM block,
// the form a joining node sends to have its certificate issued.
func MarshalPublicKeyPEM(pub crypto.PublicKey) ([]byte, error) {
	if err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("marshaling public key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshaling public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der}), nil
}

// ParsePublicKeyPEM parses a PKIX "PUBLIC KEY" PEM block and rejects key types
// the CA will not sign (see [ErrUnsupportedKey]).
func ParsePublicKeyPEM(pubPEM []byte) (crypto.PublicKey, error) {
	b, _ := pem.Decode(pubPEM)
	if b == nil || b.Type != pemPublicKey {
		return nil, errors.New("parsing public key: no PUBLIC KEY PEM block found")
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	return pub, nil
}

// ParseCertificatePEM parses the first "CERTIFICATE" block in certPEM.
func ParseCertificatePEM(certPEM []byte) (*x509.Certificate, error) {
	rest := certPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("parsing certificate: no CERTIFICATE PEM block found")
		}
		if b.Type != pemCertificate {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		return c, nil
	}
}

// EncodeCertificatePEM returns the PEM encoding of a DER certificate.
func EncodeCertificatePEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})
}

// checkPublicKey rejects nil, unknown and weak keys.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return fmt.Errorf("nil ECDSA key: %w", ErrUnsupportedKey)
		}
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("ECDSA curve %s: %w", k.Curve.Params().Name, ErrUnsupportedKey)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("malformed Ed25519 key: %w", ErrUnsupportedKey)
		}
		return nil
	case *rsa.PublicKey:
		if k == nil || k.N == nil || k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key shorter than 2048 bits: %w", ErrUnsupportedKey)
		}
		return nil
	case nil:
		return fmt.Errorf("nil public key: %w", ErrUnsupportedKey)
	default:
		return fmt.Errorf("%T: %w", pub, ErrUnsupportedKey)
	}
}
