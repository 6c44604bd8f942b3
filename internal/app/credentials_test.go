package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential/credentialtest"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// lakebaseSpec is a Lakebase connection with an OAuth client secret.
func lakebaseSpec(name, clientSecret string) connection.Spec {
	return connection.Spec{Name: name, Flavor: connection.Lakebase, Host: "instance-1.database.cloud.databricks.com",
		Database: "databricks_postgres", User: "6f6f7a2e-0000-4000-8000-000000000001", SSLMode: connection.SSLVerifyFull,
		Auth: &connection.Auth{Kind: connection.AuthLakebase, WorkspaceURL: "https://dbc-a1b2345c-d6e7.cloud.databricks.com",
			ClientID: "6f6f7a2e-0000-4000-8000-000000000001", ClientSecret: secret.New(clientSecret), Instance: "instance-1"}}
}

// TestAuthSecretSealedAndBound: the Lakebase client secret and the AlloyDB
// key are stored sealed, never shown, and bound like the password: they
// open only for the record, the workspace/client or service account, and
// the endpoint they were saved for; a change of any without the secret is
// refused, and a record changed behind the use case's back no longer
// opens.
func TestAuthSecretSealedAndBound(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	const clientSecret = "dose-client-secret-4f1c2b"

	// Required on create.
	noSecret := lakebaseSpec("lb", "")
	var ve *app.ValidationError
	if _, err := f.svc.CreateConnection(ctx, noSecret); !errors.As(err, &ve) || !strings.Contains(ve.Fields()["auth.client_secret"], "required") {
		t.Fatalf("create without the client secret: %v", err)
	}
	s := lakebaseSpec("lb", clientSecret)
	v, err := f.svc.CreateConnection(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if v.Auth == nil || !v.Auth.HasClientSecret || v.Auth.Kind != connection.AuthLakebase || v.HasPassword {
		t.Fatalf("view: %+v", v.Auth)
	}
	b, _ := json.Marshal(v)
	if bytes.Contains(b, []byte(clientSecret)) || !bytes.Contains(b, []byte(`"has_client_secret":true`)) {
		t.Fatalf("view JSON: %s", b)
	}
	rec, _ := f.store.GetConnection(ctx, "lb")
	specJSON, _ := json.Marshal(rec.Spec)
	if len(rec.SealedAuthSecret) == 0 || bytes.Contains(rec.SealedAuthSecret, []byte(clientSecret)) || bytes.Contains(specJSON, []byte(clientSecret)) {
		t.Fatalf("stored record: sealed %d bytes, spec %s", len(rec.SealedAuthSecret), specJSON)
	}
	sess, err := f.svc.Open(ctx, "lb")
	if err != nil || sess.Spec().Auth.ClientSecret.Reveal() != clientSecret {
		t.Fatalf("open: %v", err)
	}
	_ = sess.Close()

	// What the secret is bound to may not change without it.
	for what, mod := range map[string]func(*connection.Spec){
		"workspace": func(s *connection.Spec) { s.Auth.WorkspaceURL = "https://evil.cloud.databricks.com" },
		"client id": func(s *connection.Spec) { s.Auth.ClientID = "evil-client" },
		"host":      func(s *connection.Spec) { s.Host = "evil.example.com" },
		"user":      func(s *connection.Spec) { s.User = "postgres" },
		"bastion":   func(s *connection.Spec) { s.Tunnel = &connection.Tunnel{Host: "evil.example.com", User: "x"} },
	} {
		next := s.Clone()
		next.Auth.ClientSecret = secret.Value{}
		mod(&next)
		_, err := f.svc.UpdateConnection(ctx, "lb", next, nil)
		if !errors.As(err, &ve) || !strings.Contains(ve.Fields()["auth.client_secret"], "give the client secret again") {
			t.Errorf("changing the %s without the client secret: %v", what, err)
		}
	}
	// Other changes keep it; given again, the change is taken.
	keep := s.Clone()
	keep.Auth.ClientSecret, keep.Schema = secret.Value{}, "marts"
	if v, err := f.svc.UpdateConnection(ctx, "lb", keep, nil); err != nil || !v.Auth.HasClientSecret {
		t.Fatalf("an update that keeps the secret: %+v %v", v, err)
	}
	moved := s.Clone()
	moved.Auth.WorkspaceURL = "https://dbc-ffff.cloud.databricks.com"
	if _, err := f.svc.UpdateConnection(ctx, "lb", moved, nil); err != nil {
		t.Fatalf("workspace change with the secret: %v", err)
	}

	// Behind the use case's back: the workspace changes in the store.
	rec, _ = f.store.GetConnection(ctx, "lb")
	rec.Spec.Auth.WorkspaceURL = "https://evil.cloud.databricks.com"
	if err := f.store.UpdateConnection(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Open(ctx, "lb"); !errors.Is(err, secret.ErrOpen) {
		t.Fatalf("open after the workspace moved in the store: %v, want ErrOpen", err)
	}
	// Nor does the sealed secret open on another record.
	other := lakebaseSpec("lb2", "another-secret")
	if _, err := f.svc.CreateConnection(ctx, other); err != nil {
		t.Fatal(err)
	}
	rec2, _ := f.store.GetConnection(ctx, "lb2")
	good, _ := f.store.GetConnection(ctx, "lb")
	rec2.SealedAuthSecret = good.SealedAuthSecret
	if err := f.store.UpdateConnection(ctx, rec2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Open(ctx, "lb2"); !errors.Is(err, secret.ErrOpen) {
		t.Fatalf("a sealed secret moved to another record opened: %v", err)
	}

	// AlloyDB: the key is bound to its service account; the user is
	// checked against it even when the key is not given again.
	g := credentialtest.NewGoogle(t, nil)
	key := g.NewKey(t, "etl@proj.iam.gserviceaccount.com", true)
	ad := connection.Spec{Name: "ad", Flavor: connection.AlloyDB, Host: "10.0.0.5", Database: "postgres",
		User: "etl@proj.iam", SSLMode: connection.SSLVerifyCA, SSLRootCert: testCA(t),
		Auth: &connection.Auth{Kind: connection.AuthAlloyDBIAM, ServiceAccountKey: secret.New(key)}}
	v, err = f.svc.CreateConnection(ctx, ad)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Auth.HasServiceAccountKey || v.Auth.ServiceAccount != "etl@proj.iam.gserviceaccount.com" {
		t.Fatalf("alloydb view: %+v", v.Auth)
	}
	if b, _ := json.Marshal(v); bytes.Contains(b, []byte("PRIVATE KEY")) {
		t.Fatalf("view shows the key: %s", b)
	}
	edit := v.Spec() // as a form or the CLI edits it: no key
	edit.Schema = "etl"
	if _, err := f.svc.UpdateConnection(ctx, "ad", edit, nil); err != nil {
		t.Fatalf("edit without the key: %v", err)
	}
	edit.Auth.ServiceAccount = ""
	edit.User = "someone-else"
	if _, err := f.svc.UpdateConnection(ctx, "ad", edit, nil); !errors.As(err, &ve) || !strings.Contains(ve.Fields()["user"], "etl@proj.iam") {
		t.Fatalf("another user without the key: %v", err)
	}
	edit.User = "etl@proj.iam"
	edit.Auth.ServiceAccount = "other@proj.iam.gserviceaccount.com"
	if _, err := f.svc.UpdateConnection(ctx, "ad", edit, nil); !errors.As(err, &ve) || !strings.Contains(ve.Fields()["auth.service_account_key"], "give the service-account key again") {
		t.Fatalf("another service account without the key: %v", err)
	}
	// Switching to a password drops the secret; back to a token kind needs
	// it again.
	pw := edit.Clone()
	pw.Auth = nil
	pass := secret.New("pw")
	if v, err := f.svc.UpdateConnection(ctx, "ad", pw, &pass); err != nil || v.Auth != nil || !v.HasPassword {
		t.Fatalf("switch to password: %+v %v", v, err)
	}
	if rec, _ := f.store.GetConnection(ctx, "ad"); len(rec.SealedAuthSecret) != 0 {
		t.Fatal("the key was kept after switching to a password")
	}
	back := edit.Clone()
	back.Auth.ServiceAccount = ""
	if _, err := f.svc.UpdateConnection(ctx, "ad", back, nil); !errors.As(err, &ve) || !strings.Contains(ve.Fields()["auth.service_account_key"], "required") {
		t.Fatalf("back to alloydb-iam without the key: %v", err)
	}
	back.Auth.ServiceAccountKey = secret.New(key)
	if v, err := f.svc.UpdateConnection(ctx, "ad", back, nil); err != nil || v.HasPassword || !v.Auth.HasServiceAccountKey {
		t.Fatalf("back to alloydb-iam with the key: %+v %v", v, err)
	}
}

// testCA returns a CA certificate, PEM encoded.
func testCA(t *testing.T) string {
	t.Helper()
	return string(testenv.NewTLSCert(t).CAPEM)
}

// TestRotateMasterKeyAuthSecrets: a rotation seals the credential sources'
// secrets again, and afterwards they open with the new key only.
func TestRotateMasterKeyAuthSecrets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	old, next := newKeyring(t, 5), newKeyring(t, 6)
	svc, st := serviceOn(t, old)
	if _, err := svc.CreateConnection(ctx, lakebaseSpec("lb", "dose-rotate-me")); err != nil {
		t.Fatal(err)
	}
	before, _ := st.GetConnection(ctx, "lb")
	rep, err := app.RotateMasterKey(ctx, st, old, next, app.RotateOptions{})
	if err != nil || rep.AuthSecrets != 1 || rep.Connections != 1 {
		t.Fatalf("rotation: %+v %v", rep, err)
	}
	after, _ := st.GetConnection(ctx, "lb")
	if bytes.Equal(before.SealedAuthSecret, after.SealedAuthSecret) {
		t.Fatal("the auth secret was not sealed again")
	}
	svc2, err := app.New(app.Config{Store: st, Keyring: next})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := svc2.Open(ctx, "lb")
	if err != nil || sess.Spec().Auth.ClientSecret.Reveal() != "dose-rotate-me" {
		t.Fatalf("open with the new key: %v", err)
	}
	_ = sess.Close()
	// A damaged auth secret stops a rotation before anything changes.
	after.SealedAuthSecret = []byte("not sealed")
	if err := st.UpdateConnection(ctx, after); err != nil {
		t.Fatal(err)
	}
	if _, err := app.RotateMasterKey(ctx, st, next, newKeyring(t, 7), app.RotateOptions{}); err == nil ||
		!strings.Contains(err.Error(), "auth.client_secret") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("rotation over a damaged auth secret: %v", err)
	}
}

// TestCopyStoreAuthSecrets: `store copy` carries the credential sources'
// secrets as they are (they open in the copy), and refuses a source whose
// auth secret the key cannot open before anything is written.
func TestCopyStoreAuthSecrets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kr := newKeyring(t, 11)
	src, srcStore := serviceOn(t, kr)
	if _, err := src.CreateConnection(ctx, lakebaseSpec("lb", "dose-copy-me")); err != nil {
		t.Fatal(err)
	}
	_, dst := serviceOn(t, kr)
	if _, err := app.CopyStore(ctx, srcStore, dst, kr, app.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	copySvc, err := app.New(app.Config{Store: dst, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := copySvc.Open(ctx, "lb")
	if err != nil || sess.Spec().Auth.ClientSecret.Reveal() != "dose-copy-me" {
		t.Fatalf("the copy's client secret: %v", err)
	}
	_ = sess.Close()
	c, _ := srcStore.GetConnection(ctx, "lb")
	c.SealedAuthSecret = []byte("not sealed with the key at all")
	if err := srcStore.UpdateConnection(ctx, c); err != nil {
		t.Fatal(err)
	}
	_, empty := serviceOn(t, kr)
	if _, err := app.CopyStore(ctx, srcStore, empty, kr, app.CopyOptions{}); err == nil || !strings.Contains(err.Error(), "connection lb: auth.client_secret") {
		t.Fatalf("copy of a store with a damaged auth secret: %v", err)
	}
	if n, _ := empty.Counts(ctx); !n.Empty() {
		t.Fatalf("a failed copy wrote %+v", n)
	}
}
