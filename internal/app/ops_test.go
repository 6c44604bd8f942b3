package app_test

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

func newKeyring(t *testing.T, b byte) *secret.Keyring {
	t.Helper()
	key := make([]byte, 32)
	for i := range key {
		key[i] = b
	}
	kr, err := secret.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// serviceOn returns a service on a new SQLite store sealed with kr.
func serviceOn(t *testing.T, kr *secret.Keyring) (*app.Service, *sqlite.Store) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	svc, err := app.New(app.Config{Store: st, Keyring: kr, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.CheckMasterKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	return svc, st
}

// openSecrets opens every connection's secrets with kr (as Open does).
func openSecrets(t *testing.T, st store.Store, kr *secret.Keyring) map[string]string {
	t.Helper()
	cs, err := st.ListConnections(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range cs {
		if len(c.SealedPassword) > 0 {
			pw, err := kr.Open(c.SealedPassword, []byte("pgrelay/connection/"+c.ID+"/password\x00endpoint="+c.Spec.Endpoint().Key()))
			if err != nil {
				t.Fatalf("connection %s: password: %v", c.Spec.Name, err)
			}
			out[c.Spec.Name+"/password"] = string(pw)
		}
		if len(c.SealedPrivateKey) > 0 {
			pem, err := kr.Open(c.SealedPrivateKey, []byte("pgrelay/connection/"+c.ID+"/ssh_private_key"))
			if err != nil {
				t.Fatalf("connection %s: key: %v", c.Spec.Name, err)
			}
			out[c.Spec.Name+"/key"] = string(pem)
		}
	}
	return out
}

func TestRotateMasterKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	old, next := newKeyring(t, 1), newKeyring(t, 2)
	svc, st := serviceOn(t, old)
	tun := spec("tun")
	tun.Tunnel = &connection.Tunnel{Host: "bastion.example.com", User: "dbt"}
	for _, s := range []connection.Spec{spec("a"), tun, {Name: "nopw", Host: "h", Database: "d", User: "u"}} {
		if _, err := svc.CreateConnection(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// A password sealed before passwords were bound to their endpoint.
	legacy, _ := st.GetConnection(ctx, "a")
	legacy.SealedPassword, _ = old.Seal([]byte("pw-a"), []byte("pgrelay/connection/"+legacy.ID+"/password"))
	if err := st.UpdateConnection(ctx, legacy); err != nil {
		t.Fatal(err)
	}
	plain := map[string]string{"a/password": "pw-a", "tun/password": "pw-tun"}
	before, _ := st.ListConnections(ctx)

	// A secret the old key cannot open stops the rotation before it changes
	// anything.
	bad, _ := st.GetConnection(ctx, "nopw")
	bad.SealedPassword = []byte("garbage that is not sealed")
	if err := st.UpdateConnection(ctx, bad); err != nil {
		t.Fatal(err)
	}
	_, err := app.RotateMasterKey(ctx, st, old, next, app.RotateOptions{})
	if err == nil || !strings.Contains(err.Error(), "connection nopw: password") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("rotation over a damaged secret: %v", err)
	}
	if app.VerifyMasterKey(ctx, st, old) != nil {
		t.Fatal("a failed rotation changed the key check")
	}
	bad.SealedPassword = nil
	if err := st.UpdateConnection(ctx, bad); err != nil {
		t.Fatal(err)
	}

	var paused bool
	rep, err := app.RotateMasterKey(ctx, st, old, next, app.RotateOptions{Pause: func(_ context.Context, p app.RotationPhase) {
		paused = p == app.PhaseResealed
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !paused || rep.Connections != 3 || rep.Passwords != 2 || rep.PrivateKeys != 1 {
		t.Fatalf("report %+v, paused %v", rep, paused)
	}
	if !errors.Is(app.VerifyMasterKey(ctx, st, old), app.ErrWrongMasterKey) || app.VerifyMasterKey(ctx, st, next) != nil {
		t.Fatal("after the rotation the key check does not open with the new key only")
	}
	got := openSecrets(t, st, next) // also: the legacy password is bound now
	for k, v := range plain {
		if got[k] != v {
			t.Errorf("%s after the rotation: %q, want %q", k, got[k], v)
		}
	}
	after, _ := st.ListConnections(ctx)
	for i := range before {
		if after[i].SSHPublicKey != before[i].SSHPublicKey || !reflect.DeepEqual(after[i].Spec, before[i].Spec) || after[i].Version <= before[i].Version {
			t.Errorf("connection %s changed beyond its secrets", after[i].Spec.Name)
		}
	}
	if _, err := app.RotateMasterKey(ctx, st, old, next, app.RotateOptions{}); !errors.Is(err, app.ErrAlreadyRotated) {
		t.Fatalf("rotating again to the same key: %v, want ErrAlreadyRotated", err)
	}
	if _, err := app.RotateMasterKey(ctx, st, newKeyring(t, 3), newKeyring(t, 4), app.RotateOptions{}); !errors.Is(err, app.ErrWrongMasterKey) {
		t.Fatalf("rotating with a wrong key: %v, want ErrWrongMasterKey", err)
	}

	// The service that still has the old key refuses to seal with it and
	// reports not ready.
	if _, err := svc.CreateConnection(ctx, spec("late")); !errors.Is(err, app.ErrKeyRotated) {
		t.Fatalf("create with the old key after rotation: %v, want ErrKeyRotated", err)
	}
	if _, err := st.GetConnection(ctx, "late"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("the refused connection was saved")
	}
	if err := svc.Ready(ctx); !errors.Is(err, app.ErrKeyRotated) {
		t.Fatalf("Ready with the old key after rotation: %v", err)
	}
	for _, k := range []byte{2} {
		svc2, err := app.New(app.Config{Store: st, Keyring: newKeyring(t, k)})
		if err != nil {
			t.Fatal(err)
		}
		if err := svc2.Ready(ctx); err != nil {
			t.Fatalf("Ready with the new key: %v", err)
		}
		if _, err := svc2.CreateConnection(ctx, spec("late")); err != nil {
			t.Fatalf("create with the new key: %v", err)
		}
	}
}

func TestCopyStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kr := newKeyring(t, 7)
	src, srcStore := serviceOn(t, kr)
	tun := spec("tun")
	tun.Tunnel = &connection.Tunnel{Host: "bastion.example.com", User: "dbt"}
	for _, s := range []connection.Spec{spec("a"), tun} {
		if _, err := src.CreateConnection(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	job := jobs.Job{Name: "j", Connection: "a", Steps: []jobs.Step{{SQL: "select 1"}}}
	job.ApplyDefaults()
	if err := srcStore.CreateJob(ctx, &job, now); err != nil {
		t.Fatal(err)
	}
	for i, st := range []jobs.Status{jobs.Succeeded, jobs.Queued, jobs.Running} {
		r := &jobs.Run{ID: "r" + string(rune('0'+i)), JobName: "j", Job: job, Trigger: jobs.Manual, Status: st, QueuedAt: now}
		if err := srcStore.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// The SSH CA travels with its principals.
	caBefore, err := src.InitSSHCA(ctx, "dbtcloud", "etl")
	if err != nil {
		t.Fatal(err)
	}
	want := openSecrets(t, srcStore, kr)

	dstSvc, dst := serviceOn(t, kr)
	rep, err := app.CopyStore(ctx, srcStore, dst, kr, app.CopyOptions{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if ca, err := dstSvc.SSHCA(ctx); err != nil || ca.Fingerprint != caBefore.Fingerprint || ca.AnyPrincipal ||
		!reflect.DeepEqual(ca.Principals, []string{"dbtcloud", "etl"}) {
		t.Fatalf("SSH CA of the copy: %+v %v, want %s with principals dbtcloud, etl", ca, err, caBefore.Fingerprint)
	}
	if rep.Copied.Connections != 2 || rep.Copied.Runs != 3 || rep.Unfinished != 2 || rep.Target != rep.Copied {
		t.Fatalf("report %+v", rep)
	}
	if got := openSecrets(t, dst, kr); len(got) != 3 || got["tun/key"] != want["tun/key"] || got["a/password"] != "pw-a" {
		t.Fatalf("secrets of the copy: %v", got)
	}
	for _, id := range []string{"r1", "r2"} {
		r, err := dst.GetRun(ctx, id)
		if err != nil || r.Status != jobs.Failed || r.Reason != app.UnfinishedReason || r.EndedAt == nil {
			t.Fatalf("unfinished run %s in the copy: %+v %v", id, r, err)
		}
		if s, _ := srcStore.GetRun(ctx, id); s.Status.Terminal() {
			t.Fatalf("the source's run %s changed: %+v", id, s)
		}
	}

	// A target with records is refused, also with another key; a source
	// with a secret the key cannot open is refused before anything is
	// written.
	if _, err := app.CopyStore(ctx, srcStore, dst, kr, app.CopyOptions{}); !errors.Is(err, app.ErrTargetNotEmpty) {
		t.Fatalf("copy into a store with records: %v", err)
	}
	if _, err := app.CopyStore(ctx, srcStore, dst, newKeyring(t, 8), app.CopyOptions{}); !errors.Is(err, app.ErrWrongMasterKey) {
		t.Fatalf("copy with another key: %v", err)
	}
	c, _ := srcStore.GetConnection(ctx, "a")
	c.SealedPassword = []byte("not sealed with the key at all")
	if err := srcStore.UpdateConnection(ctx, c); err != nil {
		t.Fatal(err)
	}
	_, empty := serviceOn(t, kr)
	_, err = app.CopyStore(ctx, srcStore, empty, kr, app.CopyOptions{})
	if err == nil || !strings.Contains(err.Error(), "connection a: password") {
		t.Fatalf("copy of a store with a damaged secret: %v", err)
	}
	if n, _ := empty.Counts(ctx); !n.Empty() {
		t.Fatalf("a failed copy wrote %+v", n)
	}
}
