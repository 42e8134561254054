package pki

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func mustKeyring(t *testing.T) *Keyring {
	t.Helper()
	k, err := NewKeyring()
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return k
}

func mustOpen(t *testing.T, k *Keyring, sealed, aad []byte) []byte {
	t.Helper()
	pt, err := k.Open(sealed, aad)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return pt
}

func TestKeyringSealOpen(t *testing.T) {
	k := mustKeyring(t)
	pt := []byte("apiVersion: v1\nkind: Secret\ndata: {password: hunter2-hunter2}")
	aad := []byte("/secrets/default/db")

	sealed := k.Seal(pt, aad)
	if !IsSealed(sealed) || IsSealed(pt) {
		t.Errorf("IsSealed(sealed)=%v IsSealed(plaintext)=%v", IsSealed(sealed), IsSealed(pt))
	}
	if len(sealed) != len(pt)+SealOverhead {
		t.Errorf("sealed length %d, want %d", len(sealed), len(pt)+SealOverhead)
	}
	if id, err := SealedKeyID(sealed); err != nil || id != k.Primary() {
		t.Errorf("SealedKeyID = %08x, %v; want primary %08x", id, err, k.Primary())
	}
	if got := mustOpen(t, k, sealed, aad); !bytes.Equal(got, pt) {
		t.Errorf("Open = %q, want %q", got, pt)
	}
	// The plaintext, and any sizeable piece of it, never appears.
	for i := 0; i+8 <= len(pt); i++ {
		if bytes.Contains(sealed, pt[i:i+8]) {
			t.Fatalf("sealed output contains plaintext bytes %q", pt[i:i+8])
		}
	}
	// Same input twice gives different output (random nonce).
	if bytes.Equal(sealed, k.Seal(pt, aad)) {
		t.Error("two seals of the same plaintext are identical")
	}
	// Empty plaintext and nil aad work.
	if got := mustOpen(t, k, k.Seal(nil, nil), nil); len(got) != 0 {
		t.Errorf("empty round trip = %q", got)
	}
}

func TestKeyringOpenRejects(t *testing.T) {
	k := mustKeyring(t)
	pt, aad := []byte("the CA private key"), []byte("ca.key")
	sealed := k.Seal(pt, aad)

	// Flipping any single bit anywhere — header, key ID, nonce, ciphertext,
	// tag — makes Open fail.
	for i := range sealed {
		for bit := range 8 {
			bad := bytes.Clone(sealed)
			bad[i] ^= 1 << bit
			if got, err := k.Open(bad, aad); err == nil {
				t.Fatalf("byte %d bit %d flipped: Open succeeded with %q", i, bit, got)
			}
		}
	}
	if _, err := k.Open(sealed, []byte("other.key")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("wrong aad: err = %v, want ErrDecrypt", err)
	}
	if _, err := k.Open(sealed, nil); !errors.Is(err, ErrDecrypt) {
		t.Errorf("missing aad: err = %v, want ErrDecrypt", err)
	}
	if _, err := k.Open(sealed[:len(sealed)-1], aad); !errors.Is(err, ErrDecrypt) {
		t.Errorf("truncated: err = %v, want ErrDecrypt", err)
	}
	if _, err := k.Open(sealed[:SealOverhead-1], aad); !errors.Is(err, ErrNotSealed) {
		t.Errorf("too short: err = %v, want ErrNotSealed", err)
	}
	if _, err := k.Open(pt, aad); !errors.Is(err, ErrNotSealed) {
		t.Errorf("plaintext: err = %v, want ErrNotSealed", err)
	}
	if _, err := mustKeyring(t).Open(sealed, aad); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("other keyring: err = %v, want ErrUnknownKey", err)
	}
	bad := bytes.Clone(sealed)
	bad[len(sealedMagic)] = 2
	if _, err := k.Open(bad, aad); err == nil {
		t.Error("unknown format version opened")
	}
}

func TestKeyringRotate(t *testing.T) {
	k := mustKeyring(t)
	first := k.Primary()
	old := k.Seal([]byte("old"), nil)
	if err := k.Rotate(); err != nil {
		t.Fatal(err)
	}
	if k.Primary() == first {
		t.Fatal("Rotate kept the primary")
	}
	newer := k.Seal([]byte("new"), nil)
	if id, _ := SealedKeyID(newer); id != k.Primary() {
		t.Errorf("new data sealed under %08x, want %08x", id, k.Primary())
	}
	if got := mustOpen(t, k, old, nil); string(got) != "old" {
		t.Errorf("old data after rotate = %q", got)
	}
	if got := mustOpen(t, k, newer, nil); string(got) != "new" {
		t.Errorf("new data = %q", got)
	}
	if ids := k.KeyIDs(); len(ids) != 2 || ids[0] != first || ids[1] != k.Primary() {
		t.Errorf("KeyIDs = %x", ids)
	}

	if err := k.Remove(k.Primary()); err == nil {
		t.Error("removed the primary key")
	}
	if err := k.Remove(first); err != nil {
		t.Fatal(err)
	}
	if err := k.Remove(first); err != nil {
		t.Errorf("removing a removed key: %v", err)
	}
	if _, err := k.Open(old, nil); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("data under a removed key: err = %v, want ErrUnknownKey", err)
	}
	mustOpen(t, k, newer, nil)
}

func TestKeyringMarshal(t *testing.T) {
	k := mustKeyring(t)
	old := k.Seal([]byte("old"), []byte("a"))
	if err := k.Rotate(); err != nil {
		t.Fatal(err)
	}
	cur := k.Seal([]byte("cur"), []byte("b"))

	data, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := UnmarshalKeyring(data)
	if err != nil {
		t.Fatalf("UnmarshalKeyring: %v", err)
	}
	if k2.Primary() != k.Primary() {
		t.Errorf("primary %08x, want %08x", k2.Primary(), k.Primary())
	}
	if got := mustOpen(t, k2, old, []byte("a")); string(got) != "old" {
		t.Errorf("old = %q", got)
	}
	if got := mustOpen(t, k2, cur, []byte("b")); string(got) != "cur" {
		t.Errorf("cur = %q", got)
	}
	if got := mustOpen(t, k, k2.Seal([]byte("back"), nil), nil); string(got) != "back" {
		t.Errorf("sealed by the copy = %q", got)
	}

	for name, in := range map[string]string{
		"not json":        "{",
		"version":         `{"version":2,"primary":1,"keys":[{"id":1,"key":"` + b64(32) + `"}]}`,
		"no primary":      `{"version":1,"primary":2,"keys":[{"id":1,"key":"` + b64(32) + `"}]}`,
		"short key":       `{"version":1,"primary":1,"keys":[{"id":1,"key":"` + b64(16) + `"}]}`,
		"duplicate id":    `{"version":1,"primary":1,"keys":[{"id":1,"key":"` + b64(32) + `"},{"id":1,"key":"` + b64(32) + `"}]}`,
		"zero id":         `{"version":1,"primary":0,"keys":[{"id":0,"key":"` + b64(32) + `"}]}`,
		"no keys":         `{"version":1,"primary":0,"keys":[]}`,
		"key not base64":  `{"version":1,"primary":1,"keys":[{"id":1,"key":"!!"}]}`,
		"empty document":  ``,
		"null keys array": `{"version":1,"primary":1,"keys":null}`,
	} {
		if _, err := UnmarshalKeyring([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// b64 is the base64 of n zero bytes.
func b64(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }

func TestKeyringConcurrent(t *testing.T) {
	k := mustKeyring(t)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				pt := []byte{byte(g), byte(i)}
				got, err := k.Open(k.Seal(pt, nil), nil)
				if err != nil || !bytes.Equal(got, pt) {
					t.Errorf("goroutine %d: %q, %v", g, got, err)
					return
				}
			}
		}()
	}
	for range 20 {
		if err := k.Rotate(); err != nil {
			t.Error(err)
		}
		if _, err := k.Marshal(); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
}

func TestLoadOrCreateKeyring(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	k, err := LoadOrCreateKeyring(path)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	sealed := k.Seal([]byte("x"), nil)

	k2, err := LoadOrCreateKeyring(path)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if got := mustOpen(t, k2, sealed, nil); string(got) != "x" {
		t.Errorf("reloaded keyring opens %q", got)
	}

	// Rotate and save, then reload.
	if err := k2.Rotate(); err != nil {
		t.Fatal(err)
	}
	if err := k2.Save(path); err != nil {
		t.Fatal(err)
	}
	k3, err := LoadOrCreateKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if k3.Primary() != k2.Primary() || len(k3.KeyIDs()) != 2 {
		t.Errorf("after save: primary %08x keys %x", k3.Primary(), k3.KeyIDs())
	}
	mustOpen(t, k3, sealed, nil)

	// A damaged file is an error, never silently replaced.
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKeyring(path); err == nil {
		t.Error("damaged keyring loaded")
	}
	if b, _ := os.ReadFile(path); string(b) != "garbage" {
		t.Error("damaged keyring was overwritten")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the keyring", len(entries))
	}
}

func TestLoadOrCreateKeyringRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	const n = 8
	rings := make([]*Keyring, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreateKeyring(path)
			if err != nil {
				t.Error(err)
				return
			}
			rings[i] = k
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Everyone ends up with the keyring on disk.
	sealed := rings[0].Seal([]byte("shared"), nil)
	for i, k := range rings {
		if _, err := k.Open(sealed, nil); err != nil {
			t.Errorf("keyring %d differs from keyring 0: %v", i, err)
		}
	}
}

func TestNewGossipKey(t *testing.T) {
	a, err := NewGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewGossipKey()
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Errorf("gossip keys: len %d, equal %v", len(a), bytes.Equal(a, b))
	}
}

func FuzzKeyringOpen(f *testing.F) {
	k, err := NewKeyring()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(k.Seal([]byte("hello"), nil))
	f.Add([]byte(sealedMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := k.Open(b, nil)
		switch {
		case err == nil:
			if !IsSealed(b) {
				t.Fatal("opened input without the sealed header")
			}
		case errors.Is(err, ErrNotSealed), errors.Is(err, ErrUnknownKey), errors.Is(err, ErrDecrypt):
		case IsSealed(b) && b[len(sealedMagic)] != sealedVersion:
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}
