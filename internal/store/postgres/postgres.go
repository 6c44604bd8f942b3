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
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgrelay/pgrelay/internal/sockio"
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
	// allowDestructive lets destructive migrations run on a store that
	// holds data (the operator made a backup).
	allowDestructive bool
	// migrations replaces the embedded migrations (tests).
	migrations []store.Migration
	// noMigrate opens without migrating; a store whose schema is not this
	// binary's is refused.
	noMigrate bool
}

// WithLogger makes the store log to l (upgrades of the schema, migrations
// applied). The default discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// WithPoolConfig lets f adjust the pool configuration parsed from the
// connection string before the pool is created (pool size, hooks, a
// DialFunc).
func WithPoolConfig(f func(*pgxpool.Config)) Option {
	return func(o *options) { o.poolConfig = f }
}

// AllowDestructiveMigrations lets Open apply migrations that remove or
// rewrite data (store.Migration.Destructive) to a store that holds data:
// the operator confirms that they backed it up. Without it, Open refuses
// them with a *store.DestructiveMigrationError.
func AllowDestructiveMigrations() Option {
	return func(o *options) { o.allowDestructive = true }
}

// WithoutMigrations makes Open leave the schema as it is (for reading a
// store that must stay untouched, such as the source of a copy): a store
// whose schema is older or newer than this binary's is refused.
func WithoutMigrations() Option {
	return func(o *options) { o.noMigrate = true }
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
	// The store and the job queue wait on it for every run: direct reads
	// and writes on its TCP sockets (internal/sockio).
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return sockio.Wrap(c), nil
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
	if err := s.migrate(ctx, o); err != nil {
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
	const hint = "want postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...]"
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
