package pki

import (
	"testing"
	"time"
)

// TestServiceAccountKey: the key is the same wherever the CA is loaded and
// differs between clusters.
func TestServiceAccountKey(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("a", now)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("b", now)
	if err != nil {
		t.Fatal(err)
	}
	k1, err := ca.ServiceAccountKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := again.ServiceAccountKey()
	k3, _ := other.ServiceAccountKey()
	if !k1.Equal(k2) {
		t.Fatal("the same CA gave two service-account keys")
	}
	if k1.Equal(k3) {
		t.Fatal("two CAs gave the same service-account key")
	}
}
