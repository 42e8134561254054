package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Join token format, one printable line safe to paste into a shell:
//
//	SHL1.<id>.<secret>.<ca-hash>
//
//	SHL1     format version
//	id       6 random bytes, 12 lowercase hex digits; names the token in
//	         listings and revocation (not secret)
//	secret   20 random bytes (160 bits), 32 characters of lowercase base32
//	         (RFC 4648 alphabet, no padding)
//	ca-hash  SHA-256 of the cluster CA's SubjectPublicKeyInfo, 64 lowercase
//	         hex digits (the hex part of [Hash])
//
// The total length is 115 characters. Every field is canonical: a token has
// exactly one string form, and [ParseToken] rejects any other spelling.
const (
	tokenPrefix    = "SHL1"
	tokenIDBytes   = 6
	tokenSecBytes  = 20
	tokenIDLen     = 2 * tokenIDBytes
	tokenSecLen    = tokenSecBytes * 8 / 5
	tokenHashLen   = 2 * sha256.Size
	secretHashTag  = "shoal join token secret v1"
	redactedSecret = "<redacted>"
)

// ErrMalformedToken is wrapped by every [ParseToken] error.
var ErrMalformedToken = errors.New("malformed join token")

var secretEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Token is a join token. CAHash is in the canonical "sha256:<hex>" form of
// [Hash], ready for [PinnedTLSConfig]. The cluster stores only ID and
// [HashSecret]; the Secret never leaves the token's holder except to prove it.
type Token struct {
	ID     string
	Secret string
	CAHash string
}

// NewToken returns a token with a fresh random ID and secret that pins the CA
// with the given hash ("sha256:<hex>" or bare hex).
func NewToken(caHash string) (Token, error) {
	h, err := ParseHash(caHash)
	if err != nil {
		return Token{}, fmt.Errorf("creating join token: %w", err)
	}
	id := make([]byte, tokenIDBytes)
	sec := make([]byte, tokenSecBytes)
	if _, err := rand.Read(id); err != nil {
		return Token{}, fmt.Errorf("creating join token: %w", err)
	}
	if _, err := rand.Read(sec); err != nil {
		return Token{}, fmt.Errorf("creating join token: %w", err)
	}
	return Token{
		ID:     hex.EncodeToString(id),
		Secret: secretEncoding.EncodeToString(sec),
		CAHash: h,
	}, nil
}

// ParseToken parses the String form of a token. Surrounding white space is
// ignored. Errors wrap [ErrMalformedToken] and never echo the secret.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return Token{}, fmt.Errorf("%w: want 4 dot-separated fields %s.<id>.<secret>.<ca-hash>, got %d",
			ErrMalformedToken, tokenPrefix, len(parts))
	}
	prefix, id, secret, caHex := parts[0], parts[1], parts[2], parts[3]
	if prefix != tokenPrefix {
		if strings.HasPrefix(prefix, "SHL") {
			return Token{}, fmt.Errorf("%w: unsupported version %q (this build reads %s)", ErrMalformedToken, prefix, tokenPrefix)
		}
		return Token{}, fmt.Errorf("%w: does not start with %s", ErrMalformedToken, tokenPrefix)
	}
	if len(id) != tokenIDLen || !isLowerHex(id) {
		return Token{}, fmt.Errorf("%w: id must be %d lowercase hex digits", ErrMalformedToken, tokenIDLen)
	}
	if len(secret) != tokenSecLen {
		return Token{}, fmt.Errorf("%w: secret must be %d characters, got %d", ErrMalformedToken, tokenSecLen, len(secret))
	}
	// Checked by hand: the base32 decoder skips '\r' and '\n'.
	if !isLowerBase32(secret) {
		return Token{}, fmt.Errorf("%w: secret must be lowercase base32 (a-z, 2-7)", ErrMalformedToken)
	}
	if len(caHex) != tokenHashLen || !isLowerHex(caHex) {
		return Token{}, fmt.Errorf("%w: CA hash must be %d lowercase hex digits", ErrMalformedToken, tokenHashLen)
	}
	return Token{ID: id, Secret: secret, CAHash: hashPrefix + caHex}, nil
}

// String returns the token's one-line form, secret included. Use
// [Token.Redacted] for logs.
func (t Token) String() string {
	return tokenPrefix + "." + t.ID + "." + t.Secret + "." + strings.TrimPrefix(t.CAHash, hashPrefix)
}

// Redacted returns the token's form with the secret replaced, for logs and
// listings.
func (t Token) Redacted() string {
	return tokenPrefix + "." + t.ID + "." + redactedSecret + "." + strings.TrimPrefix(t.CAHash, hashPrefix)
}

// HashSecret returns what the cluster stores for a token: "sha256:" and the
// hex SHA-256 of a domain tag, the id and the secret. The secret carries 160
// random bits, so a fast hash is enough; the id binds the digest to its token.
func HashSecret(id, secret string) string {
	h := sha256.New()
	h.Write([]byte(secretHashTag))
	h.Write([]byte{0})
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write([]byte(secret))
	return hashPrefix + hex.EncodeToString(h.Sum(nil))
}

// VerifySecret reports, in constant time with respect to the secret, whether
// secret matches storedHash (from [HashSecret]) for id.
func VerifySecret(storedHash, id, secret string) bool {
	got := HashSecret(id, secret)
	return subtle.ConstantTimeCompare([]byte(got), []byte(storedHash)) == 1
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func isLowerBase32(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}
