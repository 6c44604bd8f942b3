package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
)

func (r *runner) masterKeyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "master-key",
		Short: "Manage the master key that seals stored passwords and private keys",
	}
	cmd.AddCommand(r.masterKeyRotateCommand())
	return cmd
}

func (r *runner) masterKeyRotateCommand() *cobra.Command {
	var newKeyFile, output string
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Seal every stored secret with a new master key, in one transaction",
		Long: `Seal every stored secret (connection passwords, SSH private keys) with a new
master key, in one transaction on the store: afterwards only the new key opens
the store, and processes that run with the old key are refused.

Where the new key goes depends on where the current one comes from:

  master.key in the data dir   the new key is written to master.key.next first,
                               and replaces master.key once the store is sealed
                               with it. A rotation stopped at any point (even
                               killed) is finished or rolled back by the next
                               pgrelay command on the data dir.
  PGRELAY_MASTER_KEY, or the   give --new-key-file FILE: the new key is written
  file PGRELAY_MASTER_KEY_FILE there (mode 0600) before the store changes, or
  names                        read from it when FILE exists (a key you made
                               with 'openssl rand -base64 32'). Then set the
                               variable, or that file, to the new key.

The new key is never printed or logged. Stop every other pgrelay process using
the store first (see README, "Master key rotation"; with the embedded store,
rotate refuses to run while a serve runs on the data dir); web UI sessions end, API
tokens stay valid. Backups made before hold secrets sealed with the old key:
keep the old key as long as you keep them.`,
		Example: "  pgrelay master-key rotate\n  PGRELAY_MASTER_KEY=... pgrelay --store postgres://pgrelay@db/pgrelay master-key rotate --new-key-file /root/pgrelay-new.key",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if r.remote != nil {
				return usagef("master-key rotate works on the store itself, not through a server (--server or %s): run it where the store's data dir or --store is", serverEnv)
			}
			return r.rotateMasterKey(cmd.Context(), newKeyFile, output)
		},
	}
	cmd.Flags().StringVar(&newKeyFile, "new-key-file", "", "with PGRELAY_MASTER_KEY or PGRELAY_MASTER_KEY_FILE: the file that receives (or, when it exists, holds) the new key")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func (r *runner) rotateMasterKey(ctx context.Context, newKeyFile, output string) error {
	loc := r.keyLocation()
	fromDataDir := loc.Source() == secret.FromDataDir
	switch {
	case fromDataDir && newKeyFile != "":
		return usagef("--new-key-file is for a master key from %s or %s; the key in %s is replaced in place",
			secret.MasterKeyEnv, secret.MasterKeyFileEnv, filepath.Join(r.dataDir, secret.MasterKeyFile))
	case !fromDataDir && newKeyFile == "":
		return usagef("the master key comes from %s, which pgrelay cannot change: give --new-key-file FILE; "+
			"the new key is written there (or read from it when it exists), and you then set %s to it", loc.Describe(), loc.Describe())
	}
	if newKeyFile != "" {
		// Checked before anything: a file in a missing directory failed
		// (exit 1) with "write master key: open FILE: no such file or
		// directory", naming no flag.
		if _, err := os.Stat(newKeyFile); errors.Is(err, fs.ErrNotExist) {
			if dir := filepath.Dir(newKeyFile); !dirExists(dir) {
				return usagef("--new-key-file %s: the directory %s does not exist: accepted is a new file in an existing directory "+
					"(it receives the new key) or a file that holds the new key", newKeyFile, dir)
			}
		}
	}
	if err := r.checkSharedMasterKey(); err != nil {
		return err
	}
	if r.embeddedStore() {
		// A serve on this data dir would go on with the old key: its
		// store refuses it (not ready, every run failing) until restarted.
		release, err := lockOutServe(r.dataDir)
		if err != nil {
			return err
		}
		defer release()
	}
	if fromDataDir {
		if path := filepath.Join(r.dataDir, secret.MasterKeyFile); !fileExists(path) {
			return fmt.Errorf("rotate master key: %w: %s does not exist, so there is no key to rotate yet (the first pgrelay command on the data dir makes one)",
				secret.ErrNoMasterKey, path)
		}
	}
	st, err := r.openStore(ctx)
	if err != nil {
		return err
	}
	r.st = st
	keyPath := newKeyFile
	if fromDataDir {
		keyPath = loc.NextPath()
		// Rotations of one data dir run one at a time, and so do the
		// recoveries of interrupted ones (see openKeyring).
		unlock, err := lockKeys(r.dataDir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	oldKey, err := loc.Read()
	if err != nil {
		return err
	}
	kr, err := secret.NewKeyring(oldKey)
	if err != nil {
		return err
	}
	if fromDataDir {
		if _, err := os.Stat(keyPath); err == nil {
			// An earlier rotation was stopped: finish or undo it first.
			if kr, err = r.recoverRotation(ctx, st, loc, kr); err != nil {
				return err
			}
			if oldKey, err = loc.Read(); err != nil {
				return err
			}
		}
	} else if state, err := keyStateWith(ctx, st, kr, keyPath); err != nil {
		return err
	} else if state == app.KeyNext {
		// A rotation to the key in keyPath already changed the store.
		r.logger.Info("master key already rotated", "key_source", loc.Describe())
		return r.printRotation(loc, keyPath, &app.RotationReport{}, true, output)
	}
	if err := app.VerifyMasterKey(ctx, st, kr); err != nil {
		return err
	}

	newKey, created, err := newMasterKey(keyPath, oldKey)
	if err != nil {
		return err
	}
	next, err := secret.NewKeyring(newKey)
	if err != nil {
		return err
	}
	r.pauseAt(ctx, "rotate:key-written")
	rep, err := app.RotateMasterKey(ctx, st, kr, next, app.RotateOptions{Pause: func(ctx context.Context, p app.RotationPhase) {
		r.pauseAt(ctx, "rotate:"+string(p))
	}})
	already := false
	if err != nil {
		// An error does not prove that nothing changed: the store may
		// have committed while its answer was lost (the connection broke
		// at the commit). Only a store that says it is still sealed with
		// the old key lets the new key go.
		state, serr := app.WhichKey(context.WithoutCancel(ctx), st, kr, next)
		switch {
		case serr != nil:
			again := "run `pgrelay master-key rotate --new-key-file " + keyPath + "` again once the store answers: it finishes or undoes this rotation"
			if fromDataDir {
				again = "the next pgrelay command on the data dir, once the store answers, finishes or undoes this rotation"
			}
			return fmt.Errorf("rotate master key: %w; whether the store changed could not be checked (%w), so the new key is kept in %s: %s",
				err, serr, keyPath, again)
		case state == app.KeyNext:
			r.logger.Warn("the master key rotation reported an error, but the store is sealed with the new key: keeping it", "error", err)
			rep, already = &app.RotationReport{}, true
		default:
			if fromDataDir || created {
				_ = os.Remove(keyPath)
			}
			return fmt.Errorf("rotate master key: %w", err)
		}
	}
	r.pauseAt(ctx, "rotate:committed")
	if fromDataDir {
		if err := secret.ReplaceKeyFile(keyPath, filepath.Join(r.dataDir, secret.MasterKeyFile)); err != nil {
			return fmt.Errorf("the store is sealed with the new key, which is in %s, but it could not replace master.key: %w; "+
				"move it there yourself (mv %s %s)", keyPath, err, keyPath, filepath.Join(r.dataDir, secret.MasterKeyFile))
		}
	}
	r.logger.Info("master key rotated", "connections", rep.Connections, "key_source", loc.Describe())
	return r.printRotation(loc, keyPath, rep, already, output)
}

// keyStateWith says which of the current key and the key in path (when
// that file exists and holds a key) opens the store.
func keyStateWith(ctx context.Context, st store.SecretsStore, current *secret.Keyring, path string) (app.KeyState, error) {
	var next *secret.Keyring
	if key, err := secret.ReadKeyFile(path); err == nil {
		if next, err = secret.NewKeyring(key); err != nil {
			return 0, err
		}
	}
	state, err := app.WhichKey(ctx, st, current, next)
	if err != nil {
		return 0, err
	}
	if state == app.KeyNeither {
		return 0, app.ErrWrongMasterKey
	}
	return state, nil
}

// newMasterKey returns the rotation's new key: read from path when it
// exists, else generated and written there (synced) before anything else
// changes.
func newMasterKey(path string, old []byte) (key []byte, created bool, err error) {
	if _, err := os.Stat(path); err == nil {
		key, err := secret.ReadKeyFile(path)
		if err != nil {
			// What the file holds is this command line's input (exit 2).
			return nil, false, usageError{fmt.Errorf("--new-key-file: %w", err)}
		}
		if bytes.Equal(key, old) {
			return nil, false, usagef("--new-key-file %s holds the current master key; give a new one (e.g. `openssl rand -base64 32 > FILE`) or a path that does not exist", path)
		}
		return key, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("new master key: %w", err)
	}
	key, err = secret.NewMasterKey()
	if err != nil {
		return nil, false, err
	}
	if err := secret.CreateKeyFile(path, key); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

func (r *runner) printRotation(loc secret.KeyLocation, keyPath string, rep *app.RotationReport, already bool, output string) error {
	newKeyAt := keyPath
	if loc.Source() == secret.FromDataDir {
		newKeyAt = filepath.Join(r.dataDir, secret.MasterKeyFile)
	}
	if output == "json" {
		return writeJSON(r.out(), struct {
			*app.RotationReport
			NewKeyFile     string `json:"new_key_file"`
			AlreadyRotated bool   `json:"already_rotated"`
		}{rep, newKeyAt, already})
	}
	if already {
		fmt.Fprintf(r.out(), "The store is already sealed with the key in %s (a rotation to it changed the store, but was interrupted or its end not confirmed).\n", newKeyAt)
	} else {
		creds := ""
		if rep.AuthSecrets > 0 {
			creds = fmt.Sprintf(", %d credential secrets (Lakebase client secrets, AlloyDB keys)", rep.AuthSecrets)
		}
		more := ""
		if rep.HopKeys > 0 {
			more += fmt.Sprintf(", %d SSH private keys of hops with a key pair of their own", rep.HopKeys)
		}
		if rep.PendingKeys > 0 {
			more += fmt.Sprintf(", %d new SSH private keys of key rotations under way", rep.PendingKeys)
		}
		if rep.SSHCA {
			more += ", and the SSH CA's private key"
		}
		fmt.Fprintf(r.out(), "Sealed %s and %s%s of %s%s with a new master key, in one transaction.\n",
			countNoun(rep.Passwords, "password"), countNoun(rep.PrivateKeys, "SSH private key"), creds, countNoun(rep.Connections, "connection"), more)
	}
	if loc.Source() == secret.FromDataDir {
		fmt.Fprintf(r.out(), "The new key is in %s; the old key no longer opens the store.\n", newKeyAt)
	} else {
		fmt.Fprintf(r.out(), `The new key is in %s (mode 0600); the old key no longer opens the store.
Now set %s to it in every process that uses this store and restart them
(processes still running with the old key refuse to seal secrets and report not ready),
then delete %s once the key is kept where your secrets live.
`, newKeyAt, loc.Describe(), newKeyAt)
	}
	fmt.Fprintln(r.out(), "Keep a copy of the new key apart from the store and its backups; keep the old key as long as you keep backups made before now.")
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func dirExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
