package localcluster

// A fake `shoal` binary: the test binary re-executed with fakeAgentEnv set.
// It honours the agent CLI contract just enough for Up, Start, AddNode and
// Down to be tested without the real agent:
//
//	agent --data-dir D --advertise-addr IP --node-name N [--join ADDR --token T]
//	token create --data-dir D
//	kubeconfig --data-dir D
//
// All fake agents share a CA and a member list in the directory named by
// fakeSharedEnv. Each agent also starts a `sleep` child that outlives it
// (like a containerd shim), recorded in D/children, for Down to sweep.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	fakeAgentEnv  = "LOCALCLUSTER_FAKE_AGENT"
	fakeSharedEnv = "LOCALCLUSTER_FAKE_SHARED"
)

func fakeMain(args []string) int {
	if err := fakeRun(args); err != nil {
		fmt.Fprintln(os.Stderr, "fake shoal:", err)
		return 1
	}
	return 0
}

func fakeRun(args []string) error {
	shared := os.Getenv(fakeSharedEnv)
	if shared == "" {
		return errors.New(fakeSharedEnv + " not set")
	}
	switch {
	case len(args) >= 1 && args[0] == "agent":
		return fakeAgent(shared, args[1:])
	case len(args) >= 2 && args[0] == "token" && args[1] == "create":
		dir, err := dataDirFlag(args[2:])
		if err != nil {
			return err
		}
		b := make([]byte, 16)
		rand.Read(b)
		tok := hex.EncodeToString(b)
		f, err := os.OpenFile(filepath.Join(dir, "tokens"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := fmt.Fprintln(f, tok); err != nil {
			return err
		}
		fmt.Println(tok)
		return nil
	case len(args) >= 1 && args[0] == "kubeconfig":
		dir, err := dataDirFlag(args[1:])
		if err != nil {
			return err
		}
		ip, err := os.ReadFile(filepath.Join(dir, "addr"))
		if err != nil {
			return fmt.Errorf("not initialized: %w", err)
		}
		return fakeKubeconfig(shared, string(ip))
	}
	return fmt.Errorf("unknown command %q", args)
}

func dataDirFlag(args []string) (string, error) {
	fs := flag.NewFlagSet("fake", flag.ContinueOnError)
	dir := fs.String("data-dir", "", "")
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if *dir == "" {
		return "", errors.New("--data-dir is required")
	}
	return *dir, nil
}

func fakeAgent(shared string, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	dir := fs.String("data-dir", "", "")
	addr := fs.String("advertise-addr", "", "")
	name := fs.String("node-name", "", "")
	join := fs.String("join", "", "")
	token := fs.String("token", "", "")
	_ = fs.Bool("registry-pull", true, "")
	_ = fs.String("dns-upstream", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "fake agent %s starting on %s (join %q)\n", *name, *addr, *join)
	ca, caKey, err := loadCA(shared)
	if err != nil {
		return err
	}
	joined := filepath.Join(*dir, "joined")
	_, err = os.Stat(joined)
	member := err == nil
	switch {
	case !member && *join == "":
		fmt.Fprintln(os.Stderr, "creating a new cluster")
	case !member:
		if err := fakeJoin(ca, *join, *token, *name); err != nil {
			return err
		}
	}
	if err := os.WriteFile(joined, nil, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "addr"), []byte(*addr), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(shared, "members", *name), nil, 0o644); err != nil {
		return err
	}

	child := exec.Command("sleep", "3600")
	if err := child.Start(); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(*dir, "children"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintln(f, child.Process.Pid)
	f.Close()

	cert, err := issue(ca, caKey, *name, net.ParseIP(*addr), x509.ExtKeyUsageServerAuth)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/api/v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		ents, _ := os.ReadDir(filepath.Join(shared, "members"))
		var items []map[string]any
		for _, e := range ents {
			items = append(items, map[string]any{
				"metadata": map[string]any{"name": e.Name()},
				"status":   map[string]any{"conditions": []map[string]string{{"type": "Ready", "status": "True"}}},
			})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"kind": "NodeList", "apiVersion": "v1", "items": items})
	})
	mux.HandleFunc("/fake/join", func(w http.ResponseWriter, r *http.Request) {
		toks, _ := os.ReadFile(filepath.Join(*dir, "tokens"))
		tok := r.URL.Query().Get("token")
		if tok == "" || !slices.Contains(strings.Fields(string(toks)), tok) {
			http.Error(w, "bad token", http.StatusForbidden)
			return
		}
		fmt.Fprintf(os.Stderr, "%s joined\n", r.URL.Query().Get("name"))
		fmt.Fprint(w, "welcome")
	})
	srv := &http.Server{
		Addr:    net.JoinHostPort(*addr, strconv.Itoa(APIPort)),
		Handler: mux,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pool,
			ClientAuth:   tls.VerifyClientCertIfGiven,
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServeTLS("", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "terminating")
		srv.Close()
		return nil
	}
}

func fakeJoin(ca *x509.Certificate, join, token, name string) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	u := "https://" + join + "/fake/join?" + url.Values{"token": {token}, "name": {name}}.Encode()
	var last error
	for range 50 {
		resp, err := hc.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("join: %s", resp.Status)
			if resp.StatusCode == http.StatusForbidden {
				return err
			}
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return last
}

func fakeKubeconfig(shared, ip string) error {
	ca, caKey, err := loadCA(shared)
	if err != nil {
		return err
	}
	cert, err := issue(ca, caKey, "admin", nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		return err
	}
	b64 := func(typ string, der []byte) string {
		return base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	fmt.Printf(`apiVersion: v1
kind: Config
current-context: fake
clusters:
- name: fake
  cluster:
    server: https://%s:6443
    certificate-authority-data: %s
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: fake
  context:
    cluster: fake
    user: admin
`, ip, b64("CERTIFICATE", ca.Raw), b64("CERTIFICATE", cert.Certificate[0]), b64("EC PRIVATE KEY", keyDER))
	return nil
}

// makeFakeShared creates the shared dir with a CA and returns its path.
func makeFakeShared(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fake ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "members"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), der, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "ca.key"), keyDER, 0o600)
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	der, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(keyDER)
	return ca, key, err
}

func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, ip net.IP, usage x509.ExtKeyUsage) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
