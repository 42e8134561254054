package apiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// testPKI is a throwaway cluster CA with a server and an admin certificate.
type testPKI struct {
	caPEM               []byte
	pool                *x509.CertPool
	server              tls.Certificate
	adminCert, adminKey []byte
	userCert, userKey   []byte
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shoal-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &testPKI{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	issue := func(serial int64, subj pkix.Name, server bool) ([]byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: subj,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if server {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
			tmpl.DNSNames = []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	sc, sk := issue(2, pkix.Name{CommonName: "shoal-apiserver"}, true)
	if p.server, err = tls.X509KeyPair(sc, sk); err != nil {
		t.Fatal(err)
	}
	p.adminCert, p.adminKey = issue(3, pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}, false)
	p.userCert, p.userKey = issue(4, pkix.Name{CommonName: "bob", Organization: []string{"developers"}}, false)
	return p
}

// startTLS serves e's handler over HTTPS on 127.0.0.1 the way the node does:
// client certificates verified against the cluster CA when given.
func (e *testEnv) startTLS(p *testPKI) *httptest.Server {
	ts := httptest.NewUnstartedServer(e.srv)
	ts.EnableHTTP2 = true
	ts.TLS = &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    p.pool,
		MinVersion:   tls.VersionTLS12,
	}
	ts.StartTLS()
	e.t.Cleanup(ts.Close)
	return ts
}

func (p *testPKI) restConfig(host string) *rest.Config {
	return &rest.Config{
		Host:            host,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM, CertData: p.adminCert, KeyData: p.adminKey},
		QPS:             1000, Burst: 1000,
	}
}

func TestClientGo(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Now = time.Now })
	p := newTestPKI(t)
	ts := e.startTLS(p)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	cs, err := kubernetes.NewForConfig(p.restConfig(ts.URL))
	if err != nil {
		t.Fatal(err)
	}
	sv, err := cs.Discovery().ServerVersion()
	if err != nil || sv.Minor != "33" {
		t.Fatalf("server version %+v, %v", sv, err)
	}
	if _, err := cs.Discovery().ServerPreferredResources(); err != nil {
		t.Fatalf("discovery: %v", err)
	}

	// A certificate of another group is forbidden; none at all is unauthorized.
	bob := p.restConfig(ts.URL)
	bob.CertData, bob.KeyData = p.userCert, p.userKey
	if _, err := kubernetes.NewForConfigOrDie(bob).CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("bob: %v", err)
	}
	anon := p.restConfig(ts.URL)
	anon.CertData, anon.KeyData = nil, nil
	if _, err := kubernetes.NewForConfigOrDie(anon).CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("anonymous: %v", err)
	}

	// Namespaces.
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "e2e"}}, metav1.CreateOptions{})
	if err != nil || ns.Status.Phase != corev1.NamespaceActive {
		t.Fatalf("create namespace: %+v %v", ns, err)
	}

	// Informer on configmaps in e2e: syncs, then sees an add and an update.
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace("e2e"))
	inf := factory.Core().V1().ConfigMaps().Informer()
	var mu sync.Mutex
	seen := map[string]string{}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			mu.Lock()
			seen[o.(*corev1.ConfigMap).Name] = o.(*corev1.ConfigMap).Data["v"]
			mu.Unlock()
		},
		UpdateFunc: func(_, o any) {
			mu.Lock()
			seen[o.(*corev1.ConfigMap).Name] = o.(*corev1.ConfigMap).Data["v"]
			mu.Unlock()
		},
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}

	// ConfigMaps: create, get, list, update, delete.
	cms := cs.CoreV1().ConfigMaps("e2e")
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"v": "1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); !apierrors.IsBadRequest(err) && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("duplicate create: %v", err)
	}
	got, err := cms.Get(ctx, "cfg", metav1.GetOptions{})
	if err != nil || got.Data["v"] != "1" {
		t.Fatalf("get: %+v %v", got, err)
	}
	got.Data["v"] = "2"
	if _, err := cms.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	got.Data["v"] = "stale"
	if _, err := cms.Update(ctx, got, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("stale update: %v", err)
	}
	l, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("list: %v %v", l, err)
	}
	waitFor(t, "the informer to see the update", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen["cfg"] == "2"
	})

	// Secrets, also in protobuf as kubectl sends them.
	pb := p.restConfig(ts.URL)
	pb.ContentType = "application/vnd.kubernetes.protobuf"
	pb.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	pcs := kubernetes.NewForConfigOrDie(pb)
	sec, err := pcs.CoreV1().Secrets("e2e").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"},
		StringData: map[string]string{"password": "x"}, Data: map[string][]byte{"token": []byte("t")}}, metav1.CreateOptions{})
	if err != nil || string(sec.Data["token"]) != "t" || sec.Type != corev1.SecretTypeOpaque {
		t.Fatalf("protobuf secret: %+v %v", sec, err)
	}
	if err := pcs.CoreV1().Secrets("e2e").Delete(ctx, "s", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("protobuf delete: %v", err)
	}

	// Deployments and their scale subresource.
	d := deployment("web", 2)
	d.TypeMeta = metav1.TypeMeta{}
	dep, err := cs.AppsV1().Deployments("e2e").Create(ctx, d, metav1.CreateOptions{})
	if err != nil || dep.Generation != 1 {
		t.Fatalf("create deployment: %+v %v", dep, err)
	}
	sc, err := cs.AppsV1().Deployments("e2e").GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil || sc.Spec.Replicas != 2 {
		t.Fatalf("get scale: %+v %v", sc, err)
	}
	if _, err := cs.AppsV1().Deployments("e2e").UpdateScale(ctx, "web", &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: autoscalingv1.ScaleSpec{Replicas: 5}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	dep, err = cs.AppsV1().Deployments("e2e").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || *dep.Spec.Replicas != 5 || dep.Generation != 2 {
		t.Fatalf("after scale: %+v %v", dep.Spec.Replicas, err)
	}
	dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 5}
	if dep, err = cs.AppsV1().Deployments("e2e").UpdateStatus(ctx, dep, metav1.UpdateOptions{}); err != nil || dep.Status.Replicas != 5 {
		t.Fatalf("update status: %+v %v", dep, err)
	}
	if err := cs.AppsV1().Deployments("e2e").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	if err := cms.Delete(ctx, "cfg", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "cfg", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}

	// Deleting the namespace empties it; it goes away.
	if err := cs.CoreV1().Namespaces().Delete(ctx, "e2e", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "namespace e2e to go", func() bool {
		_, err := cs.CoreV1().Namespaces().Get(ctx, "e2e", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}
