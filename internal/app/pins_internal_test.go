package app

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// TestFirstUsePinMeetsTheGivenKey: a first-use pin that finds the same
// key given with the connection meanwhile (stored with the givenPin
// comment) is no conflict; the lines used to be compared as text.
func TestFirstUsePinMeetsTheGivenKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	kr, err := secret.NewKeyring(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Store: st, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	spec := connection.Spec{Name: "wh", Host: "db.internal", Port: 5432, Database: "d", User: "u",
		Tunnel: &connection.Tunnel{Host: "bastion.internal", Port: 22, User: "jump", KnownHost: sshkey.AuthorizedKey(key, "")}}
	if _, err := svc.CreateConnection(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := svc.pinHostKey(ctx, "wh", "bastion.internal:22", key); err != nil {
		t.Fatalf("pinning the key given with the connection: %v", err)
	}
}
