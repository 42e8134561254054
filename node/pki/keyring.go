package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
)

// Sealed format (all integers big-endian):
//
//	offset  size  field
//	0       4     magic "\x00SHL" (a leading NUL: JSON, YAML, PEM and
//	              Kubernetes protobuf never start with one)
//	4       1     format version, 1
//	5       4     key ID
//	9       12    random nonce
//	21      n+16  AES-256-GCM ciphertext and tag
//
// The 9-byte header is authenticated together with the caller's aad, so
// neither the version nor the key ID can be altered.
const (
	sealedMagic   = "\x00SHL"
	sealedVersion = 1
	headerLen     = len(sealedMagic) + 1 + 4
	nonceLen      = 12
	tagLen        = 16
	// SealOverhead is how many bytes [Keyring.Seal] adds to the plaintext.
	SealOverhead = headerLen + nonceLen + tagLen

	keyLen              = 32 // AES-256
	keyringFormat       = 1
	gossipKeyLen        = 32
	maxKeyIDGenAttempts = 16
)

var (
	// ErrNotSealed is returned by [Keyring.Open] for input without the sealed
	// header (see [IsSealed]).
	ErrNotSealed = errors.New("data is not sealed")
	// ErrUnknownKey is returned (wrapped) by [Keyring.Open] when the data was
	// sealed under a key the keyring does not hold.
	ErrUnknownKey = errors.New("sealed with a key not in the keyring")
	// ErrDecrypt is returned by [Keyring.Open] when authentication fails:
	// the data or its aad was altered, or the key is wrong.
	ErrDecrypt = errors.New("decrypting sealed data: message authentication failed")
)

// Keyring encrypts data at rest with AES-256-GCM. It holds a primary key,
// used by Seal, and older keys kept so Open can still read data sealed before
// a [Keyring.Rotate]. Keys are identified by a random 32-bit ID written into
// every sealed value. Each key uses random 96-bit nonces, so rotate well
// before 2^32 seals under one key. A Keyring is safe for concurrent use; the
// zero value is not usable (use [NewKeyring] or [UnmarshalKeyring]).
type Keyring struct {
	mu      sync.RWMutex
	primary uint32             // guarded by mu; always a key of keys
	keys    map[uint32]ringKey // guarded by mu
	order   []uint32           // guarded by mu; IDs of keys, oldest first
}

type ringKey struct {
	raw  []byte
	aead cipher.AEAD
}

func newRingKey(raw []byte) (ringKey, error) {
	if len(raw) != keyLen {
		return ringKey{}, fmt.Errorf("key is %d bytes, want %d", len(raw), keyLen)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return ringKey{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return ringKey{}, err
	}
	return ringKey{raw: slices.Clone(raw), aead: aead}, nil
}

// NewKeyring returns a keyring with one fresh primary key.
func NewKeyring() (*Keyring, error) {
	k := &Keyring{keys: make(map[uint32]ringKey)}
	if err := k.Rotate(); err != nil {
		return nil, err
	}
	return k, nil
}

// Rotate makes a fresh random key the primary. Older keys are kept for Open.
func (k *Keyring) Rotate() error {
	raw := make([]byte, keyLen)
	if _, err := rand.Read(raw); err != nil {
		return fmt.Errorf("rotating keyring: %w", err)
	}
	rk, err := newRingKey(raw)
	if err != nil {
		return fmt.Errorf("rotating keyring: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for range maxKeyIDGenAttempts {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("rotating keyring: %w", err)
		}
		id := binary.BigEndian.Uint32(b[:])
		if _, taken := k.keys[id]; id == 0 || taken {
			continue
		}
		k.keys[id] = rk
		k.order = append(k.order, id)
		k.primary = id
		return nil
	}
	return errors.New("rotating keyring: could not pick an unused key ID")
}

// Primary returns the ID of the key Seal uses.
func (k *Keyring) Primary() uint32 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.primary
}

// KeyIDs returns the IDs of all keys, oldest first.
func (k *Keyring) KeyIDs() []uint32 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return slices.Clone(k.order)
}

// Remove drops an old key once nothing sealed under it remains (see
// [SealedKeyID]). Removing a key that is not there succeeds; removing the
// primary is an error.
func (k *Keyring) Remove(id uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if id == k.primary {
		return fmt.Errorf("removing key %08x: it is the primary key", id)
	}
	delete(k.keys, id)
	k.order = slices.DeleteFunc(k.order, func(x uint32) bool { return x == id })
	return nil
}

// Seal encrypts plaintext under the primary key, authenticating aad with it
// (aad is not stored; Open needs the same aad). The result is
// [SealOverhead] bytes longer than plaintext; see the format above.
func (k *Keyring) Seal(plaintext, aad []byte) []byte {
	k.mu.RLock()
	id, rk := k.primary, k.keys[k.primary]
	k.mu.RUnlock()

	out := make([]byte, headerLen+nonceLen, SealOverhead+len(plaintext))
	copy(out, sealedMagic)
	out[len(sealedMagic)] = sealedVersion
	binary.BigEndian.PutUint32(out[len(sealedMagic)+1:], id)
	nonce := out[headerLen : headerLen+nonceLen]
	// crypto/rand.Read never returns an error (it crashes the program
	// instead), so Seal has no error result.
	_, _ = rand.Read(nonce)
	return rk.aead.Seal(out, nonce, plaintext, fullAAD(out[:headerLen], aad))
}

// Open decrypts data produced by Seal with any key in the keyring. It returns
// [ErrNotSealed], an error wrapping [ErrUnknownKey], or [ErrDecrypt].
func (k *Keyring) Open(sealed, aad []byte) ([]byte, error) {
	id, err := SealedKeyID(sealed)
	if err != nil {
		return nil, err
	}
	k.mu.RLock()
	rk, ok := k.keys[id]
	k.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("opening sealed data: key %08x: %w", id, ErrUnknownKey)
	}
	nonce := sealed[headerLen : headerLen+nonceLen]
	pt, err := rk.aead.Open(nil, nonce, sealed[headerLen+nonceLen:], fullAAD(sealed[:headerLen], aad))
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

func fullAAD(header, aad []byte) []byte {
	return append(slices.Clip(header), aad...)
}

// IsSealed reports whether b looks like output of [Keyring.Seal]: it starts
// with the sealed magic and is long enough. It does not check authenticity.
func IsSealed(b []byte) bool {
	return len(b) >= SealOverhead && string(b[:len(sealedMagic)]) == sealedMagic
}

// SealedKeyID returns the ID of the key that sealed b, so a sweep can find
// values to re-seal before an old key is removed.
func SealedKeyID(b []byte) (uint32, error) {
	if !IsSealed(b) {
		return 0, ErrNotSealed
	}
	if v := b[len(sealedMagic)]; v != sealedVersion {
		return 0, fmt.Errorf("opening sealed data: unsupported format version %d", v)
	}
	return binary.BigEndian.Uint32(b[len(sealedMagic)+1:]), nil
}

type keyringJSON struct {
	Version int          `json:"version"`
	Primary uint32       `json:"primary"`
	Keys    []keyJSONRec `json:"keys"`
}

type keyJSONRec struct {
	ID  uint32 `json:"id"`
	Key []byte `json:"key"` // base64 in JSON
}

// Marshal encodes the keyring, key material included, as JSON. Store the
// result only where the CA key could be stored (mode 0600, see [Keyring.Save]).
func (k *Keyring) Marshal() ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	kj := keyringJSON{Version: keyringFormat, Primary: k.primary}
	for _, id := range k.order {
		kj.Keys = append(kj.Keys, keyJSONRec{ID: id, Key: k.keys[id].raw})
	}
	b, err := json.Marshal(kj)
	if err != nil {
		return nil, fmt.Errorf("marshaling keyring: %w", err)
	}
	return b, nil
}

// UnmarshalKeyring decodes the output of [Keyring.Marshal].
func UnmarshalKeyring(data []byte) (*Keyring, error) {
	var kj keyringJSON
	if err := json.Unmarshal(data, &kj); err != nil {
		return nil, fmt.Errorf("unmarshaling keyring: %w", err)
	}
	if kj.Version != keyringFormat {
		return nil, fmt.Errorf("unmarshaling keyring: unsupported version %d", kj.Version)
	}
	k := &Keyring{keys: make(map[uint32]ringKey, len(kj.Keys)), primary: kj.Primary}
	for _, rec := range kj.Keys {
		if rec.ID == 0 {
			return nil, errors.New("unmarshaling keyring: key ID 0")
		}
		if _, dup := k.keys[rec.ID]; dup {
			return nil, fmt.Errorf("unmarshaling keyring: duplicate key ID %08x", rec.ID)
		}
		rk, err := newRingKey(rec.Key)
		if err != nil {
			return nil, fmt.Errorf("unmarshaling keyring: key %08x: %w", rec.ID, err)
		}
		k.keys[rec.ID] = rk
		k.order = append(k.order, rec.ID)
	}
	if _, ok := k.keys[k.primary]; !ok {
		return nil, fmt.Errorf("unmarshaling keyring: primary key %08x missing", k.primary)
	}
	return k, nil
}

// Save writes the keyring to path atomically with mode 0600.
func (k *Keyring) Save(path string) error {
	data, err := k.Marshal()
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("saving keyring: %w", err)
	}
	return nil
}

// LoadOrCreateKeyring reads the keyring at path, or creates one there (mode
// 0600) if the file does not exist. Creation never replaces an existing file:
// if another process creates it first, that keyring is loaded instead.
func LoadOrCreateKeyring(path string) (*Keyring, error) {
	k, err := loadKeyring(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if k, err = NewKeyring(); err != nil {
		return nil, err
	}
	data, err := k.Marshal()
	if err != nil {
		return nil, err
	}
	err = writeFile(path, data, 0o600, true)
	if errors.Is(err, fs.ErrExist) {
		return loadKeyring(path)
	}
	if err != nil {
		return nil, fmt.Errorf("creating keyring: %w", err)
	}
	return k, nil
}

func loadKeyring(path string) (*Keyring, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading keyring: %w", err)
	}
	k, err := UnmarshalKeyring(data)
	if err != nil {
		return nil, fmt.Errorf("loading keyring %s: %w", path, err)
	}
	return k, nil
}

// NewGossipKey returns a random 32-byte key for gossip encryption
// (memberlist's AES-256).
func NewGossipKey() ([]byte, error) {
	key := make([]byte, gossipKeyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating gossip key: %w", err)
	}
	return key, nil
}
