package app_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// rotateOnKeyCheck is a store whose reads of the key check (outside a
// transaction or inside one) start a master key rotation on the store
// below once armed: it lets a rotation happen just after a process with the
// old key checked its key and before it writes what it sealed with it.
type rotateOnKeyCheck struct {
	store.Store
	hook func()
}

func (s *rotateOnKeyCheck) GetMeta(ctx context.Context, key string) ([]byte, error) {
	v, err := s.Store.GetMeta(ctx, key)
	if key == "key_check" && s.hook != nil {
		s.hook()
	}
	return v, err
}

func (s *rotateOnKeyCheck) WithSecrets(ctx context.Context, fn func(tx store.SecretsTx) error) error {
	return s.Store.WithSecrets(ctx, func(tx store.SecretsTx) error {
		return fn(hookedTx{SecretsTx: tx, s: s})
	})
}

type hookedTx struct {
	store.SecretsTx
	s *rotateOnKeyCheck
}

func (t hookedTx) GetMeta(ctx context.Context, key string) ([]byte, error) {
	v, err := t.SecretsTx.GetMeta(ctx, key)
	if key == "key_check" && t.s.hook != nil {
		t.s.hook()
	}
	return v, err
}

// TestRotationRacingSecretWrites rotates the master key while a process
// that still has the old key saves a new secret (a connection's password,
// the SSH CA key): the rotation commits right after that process checked
// its key. The new secret must not stay sealed with the old key, which no
// longer opens the store: either it is refused (ErrKeyRotated) or the
// rotation seals it again.
func TestRotationRacingSecretWrites(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"sqlite", "postgres"} {
		for _, write := range []string{"connection", "ssh-ca"} {
			t.Run(backend+"/"+write, func(t *testing.T) {
				t.Parallel()
				rotationRacing(t, backend, write)
			})
		}
	}
}

func rotationRacing(t *testing.T, backend, write string) {
	ctx := context.Background()
	var st store.Store
	switch backend {
	case "sqlite":
		s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), sqlite.FileName))
		if err != nil {
			t.Fatal(err)
		}
		st = s
	case "postgres":
		db := testenv.SharedPostgres(t, testenv.PostgresOptions{}).NewDatabase(t)
		s, err := postgres.Open(ctx, db.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		st = s
	}
	t.Cleanup(func() { _ = st.Close() })
	old, next := newKeyring(t, 1), newKeyring(t, 2)
	hooked := &rotateOnKeyCheck{Store: st}
	svc, err := app.New(app.Config{Store: hooked, Keyring: old, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.CheckMasterKey(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateConnection(ctx, spec("before")); err != nil {
		t.Fatal(err)
	}

	var once sync.Once
	rotated := make(chan error, 1)
	hooked.hook = func() {
		once.Do(func() {
			resealed := make(chan struct{})
			go func() {
				_, err := app.RotateMasterKey(ctx, st, old, next, app.RotateOptions{Pause: func(context.Context, app.RotationPhase) {
					close(resealed)
				}})
				rotated <- err
			}()
			// The rotation commits now, unless this process holds the
			// store's secrets lock: then it waits for it.
			select {
			case <-resealed:
				err := <-rotated
				rotated <- err
			case <-time.After(2 * time.Second):
			}
		})
	}
	var werr error
	switch write {
	case "connection":
		_, werr = svc.CreateConnection(ctx, spec("during"))
	case "ssh-ca":
		_, werr = svc.InitSSHCA(ctx)
	}
	hooked.hook = nil
	if err := <-rotated; err != nil {
		t.Fatalf("rotation: %v", err)
	}
	if app.VerifyMasterKey(ctx, st, next) != nil {
		t.Fatal("the store is not sealed with the new key after the rotation")
	}
	if werr != nil && !errors.Is(werr, app.ErrKeyRotated) {
		t.Fatalf("%s during the rotation: %v", write, werr)
	}
	switch write {
	case "connection":
		if _, err := st.GetConnection(ctx, "during"); werr != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the refused connection was saved: %v", err)
		}
		// Every saved secret opens with the key the store is sealed with
		// now (openSecrets fails otherwise).
		got := openSecrets(t, st, next)
		if got["before/password"] != "pw-before" || (werr == nil && got["during/password"] != "pw-during") {
			t.Fatalf("secrets after the rotation: %v", got)
		}
	case "ssh-ca":
		sealed, err := st.GetMeta(ctx, "ssh_user_ca")
		switch {
		case werr != nil && !errors.Is(err, store.ErrNotFound):
			t.Fatalf("the refused SSH CA key was saved: %v", err)
		case werr == nil && err != nil:
			t.Fatalf("SSH CA key: %v", err)
		case werr == nil:
			if _, err := next.Open(sealed, []byte("pgrelay/meta/ssh_user_ca")); err != nil {
				t.Fatalf("the SSH CA key does not open with the store's key: %v", err)
			}
		}
	}
}
