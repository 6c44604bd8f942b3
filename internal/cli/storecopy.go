package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// opsCommands are the commands that operate a store: copy, backup,
// restore, master key rotation, version, health check.
func (r *runner) opsCommands() []*cobra.Command {
	return []*cobra.Command{r.storeCommand(), r.backupCommand(), r.restoreCommand(), r.masterKeyCommand(), r.versionCommand(),
		r.healthcheckCommand()}
}

func (r *runner) storeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Move the store between the embedded SQLite file and a shared PostgreSQL database",
	}
	cmd.AddCommand(r.storeCopyCommand())
	return cmd
}

func (r *runner) storeCopyCommand() *cobra.Command {
	var from, to, output string
	var merge bool
	cmd := &cobra.Command{
		Use:   "copy --from SOURCE --to TARGET",
		Short: "Copy every record from one store to another (SQLite to PostgreSQL, or back)",
		Long: `Copy every record of a store into another one, in one transaction on the target:
connections with their sealed passwords and SSH key pairs (same public keys, so
nothing changes on bastions), pinned host keys, API tokens (their hashes), jobs,
runs and their logs. Serve the target with the same master key and everything
works at once: tokens, web UI sign-in, queries, tunnels, jobs.

SOURCE and TARGET are a data dir (its pgrelay.db), a SQLite file, or a
postgres:// URL. The source is only read: a SQLite source is read from a
snapshot (so 'pgrelay serve' may keep running on it); a PostgreSQL source must
be at this pgrelay's schema and should not be in use (the copy is refused if
it changes meanwhile). A target with records is refused unless --merge, which
adds the records to it and refuses any record it has already. Runs that were
queued or running are copied as failed. The counts are checked before the
copy commits, and reported.

The master key must open the source: PGRELAY_MASTER_KEY, PGRELAY_MASTER_KEY_FILE,
or master.key of the source data dir (else of --data-dir). It is not copied.`,
		Example: `  pgrelay store copy --from ~/.local/share/pgrelay --to postgres://pgrelay@db.internal/pgrelay
  pgrelay store copy --from postgres://pgrelay@db.internal/pgrelay --to /var/lib/pgrelay`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if r.remote != nil {
				return usagef("store copy works on stores, not through a server (--server or %s)", serverEnv)
			}
			if from == "" || to == "" {
				return usagef("store copy needs --from and --to: a data dir, a SQLite file or a postgres:// URL each")
			}
			return r.storeCopy(cmd.Context(), from, to, merge, output)
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "source: a data dir, a SQLite file (pgrelay.db) or a postgres:// URL")
	cmd.Flags().StringVar(&to, "to", "", "target: a data dir, a SQLite file or a postgres:// URL")
	cmd.Flags().BoolVar(&merge, "merge", false, "add the records to a target that has records already")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// storeEnd is one end of a copy: a SQLite file (with its data dir) or a
// PostgreSQL URL.
type storeEnd struct {
	// sqlite is the SQLite file; dataDir its directory.
	sqlite, dataDir string
	pg              string
}

func (e storeEnd) String() string {
	if e.pg != "" {
		return redactURL(e.pg)
	}
	return e.sqlite
}

// redactURL hides a URL's password, in its user info or its query.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "the PostgreSQL store"
	}
	q := u.Query()
	for _, k := range []string{"password", "sslpassword"} {
		if q.Has(k) {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}

// conninfoRE matches a libpq key=value connection string ("host=db
// dbname=pgrelay"): a keyword, then "=", before any path separator.
var conninfoRE = regexp.MustCompile(`^\s*[A-Za-z_]+\s*=`)

// parseStoreEnd reads --from or --to. A path that is a directory, or does
// not exist and does not end in .db, is a data dir.
func parseStoreEnd(flag, v string, mustExist bool) (storeEnd, error) {
	if isPostgresURL(v) {
		return storeEnd{pg: v}, nil
	}
	if strings.Contains(v, "://") {
		return storeEnd{}, usagef("%s %s: accepted are a data dir, a SQLite file or a postgres:// URL", flag, redactURL(v))
	}
	if conninfoRE.MatchString(v) {
		// Not a path: taken as one, it made a data dir named after the
		// string, password and all, and copied there instead of to
		// PostgreSQL. The value is not shown: it may hold a password.
		return storeEnd{}, usagef("%s: a key=value connection string (host=... dbname=...) is not accepted; "+
			"accepted are a data dir, a SQLite file or a postgres:// URL such as postgres://pgrelay@db.internal:5432/pgrelay "+
			"(the password may come from ~/.pgpass or PGPASSWORD)", flag)
	}
	abs, err := filepath.Abs(v)
	if err != nil {
		return storeEnd{}, usagef("%s: %v", flag, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case err == nil && fi.IsDir():
		return storeEnd{sqlite: filepath.Join(abs, sqlite.FileName), dataDir: abs}, nil
	case err == nil:
		return storeEnd{sqlite: abs, dataDir: filepath.Dir(abs)}, nil
	case !errors.Is(err, fs.ErrNotExist):
		return storeEnd{}, fmt.Errorf("%s: %w", flag, err)
	case mustExist:
		return storeEnd{}, usagef("%s %s: no such data dir or store file", flag, abs)
	case strings.HasSuffix(abs, ".db"):
		return storeEnd{sqlite: abs, dataDir: filepath.Dir(abs)}, nil
	}
	return storeEnd{sqlite: filepath.Join(abs, sqlite.FileName), dataDir: abs}, nil
}

func (r *runner) storeCopy(ctx context.Context, fromArg, toArg string, merge bool, output string) error {
	from, err := parseStoreEnd("--from", fromArg, true)
	if err != nil {
		return err
	}
	to, err := parseStoreEnd("--to", toArg, false)
	if err != nil {
		return err
	}
	if from.sqlite != "" {
		if _, err := os.Stat(from.sqlite); err != nil {
			return usagef("--from %s: no store there (%s)", fromArg, from.sqlite)
		}
	}
	if (from.pg != "" && from.pg == to.pg) || (from.sqlite != "" && from.sqlite == to.sqlite) {
		return usagef("--from and --to are the same store")
	}
	keyDir := r.dataDir
	if from.dataDir != "" {
		keyDir = from.dataDir
	}
	loc := secret.KeyLocation{Env: r.env.Getenv(secret.MasterKeyEnv), File: r.env.Getenv(secret.MasterKeyFileEnv), DataDir: keyDir}
	key, err := loc.Read()
	if err != nil {
		return fmt.Errorf("store copy needs the master key of the source: %w", err)
	}
	kr, err := secret.NewKeyring(key)
	if err != nil {
		return err
	}

	var src store.Store
	if from.sqlite != "" {
		tmp, err := os.MkdirTemp("", "pgrelay-copy-")
		if err != nil {
			return fmt.Errorf("store copy: %w", err)
		}
		defer os.RemoveAll(tmp)
		snap, err := sqlite.SnapshotStore(ctx, from.sqlite, tmp)
		if err != nil {
			return fmt.Errorf("read the source: %w", err)
		}
		src = snap
	} else {
		pg, err := postgres.Open(ctx, from.pg, postgres.WithLogger(r.logger), postgres.WithoutMigrations())
		if err != nil {
			return fmt.Errorf("read the source: %w", err)
		}
		src = pg
	}
	defer src.Close()
	// Before the target is made: a copy refused for the key left an
	// empty store behind.
	if err := app.VerifyMasterKey(ctx, src, kr); err != nil {
		return fmt.Errorf("store copy: source store: %w", err)
	}

	var dst store.Store
	if to.sqlite != "" {
		dst, err = sqlite.Open(ctx, to.sqlite, sqlite.WithLogger(r.logger))
	} else {
		dst, err = postgres.Open(ctx, to.pg, r.postgresOptions()...)
	}
	if err != nil {
		return fmt.Errorf("open the target: %w", confirmHint(err))
	}
	defer dst.Close()

	rep, err := app.CopyStore(ctx, src, dst, kr, app.CopyOptions{Merge: merge})
	if err != nil {
		if errors.Is(err, app.ErrTargetNotEmpty) {
			return usageError{err}
		}
		return fmt.Errorf("store copy: %w", err)
	}
	r.logger.Info("store copied", "from", from.String(), "to", to.String(), "connections", rep.Copied.Connections,
		"runs", rep.Copied.Runs)
	if output == "json" {
		return writeJSON(r.out(), struct {
			From string `json:"from"`
			To   string `json:"to"`
			*app.CopyReport
		}{from.String(), to.String(), rep})
	}
	fmt.Fprintf(r.out(), "Copied %s to %s in one transaction:\n\n", from, to)
	w := tabwriter.NewWriter(r.out(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "\tcopied\ttarget now holds")
	for _, row := range []struct {
		name      string
		copied, n int64
	}{{"connections", rep.Copied.Connections, rep.Target.Connections}, {"API tokens", rep.Copied.Tokens, rep.Target.Tokens},
		{"jobs", rep.Copied.Jobs, rep.Target.Jobs}, {"runs", rep.Copied.Runs, rep.Target.Runs},
		{"run log lines", rep.Copied.RunLogLines, rep.Target.RunLogLines},
		{"audit records", rep.Copied.AuditRecords, rep.Target.AuditRecords}} {
		fmt.Fprintf(w, "%s\t%d\t%d\n", row.name, row.copied, row.n)
	}
	_ = w.Flush()
	fmt.Fprintln(r.out(), "\nVerified: the counts match the source, and every secret opens with the master key.")
	if rep.AuditSkipped {
		fmt.Fprintln(r.out(), "The source's audit log was not copied: the target has an audit log of its own, and one hash chain cannot hold both. Keep the source's with `pgrelay audit export`.")
	}
	if rep.Unfinished > 0 {
		fmt.Fprintf(r.out(), "%s queued or running in the source; the target has them as failed.\n", wereRuns(rep.Unfinished))
	}
	target, keyEnv := "--data-dir "+to.dataDir, ""
	if to.pg != "" {
		target = "--store " + to.String()
		// Every process serving a shared store needs the key: name it,
		// as the data dir the command runs with may be another one.
		switch {
		case loc.Env != "":
			keyEnv = secret.MasterKeyEnv + "=... "
		case loc.File != "":
			keyEnv = secret.MasterKeyFileEnv + "=" + loc.File + " "
		default:
			keyEnv = secret.MasterKeyFileEnv + "=" + filepath.Join(keyDir, secret.MasterKeyFile) + " "
		}
	}
	fmt.Fprintf(r.out(), "Serve the target with the same master key (%s): %spgrelay %s serve\n", loc.Describe(), keyEnv, target)
	return nil
}
