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
		if len(c.SealedPrivateKey) > 0 {
			k.add(t, cn, "ssh private key of "+c.Spec.Name, c.SealedPrivateKey, "pgrelay/connection/"+c.ID+"/ssh_private_key")
		}
		if len(c.SealedPendingPrivateKey) > 0 {
			// The new key of a key rotation under way.
			k.add(t, cn, "new ssh private key (rotation) of "+c.Spec.Name, c.SealedPendingPrivateKey,
				"pgrelay/connection/"+c.ID+"/ssh_pending_private_key")
		}
		for _, hk := range c.HopKeys {
			// A hop's own key pair (--ssh-hop-own-key).
			k.add(t, cn, "own ssh private key of hop "+hk.Hop+" of "+c.Spec.Name, hk.SealedPrivateKey,
				"pgrelay/connection/"+c.ID+"/hop_private_key\x00hop="+hk.Hop)
			if len(hk.SealedPendingPrivateKey) > 0 {
				// Its new key during a key rotation.
				k.add(t, cn, "new own ssh private key (rotation) of hop "+hk.Hop+" of "+c.Spec.Name, hk.SealedPendingPrivateKey,
					"pgrelay/connection/"+c.ID+"/hop_pending_private_key\x00hop="+hk.Hop)
			}
		}
	}
	return len(k.seen)
}

// collectCA adds the key material of pgrelay's SSH CA to cn, and reports
// whether there is one.
func (k *keyReader) collectCA(t *testing.T, cn *canaries) bool {
	t.Helper()
	sealed, err := k.st.GetMeta(context.Background(), "ssh_user_ca")
	if err != nil {
		return false
	}
	k.add(t, cn, "ssh CA private key", sealed, "pgrelay/meta/ssh_user_ca")
	return true
}

// add opens a sealed OpenSSH private key and adds each base64 line of its
// PEM body but the first (the format's header, the same in every key).
func (k *keyReader) add(t *testing.T, cn *canaries, what string, sealed []byte, ad string) {
	t.Helper()
	pem, err := k.kr.Open(sealed, []byte(ad))
	if err != nil {
		t.Fatalf("open the sealed %s: %v", what, err)
	}
	var body []string
	for _, l := range strings.Split(string(pem), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "-----") {
			body = append(body, l)
		}
	}
	if len(body) < 3 {
		t.Fatalf("the %s has only %d body lines", what, len(body))
	}
	k.seen[string(pem)] = true
	for _, l := range body[1:] {
		if len(l) >= 24 {
			cn.add(what, "pem line", []byte(l))
		}
	}
}
