package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// issuedNode returns a node certificate (leaf+CA chain) valid now.
func issuedNode(t *testing.T, ca *CA, id string) tls.Certificate {
	t.Helper()
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.IssueNode(id, "node-"+id, []net.IP{net.ParseIP("127.0.0.1")}, nil, key.Public(), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := TLSCertificate(certPEM, keyPEM, ca.CertPEM)
	if err != nil {
		t.Fatalf("TLSCertificate: %v", err)
	}
	return cert
}

// issuedClient returns a client-auth-only certificate (leaf only) valid now.
func issuedClient(t *testing.T, ca *CA, cn string) tls.Certificate {
	t.Helper()
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.IssueClient(cn, []string{MastersGroup}, key.Public(), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := TLSCertificate(certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

type handshakeResult struct {
	srvErr, cliErr error
	srvState       tls.ConnectionState // valid when srvErr == nil
	cliState       tls.ConnectionState // valid when cliErr == nil
	dialFailed     bool                // the client's handshake itself failed, so it never sent data
}

// handshake serves one connection with srvCfg on a real 127.0.0.1 listener and
// dials it with cliCfg. On success the client sends one byte and reads the
// echo, so that a client certificate rejected by a TLS 1.3 server (reported
// after the client's side of the handshake) surfaces as cliErr.
func handshake(t *testing.T, srvCfg, cliCfg *tls.Config) handshakeResult {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	var res handshakeResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			res.srvErr = err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		tc := conn.(*tls.Conn)
		if res.srvErr = tc.Handshake(); res.srvErr != nil {
			return
		}
		res.srvState = tc.ConnectionState()
		var b [1]byte
		if _, err := io.ReadFull(tc, b[:]); err != nil {
			res.srvErr = err
			return
		}
		_, res.srvErr = tc.Write(b[:])
	}()

	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), cliCfg)
	if err != nil {
		res.cliErr = err
		res.dialFailed = true
	} else {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		res.cliState = conn.ConnectionState()
		if _, err := conn.Write([]byte{'x'}); err != nil {
			res.cliErr = err
		} else {
			var b [1]byte
			_, res.cliErr = io.ReadFull(conn, b[:])
		}
		conn.Close()
	}
	<-done
	return res
}

func TestMTLSValidClient(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	srvCert := issuedNode(t, ca, "server-1")
	cliCert := issuedNode(t, ca, "client-1")

	res := handshake(t, ServerTLSConfig(ca.Pool(), srvCert, true), ClientTLSConfig(ca.Pool(), &cliCert))
	if res.srvErr != nil || res.cliErr != nil {
		t.Fatalf("server err %v, client err %v", res.srvErr, res.cliErr)
	}
	if res.cliState.Version != tls.VersionTLS13 {
		t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(res.cliState.Version))
	}
	if id, ok := PeerNodeID(res.srvState); !ok || id != "client-1" {
		t.Errorf("server sees peer node %q, %v; want client-1", id, ok)
	}
	if id, ok := PeerNodeID(res.cliState); !ok || id != "server-1" {
		t.Errorf("client sees peer node %q, %v; want server-1", id, ok)
	}
	if got, err := PeerCA(res.srvState); err != nil || !got.Equal(ca.Cert) {
		t.Errorf("server PeerCA = %v, %v", got, err)
	}

	// An admin client certificate (client auth only) is accepted too.
	admin := issuedClient(t, ca, "admin")
	if res := handshake(t, ServerTLSConfig(ca.Pool(), srvCert, true), ClientTLSConfig(ca.Pool(), &admin)); res.srvErr != nil || res.cliErr != nil {
		t.Errorf("admin client: server err %v, client err %v", res.srvErr, res.cliErr)
	}
}

func TestMTLSTLS12(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	srvCert := issuedNode(t, ca, "server-1")
	cliCert := issuedNode(t, ca, "client-1")
	cli := ClientTLSConfig(ca.Pool(), &cliCert)
	cli.MaxVersion = tls.VersionTLS12
	res := handshake(t, ServerTLSConfig(ca.Pool(), srvCert, true), cli)
	if res.srvErr != nil || res.cliErr != nil || res.cliState.Version != tls.VersionTLS12 {
		t.Fatalf("TLS 1.2: server err %v, client err %v, version %x", res.srvErr, res.cliErr, res.cliState.Version)
	}
	cli.MaxVersion = tls.VersionTLS11
	if res := handshake(t, ServerTLSConfig(ca.Pool(), srvCert, true), cli); res.cliErr == nil {
		t.Error("TLS 1.1 accepted")
	}
}

func TestMTLSNoClientCert(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	srvCert := issuedNode(t, ca, "server-1")

	res := handshake(t, ServerTLSConfig(ca.Pool(), srvCert, true), ClientTLSConfig(ca.Pool(), nil))
	if res.srvErr == nil || res.cliErr == nil {
		t.Fatalf("no client cert: server err %v, client err %v; want both to fail", res.srvErr, res.cliErr)
	}

	// Without requireClientCert the same client is accepted (join endpoint).
	res = handshake(t, ServerTLSConfig(ca.Pool(), srvCert, false), ClientTLSConfig(ca.Pool(), nil))
	if res.srvErr != nil || res.cliErr != nil {
		t.Fatalf("optional client cert: server err %v, client err %v", res.srvErr, res.cliErr)
	}
	if _, ok := PeerNodeID(res.srvState); ok {
		t.Error("anonymous client has a node ID")
	}
}

func TestMTLSClientCertFromOtherCA(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	other := mustCA(t, "shoal-ca", time.Now())
	srvCert := issuedNode(t, ca, "server-1")
	foreign := issuedNode(t, other, "intruder")

	// Force the foreign certificate onto the wire (the stdlib client would
	// otherwise withhold it, since the server's acceptable CAs do not match),
	// so the server's own verification is what rejects it.
	cli := ClientTLSConfig(ca.Pool(), nil)
	cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
	res := handshake(t, ServerTLSConfig(ca.Pool(), srvCert, true), cli)
	if res.srvErr == nil || res.cliErr == nil {
		t.Fatalf("foreign client cert: server err %v, client err %v; want both to fail", res.srvErr, res.cliErr)
	}
	var unknown x509.UnknownAuthorityError
	if !errors.As(res.srvErr, &unknown) && !strings.Contains(res.srvErr.Error(), "unknown authority") {
		t.Errorf("server err = %v, want unknown authority", res.srvErr)
	}

	// And through ClientTLSConfig as a caller would use it.
	res = handshake(t, ServerTLSConfig(ca.Pool(), srvCert, true), ClientTLSConfig(ca.Pool(), &foreign))
	if res.srvErr == nil || res.cliErr == nil {
		t.Fatalf("foreign client cert via ClientTLSConfig: server err %v, client err %v", res.srvErr, res.cliErr)
	}
}

func TestClientRefusesServerFromOtherCA(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	other := mustCA(t, "shoal-ca", time.Now())
	cliCert := issuedNode(t, ca, "client-1")
	rogue := issuedNode(t, other, "rogue")

	res := handshake(t, ServerTLSConfig(other.Pool(), rogue, false), ClientTLSConfig(ca.Pool(), &cliCert))
	if res.cliErr == nil {
		t.Fatal("client accepted a server from another CA")
	}
	if !strings.Contains(res.cliErr.Error(), "verifying peer certificate") {
		t.Errorf("client err = %v", res.cliErr)
	}
	if !res.dialFailed {
		t.Error("client completed the handshake with a rogue server")
	}
}

func TestClientRefusesClientCertAsServer(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	clientOnly := issuedClient(t, ca, "admin")
	res := handshake(t, ServerTLSConfig(ca.Pool(), clientOnly, false), ClientTLSConfig(ca.Pool(), nil))
	var inv x509.CertificateInvalidError
	if !errors.As(res.cliErr, &inv) || inv.Reason != x509.IncompatibleUsage {
		t.Fatalf("client err = %v, want IncompatibleUsage", res.cliErr)
	}
}

func TestPinnedRightHash(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	srvCert := issuedNode(t, ca, "server-1")

	res := handshake(t, ServerTLSConfig(ca.Pool(), srvCert, false), PinnedTLSConfig(ca.Hash()))
	if res.srvErr != nil || res.cliErr != nil {
		t.Fatalf("server err %v, client err %v", res.srvErr, res.cliErr)
	}
	got, err := PeerCA(res.cliState)
	if err != nil {
		t.Fatalf("PeerCA: %v", err)
	}
	if !got.Equal(ca.Cert) || Hash(got) != ca.Hash() {
		t.Error("PeerCA returned a different CA")
	}

	// The joiner stores the CA and from then on uses ordinary verification.
	stored, err := ParseCA(EncodeCertificatePEM(got.Raw), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res := handshake(t, ServerTLSConfig(ca.Pool(), srvCert, false), ClientTLSConfig(stored.Pool(), nil)); res.cliErr != nil {
		t.Errorf("with the stored CA: %v", res.cliErr)
	}

	// The bare-hex form of the pin works too.
	if res := handshake(t, ServerTLSConfig(ca.Pool(), srvCert, false), PinnedTLSConfig(strings.TrimPrefix(ca.Hash(), "sha256:"))); res.cliErr != nil {
		t.Errorf("bare hex pin: %v", res.cliErr)
	}
}

func TestPinnedWrongHash(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	other := mustCA(t, "shoal-ca", time.Now())
	srvCert := issuedNode(t, ca, "server-1")

	res := handshake(t, ServerTLSConfig(ca.Pool(), srvCert, false), PinnedTLSConfig(other.Hash()))
	if res.cliErr == nil {
		t.Fatal("pinned handshake with the wrong hash succeeded")
	}
	if !errors.Is(res.cliErr, ErrCAMismatch) {
		t.Errorf("err = %v, want ErrCAMismatch", res.cliErr)
	}
	want := "cluster CA mismatch: token pins " + other.Hash() + ", server presented " + ca.Hash()
	if res.cliErr.Error() != want {
		t.Errorf("err = %q\nwant  %q", res.cliErr, want)
	}
	if !res.dialFailed || res.srvErr == nil {
		t.Errorf("dial failed %v, server err %v; want the handshake refused before any data", res.dialFailed, res.srvErr)
	}
}

func TestPinnedServerSendsNoCA(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	key, keyPEM, _ := NewKey()
	certPEM, err := ca.IssueNode("server-1", "server-1", nil, nil, key.Public(), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leafOnly, err := TLSCertificate(certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := handshake(t, ServerTLSConfig(ca.Pool(), leafOnly, false), PinnedTLSConfig(ca.Hash()))
	if !errors.Is(res.cliErr, ErrCAMismatch) || !strings.Contains(res.cliErr.Error(), "server presented no CA certificate") {
		t.Fatalf("err = %v, want a mismatch naming the missing CA", res.cliErr)
	}
}

// A server that knows the cluster CA certificate (public) but not its key
// cannot pass the pin by presenting it next to a leaf from another CA.
func TestPinnedServerReplaysCAWithForeignLeaf(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	attacker := mustCA(t, "shoal-ca", time.Now())
	rogue := issuedNode(t, attacker, "rogue")
	rogue.Certificate = [][]byte{rogue.Certificate[0], ca.Cert.Raw}

	res := handshake(t, ServerTLSConfig(attacker.Pool(), rogue, false), PinnedTLSConfig(ca.Hash()))
	if res.cliErr == nil {
		t.Fatal("pinned client accepted a leaf not issued by the pinned CA")
	}
	if !strings.Contains(res.cliErr.Error(), "verifying server certificate against pinned cluster CA") {
		t.Errorf("err = %v", res.cliErr)
	}
	if !res.dialFailed {
		t.Error("joiner completed the handshake with a rogue server")
	}
}

func TestPinnedInvalidHash(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	srvCert := issuedNode(t, ca, "server-1")
	res := handshake(t, ServerTLSConfig(ca.Pool(), srvCert, false), PinnedTLSConfig("sha256:nothex"))
	if res.cliErr == nil || !strings.Contains(res.cliErr.Error(), "invalid CA hash") {
		t.Fatalf("err = %v, want invalid CA hash", res.cliErr)
	}
}

func TestTLSCertificate(t *testing.T) {
	ca := mustCA(t, "shoal-ca", time.Now())
	other := mustCA(t, "other", time.Now())
	key, keyPEM, _ := NewKey()
	certPEM, err := ca.IssueNode("n1", "n1", nil, nil, key.Public(), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := TLSCertificate(certPEM, keyPEM, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 || string(c.Certificate[1]) != string(ca.Cert.Raw) || c.Leaf == nil {
		t.Errorf("chain has %d certs, leaf %v; want leaf+CA", len(c.Certificate), c.Leaf != nil)
	}
	// A chain that already ends in the CA is not extended.
	c, err = TLSCertificate(append(append([]byte(nil), certPEM...), ca.CertPEM...), keyPEM, ca.CertPEM)
	if err != nil || len(c.Certificate) != 2 {
		t.Errorf("CA already in chain: %d certs, err %v", len(c.Certificate), err)
	}
	if _, err := TLSCertificate(certPEM, keyPEM, other.CertPEM); err == nil {
		t.Error("accepted a CA that did not issue the leaf")
	}
	_, otherKeyPEM, _ := NewKey()
	if _, err := TLSCertificate(certPEM, otherKeyPEM, ca.CertPEM); err == nil {
		t.Error("accepted a key that does not match the leaf")
	}
}

func TestParseHash(t *testing.T) {
	ca := mustCA(t, "shoal-ca", testNow)
	for _, in := range []string{ca.Hash(), strings.TrimPrefix(ca.Hash(), "sha256:"), strings.ToUpper(ca.Hash())} {
		if got, err := ParseHash(in); err != nil || got != ca.Hash() {
			t.Errorf("ParseHash(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "sha256:", "sha256:abc", "md5:" + strings.Repeat("a", 64), strings.Repeat("g", 64)} {
		if _, err := ParseHash(in); err == nil {
			t.Errorf("ParseHash(%q): no error", in)
		}
	}
}
