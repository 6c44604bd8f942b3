package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// pgDumpHint says how to back up a PostgreSQL store.
const pgDumpHint = "back up a PostgreSQL store with its own tools: pg_dump --format=custom --file pgrelay.dump 'postgres://...' " +
	"(and pg_restore into an empty database); see README, \"Backup and restore\""

func (r *runner) backupCommand() *cobra.Command {
	var out, output string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Write a consistent snapshot of the embedded store to a file (also while serve runs)",
		Long: `Write a consistent snapshot of the embedded SQLite store of the data dir to FILE
(SQLite's VACUUM INTO: one point in time, while 'pgrelay serve' keeps running),
then check that the snapshot opens, is intact and that its secrets open with the
current master key. FILE must not exist; it gets mode 0600.

The snapshot holds secrets only sealed. The master key is NOT in it: keep a copy
of master.key (or of PGRELAY_MASTER_KEY) apart from the backups; without the key
a backup's passwords and private keys cannot be read. Restore with
'pgrelay restore FILE' into an empty data dir.

For a PostgreSQL store use pg_dump (see README, "Backup and restore").`,
		Example: "  pgrelay backup --out /backup/pgrelay-$(date +%F).db",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if r.remote != nil {
				return usagef("backup works on the data dir, not through a server (--server or %s): run it on the server's machine", serverEnv)
			}
			if out == "" {
				return usagef("backup needs --out FILE (a new file)")
			}
			return r.backup(cmd.Context(), out, output)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the backup file to write (must not exist)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// embeddedOnly refuses a PostgreSQL store for what, with the pg_dump hint.
func (r *runner) embeddedOnly(what string) error {
	if t := r.storeTarget(); t != "" && t != "sqlite" {
		return usagef("%s works on the embedded SQLite store of the data dir, and the store is %s: %s", what, redactURL(t), pgDumpHint)
	}
	return nil
}

func (r *runner) backup(ctx context.Context, out, output string) error {
	if err := r.embeddedOnly("backup"); err != nil {
		return err
	}
	path := filepath.Join(r.dataDir, sqlite.FileName)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("backup: no store in the data dir %s (%w)", r.dataDir, err)
	}
	out, err := filepath.Abs(out)
	if err != nil {
		return usagef("--out: %v", err)
	}
	if _, err := os.Lstat(out); err == nil {
		return usagef("--out %s exists: give a new file", out)
	}
	if fi, err := os.Stat(filepath.Dir(out)); err != nil || !fi.IsDir() {
		return usagef("--out %s: the directory %s does not exist: accepted is a new file in an existing directory, e.g. /backup/pgrelay-2025-01-31.db", out, filepath.Dir(out))
	}
	st, err := sqlite.OpenReadOnly(ctx, path)
	if err != nil {
		return err
	}
	defer st.Close()
	kr, err := r.openKeyring(ctx, st, false)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := app.VerifyMasterKey(ctx, st, kr); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := out + ".tmp-" + hex.EncodeToString(rnd[:])
	if err := st.VacuumInto(ctx, tmp); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	counts, err := checkSnapshot(ctx, tmp, kr)
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("backup: the snapshot does not pass its check, so it was removed: %w", err)
	}
	if err := os.Link(tmp, out); err != nil {
		// Link, unlike rename, never replaces a file created meanwhile.
		_ = os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	_ = os.Remove(tmp)
	if err := secret.SyncDir(filepath.Dir(out)); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	r.logger.Info("backup written", "file", out, "connections", counts.Connections)
	if output == "json" {
		return writeJSON(r.out(), struct {
			File   string       `json:"file"`
			Counts store.Counts `json:"counts"`
		}{out, counts})
	}
	fmt.Fprintf(r.out(), "Backed up %s to %s: %s.\n", path, out, describeCounts(counts))
	fmt.Fprintln(r.out(), "The backup opens, is intact, and its secrets open with the current master key.")
	fmt.Fprintf(r.out(), "The master key is not in the backup: keep %s apart from it (restoring needs it).\n", r.keyLocation().Describe())
	return nil
}

// checkSnapshot opens a store file read-only (intact, a schema this binary
// knows), checks that kr opens its secrets, and counts its records.
func checkSnapshot(ctx context.Context, path string, kr *secret.Keyring) (store.Counts, error) {
	snap, err := sqlite.OpenReadOnly(ctx, path)
	if err != nil {
		return store.Counts{}, err
	}
	defer snap.Close()
	if err := app.VerifyMasterKey(ctx, snap, kr); err != nil {
		return store.Counts{}, err
	}
	return snap.Counts(ctx)
}

func describeCounts(c store.Counts) string {
	return fmt.Sprintf("%s, %s, %s, %s (%s)", countNoun(c.Connections, "connection"), countNoun(c.Tokens, "API token"),
		countNoun(c.Jobs, "job"), countNoun(c.Runs, "run"), countNoun(c.RunLogLines, "log line"))
}

func (r *runner) restoreCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Restore a backup into an empty data dir",
		Long: `Restore a backup made by 'pgrelay backup' into the data dir, which must be empty
(or hold only master.key). The master key the backup was made with must be
available first: in the data dir's master.key, PGRELAY_MASTER_KEY or
PGRELAY_MASTER_KEY_FILE. The backup is checked (intact, a schema this pgrelay
knows, secrets open with the key) before anything is written; a backup of an
older pgrelay is upgraded as it is restored. Runs that were queued or running
when the backup was made are restored as failed; their database sessions,
which belong to the process that made the backup, are left alone.`,
		Example: "  install -m 600 /safe/master.key ~/.local/share/pgrelay/master.key\n  pgrelay restore /backup/pgrelay-2025-01-31.db",
		Args:    exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if r.remote != nil {
				return usagef("restore works on the data dir, not through a server (--server or %s)", serverEnv)
			}
			return r.restore(cmd.Context(), args[0], output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func (r *runner) restore(ctx context.Context, file, output string) error {
	if err := r.embeddedOnly("restore"); err != nil {
		return err
	}
	entries, err := os.ReadDir(r.dataDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore: %w", err)
	}
	var found []string
	for _, e := range entries {
		if e.Name() != secret.MasterKeyFile && e.Name() != keyLockFile {
			found = append(found, e.Name())
		}
	}
	if len(found) > 0 {
		sort.Strings(found)
		return usagef("restore: the data dir %s is not empty (it holds %s): restore only into an empty data dir (master.key may be there); "+
			"move this one aside or choose another with --data-dir", r.dataDir, strings.Join(found, ", "))
	}
	// The file first: without it no key helps.
	switch fi, err := os.Stat(file); {
	case errors.Is(err, fs.ErrNotExist):
		return usagef("restore %s: no such file: accepted is a backup file made by `pgrelay backup`", file)
	case err != nil:
		return fmt.Errorf("restore %s: %w", file, err)
	case fi.IsDir():
		return usagef("restore %s: is a directory: accepted is a backup file made by `pgrelay backup` (e.g. /backup/pgrelay-2025-01-31.db)", file)
	}
	key, err := r.keyLocation().Read()
	if err != nil {
		return fmt.Errorf("restore needs the master key the backup was made with (put it in %s, or set %s or %s): %w",
			filepath.Join(r.dataDir, secret.MasterKeyFile), secret.MasterKeyEnv, secret.MasterKeyFileEnv, err)
	}
	kr, err := secret.NewKeyring(key)
	if err != nil {
		return err
	}
	if _, err := checkSnapshot(ctx, file, kr); err != nil {
		// The file and the key are this command's input (exit 2).
		if errors.Is(err, app.ErrWrongMasterKey) {
			return usagef("restore: the backup's secrets are sealed with another master key than %s: use the key that was in use when the backup was made", r.keyLocation().Describe())
		}
		if errors.Is(err, sqlite.ErrNotAStore) {
			return usageError{fmt.Errorf("restore %s: %w: accepted is a backup file made by `pgrelay backup`", file, err)}
		}
		return fmt.Errorf("restore %s: %w", file, err)
	}
	if err := os.MkdirAll(r.dataDir, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	path := filepath.Join(r.dataDir, sqlite.FileName)
	if err := sqlite.CopyFile(file, path); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	st, err := sqlite.Open(ctx, path, sqlite.WithLogger(r.logger))
	if err != nil {
		return fmt.Errorf("restore: the backup was copied to %s but does not open: %w", path, err)
	}
	defer st.Close()
	// Runs in progress when the backup was made are not running here: a
	// server on this store would take them for lost, stop the database
	// sessions of the process that made the backup and run them again.
	unfinished, err := app.FailUnfinishedRuns(ctx, st, app.RestoredUnfinishedReason, time.Now())
	if err != nil {
		return fmt.Errorf("restore: the backup was copied to %s, but its unfinished runs could not be failed (remove it and restore again): %w", path, err)
	}
	counts, err := st.Counts(ctx)
	if err != nil {
		return err
	}
	r.logger.Info("backup restored", "file", file, "data_dir", r.dataDir, "unfinished_runs", unfinished)
	if output == "json" {
		return writeJSON(r.out(), struct {
			DataDir    string       `json:"data_dir"`
			Counts     store.Counts `json:"counts"`
			Unfinished int          `json:"unfinished_runs"`
		}{r.dataDir, counts, unfinished})
	}
	fmt.Fprintf(r.out(), "Restored %s into %s: %s.\n", file, r.dataDir, describeCounts(counts))
	if unfinished > 0 {
		fmt.Fprintf(r.out(), "%s queued or running when the backup was made; the restored store has them as failed (their database sessions were left alone).\n", wereRuns(unfinished))
	}
	return nil
}
