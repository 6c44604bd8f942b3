// Package secret holds pgrelay's secrets: a string type that never prints,
// and a keyring that seals values with AES-256-GCM before they reach disk.
//
// Every sealed value is bound to the record it belongs to through GCM's
// associated data, so a ciphertext copied onto another record (or another
// field of the same record) fails to open instead of leaking.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Redacted is what a Value prints as, whatever the verb or encoder.
const Redacted = "[redacted]"

// Value is a secret string (a password, a private key, a token). It prints,
// logs and marshals as [redacted]; only Reveal returns the text.
type Value struct{ s string }

// New wraps s as a secret.
func New(s string) Value { return Value{s: s} }

// Reveal returns the secret text. Call it only where the secret is used.
func (v Value) Reveal() string { return v.s }

// IsZero reports whether the secret is empty.
func (v Value) IsZero() bool { return v.s == "" }

// String implements fmt.Stringer without revealing the secret.
func (v Value) String() string { return Redacted }

// GoString implements fmt.GoStringer without revealing the secret.
func (v Value) GoString() string { return Redacted }

// Format makes every fmt verb print [redacted].
func (v Value) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// LogValue implements slog.LogValuer without revealing the secret.
func (v Value) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON implements json.Marshaler without revealing the secret.
func (v Value) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler without revealing the secret.
func (v Value) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// KeySize is the size of a master key in bytes (AES-256).
const KeySize = 32

// sealVersion prefixes every sealed value so the format can change later.
const sealVersion byte = 1

// ErrOpen is returned when a sealed value cannot be opened: wrong master key,
// tampered data, or a ciphertext that belongs to another record.
var ErrOpen = errors.New("cannot decrypt secret: wrong master key, or the stored value was altered or moved between records")

// Keyring seals and opens secrets with one AES-256-GCM master key.
type Keyring struct {
	aead   cipher.AEAD
	master []byte
}

// NewKeyring returns a keyring for a 32-byte master key.
func NewKeyring(key []byte) (*Keyring, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("new keyring: master key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("new keyring: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("new keyring: %w", err)
	}
	return &Keyring{aead: aead, master: append([]byte(nil), key...)}, nil
}

// Seal encrypts plaintext bound to associatedData (which names the record
// and field it belongs to). The result is version || nonce || ciphertext.
func (k *Keyring) Seal(plaintext, associatedData []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal secret: nonce: %w", err)
	}
	out := make([]byte, 0, 1+len(nonce)+len(plaintext)+k.aead.Overhead())
	out = append(out, sealVersion)
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, plaintext, associatedData), nil
}

// Open decrypts a value made by Seal with the same associated data.
func (k *Keyring) Open(sealed, associatedData []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < 1+ns+k.aead.Overhead() || sealed[0] != sealVersion {
		return nil, ErrOpen
	}
	pt, err := k.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], associatedData)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// MasterKeyEnv is the environment variable that may hold the master key
// (base64 of 32 bytes).
const MasterKeyEnv = "PGRELAY_MASTER_KEY"

// MasterKeyFile is the name of the master key file in the data directory.
const MasterKeyFile = "master.key"

// LoadMasterKey returns the master key: from envValue when it is not empty
// (base64 of 32 bytes), otherwise from dataDir/master.key, which is created
// with mode 0600 on first use.
func LoadMasterKey(envValue, dataDir string) ([]byte, error) {
	if envValue != "" {
		key, err := decodeKey(envValue)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", MasterKeyEnv, err)
		}
		return key, nil
	}
	path := filepath.Join(dataDir, MasterKeyFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, err := decodeKey(string(data))
		if err != nil {
			return nil, fmt.Errorf("master key file %s: %w", path, err)
		}
		return key, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read master key: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate master key: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another process created it first: use theirs.
		return LoadMasterKey("", dataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("create master key: %w", err)
	}
	_, werr := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("write master key: %w", err)
	}
	return key, nil
}

func decodeKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, errors.New("not valid base64 (expected base64 of 32 random bytes, e.g. `openssl rand -base64 32`)")
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("decodes to %d bytes; expected %d (e.g. `openssl rand -base64 32`)", len(key), KeySize)
	}
	return key, nil
}

// DeriveKey returns a 32-byte key for purpose, derived from the master key
// with HMAC-SHA256, so that no other subsystem uses the master key itself.
func (k *Keyring) DeriveKey(purpose string) []byte {
	m := hmac.New(sha256.New, k.master)
	m.Write([]byte("pgrelay derived key v1\x00" + purpose))
	return m.Sum(nil)
}
