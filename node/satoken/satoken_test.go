package satoken

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

func TestIssueVerify(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	s, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	c := Claims{Namespace: "dev", ServiceAccount: "ci", ServiceAccountUID: "sa-uid", PodName: "p", PodUID: "pod-uid",
		Audiences: []string{Issuer}, IssuedAt: now, Expiry: now.Add(time.Hour)}
	tok, err := s.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	if !LooksLikeToken(tok) {
		t.Fatalf("token %q is not a JWT", tok)
	}
	v := NewVerifier(pub)
	got, err := v.Verify(tok, now.Add(30*time.Minute), []string{Issuer})
	if err != nil {
		t.Fatal(err)
	}
	if got.Namespace != "dev" || got.ServiceAccount != "ci" || got.ServiceAccountUID != "sa-uid" || got.PodName != "p" ||
		got.PodUID != "pod-uid" || !got.Expiry.Equal(c.Expiry) || !got.IssuedAt.Equal(now) {
		t.Fatalf("claims %+v", got)
	}
	for _, bad := range []struct {
		name  string
		tok   string
		at    time.Time
		aud   []string
		v     *Verifier
		error string
	}{
		{"expired", tok, now.Add(2 * time.Hour), []string{Issuer}, v, "not valid"},
		{"not yet valid", tok, now.Add(-10 * time.Minute), []string{Issuer}, v, "not valid"},
		{"other audience", tok, now, []string{"vault"}, v, "audiences"},
		{"other key", tok, now, []string{Issuer}, NewVerifier(mustKey(t)), "signature"},
		{"tampered", tok[:len(tok)-4] + "AAAA", now, []string{Issuer}, v, "signature"},
		{"garbage", "a.b.c", now, []string{Issuer}, v, "malformed"},
	} {
		if _, err := bad.v.Verify(bad.tok, bad.at, bad.aud); err == nil || !strings.Contains(err.Error(), bad.error) {
			t.Errorf("%s: err %v, want %q", bad.name, err, bad.error)
		}
	}
	if _, err := s.Issue(Claims{Namespace: "dev", ServiceAccount: "ci", IssuedAt: now, Expiry: now.Add(time.Hour)}); err == nil {
		t.Fatal("token without a service account UID issued")
	}
}

func mustKey(t *testing.T) ed25519.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
