package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/localcluster"
)

// TestSecretsSealedOnDisk: a Secret's value never appears in plaintext
// anywhere under the data dirs — raft log segments and snapshots included —
// and the CA key is not on disk in the clear either.
func TestSecretsSealedOnDisk(t *testing.T) {
	c := newCluster(t, 3, func(cfg *localcluster.Config) {
		cfg.AgentArgs = append(cfg.AgentArgs, "--raft-snapshot-threshold=32", "--raft-snapshot-interval=1s")
	})
	ctx := ctxT(t, 3*time.Minute)
	cs := clientset(t, c)
	const plain = "correct-horse-battery-staple-7f3a9"
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		StringData: map[string]string{"password": plain},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := clientsetFor(t, c, "n3").CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{})
	if err != nil || string(got.Data["password"]) != plain {
		eventually(t, 10*time.Second, func() error {
			got, err = clientsetFor(t, c, "n3").CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{})
			if err == nil && string(got.Data["password"]) != plain {
				err = fmt.Errorf("secret data %q", got.Data["password"])
			}
			return err
		})
	}
	// Enough writes that every node takes a snapshot.
	for i := 0; i < 80; i++ {
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, configMap(fmt.Sprintf("fill-%d", i), nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, time.Minute, func() error {
		for _, n := range c.Nodes() {
			snaps, _ := filepath.Glob(filepath.Join(n.DataDir, "raft", "snapshots", "*", "state.bin"))
			if len(snaps) == 0 {
				return fmt.Errorf("%s has no raft snapshot yet", n.Name)
			}
		}
		return nil
	})
	needles := map[string][]byte{
		"secret value":           []byte(plain),
		"secret value (base64)":  []byte(base64.StdEncoding.EncodeToString([]byte(plain))),
		"secret value (partial)": []byte(plain[:16]),
	}
	files := 0
	for _, n := range c.Nodes() {
		err := filepath.WalkDir(n.DataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() { // sockets, FIFOs, links, dirs
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			files++
			for what, needle := range needles {
				if bytes.Contains(b, needle) {
					t.Errorf("%s found in plaintext in %s", what, path)
				}
			}
			if bytes.Contains(b, []byte("PRIVATE KEY")) && filepath.Base(path) != "node.key" {
				t.Errorf("a private key in plaintext in %s", path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("searched %d files under 3 data dirs", files)
}

// TestTLSRefused: plaintext and foreign-CA connections to the raft and API
// ports are refused; the API answers 401 without a client certificate.
func TestTLSRefused(t *testing.T) {
	c := newCluster(t, 1)
	ip := node(t, c, "n1").IP
	raftAddr := net.JoinHostPort(ip, fmt.Sprint(localcluster.RaftPort))
	apiAddr := net.JoinHostPort(ip, fmt.Sprint(localcluster.APIPort))
	dial := func(addr string) net.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := c.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		return conn
	}

	// Plaintext raft: a raft RPC header gets no answer; the connection closes.
	conn := dial(raftAddr)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = conn.Write([]byte("R\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	b, _ := io.ReadAll(conn)
	conn.Close()
	if len(b) > 0 && !looksLikeTLSAlert(b) {
		t.Errorf("raft port answered plaintext with %q", b)
	}

	foreign := foreignCert(t)
	for _, tc := range []struct {
		name, addr string
		certs      []tls.Certificate
	}{
		{"raft, no client certificate", raftAddr, nil},
		{"raft, foreign-CA certificate", raftAddr, []tls.Certificate{foreign}},
		{"API, foreign-CA certificate", apiAddr, []tls.Certificate{foreign}},
	} {
		conn := dial(tc.addr)
		certs := tc.certs
		tlsConn := tls.Client(conn, &tls.Config{InsecureSkipVerify: true,
			// Present the certificate whatever CAs the server asks for.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if len(certs) == 0 {
					return &tls.Certificate{}, nil
				}
				return &certs[0], nil
			}})
		_ = tlsConn.SetDeadline(time.Now().Add(10 * time.Second))
		err := tlsConn.Handshake()
		if err == nil { // TLS 1.3: the server's verdict arrives with the first read
			_, _ = tlsConn.Write([]byte("R"))
			_, err = tlsConn.Read(make([]byte, 1))
		}
		tlsConn.Close()
		if err == nil {
			t.Errorf("%s: connection accepted", tc.name)
		} else {
			t.Logf("%s: refused: %v", tc.name, err)
		}
	}

	// Plain HTTP to the API port gets an HTTP error, never an API answer.
	hc := &http.Client{Transport: &http.Transport{DialContext: c.DialContext}, Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + apiAddr + "/api/v1/namespaces")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || bytes.Contains(body, []byte("NamespaceList")) {
			t.Errorf("plain HTTP to the API: %d %s", resp.StatusCode, body)
		}
	}
	// HTTPS without a client certificate: 401 for the API, 200 for /readyz.
	anon := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: c.DialContext,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for path, want := range map[string]int{"/api/v1/namespaces": 401, "/readyz": 200, "/metrics": 401, "/internal/v1/members": 401} {
		resp, err := anon.Get("https://" + apiAddr + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("anonymous %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func looksLikeTLSAlert(b []byte) bool { return len(b) >= 1 && (b[0] == 0x15 || b[0] == 0x16) }

// foreignCert is a client certificate from a CA the cluster has never seen.
func foreignCert(t *testing.T) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evil-ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
}

// TestMetricsAndLeave: /metrics serves raft, gossip and API metrics; SIGTERM
// stops a node that stays a member and comes back; `shoal leave` removes a
// node for good.
func TestMetricsAndLeave(t *testing.T) {
	c := newCluster(t, 3)
	waitRoles(t, c, "n1", 3, 0, time.Minute)
	ctx := ctxT(t, 3*time.Minute)
	if _, err := clientset(t, c).CoreV1().ConfigMaps("default").Create(ctx, configMap("m", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hc, err := c.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(fmt.Sprintf("https://%s:%d/metrics", node(t, c, "n1").IP, localcluster.APIPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"shoal_raft_leader", "shoal_raft_term", "shoal_raft_apply_latency_seconds_bucket", "shoal_gossip_members_alive 3",
		"shoal_apiserver_requests_total", `resource="configmaps"`, `verb="create"`} {
		if !bytes.Contains(body, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	// SIGTERM: a clean stop; the node stays a member and comes back.
	n2 := node(t, c, "n2")
	if err := syscall.Kill(n2.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		if st, _ := c.ProcessState("n2"); st != "exited" {
			return fmt.Errorf("n2 is %s after SIGTERM", st)
		}
		return nil
	})
	ms, _ := members(t, c, "n1")
	if _, v, _ := roles(ms); v != 3 {
		t.Errorf("a SIGTERMed node must stay a voter: %+v", ms)
	}
	if err := c.Start("n2"); err != nil {
		t.Fatal(err)
	}
	waitRoles(t, c, "n1", 3, 0, time.Minute)

	// shoal leave on n3: gone from raft, gossip and the Node list; its agent stops.
	n3 := node(t, c, "n3")
	out, err := c.NodeCommand(ctx, "n3", shoalBinary(t), "leave", "--data-dir", n3.DataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("shoal leave: %v\n%s", err, out)
	}
	eventually(t, 30*time.Second, func() error {
		ms, err := members(t, c, "n1")
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Name == "n3" && m.Role != "none" {
				return fmt.Errorf("n3 still in raft: %+v", m)
			}
		}
		if _, v, nv := roles(ms); v != 2 || nv != 0 {
			return fmt.Errorf("members after leave: %+v", ms)
		}
		nodes, err := clientset(t, c).CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(nodes.Items) != 2 {
			return fmt.Errorf("%d Node objects after leave", len(nodes.Items))
		}
		if st, _ := c.ProcessState("n3"); st != "exited" {
			return fmt.Errorf("n3 agent is %s", st)
		}
		return nil
	})
	// The cluster still writes with two voters.
	if _, err := clientset(t, c).CoreV1().ConfigMaps("default").Create(ctx, configMap("after-leave", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A node that left refuses to start again from its data dir.
	out, _ = c.NodeCommand(ctx, "n3", shoalBinary(t), "agent", "--data-dir", n3.DataDir, "--advertise-addr", n3.IP).CombinedOutput()
	if !strings.Contains(string(out), "left its cluster") {
		t.Errorf("restarting a node that left: %s", out)
	}
}
