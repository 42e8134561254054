// Package statetest holds test doubles for code built on node/state.
package statetest

import (
	"bytes"
	"errors"
)

// Sealer is a state.Sealer for tests: reversible, and clearly not plaintext
// (every sealed value starts with "SEALED:" and its bytes are scrambled), so
// tests can check that a value was sealed without real keys.
type Sealer struct{}

// SealedPrefix starts every value Sealer seals.
const SealedPrefix = "SEALED:"

// Seal scrambles p behind SealedPrefix.
func (Sealer) Seal(p, aad []byte) []byte {
	out := append([]byte(SealedPrefix), p...)
	for i := len(SealedPrefix); i < len(out); i++ {
		out[i] ^= 0x5a
	}
	return out
}

// Open reverses Seal.
func (Sealer) Open(s, aad []byte) ([]byte, error) {
	if !bytes.HasPrefix(s, []byte(SealedPrefix)) {
		return nil, errors.New("not sealed")
	}
	out := append([]byte(nil), s[len(SealedPrefix):]...)
	for i := range out {
		out[i] ^= 0x5a
	}
	return out, nil
}
