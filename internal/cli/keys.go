package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
)

// keyLockFile is the lock file in the data dir that a master key rotation
// holds while it runs, and that a process finishing an interrupted one
// takes first.
const keyLockFile = "master.key.lock"

// keyLocation is where this run finds its master key.
func (r *runner) keyLocation() secret.KeyLocation {
	return secret.KeyLocation{Env: r.env.Getenv(secret.MasterKeyEnv), File: r.env.Getenv(secret.MasterKeyFileEnv), DataDir: r.dataDir}
}

// openKeyring returns the keyring of this run's master key for the store
// st. With create, a data dir without master.key gets a new one (a first
// start); without, its absence is an error (secret.ErrNoMasterKey).
//
// When the key is in the data dir and a rotation left master.key.next
// behind (it was stopped before it ended), the store says which key it is
// sealed with: the rotation is finished (the next key becomes master.key)
// or rolled back (the next key is removed), under the rotation lock.
func (r *runner) openKeyring(ctx context.Context, st store.SecretsStore, create bool) (*secret.Keyring, error) {
	loc := r.keyLocation()
	load := loc.Read
	if create {
		load = loc.Load
		if loc.Source() == secret.FromDataDir {
			if err := r.keyExpected(ctx, st, loc); err != nil {
				return nil, err
			}
		}
	}
	key, err := load()
	if err != nil {
		return nil, err
	}
	kr, err := secret.NewKeyring(key)
	if err != nil {
		return nil, err
	}
	if loc.Source() != secret.FromDataDir {
		return kr, nil
	}
	if _, err := os.Stat(loc.NextPath()); errors.Is(err, fs.ErrNotExist) {
		return kr, nil
	}
	unlock, err := lockKeys(r.dataDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return r.recoverRotation(ctx, st, loc, kr)
}

// keyExpected refuses to make a new master key for a store whose secrets
// are sealed already (a copied or restored store whose key was not put in
// the data dir): a new key could not open them.
func (r *runner) keyExpected(ctx context.Context, st store.SecretsStore, loc secret.KeyLocation) error {
	path := filepath.Join(loc.DataDir, secret.MasterKeyFile)
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := st.GetMeta(ctx, "key_check"); errors.Is(err, store.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	return fmt.Errorf("%w: this store's secrets are sealed with a master key that is not here: put it in %s (mode 0600), "+
		"or set %s or %s; no new key was made", secret.ErrNoMasterKey, path, secret.MasterKeyEnv, secret.MasterKeyFileEnv)
}

// recoverRotation finishes or rolls back the rotation that left
// master.key.next, holding the rotation lock.
func (r *runner) recoverRotation(ctx context.Context, st store.SecretsStore, loc secret.KeyLocation, current *secret.Keyring) (*secret.Keyring, error) {
	nextPath := loc.NextPath()
	if _, err := os.Stat(nextPath); errors.Is(err, fs.ErrNotExist) {
		// The rotation ended while this process waited for its lock.
		key, err := loc.Read()
		if err != nil {
			return nil, err
		}
		return secret.NewKeyring(key)
	}
	var next *secret.Keyring
	if key, err := secret.ReadKeyFile(nextPath); err == nil {
		if next, err = secret.NewKeyring(key); err != nil {
			return nil, err
		}
	}
	state, err := app.WhichKey(ctx, st, current, next)
	if err != nil {
		return nil, err
	}
	switch state {
	case app.KeyCurrent, app.KeyNone:
		// The rotation stopped before it changed the store: drop its key.
		if err := os.Remove(nextPath); err != nil {
			return nil, fmt.Errorf("remove the key of an interrupted master key rotation: %w", err)
		}
		r.logger.Warn("a master key rotation was interrupted before it changed the store; the store keeps its key",
			"removed", nextPath)
		return current, nil
	case app.KeyNext:
		// The rotation committed but did not install its key: do it now.
		if err := secret.ReplaceKeyFile(nextPath, filepath.Join(r.dataDir, secret.MasterKeyFile)); err != nil {
			return nil, err
		}
		r.logger.Warn("finished a master key rotation that was interrupted after it re-sealed the store: master.key now holds the new key",
			"master_key_file", filepath.Join(r.dataDir, secret.MasterKeyFile))
		return next, nil
	}
	return nil, app.ErrWrongMasterKey
}

// lockKeys takes the data dir's rotation lock (an flock, released when the
// process ends however it ends) and returns its release.
func lockKeys(dataDir string) (func(), error) {
	return flockFile(dataDir, keyLockFile, syscall.LOCK_EX, nil)
}

// serveLockFile is the file in the data dir on which every `serve` of the
// data dir's embedded store holds a shared lock while it runs, so that
// `master-key rotate` can tell one runs: it would go on with the old key, refused by
// the store (not ready, every run failing) until restarted.
const serveLockFile = "serve.lock"

// errServing is the rotation's refusal while a serve runs on the data dir.
var errServing = errors.New("a pgrelay serve process is running on this data dir")

// holdServeLock takes serve's shared lock on dataDir (released when the
// process ends however it ends) and returns its release. It fails while a
// master key rotation holds the lock.
func holdServeLock(dataDir string) (func(), error) {
	return flockFile(dataDir, serveLockFile, syscall.LOCK_SH|syscall.LOCK_NB, func(path string) error {
		return fmt.Errorf("serve: a master key rotation is running on the data dir %s (it holds %s): start serve once it has ended", dataDir, path)
	})
}

// lockOutServe takes serve's lock on dataDir exclusively for a master key
// rotation, so that no serve runs on the data dir (or starts) while it
// runs, and returns its release; errServing while one runs. A data dir
// that does not exist has no serve to lock out.
func lockOutServe(dataDir string) (func(), error) {
	if _, err := os.Stat(dataDir); errors.Is(err, fs.ErrNotExist) {
		return func() {}, nil
	}
	return flockFile(dataDir, serveLockFile, syscall.LOCK_EX|syscall.LOCK_NB, func(string) error {
		return fmt.Errorf("%w (%s): stop it first (systemctl stop pgrelay, or Ctrl-C), then rotate, then start it again; "+
			"a process started with the old key cannot open the stored secrets once they are sealed with the new one", errServing, dataDir)
	})
}

// flockFile takes the lock how (syscall.LOCK_*) on the file name in
// dataDir, made (mode 0600, and the dir 0700) when missing; busy makes
// the error of a non-blocking lock that another process holds.
func flockFile(dataDir, name string, how int, busy func(path string) error) (func(), error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	path := filepath.Join(dataDir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) && busy != nil {
			return nil, busy(path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}

// testPauseEnv names a point where a test wants this process to stop
// (e.g. "rotate:resealed"): the process says so on stderr and waits there
// until it is killed. It exists only for tests that kill a process at a
// precise point of an operation.
const testPauseEnv = "PGRELAY_TEST_PAUSE_AT"

// pauseAt stops at point when the test asks for it (see testPauseEnv).
func (r *runner) pauseAt(ctx context.Context, point string) {
	if r.env.Getenv(testPauseEnv) != point {
		return
	}
	fmt.Fprintf(r.env.Stderr, "pgrelay: paused at %s for a test\n", point)
	<-ctx.Done()
}
