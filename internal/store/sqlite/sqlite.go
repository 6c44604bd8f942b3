// Package sqlite is pgrelay's embedded store: one SQLite file (pure Go,
// modernc.org/sqlite, no cgo) in the data directory, in WAL mode, with
// embedded migrations.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/pgrelay/pgrelay/internal/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Option configures Open.
type Option func(*options)

type options struct {
	log *slog.Logger
	// migrations replaces the embedded migrations (tests).
	migrations []store.Migration
}

// WithLogger makes the store log to l (migrations applied, snapshots taken
// before destructive ones). The default discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// FileName is the name of the database file in the data directory.
const FileName = "pgrelay.db"

// MaxOpenConns is how many connections to the database file a Store keeps
// at most (each holds two file descriptors: the database and its WAL).
const MaxOpenConns = 8

// Store is the SQLite store. It implements store.Store.
type Store struct {
	db   *sql.DB
	path string
	dsn  string
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store at path and migrates it (see
// migrate.go). The file is created with mode 0600; SQLite gives its WAL the
// same mode.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: create directory: %w%s", err, writableHint(err, dir))
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store: %w%s", err, writableHint(err, dir))
	}
	_ = f.Close()
	s, err := openDB(path)
	if err != nil {
		return nil, err
	}
	if err := s.migrate(ctx, o); err != nil {
		_ = s.db.Close()
		if errors.Is(err, store.ErrFull) {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
		return nil, err
	}
	return s, nil
}

// dirWritable returns why this process may not create files in dir (nil
// when it may): a read-only file system, or permissions.
func dirWritable(dir string) error {
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return &fs.PathError{Op: "write to directory", Path: dir, Err: err}
	}
	return nil
}

// writableHint says what to do when err is a read-only file system or a
// permission denied in the store's directory dir.
func writableHint(err error, dir string) string {
	if !errors.Is(err, syscall.EROFS) && !errors.Is(err, fs.ErrPermission) {
		return ""
	}
	return fmt.Sprintf(" (the store's directory %s must be writable by this user: SQLite writes %s and its -wal and -shm files there, "+
		"also to read it; make it writable, e.g. remount its file system read-write or chown/chmod it, and retry)", dir, FileName)
}

// openDB opens the database file at path without migrating it.
func openDB(path string) (*Store, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	dsn := "file:" + path + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// A bounded pool of connections kept open. Unbounded, a burst of
	// concurrent requests opened one connection each, and SQLite keeps the
	// database file descriptor of a closed connection open while another
	// connection holds a lock on the file: the process was left with one
	// descriptor per concurrent request of the burst. SQLite runs one
	// writer at a time anyway.
	db.SetMaxOpenConns(MaxOpenConns)
	db.SetMaxIdleConns(MaxOpenConns)
	return &Store{db: db, path: path, dsn: dsn}, nil
}

// DB returns the underlying database handle (for River and tests).
func (s *Store) DB() *sql.DB { return s.db }

// OpenQueueDB opens a second handle on the same database file for the job
// queue (River), limited to one connection as River's SQLite driver
// recommends. The caller closes it.
func (s *Store) OpenQueueDB() (*sql.DB, error) {
	db, err := sql.Open("sqlite", s.dsn)
	if err != nil {
		return nil, fmt.Errorf("open queue database: %w", err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// Path returns the database file path.
func (s *Store) Path() string { return s.path }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	// Fixed width, so that text order is time order.
	return t.UTC().Format(timeFormat)
}

// timeFormat is RFC 3339 in UTC with nine fractional digits always present.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

// markFull makes a write's error also store.ErrFull when SQLite could not
// write for lack of space: SQLITE_FULL (the disk, or the page limit), or
// SQLITE_IOERR_SHMSIZE (the -shm file beside the store could not be
// created or grown, which on a full disk stops even reads of a store no
// process has open).
func markFull(err *error) {
	if isFull(*err) {
		*err = fmt.Errorf("%w: %w", store.ErrFull, *err)
	}
}

func isFull(err error) bool {
	var se *sqlite.Error
	return err != nil && errors.As(err, &se) &&
		(se.Code()&0xff == sqlite3.SQLITE_FULL || se.Code() == sqlite3.SQLITE_IOERR_SHMSIZE)
}

func isForeignKeyViolation(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

const connectionColumns = `id, name, spec, sealed_password, ssh_public_key, sealed_private_key,
	previous_public_key, host_keys, host_keys_addr, pending_host_key, pending_host_key_seen,
	created_at, updated_at, version, key_used_at, key_used_for, sealed_auth_secret,
	hop_host_keys, pending_public_key, sealed_pending_private_key, key_rotation, hop_keys`

type connRow struct {
	specJSON, hostKeysJSON []byte
	created, updated, seen string
	keyUsed                string
	hopHostKeys            string
	keyRotation            string
	hopKeys                string
}

func connArgs(c *store.Connection) ([]any, error) {
	spec := c.Spec.Clone()
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode spec: %w", err)
	}
	hk := c.HostKeys
	if hk == nil {
		hk = []string{}
	}
	hkJSON, err := json.Marshal(hk)
	if err != nil {
		return nil, fmt.Errorf("encode host keys: %w", err)
	}
	hops, rotation, err := sshStateJSON(c)
	if err != nil {
		return nil, err
	}
	hopKeys, err := hopKeysJSON(c.HopKeys)
	if err != nil {
		return nil, err
	}
	return []any{c.ID, c.Spec.Name, string(specJSON), c.SealedPassword, c.SSHPublicKey, c.SealedPrivateKey,
		c.PreviousPublicKey, string(hkJSON), c.HostKeysAddr, c.PendingHostKey, formatTime(c.PendingHostKeySeen),
		formatTime(c.CreatedAt), formatTime(c.UpdatedAt), c.Version, formatTime(c.KeyUsedAt), c.KeyUsedFor,
		c.SealedAuthSecret, hops, c.PendingPublicKey, c.SealedPendingPrivateKey, rotation, hopKeys}, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanConnection(sc scanner) (*store.Connection, error) {
	var c store.Connection
	var r connRow
	var name string
	if err := sc.Scan(&c.ID, &name, &r.specJSON, &c.SealedPassword, &c.SSHPublicKey, &c.SealedPrivateKey,
		&c.PreviousPublicKey, &r.hostKeysJSON, &c.HostKeysAddr, &c.PendingHostKey, &r.seen,
		&r.created, &r.updated, &c.Version, &r.keyUsed, &c.KeyUsedFor, &c.SealedAuthSecret,
		&r.hopHostKeys, &c.PendingPublicKey, &c.SealedPendingPrivateKey, &r.keyRotation, &r.hopKeys); err != nil {
		return nil, err
	}
	if err := decodeHopKeys(&c, r.hopKeys); err != nil {
		return nil, fmt.Errorf("decode connection %s: %w", name, err)
	}
	if err := decodeSSHState(&c, r.hopHostKeys, r.keyRotation); err != nil {
		return nil, fmt.Errorf("decode connection %s: %w", name, err)
	}
	if err := json.Unmarshal(r.specJSON, &c.Spec); err != nil {
		return nil, fmt.Errorf("decode connection %s: %w", name, err)
	}
	if err := json.Unmarshal(r.hostKeysJSON, &c.HostKeys); err != nil {
		return nil, fmt.Errorf("decode host keys of %s: %w", name, err)
	}
	var err error
	if c.PendingHostKeySeen, err = parseTime(r.seen); err != nil {
		return nil, fmt.Errorf("decode connection %s: %w", name, err)
	}
	if c.CreatedAt, err = parseTime(r.created); err != nil {
		return nil, fmt.Errorf("decode connection %s: %w", name, err)
	}
	if c.UpdatedAt, err = parseTime(r.updated); err != nil {
		return nil, fmt.Errorf("decode connection %s: %w", name, err)
	}
	if c.KeyUsedAt, err = parseTime(r.keyUsed); err != nil {
		return nil, fmt.Errorf("decode connection %s: %w", name, err)
	}
	return &c, nil
}

// CreateConnection implements store.Store.
func (s *Store) CreateConnection(ctx context.Context, c *store.Connection) (rerr error) {
	defer markFull(&rerr)
	return createConnection(ctx, s.db, c)
}

func createConnection(ctx context.Context, q querier, c *store.Connection) error {
	if c.Version == 0 {
		c.Version = 1
	}
	args, err := connArgs(c)
	if err != nil {
		return fmt.Errorf("create connection %s: %w", c.Spec.Name, err)
	}
	_, err = q.ExecContext(ctx, insertConnection, args...)
	if isUniqueViolation(err) {
		return fmt.Errorf("create connection %s: %w", c.Spec.Name, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create connection %s: %w", c.Spec.Name, err)
	}
	return nil
}

// GetConnection implements store.Store.
func (s *Store) GetConnection(ctx context.Context, name string) (*store.Connection, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+connectionColumns+` FROM connections WHERE name = ?`, name)
	c, err := scanConnection(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("connection %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get connection %s: %w", name, err)
	}
	return c, nil
}

// ListConnections implements store.Store.
func (s *Store) ListConnections(ctx context.Context) ([]*store.Connection, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+connectionColumns+` FROM connections ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	defer rows.Close()
	var out []*store.Connection
	for rows.Next() {
		c, err := scanConnection(rows)
		if err != nil {
			return nil, fmt.Errorf("list connections: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	return out, nil
}

// UpdateConnection implements store.Store.
func (s *Store) UpdateConnection(ctx context.Context, c *store.Connection) (rerr error) {
	defer markFull(&rerr)
	args, err := connArgs(c)
	if err != nil {
		return fmt.Errorf("update connection %s: %w", c.Spec.Name, err)
	}
	// args: id, name, spec, ..., created_at, updated_at, version
	res, err := s.db.ExecContext(ctx, `UPDATE connections SET name = ?, spec = ?, sealed_password = ?,
		ssh_public_key = ?, sealed_private_key = ?, previous_public_key = ?, host_keys = ?, host_keys_addr = ?,
		pending_host_key = ?, pending_host_key_seen = ?, updated_at = ?, sealed_auth_secret = ?,
		hop_host_keys = ?, pending_public_key = ?, sealed_pending_private_key = ?, key_rotation = ?,
		hop_keys = ?, version = version + 1
		WHERE id = ? AND version = ?`,
		args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9], args[10], args[12],
		args[16], args[17], args[18], args[19], args[20], args[21],
		c.ID, c.Version)
	if isUniqueViolation(err) {
		return fmt.Errorf("update connection %s: %w", c.Spec.Name, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("update connection %s: %w", c.Spec.Name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("update connection %s: %w", c.Spec.Name, err)
	}
	if n == 0 {
		var exists int
		if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM connections WHERE id = ?`, c.ID).Scan(&exists); err != nil {
			return fmt.Errorf("update connection %s: %w", c.Spec.Name, err)
		}
		if exists == 0 {
			return fmt.Errorf("update connection %s: %w", c.Spec.Name, store.ErrNotFound)
		}
		return fmt.Errorf("update connection %s: %w", c.Spec.Name, store.ErrConflict)
	}
	c.Version++
	return nil
}

// DeleteConnection implements store.Store.
func (s *Store) DeleteConnection(ctx context.Context, name string) (rerr error) {
	defer markFull(&rerr)
	res, err := s.db.ExecContext(ctx, `DELETE FROM connections WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete connection %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("delete connection %s: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("connection %s: %w", name, store.ErrNotFound)
	}
	return nil
}
