// Package store is the persistence seam of pgrelay: the records it keeps
// (connections, tokens, web sessions, jobs and runs, the audit log,
// connection checks) and the Store interface that each backend (sqlite,
// postgres) implements.
//
// Records hold secrets only in sealed form (see package secret); the store
// never sees a plain password or private key.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// Errors every backend returns (possibly wrapped).
var (
	// ErrNotFound means no record has that name.
	ErrNotFound = errors.New("not found")
	// ErrExists means a record with that name already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict means the record changed since it was read.
	ErrConflict = errors.New("changed by someone else since it was read; read it again and retry")
	// ErrFull means a write failed because the store has no space left
	// (its disk is full); reads keep working, and writes work again once
	// space is freed.
	ErrFull = errors.New("the store could not be written: no space left on its disk; free space where the store lives and retry")
)

// Connection is a saved connection. Spec.Password is always empty here: the
// password lives sealed in SealedPassword.
type Connection struct {
	// ID is a random identifier that never changes; sealed values are bound
	// to it.
	ID   string
	Spec connection.Spec
	// SealedPassword is the database password sealed by the keyring (empty
	// when there is no password).
	SealedPassword []byte
	// SSHPublicKey is the tunnel's public key in authorized_keys format
	// (without comment); empty without a tunnel.
	SSHPublicKey string
	// SealedPrivateKey is the tunnel's private key (OpenSSH PEM), sealed.
	SealedPrivateKey []byte
	// SealedAuthSecret is the secret of the connection's credential
	// source, sealed: the Lakebase OAuth client secret or the AlloyDB
	// service-account key (empty for other auth kinds).
	SealedAuthSecret []byte
	// PreviousPublicKey is the public key replaced by the last rotation, so
	// that it can be shown for removal from the bastion.
	PreviousPublicKey string
	// HostKeys are the bastion host keys pinned for HostKeysAddr, in
	// authorized_keys format.
	HostKeys []string
	// HostKeysAddr is the bastion host:port the pins belong to.
	HostKeysAddr string
	// PendingHostKey is a host key the bastion presented that is not pinned
	// (a change to approve), in authorized_keys format; empty when none.
	PendingHostKey string
	// PendingHostKeySeen is when PendingHostKey was presented.
	PendingHostKeySeen time.Time
	CreatedAt          time.Time
	UpdatedAt          time.Time
	// Version increases with each update; UpdateConnection refuses a
	// record whose Version is not the stored one (ErrConflict).
	Version int64

	// KeyUsedAt is when an SSH login with the connection's key last
	// succeeded (zero until one did), and KeyUsedFor the key and bastion
	// it succeeded with ("SHA256:... user@host:port"); KeyUsedAt tells
	// about the current key and bastion only while KeyUsedFor names them.
	// MarkKeyUsed sets both; UpdateConnection leaves them as stored.
	KeyUsedAt  time.Time
	KeyUsedFor string

	// HopHostKeys are the host keys pinned, and a key waiting for
	// approval, for the SSH hops after the first, each with the address
	// it belongs to (the first hop's are HostKeys, HostKeysAddr and
	// PendingHostKey). See hops.go.
	HopHostKeys []HopHostKeys
	// PendingPublicKey is the new key pair of a rotation with two live
	// keys (authorized_keys format, without comment): offered before the
	// current key until it has logged in to every hop, then it replaces
	// SSHPublicKey. Empty when no rotation is under way.
	PendingPublicKey string
	// SealedPendingPrivateKey is PendingPublicKey's private key, sealed.
	SealedPendingPrivateKey []byte
	// KeyRotation records the times of the last rotation.
	KeyRotation KeyRotation
	// HopKeys are the key pairs of the hops that have their own
	// (connection.Hop.OwnKey), by hop identity; see hops.go.
	HopKeys []HopKey
}

// Store keeps pgrelay's records. Implementations are safe for concurrent use.
type Store interface {
	// CreateConnection saves a new connection; ErrExists if the name is taken.
	CreateConnection(ctx context.Context, c *Connection) error
	// GetConnection returns the connection with that name, or ErrNotFound.
	GetConnection(ctx context.Context, name string) (*Connection, error)
	// ListConnections returns every connection ordered by name.
	ListConnections(ctx context.Context) ([]*Connection, error)
	// UpdateConnection replaces the stored connection whose ID and Version
	// match c, and increments c.Version; ErrConflict when the version
	// differs, ErrNotFound when it is gone.
	UpdateConnection(ctx context.Context, c *Connection) error
	// DeleteConnection removes the connection; ErrNotFound if absent.
	DeleteConnection(ctx context.Context, name string) error
	// MarkKeyUsed records that an SSH login with the key of the connection
	// with that ID succeeded at the given time, for usedFor (see
	// Connection.KeyUsedFor). It changes neither Version nor UpdatedAt,
	// so it never makes an edit conflict; ErrNotFound if absent.
	MarkKeyUsed(ctx context.Context, id, usedFor string, at time.Time) error
	TokenStore
	SessionStore
	JobStore
	RunStore
	BackendStore
	MetaStore
	AuditStore
	HealthStore
	TransferStore
	SecretsStore
	// Close releases the store's resources.
	Close() error
}

// Token is an API token. Only the SHA-256 hash of the token is stored.
type Token struct {
	ID        string
	Name      string
	Role      string
	Hash      string
	CreatedAt time.Time
	// LastUsedAt is updated at most once a minute.
	LastUsedAt time.Time
	// RevokedAt is set when the token is revoked; zero while valid.
	RevokedAt time.Time
}

// TokenStore keeps API tokens.
type TokenStore interface {
	// CreateToken saves a new token; ErrExists if the name is taken by a
	// token that is not revoked.
	CreateToken(ctx context.Context, t *Token) error
	// TokenByHash returns the token with that hash (revoked or not), or
	// ErrNotFound.
	TokenByHash(ctx context.Context, hash string) (*Token, error)
	// GetToken returns the token with that ID, or ErrNotFound.
	GetToken(ctx context.Context, id string) (*Token, error)
	// ListTokens returns every token, oldest first.
	ListTokens(ctx context.Context) ([]*Token, error)
	// RevokeToken marks the token revoked at the given time; ErrNotFound
	// if absent. Revoking twice keeps the first time.
	RevokeToken(ctx context.Context, id string, at time.Time) error
	// TouchToken records that the token was used at the given time.
	TouchToken(ctx context.Context, id string, at time.Time) error
	// CountActiveTokens counts tokens that are not revoked.
	CountActiveTokens(ctx context.Context) (int, error)
}

// Session is a sign-in of the web UI: its random ID is what the signed
// session cookie names. Signing out deletes it, so a copy of the cookie
// kept after that is refused; revoking its token ends it too.
type Session struct {
	ID      string
	TokenID string
	// CreatedAt is when the user signed in.
	CreatedAt time.Time
	// ExpiresAt is when the session ends on its own.
	ExpiresAt time.Time
}

// SessionStore keeps the web UI's sessions.
type SessionStore interface {
	// CreateSession saves a new session; ErrExists if the ID is taken,
	// ErrNotFound if its token does not exist.
	CreateSession(ctx context.Context, s *Session) error
	// GetSession returns the session with that ID (expired or not), or
	// ErrNotFound.
	GetSession(ctx context.Context, id string) (*Session, error)
	// DeleteSession ends the session; ErrNotFound if absent.
	DeleteSession(ctx context.Context, id string) error
	// DeleteExpiredSessions removes the sessions that expired at or
	// before now and returns how many.
	DeleteExpiredSessions(ctx context.Context, now time.Time) (int, error)
}

// JobStore keeps job definitions.
type JobStore interface {
	// PutJob creates the job or replaces the one with the same name; it
	// reports whether it was created.
	PutJob(ctx context.Context, j *jobs.Job, now time.Time) (created bool, err error)
	// CreateJob saves a new job; ErrExists if the name is taken.
	CreateJob(ctx context.Context, j *jobs.Job, now time.Time) error
	// GetJob returns the job with that name, or ErrNotFound.
	GetJob(ctx context.Context, name string) (*JobRecord, error)
	// ListJobs returns every job ordered by name.
	ListJobs(ctx context.Context) ([]*JobRecord, error)
	// DeleteJob removes the job (its runs stay); ErrNotFound if absent.
	DeleteJob(ctx context.Context, name string) error
}

// JobRecord is a stored job.
type JobRecord struct {
	Job       jobs.Job
	CreatedAt time.Time
	UpdatedAt time.Time
}

// RunFilter selects runs.
//
// Runs are listed in one order, newest first: by QueuedAt descending and,
// among runs queued at the same instant, by ID descending (bytewise). The
// order is total, so paging with Before lists each run exactly once.
type RunFilter struct {
	// Job restricts to one job's runs when set.
	Job string
	// Statuses restricts to these statuses when set.
	Statuses []jobs.Status
	// Before, when set, is the ID of a run: only the runs after it in the
	// list's order (queued before it, or at the same instant with a
	// smaller ID) are listed, whatever the run's job and status. The run
	// must exist: ListRuns returns an error wrapping ErrNotFound when no
	// run has that ID.
	Before string
	// Limit caps the result (newest first); 0 means 100.
	Limit int
}

// RunStore keeps runs and their logs.
type RunStore interface {
	// CreateRun saves a new run (status queued).
	CreateRun(ctx context.Context, r *jobs.Run) error
	// CreateRunWith saves a new run as CreateRun does, in a transaction
	// in which it then calls with: the run is saved only if with returns
	// nil, and what with wrote through tx only with the run (the job
	// queue inserts the run's River job). tx is the backend's transaction
	// on the store's database: a pgx.Tx (postgres) or a *sql.Tx (sqlite).
	// An error of with is returned as it is, the transaction rolled back;
	// a nil with saves the run alone.
	CreateRunWith(ctx context.Context, r *jobs.Run, with func(ctx context.Context, tx any) error) error
	// GetRun returns the run, or ErrNotFound.
	GetRun(ctx context.Context, id string) (*jobs.Run, error)
	// ListRuns returns runs newest first, in the order RunFilter
	// describes; an error wrapping ErrNotFound when f.Before names no run.
	ListRuns(ctx context.Context, f RunFilter) ([]*jobs.Run, error)
	// UpdateRun replaces the run whose ID and Version match r and
	// increments r.Version; ErrConflict when the version differs.
	UpdateRun(ctx context.Context, r *jobs.Run) error
	// AppendRunLog appends lines to the run's log, assigning their Seq.
	AppendRunLog(ctx context.Context, runID string, lines []jobs.LogLine) error
	// RunLog returns up to limit lines with Seq > afterSeq, in order.
	RunLog(ctx context.Context, runID string, afterSeq int64, limit int) ([]jobs.LogLine, error)
	// UpdateRunLogText replaces the text of the run's log line seq (the
	// truncation marker, once the run has ended); ErrNotFound if there is
	// no such line.
	UpdateRunLogText(ctx context.Context, runID string, seq int64, text string) error
	// DeleteRunsEndedBefore deletes up to limit runs that ended (succeeded,
	// failed or cancelled) before the given time, oldest first, with their
	// logs and steps, and returns how many it deleted. Runs that have not
	// ended are never deleted. Several processes may call it at once.
	DeleteRunsEndedBefore(ctx context.Context, before time.Time, limit int) (int, error)
}

// BackendStore keeps the PostgreSQL backends each run opened, and what
// was done to stop them when the run ended. Both go with their run when it
// is deleted.
type BackendStore interface {
	// AddRunBackend records a backend the run opened.
	AddRunBackend(ctx context.Context, runID string, b jobs.Backend) error
	// RunBackends returns the run's backends in the order they were
	// opened.
	RunBackends(ctx context.Context, runID string) ([]jobs.Backend, error)
	// PutRunCleanup saves c as the run's cleanup unless the saved one is
	// to stand, and reports whether c was saved. Records are ordered by
	// the run's attempt they are about (Cleanup.RunAttempt; 0, not known,
	// counts as any attempt): a newer attempt's record replaces an older
	// one's, and is never replaced by it; within one attempt a record
	// replaces only a pending one, so that a final outcome (done, failed)
	// is never replaced by a late pending record, nor by another outcome
	// of that attempt (the first one saved stands), except that done
	// replaces failed: a process confirmed that nothing runs where another
	// gave up. The test and the write are one statement: two processes
	// writing at once cannot both win.
	PutRunCleanup(ctx context.Context, runID string, c *jobs.Cleanup) (bool, error)
	// UpdateRunCleanup is UpdateRun and PutRunCleanup of c (for r.ID) in
	// one transaction: neither is saved without the other, and a reader
	// never sees the run's new state without c. c is saved on
	// PutRunCleanup's terms: where the saved cleanup stands, the run's
	// update is saved alone. A nil c is UpdateRun.
	UpdateRunCleanup(ctx context.Context, r *jobs.Run, c *jobs.Cleanup) error
	// RunCleanup returns the run's cleanup outcome, or nil when there was
	// none.
	RunCleanup(ctx context.Context, runID string) (*jobs.Cleanup, error)
}

// MetaStore keeps small named values about the store itself.
type MetaStore interface {
	// PutMetaIfAbsent stores value under key unless the key exists, and
	// returns the value stored under key afterwards (the existing one, or
	// value).
	PutMetaIfAbsent(ctx context.Context, key string, value []byte) ([]byte, error)
}
