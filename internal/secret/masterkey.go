package secret

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// MasterKeyFileEnv is the environment variable that may name a file holding
// the master key (base64 of 32 bytes), such as a systemd credential
// ($CREDENTIALS_DIRECTORY/...) or a mounted Kubernetes Secret.
const MasterKeyFileEnv = "PGRELAY_MASTER_KEY_FILE"

// NextMasterKeyFile is the name, in the data directory, of the new master
// key while `pgrelay master-key rotate` re-seals the store with it. It is
// written before the store changes and renamed to MasterKeyFile after, so
// that a rotation stopped at any point leaves the key that opens the store
// in one of the two files; the next pgrelay command on the data dir keeps
// the right one.
const NextMasterKeyFile = "master.key.next"

// ErrNoMasterKey means no master key is configured where one was looked for.
var ErrNoMasterKey = errors.New("no master key")

// KeySource says where a master key comes from.
type KeySource int

// Sources of the master key, in the order they are looked at.
const (
	// FromEnv is PGRELAY_MASTER_KEY.
	FromEnv KeySource = iota + 1
	// FromFileEnv is the file PGRELAY_MASTER_KEY_FILE names.
	FromFileEnv
	// FromDataDir is master.key in the data directory.
	FromDataDir
)

// KeyLocation is where a process finds its master key: the values of
// PGRELAY_MASTER_KEY and PGRELAY_MASTER_KEY_FILE, and the data directory.
type KeyLocation struct {
	Env     string
	File    string
	DataDir string
}

// Source says which of the location's places holds the key: the
// environment variable when set, else the file it names, else the data
// directory.
func (l KeyLocation) Source() KeySource {
	switch {
	case l.Env != "":
		return FromEnv
	case l.File != "":
		return FromFileEnv
	}
	return FromDataDir
}

// Describe names the key's place for messages (never the key).
func (l KeyLocation) Describe() string {
	switch l.Source() {
	case FromEnv:
		return MasterKeyEnv
	case FromFileEnv:
		return fmt.Sprintf("%s (%s)", l.File, MasterKeyFileEnv)
	}
	return filepath.Join(l.DataDir, MasterKeyFile)
}

func (l KeyLocation) check() error {
	if l.Env != "" && l.File != "" {
		return fmt.Errorf("both %s and %s are set: set only one", MasterKeyEnv, MasterKeyFileEnv)
	}
	return nil
}

// Load returns the master key. A data directory without master.key gets
// a new random one (mode 0600), as on a first start.
func (l KeyLocation) Load() ([]byte, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	if l.Source() == FromFileEnv {
		return readKeyFile(l.File, MasterKeyFileEnv)
	}
	return LoadMasterKey(l.Env, l.DataDir)
}

// Read returns the master key like Load, but never creates one:
// ErrNoMasterKey when the data directory has none.
func (l KeyLocation) Read() ([]byte, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	switch l.Source() {
	case FromEnv:
		return LoadMasterKey(l.Env, "")
	case FromFileEnv:
		return readKeyFile(l.File, MasterKeyFileEnv)
	}
	path := filepath.Join(l.DataDir, MasterKeyFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist, and neither %s nor %s is set", ErrNoMasterKey, path, MasterKeyEnv, MasterKeyFileEnv)
	}
	return readKeyFile(path, "master key file")
}

// NextPath is where a rotation keeps the new key while it runs: beside
// master.key, for a key in the data directory.
func (l KeyLocation) NextPath() string { return filepath.Join(l.DataDir, NextMasterKeyFile) }

// ReadKeyFile reads a master key file (base64 of 32 bytes).
func ReadKeyFile(path string) ([]byte, error) { return readKeyFile(path, "master key file") }

// readKeyFile reads the key file at path, named what in errors (the
// variable that names it, or "master key file"). An error names what, the
// path, what is wrong and what is accepted.
func readKeyFile(path, what string) ([]byte, error) {
	subject := what + " " + path
	if what == MasterKeyFileEnv {
		subject = what + "=" + path
	}
	data, err := os.ReadFile(path)
	if err != nil {
		why := "cannot be read"
		switch {
		case errors.Is(err, fs.ErrNotExist):
			why = "does not exist"
		case errors.Is(err, fs.ErrPermission):
			why = "cannot be read by this user (uid " + strconv.Itoa(os.Getuid()) + ")"
		}
		return nil, fmt.Errorf("%s: the file %s: accepted is the path of a file this user can read that holds the master key "+
			"(base64 of 32 bytes; for a new store e.g. `openssl rand -base64 32 > FILE`) (%w)", subject, why, err)
	}
	key, err := decodeKey(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	return key, nil
}

// NewMasterKey returns a new random master key.
func NewMasterKey() ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate master key: %w", err)
	}
	return key, nil
}

// EncodeKey returns a master key as its files and PGRELAY_MASTER_KEY hold
// it: base64.
func EncodeKey(key []byte) string { return base64.StdEncoding.EncodeToString(key) }

// CreateKeyFile writes key to a new file at path (mode 0600, never
// replacing one) and syncs it and its directory to disk.
func CreateKeyFile(path string, key []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write master key: %w", err)
	}
	_, werr := f.WriteString(EncodeKey(key) + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write master key %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// ReplaceKeyFile atomically renames the key file from onto to (replacing
// it) and syncs the directory, so that after a crash to holds either key
// in full.
func ReplaceKeyFile(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("install master key: %w", err)
	}
	return SyncDir(filepath.Dir(to))
}

// SyncDir syncs a directory, making renames and new files in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
