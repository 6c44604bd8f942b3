// Package postgres is pgrelay's shared store: PostgreSQL through a pgx v5
// pool, for `pgrelay serve --store postgres://...` where several processes
// use one store. It implements store.Store with the same semantics as the
// embedded SQLite store (package sqlite), checked by the shared suite in
// package storetest.
//
// Tables live in the connection's default schema (its search_path) and are
// named pgrelay_*, so that River's river_* tables can share the database.
// Open applies the embedded migrations under a session-level advisory lock,
// so processes that start together do not race; each migration runs in its
// own transaction and is recorded in pgrelay_schema_migrations.
//
// Times are stored as timestamptz (microsecond precision) and read back in
// UTC. Names and IDs sort bytewise (COLLATE "C"), as in SQLite, whatever
// the database's collation. Run log lines are bytea, so any bytes a process
// writes come back unchanged. Other strings must be valid UTF-8 without NUL
// characters, which PostgreSQL's text and jsonb cannot hold (SQLite takes
// them): the store returns PostgreSQL's error (SQLSTATE 22021 or 22P05) for
// them rather than altering them.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgrelay/pgrelay/internal/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// MigrationLockKey is the key of the session-level advisory lock
// (pg_advisory_lock) held while migrating: the bytes of "pgrelay".
const MigrationLockKey int64 = 0x706772656c6179

// DefaultConnectTimeout bounds each connection attempt when the connection
// string sets no connect_timeout.
const DefaultConnectTimeout = 10 * time.Second

// SQLSTATE codes the store classifies.
const (
	uniqueViolation = "23505"
)

// Store is the PostgreSQL store. It implements store.Store and is safe for
// concurrent use, also by several processes sharing the database.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

var _ store.Store = (*Store)(nil)

// Option configures Open.
type Option func(*options)

type options struct {
	log        *slog.Logger
	poolConfig func(*pgxpool.Config)
}

// WithLogger makes the store log to l (migrations applied, schema newer than
// this binary). The default discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// WithPoolConfig lets f adjust the pool configuration parsed from the
// connection string before the pool is created (pool size, hooks, a
// DialFunc).
func WithPoolConfig(f func(*pgxpool.Config)) Option {
	return func(o *options) { o.poolConfig = f }
}

// Open connects to the database named by connString (a postgres:// URL or
// keyword/value string as accepted by pgxpool.ParseConfig), checks that it
// answers and applies pending migrations. Errors never contain the
// connection string, which may hold a password. Open waits while another
// process migrates the same database; ctx bounds the whole of it.
func Open(ctx context.Context, connString string, opts ...Option) (*Store, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, parseError(connString, err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	if o.poolConfig != nil {
		o.poolConfig(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// pgx's connect errors name the user, database and host already.
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{pool: pool, log: o.log}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open store: database %s on %s as %s: %w",
			cfg.ConnConfig.Database, cfg.ConnConfig.Host, cfg.ConnConfig.User, err)
	}
	return s, nil
}

// parseError turns a connection string parse error into one that neither
// quotes the connection string nor lets callers reach it. pgx redacts
// passwords only on a best-effort basis: its *pgconn.ParseConfigError keeps
// the original string in a field, and the reason it gives may quote a
// fragment of malformed input (`missing "=" after "ret"` for
// "password=sec ret"). So the error is not wrapped, and pgx's reason is
// shown only when the string cannot hold a password.
func parseError(connString string, err error) error {
	const hint = "want postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...] or key=value pairs"
	var pe *pgconn.ParseConfigError
	switch {
	case mayHoldPassword(connString):
		return fmt.Errorf("open store: invalid connection string; details withheld since it may hold a password (%s)", hint)
	case !errors.As(err, &pe):
		return fmt.Errorf("open store: invalid connection string (%s)", hint)
	}
	// pgx's message is "cannot parse `<string>`: <reason>"; keep the reason.
	msg := pe.Error()
	i := strings.LastIndex(msg, "`: ")
	if !strings.HasPrefix(msg, "cannot parse `") || i < 0 {
		return fmt.Errorf("open store: invalid connection string (%s)", hint)
	}
	return fmt.Errorf("open store: invalid connection string: %s (%s)", msg[i+len("`: "):], hint)
}

// mayHoldPassword reports whether a connection string, possibly malformed,
// may contain a password: it mentions "password" (password=, sslpassword=,
// ?password=) or has a colon in what could be a URL's user information.
func mayHoldPassword(connString string) bool {
	if strings.Contains(strings.ToLower(connString), "password") {
		return true
	}
	rest := connString
	if _, after, ok := strings.Cut(connString, "://"); ok {
		rest = after
	}
	at := strings.LastIndex(rest, "@")
	return at >= 0 && strings.Contains(rest[:at], ":")
}

// Pool returns the store's connection pool, for River's pgxv5 driver and
// tests. The store owns it: Close closes it.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool, waiting for connections in use to be released.
// It always returns nil; the error is there for store.Store.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// migration is one embedded migration file.
type migration struct {
	version int64
	name    string
	body    string
}

// migrations returns the embedded migrations ordered by version.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	seen := map[int64]string{}
	for _, name := range names {
		base := path.Base(name)
		prefix, _, _ := strings.Cut(base, "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad migration name %s: want NNNN_description.sql", base)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version", other, base)
		}
		seen[v] = base
		body, err := migrationFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: base, body: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// migrate applies pending migrations on one connection that holds the
// migration advisory lock for the whole time.
func (s *Store) migrate(ctx context.Context) (err error) {
	all, err := migrations()
	if err != nil {
		return fmt.Errorf("migrate store: %w", err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate store: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, MigrationLockKey); err != nil {
		return fmt.Errorf("migrate store: take advisory lock %d: %w", MigrationLockKey, err)
	}
	defer func() {
		// The lock belongs to the session: if it cannot be released (ctx
		// cancelled, connection broken), end the session so that the
		// server releases it, rather than returning it to the pool.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, MigrationLockKey); uerr != nil {
			_ = conn.Conn().Close(uctx)
			if err == nil {
				err = fmt.Errorf("migrate store: release advisory lock %d: %w", MigrationLockKey, uerr)
			}
		}
	}()

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS pgrelay_schema_migrations (
		version    bigint PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate store: create pgrelay_schema_migrations: %w", err)
	}
	rows, err := conn.Query(ctx, `SELECT version FROM pgrelay_schema_migrations`)
	if err != nil {
		return fmt.Errorf("migrate store: read applied migrations: %w", err)
	}
	appliedList, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("migrate store: read applied migrations: %w", err)
	}
	applied := map[int64]bool{}
	var newest int64
	for _, v := range appliedList {
		applied[v] = true
		newest = max(newest, v)
	}
	if n := len(all); n > 0 && newest > all[n-1].version {
		s.log.Warn("store schema is newer than this pgrelay: upgrade pgrelay",
			"schema_version", newest, "known_version", all[n-1].version)
	}
	for _, m := range all {
		if applied[m.version] {
			continue
		}
		if err := applyMigration(ctx, conn.Conn(), m); err != nil {
			return err
		}
		s.log.Info("store migration applied", "version", m.version, "name", m.name)
	}
	return nil
}

// applyMigration runs one migration and records it, in one transaction.
func applyMigration(ctx context.Context, conn *pgx.Conn, m migration) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate store: apply %s: begin: %w", m.name, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// Without arguments pgx uses the simple protocol, which accepts several
	// statements in one string.
	if _, err := tx.Exec(ctx, m.body); err != nil {
		return fmt.Errorf("migrate store: apply %s: %w", m.name, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO pgrelay_schema_migrations (version, name) VALUES ($1, $2)`,
		m.version, m.name); err != nil {
		return fmt.Errorf("migrate store: record %s: %w", m.name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate store: commit %s: %w", m.name, err)
	}
	return nil
}

// markFull makes a write's error also store.ErrFull when the server could
// not write for lack of disk space (SQLSTATE 53100, disk_full).
func markFull(err *error) {
	var pe *pgconn.PgError
	if *err != nil && errors.As(*err, &pe) && pe.Code == "53100" {
		*err = fmt.Errorf("%w: %w", store.ErrFull, *err)
	}
}

// isUniqueViolation reports whether err is a unique_violation (SQLSTATE
// 23505), from a primary key, unique constraint or unique index.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == uniqueViolation
}

// nullTime is t for a nullable timestamptz column: nil (NULL) when zero.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// nullTimePtr is t for a nullable timestamptz column: nil (NULL) when nil.
func nullTimePtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return *t
}

// utc returns a scanned nullable time in UTC, the zero time for NULL.
func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// utcPtr returns a scanned nullable time in UTC, nil for NULL.
func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
