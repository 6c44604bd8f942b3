package app_test

import (
	"context"
	"testing"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
)

// TestRotateMasterKeyReSealsCAAndNewKeys: master key rotation seals the SSH
// CA key and the new keys of a key rotation under way (the connection's and
// a hop's own) again, like every other secret: afterwards they open with
// the new master key only.
func TestRotateMasterKeyReSealsCAAndNewKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	old, next := newKeyring(t, 5), newKeyring(t, 6)
	svc, st := serviceOn(t, old)
	if _, err := svc.InitSSHCA(ctx); err != nil {
		t.Fatal(err)
	}
	tun := spec("tun")
	tun.Tunnel = &connection.Tunnel{Host: "bastion.example.com", User: "dbt",
		Next: []connection.Hop{{Host: "inner.internal", Port: 22, User: "dbt", OwnKey: true}}}
	if _, err := svc.CreateConnection(ctx, tun); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RotateKeyStart(ctx, "tun", 0); err != nil {
		t.Fatal(err)
	}
	caBefore, err := svc.SSHCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := app.RotateMasterKey(ctx, st, old, next, app.RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PendingKeys != 1 || !rep.SSHCA || rep.PrivateKeys != 1 {
		t.Fatalf("report %+v, want the new key and the CA sealed again", rep)
	}
	c, _ := st.GetConnection(ctx, "tun")
	ad := []byte("pgrelay/connection/" + c.ID + "/ssh_pending_private_key")
	if _, err := next.Open(c.SealedPendingPrivateKey, ad); err != nil {
		t.Fatalf("the new key of the rotation does not open with the new master key: %v", err)
	}
	if _, err := old.Open(c.SealedPendingPrivateKey, ad); err == nil {
		t.Fatal("the new key of the rotation still opens with the old master key")
	}
	// The rotation's new key for hop 2's own key, likewise.
	if len(c.HopKeys) != 1 || c.HopKeys[0].PendingPublicKey == "" {
		t.Fatalf("hop keys after the rotation started: %+v", c.HopKeys)
	}
	hopAD := []byte("pgrelay/connection/" + c.ID + "/hop_pending_private_key\x00hop=" + c.HopKeys[0].Hop)
	if _, err := next.Open(c.HopKeys[0].SealedPendingPrivateKey, hopAD); err != nil {
		t.Fatalf("hop 2's new key does not open with the new master key: %v", err)
	}
	if _, err := old.Open(c.HopKeys[0].SealedPendingPrivateKey, hopAD); err == nil {
		t.Fatal("hop 2's new key still opens with the old master key")
	}
	svc2, err := app.New(app.Config{Store: st, Keyring: next})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := svc2.SSHCA(ctx)
	if err != nil || ca.Fingerprint != caBefore.Fingerprint {
		t.Fatalf("SSH CA after the master key rotation: %+v %v", ca, err)
	}
	sealed, _ := st.GetMeta(ctx, "ssh_user_ca")
	if _, err := old.Open(sealed, []byte("pgrelay/meta/ssh_user_ca")); err == nil {
		t.Fatal("the SSH CA key still opens with the old master key")
	}
}
