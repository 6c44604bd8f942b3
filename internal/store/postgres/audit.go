package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/store"
)

const auditColumns = `seq, ts, actor_kind, actor_id, actor_name, action, target_kind, target, outcome, error,
	client, detail, use_detail, prev_hash, hash`

// auditArgs returns an audit record's column values in auditColumns
// order.
func auditArgs(r *audit.Record) []any {
	return []any{r.Seq, r.Time, string(r.Actor.Kind), r.Actor.ID, r.Actor.Name, r.Action, r.TargetKind, r.Target,
		string(r.Outcome), r.Error, r.Client, r.Detail, r.Use, r.PrevHash, r.Hash}
}

// AppendAudit implements store.AuditStore. The chain's row is locked
// (FOR UPDATE) for the transaction, so the appends of every process
// sharing the store form one chain.
func (s *Store) AppendAudit(ctx context.Context, r *audit.Record) (rerr error) {
	defer markFull(&rerr)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("append audit record: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	head, err := auditChain(ctx, tx, " FOR UPDATE")
	if err != nil {
		return err
	}
	rec := *r
	audit.Seal(&rec, head)
	if err := writeAudit(ctx, tx, &rec); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE pgrelay_audit_chain SET head_seq = $1, head_hash = $2 WHERE id = 1`, rec.Seq, rec.Hash); err != nil {
		return fmt.Errorf("append audit record: move head: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("append audit record: commit: %w", err)
	}
	*r = rec
	return nil
}

func writeAudit(ctx context.Context, q querier, r *audit.Record) error {
	_, err := q.Exec(ctx, insertAudit, auditArgs(r)...)
	return insertError(fmt.Sprintf("audit record %d", r.Seq), err)
}

func auditChain(ctx context.Context, q querier, lock string) (audit.Chain, error) {
	var c audit.Chain
	err := q.QueryRow(ctx, `SELECT anchor_seq, anchor_hash, head_seq, head_hash FROM pgrelay_audit_chain WHERE id = 1`+lock).
		Scan(&c.AnchorSeq, &c.AnchorHash, &c.HeadSeq, &c.HeadHash)
	if err != nil {
		return audit.Chain{}, fmt.Errorf("read audit chain: %w", err)
	}
	return c, nil
}

// AuditChain implements store.AuditStore.
func (s *Store) AuditChain(ctx context.Context) (audit.Chain, error) {
	return auditChain(ctx, s.pool, "")
}

// AuditAfter implements store.AuditStore.
func (s *Store) AuditAfter(ctx context.Context, after int64, limit int) ([]audit.Record, error) {
	return queryAudit(ctx, s.pool, `SELECT `+auditColumns+` FROM pgrelay_audit WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
}

// ListAudit implements store.AuditStore.
func (s *Store) ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	f = f.Normalized()
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if !f.Since.IsZero() {
		where = append(where, "ts >= "+arg(f.Since))
	}
	if f.Actor != "" {
		p := arg(f.Actor)
		where = append(where, "(actor_name = "+p+" OR actor_id = "+p+")")
	}
	if kind, name := f.TargetParts(); name != "" || kind != "" {
		where = append(where, "target = "+arg(name))
		if kind != "" {
			where = append(where, "target_kind = "+arg(kind))
		}
	}
	if exact, prefix := f.ActionPattern(); exact != "" {
		where = append(where, "action = "+arg(exact))
	} else if prefix != "" {
		where = append(where, "left(action, "+arg(len(prefix))+") = "+arg(prefix))
	}
	if f.BeforeSeq > 0 {
		where = append(where, "seq < "+arg(f.BeforeSeq))
	}
	q := `SELECT ` + auditColumns + ` FROM pgrelay_audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq DESC LIMIT " + arg(f.Limit)
	return queryAudit(ctx, s.pool, q, args...)
}

func queryAudit(ctx context.Context, q querier, query string, args ...any) ([]audit.Record, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (audit.Record, error) {
		var r audit.Record
		var kind, outcome string
		var ts time.Time
		if err := row.Scan(&r.Seq, &ts, &kind, &r.Actor.ID, &r.Actor.Name, &r.Action, &r.TargetKind, &r.Target,
			&outcome, &r.Error, &r.Client, &r.Detail, &r.Use, &r.PrevHash, &r.Hash); err != nil {
			return r, err
		}
		r.Time, r.Actor.Kind, r.Outcome = ts.UTC(), audit.ActorKind(kind), audit.Outcome(outcome)
		return r, nil
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}

// PruneAudit implements store.AuditStore.
func (s *Store) PruneAudit(ctx context.Context, before time.Time, limit int) (n int, rerr error) {
	defer markFull(&rerr)
	before = before.Truncate(time.Microsecond) // the precision of stored times
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune audit log: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := auditChain(ctx, tx, " FOR UPDATE"); err != nil {
		return 0, err
	}
	rows, err := tx.Query(ctx, `SELECT seq, ts, hash FROM pgrelay_audit ORDER BY seq LIMIT $1`, limit)
	if err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	type entry struct {
		seq  int64
		ts   time.Time
		hash string
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (entry, error) {
		var e entry
		err := row.Scan(&e.seq, &e.ts, &e.hash)
		return e, err
	})
	if err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	var last entry
	for _, e := range entries {
		if !e.ts.Before(before) {
			break
		}
		last = e
		n++
	}
	if n == 0 {
		return 0, nil
	}
	if _, err := tx.Exec(ctx, `DELETE FROM pgrelay_audit WHERE seq <= $1`, last.seq); err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE pgrelay_audit_chain SET anchor_seq = $1, anchor_hash = $2 WHERE id = 1`, last.seq, last.hash); err != nil {
		return 0, fmt.Errorf("prune audit log: move anchor: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("prune audit log: commit: %w", err)
	}
	return n, nil
}

func exportAudit(ctx context.Context, q querier, w store.RecordWriter) error {
	c, err := auditChain(ctx, q, "")
	if err != nil {
		return err
	}
	if err := w.CopyAuditChain(ctx, c); err != nil {
		return err
	}
	var after int64
	for {
		recs, err := queryAudit(ctx, q, `SELECT `+auditColumns+` FROM pgrelay_audit WHERE seq > $1 ORDER BY seq LIMIT $2`, after, exportPage)
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			if err := w.CopyAuditRecords(ctx, recs); err != nil {
				return err
			}
			after = recs[len(recs)-1].Seq
		}
		if len(recs) < exportPage {
			return nil
		}
	}
}

func (w *writer) CopyAuditChain(ctx context.Context, c audit.Chain) error {
	if _, err := w.tx.Exec(ctx, `UPDATE pgrelay_audit_chain SET anchor_seq = $1, anchor_hash = $2, head_seq = $3, head_hash = $4 WHERE id = 1`,
		c.AnchorSeq, c.AnchorHash, c.HeadSeq, c.HeadHash); err != nil {
		return fmt.Errorf("copy audit chain: %w", err)
	}
	return nil
}

func (w *writer) CopyAuditRecords(ctx context.Context, recs []audit.Record) error {
	for i := range recs {
		if err := writeAudit(ctx, w.tx, &recs[i]); err != nil {
			return err
		}
	}
	return nil
}
