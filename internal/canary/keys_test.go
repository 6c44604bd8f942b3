package canary_test

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// readMasterKey reads the data dir's master.key and adds it to cn (as
// written in the file, base64 and its other encodings, and raw bytes).
func readMasterKey(t *testing.T, dataDir string, cn *canaries) (raw []byte, b64 string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, secret.MasterKeyFile))
	if err != nil {
		t.Fatalf("read master key: %v", err)
	}
	b64 = strings.TrimSpace(string(data))
	raw, err = base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != secret.KeySize {
		t.Fatalf("master key file: %d bytes, %v", len(raw), err)
	}
	cn.add("master key", "raw bytes", raw)
	cn.addEncodings("master key", raw)
	return raw, b64
}

// keyReader reads the connections' SSH private keys from the store with
// the master key, as only the test may, to search for them.
type keyReader struct {
	st *sqlite.Store
	kr *secret.Keyring
	// seen counts the keys found so far.
	seen map[string]bool
}

// openKeys opens the data dir's store (a second handle besides the
// processes': SQLite in WAL mode allows it).
func openKeys(t *testing.T, dataDir string, master []byte) *keyReader {
	t.Helper()
	kr, err := secret.NewKeyring(master)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(dataDir, sqlite.FileName))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &keyReader{st: st, kr: kr, seen: map[string]bool{}}
}

// collect adds the key material of every connection's current private key
// to cn: each base64 line of the PEM body but the first (the OpenSSH
// format's header, the same in every key). Call it before a key is
// rotated or deleted. It returns how many distinct keys were seen so far.
func (k *keyReader) collect(t *testing.T, cn *canaries) int {
	t.Helper()
	cs, err := k.st.ListConnections(context.Background())
	if err != nil {
		t.Fatalf("list connections: %v", err)
	}
	for _, c := range cs {
		if len(c.SealedPrivateKey) == 0 {
			continue
		}
		pem, err := k.kr.Open(c.SealedPrivateKey, []byte("pgrelay/connection/"+c.ID+"/ssh_private_key"))
		if err != nil {
			t.Fatalf("open the sealed private key of %s: %v", c.Spec.Name, err)
		}
		var body []string
		for _, l := range strings.Split(string(pem), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "-----") {
				body = append(body, l)
			}
		}
		if len(body) < 3 {
			t.Fatalf("the private key of %s has only %d body lines", c.Spec.Name, len(body))
		}
		if !k.seen[string(pem)] {
			k.seen[string(pem)] = true
		}
		for _, l := range body[1:] {
			if len(l) >= 24 {
				cn.add("ssh private key of "+c.Spec.Name, "pem line", []byte(l))
			}
		}
	}
	return len(k.seen)
}
