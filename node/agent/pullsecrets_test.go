package agent

import (
	"encoding/base64"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPullCredentials(t *testing.T) {
	h := newHarness(t)
	a, err := New(h.config())
	if err != nil {
		t.Fatal(err)
	}
	secret := func(name string, typ corev1.SecretType, key, data string) {
		h.create(&corev1.Secret{ObjectMeta: meta(name), Type: typ, Data: map[string][]byte{key: []byte(data)}})
	}
	b64 := base64.StdEncoding.EncodeToString([]byte("carol:pw3"))
	secret("json", corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey,
		`{"auths":{"https://index.docker.io/v1/":{"username":"alice","password":"pw1"},"reg.example":{"auth":"`+b64+`"},"tok.example":{"identitytoken":"refresh"}}}`)
	secret("legacy", corev1.SecretTypeDockercfg, corev1.DockerConfigKey, `{"old.example:5000":{"username":"bob","password":"pw2"},"reg.example":{"username":"ignored","password":"x"}}`)
	secret("junk", corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey, `not json`)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: testNamespace}, Spec: corev1.PodSpec{
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "missing"}, {Name: "junk"}, {Name: "json"}, {Name: "legacy"}}}}
	creds := a.pullCredentials(pod)
	if creds == nil {
		t.Fatal("no credentials")
	}
	for _, c := range []struct{ host, user, secret string }{
		{"registry-1.docker.io", "alice", "pw1"}, // Docker Hub by any of its names
		{"reg.example", "carol", "pw3"},          // "auth" decoded; the first secret wins
		{"REG.example", "carol", "pw3"},
		{"old.example:5000", "bob", "pw2"}, // the older dockercfg format
		{"tok.example", "", "refresh"},
		{"elsewhere.example", "", ""},
	} {
		u, s, err := creds(c.host)
		if u != c.user || s != c.secret || err != nil {
			t.Errorf("%s: %q %q %v, want %q %q", c.host, u, s, err, c.user, c.secret)
		}
	}
	if a.pullCredentials(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace}}) != nil {
		t.Error("credentials for a pod without imagePullSecrets")
	}
}
