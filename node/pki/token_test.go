package pki

import (
	"errors"
	"strings"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	ca := mustCA(t, "shoal-ca", testNow)
	tok, err := NewToken(ca.Hash())
	if err != nil {
		t.Fatalf("NewToken: %v", err)
	}
	s := tok.String()
	if len(s) != 115 || !strings.HasPrefix(s, "SHL1.") || strings.ContainsAny(s, " \t\n'\"$") {
		t.Errorf("token %q: want 115 printable shell-safe characters starting SHL1.", s)
	}
	got, err := ParseToken(s)
	if err != nil {
		t.Fatalf("ParseToken(%q): %v", s, err)
	}
	if got != tok {
		t.Errorf("round trip: got %+v, want %+v", got, tok)
	}
	if got.CAHash != ca.Hash() {
		t.Errorf("CAHash = %q, want %q", got.CAHash, ca.Hash())
	}
	if got, err := ParseToken("  " + s + "\r\n"); err != nil || got != tok {
		t.Errorf("surrounding white space: %+v, %v", got, err)
	}

	// The secret carries at least 128 random bits.
	raw, err := secretEncoding.DecodeString(tok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw)*8 < 128 {
		t.Errorf("secret has %d bits, want >= 128", len(raw)*8)
	}

	tok2, err := NewToken(strings.TrimPrefix(ca.Hash(), "sha256:"))
	if err != nil {
		t.Fatalf("NewToken(bare hex): %v", err)
	}
	if tok2.ID == tok.ID || tok2.Secret == tok.Secret {
		t.Error("two tokens share an ID or secret")
	}
	if tok2.CAHash != ca.Hash() {
		t.Errorf("bare hex not canonicalized: %q", tok2.CAHash)
	}
	if _, err := NewToken("sha256:1234"); err == nil {
		t.Error("NewToken accepted a short hash")
	}

	if r := tok.Redacted(); strings.Contains(r, tok.Secret) || !strings.Contains(r, tok.ID) {
		t.Errorf("Redacted() = %q", r)
	}
}

func TestParseTokenMalformed(t *testing.T) {
	const (
		id  = "0123456789ab"
		sec = "abcdefghijklmnopqrstuvwxyz234567"
	)
	hash := strings.Repeat("0f", 32)
	good := "SHL1." + id + "." + sec + "." + hash
	if _, err := ParseToken(good); err != nil {
		t.Fatalf("control token rejected: %v", err)
	}
	tests := []struct {
		name, in, wantMsg string
	}{
		{"empty", "", "4 dot-separated fields"},
		{"prefix only", "SHL1", "4 dot-separated fields"},
		{"extra field", good + ".x", "4 dot-separated fields"},
		{"other version", "SHL2." + id + "." + sec + "." + hash, "unsupported version"},
		{"lowercase prefix", "shl1." + id + "." + sec + "." + hash, "does not start with SHL1"},
		{"kubeadm token", "abcdef.0123456789abcdef", "4 dot-separated fields"},
		{"empty id", "SHL1.." + sec + "." + hash, "id must be"},
		{"short id", "SHL1.0123." + sec + "." + hash, "id must be"},
		{"uppercase id", "SHL1.0123456789AB." + sec + "." + hash, "id must be"},
		{"non-hex id", "SHL1.0123456789xy." + sec + "." + hash, "id must be"},
		{"short secret", "SHL1." + id + ".abcdef." + hash, "secret must be 32 characters"},
		{"long secret", "SHL1." + id + "." + sec + "a." + hash, "secret must be 32 characters"},
		{"uppercase secret", "SHL1." + id + "." + strings.ToUpper(sec) + "." + hash, "lowercase base32"},
		{"secret with 1", "SHL1." + id + ".1bcdefghijklmnopqrstuvwxyz234567." + hash, "lowercase base32"},
		{"secret with padding", "SHL1." + id + ".abcdefghijklmnopqrstuvwxyz23456=." + hash, "lowercase base32"},
		{"secret with newline", "SHL1." + id + ".abcdefghijklmnop\nrstuvwxyz234567." + hash, "lowercase base32"},
		{"short hash", "SHL1." + id + "." + sec + ".abcd", "CA hash must be"},
		{"prefixed hash", "SHL1." + id + "." + sec + ".sha256:" + hash, "CA hash must be"},
		{"uppercase hash", "SHL1." + id + "." + sec + "." + strings.ToUpper(hash), "CA hash must be"},
		{"non-hex hash", "SHL1." + id + "." + sec + "." + strings.Repeat("zz", 32), "CA hash must be"},
		{"inner space", "SHL1. " + id[1:] + "." + sec + "." + hash, "id must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseToken(tt.in)
			if err == nil {
				t.Fatalf("ParseToken(%q): no error", tt.in)
			}
			if !errors.Is(err, ErrMalformedToken) || !strings.HasPrefix(err.Error(), "malformed join token: ") {
				t.Errorf("err = %v, want malformed join token: …", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "abcdefghijklmnop") {
				t.Errorf("error echoes the secret: %v", err)
			}
		})
	}
}

func TestHashSecret(t *testing.T) {
	tok, err := NewToken(strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	stored := HashSecret(tok.ID, tok.Secret)
	if strings.Contains(stored, tok.Secret) {
		t.Error("stored hash contains the secret")
	}
	if stored != HashSecret(tok.ID, tok.Secret) {
		t.Error("HashSecret is not deterministic")
	}
	if !VerifySecret(stored, tok.ID, tok.Secret) {
		t.Error("VerifySecret rejected the right secret")
	}
	other, _ := NewToken(strings.Repeat("ab", 32))
	for _, c := range []struct{ name, stored, id, secret string }{
		{"wrong secret", stored, tok.ID, other.Secret},
		{"wrong id", stored, other.ID, tok.Secret},
		{"empty secret", stored, tok.ID, ""},
		{"empty stored", "", tok.ID, tok.Secret},
		{"garbage stored", "sha256:zz", tok.ID, tok.Secret},
		// The id is bound into the digest, so moving bytes between the
		// fields does not verify.
		{"shifted fields", HashSecret(tok.ID+tok.Secret[:1], tok.Secret[1:]), tok.ID, tok.Secret},
	} {
		if VerifySecret(c.stored, c.id, c.secret) {
			t.Errorf("%s: VerifySecret = true", c.name)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("SHL1.0123456789ab.abcdefghijklmnopqrstuvwxyz234567." + strings.Repeat("0f", 32))
	f.Add(" SHL1.0123456789ab.abcdefghijklmnopqrstuvwxyz234567." + strings.Repeat("0f", 32) + "\n")
	f.Add("SHL1...")
	f.Add("SHL1.0123456789ab.abcdefghijklmnop\nrstuvwxyz234567." + strings.Repeat("0f", 32))
	f.Add("")
	f.Add("....")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("error does not wrap ErrMalformedToken: %v", err)
			}
			return
		}
		// Accepted tokens are canonical: one spelling, and it round-trips.
		if got := tok.String(); got != strings.TrimSpace(s) {
			t.Fatalf("String() = %q, input %q", got, s)
		}
		again, err := ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("re-parse: %+v, %v; want %+v", again, err, tok)
		}
		if _, err := ParseHash(tok.CAHash); err != nil {
			t.Fatalf("accepted CA hash %q: %v", tok.CAHash, err)
		}
	})
}
