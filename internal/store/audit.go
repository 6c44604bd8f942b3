package store

import (
	"context"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
)

// AuditStore keeps the audit log: append-only and hash-chained (see
// package audit). Records are never updated; retention deletes the oldest
// and moves the chain's anchor in the same transaction.
type AuditStore interface {
	// AppendAudit seals r after the chain's head (audit.Seal: its Seq,
	// PrevHash and Hash) and saves it, in one transaction that also moves
	// the head; appends are serialised, across processes sharing the
	// store too.
	AppendAudit(ctx context.Context, r *audit.Record) error
	// ListAudit returns the records f selects, newest first.
	ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error)
	// AuditChain returns the chain's anchor and head.
	AuditChain(ctx context.Context) (audit.Chain, error)
	// AuditAfter returns up to limit records with Seq > after, in
	// sequence order.
	AuditAfter(ctx context.Context, after int64, limit int) ([]audit.Record, error)
	// PruneAudit deletes up to limit of the oldest records, as long as
	// they are older than before, and makes the last one deleted the
	// chain's anchor. It returns how many it deleted.
	PruneAudit(ctx context.Context, before time.Time, limit int) (int, error)
}
