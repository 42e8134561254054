package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustCA(t *testing.T, name string, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA(name, now)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func mustCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := ParseCertificatePEM(certPEM)
	if err != nil {
		t.Fatalf("ParseCertificatePEM: %v", err)
	}
	return c
}

func TestCARoundTrip(t *testing.T) {
	ca := mustCA(t, "shoal-ca", testNow)

	if !ca.Cert.IsCA || !ca.Cert.BasicConstraintsValid || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA cert: IsCA=%v BasicConstraintsValid=%v KeyUsage=%v", ca.Cert.IsCA, ca.Cert.BasicConstraintsValid, ca.Cert.KeyUsage)
	}
	if !ca.Cert.MaxPathLenZero || ca.Cert.MaxPathLen != 0 {
		t.Errorf("CA may sign intermediates: MaxPathLen=%d", ca.Cert.MaxPathLen)
	}
	if got, want := ca.Cert.NotAfter, testNow.Add(CAValidity); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if pub, ok := ca.Cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", ca.Cert.PublicKey)
	}
	if b, _ := pem.Decode(ca.KeyPEM); b == nil || b.Type != "EC PRIVATE KEY" {
		t.Errorf("KeyPEM block is not EC PRIVATE KEY")
	}

	parsed, err := ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatalf("ParseCA: %v", err)
	}
	if !parsed.Cert.Equal(ca.Cert) {
		t.Error("parsed cert differs")
	}
	if parsed.Key == nil || !parsed.Key.Public().(*ecdsa.PublicKey).Equal(ca.Key.Public()) {
		t.Error("parsed key differs")
	}
	if parsed.Hash() != ca.Hash() || Hash(parsed.Cert) != ca.Hash() {
		t.Errorf("hash not stable: %s vs %s", parsed.Hash(), ca.Hash())
	}
	if h := ca.Hash(); !strings.HasPrefix(h, "sha256:") || len(h) != len("sha256:")+64 {
		t.Errorf("Hash = %q, want sha256:<64 hex>", h)
	}

	// The parsed CA issues certificates the original verifies.
	key, _, _ := NewKey()
	certPEM, err := parsed.IssueNode("n1", "node-1", nil, nil, key.Public(), testNow, 0)
	if err != nil {
		t.Fatalf("IssueNode from parsed CA: %v", err)
	}
	if _, err := mustCert(t, certPEM).Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: testNow}); err != nil {
		t.Errorf("verify: %v", err)
	}

	other := mustCA(t, "shoal-ca", testNow)
	if other.Hash() == ca.Hash() {
		t.Error("two CAs have the same hash")
	}
}

func TestParseCAVerifyOnly(t *testing.T) {
	ca := mustCA(t, "shoal-ca", testNow)
	vo, err := ParseCA(ca.CertPEM, nil)
	if err != nil {
		t.Fatalf("ParseCA: %v", err)
	}
	if vo.Key != nil || vo.KeyPEM != nil {
		t.Error("verify-only CA has a key")
	}
	key, _, _ := NewKey()
	if _, err := vo.IssueNode("n1", "node-1", nil, nil, key.Public(), testNow, 0); !errors.Is(err, ErrNoCAKey) {
		t.Errorf("IssueNode on verify-only CA: err = %v, want ErrNoCAKey", err)
	}
	if _, err := vo.IssueClient("admin", nil, key.Public(), testNow, 0); !errors.Is(err, ErrNoCAKey) {
		t.Errorf("IssueClient on verify-only CA: err = %v, want ErrNoCAKey", err)
	}
}

func TestParseCAErrors(t *testing.T) {
	ca := mustCA(t, "shoal-ca", testNow)
	other := mustCA(t, "other", testNow)
	key, _, _ := NewKey()
	leafPEM, err := ca.IssueClient("admin", nil, key.Public(), testNow, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCA(ca.CertPEM, other.KeyPEM); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: err = %v", err)
	}
	if _, err := ParseCA(leafPEM, nil); !errors.Is(err, ErrNotCA) {
		t.Errorf("leaf as CA: err = %v, want ErrNotCA", err)
	}
	if _, err := ParseCA([]byte("not pem"), nil); err == nil {
		t.Error("garbage cert: no error")
	}
	if _, err := ParseCA(ca.CertPEM, []byte("not pem")); err == nil {
		t.Error("garbage key: no error")
	}
}

func TestParseCAPKCS8Key(t *testing.T) {
	ca := mustCA(t, "shoal-ca", testNow)
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if _, err := ParseCA(ca.CertPEM, pkcs8); err != nil {
		t.Errorf("ParseCA with PKCS#8 key: %v", err)
	}
}

func TestIssueNode(t *testing.T) {
	ca := mustCA(t, "shoal-ca", testNow)
	key, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	const id = "3f1c2b9e-6a41-4c1e-9a7d-2f0d5b8e1c44"
	ips := []net.IP{net.ParseIP("192.168.1.10"), net.ParseIP("fd00::10")}
	certPEM, err := ca.IssueNode(id, "edge-1", ips, []string{"edge-1.lan"}, key.Public(), testNow, 0)
	if err != nil {
		t.Fatalf("IssueNode: %v", err)
	}
	c := mustCert(t, certPEM)

	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{usage}})
		if err != nil {
			t.Errorf("verify for usage %v: %v", usage, err)
		}
	}
	if got, ok := NodeIDFromCert(c); !ok || got != id {
		t.Errorf("NodeIDFromCert = %q, %v; want %q", got, ok, id)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "shoal://node/"+id {
		t.Errorf("URIs = %v", c.URIs)
	}
	for _, ip := range append(ips, net.ParseIP("127.0.0.1"), net.IPv6loopback) {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			t.Errorf("IP SAN %v missing from %v", ip, c.IPAddresses)
		}
	}
	if len(c.IPAddresses) != 4 {
		t.Errorf("IPAddresses = %v, want 4", c.IPAddresses)
	}
	if !slices.Equal(c.DNSNames, []string{"edge-1.lan", "localhost"}) {
		t.Errorf("DNSNames = %v", c.DNSNames)
	}
	if c.Subject.CommonName != "system:node:edge-1" || !slices.Equal(c.Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("subject = %v", c.Subject)
	}
	if c.IsCA {
		t.Error("node cert is a CA")
	}
	if !c.NotAfter.Equal(testNow.Add(DefaultNodeCertTTL)) || !c.NotBefore.Equal(testNow.Add(-ClockSkew)) {
		t.Errorf("validity %v – %v", c.NotBefore, c.NotAfter)
	}
	if !c.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("certified key differs")
	}
	// A CA-signed node cert must not verify for a different CA.
	other := mustCA(t, "other", testNow)
	if _, err := c.Verify(x509.VerifyOptions{Roots: other.Pool(), CurrentTime: testNow}); err == nil {
		t.Error("node cert verified against another CA")
	}
}

func TestIssueNodeTTL(t *testing.T) {
	ca := mustCA(t, "shoal-ca", testNow)
	key, _, _ := NewKey()
	certPEM, err := ca.IssueNode("n1", "node-1", nil, nil, key.Public(), testNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c := mustCert(t, certPEM); !c.NotAfter.Equal(testNow.Add(time.Hour)) {
		t.Errorf("NotAfter = %v, want now+1h", c.NotAfter)
	}
	// Never beyond the CA.
	late := ca.Cert.NotAfter.Add(-time.Hour)
	certPEM, err = ca.IssueNode("n1", "node-1", nil, nil, key.Public(), late, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c := mustCert(t, certPEM); !c.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter = %v, want capped at CA's %v", c.NotAfter, ca.Cert.NotAfter)
	}
	if _, err := ca.IssueNode("n1", "node-1", nil, nil, key.Public(), ca.Cert.NotAfter.Add(time.Second), 0); err == nil {
		t.Error("issued from an expired CA")
	}
}

func TestIssueNodeInvalid(t *testing.T) {
	ca := mustCA(t, "shoal-ca", testNow)
	key, _, _ := NewKey()
	for _, id := range []string{"", "a/b", "..", ".", "x?y", "a b", "é", strings.Repeat("a", 129)} {
		if _, err := ca.IssueNode(id, "node", nil, nil, key.Public(), testNow, 0); err == nil {
			t.Errorf("IssueNode(id %q): no error", id)
		}
	}
	if _, err := ca.IssueNode("n1", "", nil, nil, key.Public(), testNow, 0); err == nil {
		t.Error("empty node name: no error")
	}
	weak, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.IssueNode("n1", "node", nil, nil, weak.Public(), testNow, 0); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("P-224 key: err = %v, want ErrUnsupportedKey", err)
	}
	if _, err := ca.IssueNode("n1", "node", nil, nil, nil, testNow, 0); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("nil key: err = %v, want ErrUnsupportedKey", err)
	}
}

func TestIssueClient(t *testing.T) {
	ca := mustCA(t, "shoal-ca", testNow)
	key, _, _ := NewKey()
	certPEM, err := ca.IssueClient("admin", []string{MastersGroup}, key.Public(), testNow, 0)
	if err != nil {
		t.Fatalf("IssueClient: %v", err)
	}
	c := mustCert(t, certPEM)
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify as client: %v", err)
	}
	// A client certificate cannot be used as a server certificate.
	_, err = c.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	var inv x509.CertificateInvalidError
	if !errors.As(err, &inv) || inv.Reason != x509.IncompatibleUsage {
		t.Errorf("verify as server: err = %v, want IncompatibleUsage", err)
	}
	if c.Subject.CommonName != "admin" || !slices.Equal(c.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("subject = %v", c.Subject)
	}
	if _, ok := NodeIDFromCert(c); ok {
		t.Error("client cert has a node ID")
	}
	if !c.NotAfter.Equal(testNow.Add(DefaultClientCertTTL)) {
		t.Errorf("NotAfter = %v", c.NotAfter)
	}
	if _, err := ca.IssueClient("", nil, key.Public(), testNow, 0); err == nil {
		t.Error("empty CN: no error")
	}
}

func TestNodeIDFromCertIgnoresOtherURIs(t *testing.T) {
	for _, raw := range []string{"https://node/x", "shoal://pod/x", "shoal://node/", "shoal://node/a/b", "shoal://u@node/x", "shoal://node/x?q=1"} {
		c := &x509.Certificate{URIs: []*url.URL{mustURL(t, raw)}}
		if id, ok := NodeIDFromCert(c); ok {
			t.Errorf("NodeIDFromCert(%s) = %q, want none", raw, id)
		}
	}
	if _, ok := NodeIDFromCert(nil); ok {
		t.Error("NodeIDFromCert(nil) ok")
	}
}

func TestKeyPEM(t *testing.T) {
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatalf("ParsePrivateKeyPEM: %v", err)
	}
	if !key.Equal(parsed) {
		t.Error("private key round trip differs")
	}

	pubPEM, err := MarshalPublicKeyPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKeyPEM(pubPEM)
	if err != nil {
		t.Fatalf("ParsePublicKeyPEM: %v", err)
	}
	if !key.PublicKey.Equal(pub) {
		t.Error("public key round trip differs")
	}
	if _, err := ParsePublicKeyPEM(keyPEM); err == nil {
		t.Error("ParsePublicKeyPEM accepted a private key")
	}
	weak, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	der, err := x509.MarshalPKIXPublicKey(weak.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePublicKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("P-224 public key: err = %v, want ErrUnsupportedKey", err)
	}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
