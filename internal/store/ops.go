package store

import (
	"context"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// Counts is how many records of each kind a store holds.
type Counts struct {
	Connections int64 `json:"connections"`
	Tokens      int64 `json:"tokens"`
	Jobs        int64 `json:"jobs"`
	Runs        int64 `json:"runs"`
	RunLogLines int64 `json:"run_log_lines"`
	// AuditRecords counts the audit log's records.
	AuditRecords int64 `json:"audit_records"`
}

// Empty reports whether there are no records at all.
func (c Counts) Empty() bool { return c == Counts{} }

// Add returns the sum of c and o.
func (c Counts) Add(o Counts) Counts {
	return Counts{Connections: c.Connections + o.Connections, Tokens: c.Tokens + o.Tokens, Jobs: c.Jobs + o.Jobs,
		Runs: c.Runs + o.Runs, RunLogLines: c.RunLogLines + o.RunLogLines, AuditRecords: c.AuditRecords + o.AuditRecords}
}

// RecordWriter receives records copied into a store, as they were in the
// store they come from: IDs, versions, times and sealed values unchanged.
// Each method fails with ErrExists when the record (its ID or name) is
// already there.
type RecordWriter interface {
	// PutMeta stores value under key, replacing any value there.
	PutMeta(ctx context.Context, key string, value []byte) error
	CopyConnection(ctx context.Context, c *Connection) error
	CopyToken(ctx context.Context, t *Token) error
	CopyJob(ctx context.Context, j *JobRecord) error
	// CopyRun saves a run as it is (any status).
	CopyRun(ctx context.Context, r *jobs.Run) error
	// CopyRunLog saves log lines of a run copied before, keeping their Seq.
	CopyRunLog(ctx context.Context, runID string, lines []jobs.LogLine) error
	// CopyRunBackends saves the database sessions of a run copied before,
	// and its cleanup outcome (nil for none).
	CopyRunBackends(ctx context.Context, runID string, bs []jobs.Backend, c *jobs.Cleanup) error
	// CopyConnectionChecks saves the health entries of a connection
	// copied before (see HealthStore), oldest first.
	CopyConnectionChecks(ctx context.Context, connectionID string, cs []ConnectionCheck) error
	// CopyAuditChain saves the audit chain's anchor and head as they are.
	CopyAuditChain(ctx context.Context, c audit.Chain) error
	// CopyAuditRecords saves audit records as they are (sequence numbers
	// and hashes unchanged), so that the copy's chain verifies.
	CopyAuditRecords(ctx context.Context, recs []audit.Record) error
	// Counts counts the records in the store as the writer sees them
	// (with what it wrote, before it is committed).
	Counts(ctx context.Context) (Counts, error)
}

// TransferStore is the seam of moving every record from one store to
// another (`pgrelay store copy`), whatever the backends.
type TransferStore interface {
	// Counts counts the store's records.
	Counts(ctx context.Context) (Counts, error)
	// Export reads every record in one consistent snapshot and hands them
	// to w: meta values, connections, tokens, jobs, then each run followed
	// by its log lines (in batches, in Seq order), then the audit chain and
	// its records (in batches, in Seq order), then the connections' health
	// entries. Writers of the store
	// are not blocked meanwhile.
	Export(ctx context.Context, w RecordWriter) error
	// Import runs fill in one transaction on this store, with a writer
	// into it, and commits when fill returns nil; otherwise nothing is
	// written.
	Import(ctx context.Context, fill func(w RecordWriter) error) error
}

// SecretsTx is a transaction over the store's sealed values: every
// connection's password, private keys and auth secret, and the meta values (the master
// key check among them). Other writers of those values wait until it ends.
type SecretsTx interface {
	// ListConnections returns every connection.
	ListConnections(ctx context.Context) ([]*Connection, error)
	// CreateConnection saves a new connection like Store.CreateConnection,
	// in the transaction: a process checks there that the store is still
	// sealed with its key before it saves what it sealed.
	CreateConnection(ctx context.Context, c *Connection) error
	// SetConnectionSecrets replaces a connection's sealed password and
	// private key and increments its version, so that an update prepared
	// from the record as it was before fails with ErrConflict.
	SetConnectionSecrets(ctx context.Context, id string, sealedPassword, sealedPrivateKey []byte) error
	// SetConnectionAuthSecret replaces a connection's sealed auth secret
	// and increments its version, like SetConnectionSecrets.
	SetConnectionAuthSecret(ctx context.Context, id string, sealed []byte) error
	// SetConnectionPendingKey replaces a connection's sealed pending
	// private key (of a key rotation) and increments its version.
	SetConnectionPendingKey(ctx context.Context, id string, sealed []byte) error
	// SetConnectionHopKeys replaces a connection's hop key pairs (their
	// private keys sealed again) and increments its version.
	SetConnectionHopKeys(ctx context.Context, id string, keys []HopKey) error
	// GetMeta returns the value stored under key, or ErrNotFound.
	GetMeta(ctx context.Context, key string) ([]byte, error)
	// PutMeta stores value under key, replacing any value there.
	PutMeta(ctx context.Context, key string, value []byte) error
}

// SecretsStore is the seam of master key rotation.
type SecretsStore interface {
	// GetMeta returns the value stored under key, or ErrNotFound.
	GetMeta(ctx context.Context, key string) ([]byte, error)
	// WithSecrets runs fn in one transaction over the sealed values and
	// commits when fn returns nil; otherwise nothing is written.
	WithSecrets(ctx context.Context, fn func(tx SecretsTx) error) error
}
