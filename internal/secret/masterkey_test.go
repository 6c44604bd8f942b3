package secret

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyLocation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, err := NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	// Read never creates a key.
	if _, err := (KeyLocation{DataDir: dir}).Read(); !errors.Is(err, ErrNoMasterKey) {
		t.Fatalf("Read of an empty data dir: %v, want ErrNoMasterKey", err)
	}
	if _, err := os.Stat(filepath.Join(dir, MasterKeyFile)); err == nil {
		t.Fatal("Read created master.key")
	}
	created, err := (KeyLocation{DataDir: dir}).Load()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := (KeyLocation{DataDir: dir}).Read(); err != nil || !bytes.Equal(got, created) {
		t.Fatalf("Read after Load: %v", err)
	}

	// A file named by PGRELAY_MASTER_KEY_FILE (a systemd credential).
	file := filepath.Join(t.TempDir(), "credential")
	if err := CreateKeyFile(file, key); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode().Perm())
	}
	if err := CreateKeyFile(file, key); err == nil {
		t.Error("CreateKeyFile replaced a file")
	}
	loc := KeyLocation{File: file, DataDir: dir}
	for _, f := range []func() ([]byte, error){loc.Load, loc.Read} {
		if got, err := f(); err != nil || !bytes.Equal(got, key) {
			t.Fatalf("key from %s: %v", MasterKeyFileEnv, err)
		}
	}
	if loc.Source() != FromFileEnv || !strings.Contains(loc.Describe(), MasterKeyFileEnv) {
		t.Errorf("source %v %q", loc.Source(), loc.Describe())
	}
	if _, err := (KeyLocation{File: filepath.Join(dir, "missing")}).Load(); err == nil {
		t.Error("a missing key file loaded")
	}
	if _, err := (KeyLocation{Env: EncodeKey(key), File: file}).Load(); err == nil || !strings.Contains(err.Error(), "only one") {
		t.Errorf("both variables set: %v", err)
	}
	if got, err := (KeyLocation{Env: EncodeKey(key)}).Read(); err != nil || !bytes.Equal(got, key) {
		t.Errorf("key from %s: %v", MasterKeyEnv, err)
	}

	// ReplaceKeyFile installs the new key atomically.
	next := filepath.Join(dir, NextMasterKeyFile)
	if err := CreateKeyFile(next, key); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceKeyFile(next, filepath.Join(dir, MasterKeyFile)); err != nil {
		t.Fatal(err)
	}
	if got, _ := (KeyLocation{DataDir: dir}).Read(); !bytes.Equal(got, key) {
		t.Error("master.key does not hold the new key")
	}
	if _, err := os.Stat(next); err == nil {
		t.Error("the next key file is still there")
	}
}

// TestKeyFileEnvProblemsNameTheVariable: a PGRELAY_MASTER_KEY_FILE that
// names a missing file (or a file without a key) is reported with the
// variable, the path, what is wrong and what is accepted.
func TestKeyFileEnvProblemsNameTheVariable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	for _, f := range []func() ([]byte, error){KeyLocation{File: missing}.Load, KeyLocation{File: missing}.Read} {
		_, err := f()
		if err == nil || !strings.HasPrefix(err.Error(), MasterKeyFileEnv+"="+missing+": the file does not exist: accepted is") ||
			!strings.Contains(err.Error(), "base64 of 32 bytes") || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("missing file: %v", err)
		}
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (KeyLocation{File: bad}).Load(); err == nil || !strings.HasPrefix(err.Error(), MasterKeyFileEnv+"="+bad+": not valid base64") {
		t.Errorf("a file without a key: %v", err)
	}
}
