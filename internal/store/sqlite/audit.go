package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/store"
)

const auditColumns = `seq, ts, actor_kind, actor_id, actor_name, action, target_kind, target, outcome, error,
	client, detail, use_detail, prev_hash, hash`

// auditArgs returns an audit record's column values in auditColumns
// order.
func auditArgs(r *audit.Record) ([]any, error) {
	use := ""
	if r.Use != nil {
		b, err := json.Marshal(r.Use)
		if err != nil {
			return nil, err
		}
		use = string(b)
	}
	return []any{r.Seq, formatTime(r.Time), string(r.Actor.Kind), r.Actor.ID, r.Actor.Name, r.Action, r.TargetKind, r.Target,
		string(r.Outcome), r.Error, r.Client, r.Detail, use, r.PrevHash, r.Hash}, nil
}

// AppendAudit implements store.AuditStore. The transaction is immediate:
// it holds the database's write lock, so appends form one chain.
func (s *Store) AppendAudit(ctx context.Context, r *audit.Record) (rerr error) {
	defer markFull(&rerr)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append audit record: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	head, err := auditChain(ctx, tx)
	if err != nil {
		return err
	}
	rec := *r
	audit.Seal(&rec, head)
	if err := writeAudit(ctx, tx, &rec); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE audit_chain SET head_seq = ?, head_hash = ? WHERE id = 1`, rec.Seq, rec.Hash); err != nil {
		return fmt.Errorf("append audit record: move head: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("append audit record: commit: %w", err)
	}
	*r = rec
	return nil
}

func writeAudit(ctx context.Context, q querier, r *audit.Record) error {
	args, err := auditArgs(r)
	if err != nil {
		return fmt.Errorf("audit record %d: %w", r.Seq, err)
	}
	_, err = q.ExecContext(ctx, insertAudit, args...)
	return insertError(fmt.Sprintf("audit record %d", r.Seq), err)
}

func auditChain(ctx context.Context, q querier) (audit.Chain, error) {
	var c audit.Chain
	err := q.QueryRowContext(ctx, `SELECT anchor_seq, anchor_hash, head_seq, head_hash FROM audit_chain WHERE id = 1`).
		Scan(&c.AnchorSeq, &c.AnchorHash, &c.HeadSeq, &c.HeadHash)
	if err != nil {
		return audit.Chain{}, fmt.Errorf("read audit chain: %w", err)
	}
	return c, nil
}

// AuditChain implements store.AuditStore.
func (s *Store) AuditChain(ctx context.Context) (audit.Chain, error) { return auditChain(ctx, s.db) }

// AuditAfter implements store.AuditStore.
func (s *Store) AuditAfter(ctx context.Context, after int64, limit int) ([]audit.Record, error) {
	return queryAudit(ctx, s.db, `SELECT `+auditColumns+` FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
}

// ListAudit implements store.AuditStore.
func (s *Store) ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	f = f.Normalized()
	var where []string
	var args []any
	if !f.Since.IsZero() {
		where, args = append(where, "ts >= ?"), append(args, formatTime(f.Since))
	}
	if f.Actor != "" {
		where, args = append(where, "(actor_name = ? OR actor_id = ?)"), append(args, f.Actor, f.Actor)
	}
	if kind, name := f.TargetParts(); name != "" || kind != "" {
		where, args = append(where, "target = ?"), append(args, name)
		if kind != "" {
			where, args = append(where, "target_kind = ?"), append(args, kind)
		}
	}
	if exact, prefix := f.ActionPattern(); exact != "" {
		where, args = append(where, "action = ?"), append(args, exact)
	} else if prefix != "" {
		where, args = append(where, "substr(action, 1, ?) = ?"), append(args, len(prefix), prefix)
	}
	if f.BeforeSeq > 0 {
		where, args = append(where, "seq < ?"), append(args, f.BeforeSeq)
	}
	q := `SELECT ` + auditColumns + ` FROM audit_log`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq DESC LIMIT ?"
	return queryAudit(ctx, s.db, q, append(args, f.Limit)...)
}

func queryAudit(ctx context.Context, q querier, query string, args ...any) ([]audit.Record, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	var out []audit.Record
	for rows.Next() {
		var r audit.Record
		var ts, kind, outcome, use string
		if err := rows.Scan(&r.Seq, &ts, &kind, &r.Actor.ID, &r.Actor.Name, &r.Action, &r.TargetKind, &r.Target,
			&outcome, &r.Error, &r.Client, &r.Detail, &use, &r.PrevHash, &r.Hash); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		r.Actor.Kind, r.Outcome = audit.ActorKind(kind), audit.Outcome(outcome)
		if r.Time, err = parseTime(ts); err != nil {
			return nil, fmt.Errorf("read audit record %d: %w", r.Seq, err)
		}
		if use != "" {
			r.Use = &audit.Use{}
			if err := json.Unmarshal([]byte(use), r.Use); err != nil {
				return nil, fmt.Errorf("read audit record %d: %w", r.Seq, err)
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// PruneAudit implements store.AuditStore.
func (s *Store) PruneAudit(ctx context.Context, before time.Time, limit int) (n int, rerr error) {
	defer markFull(&rerr)
	before = before.Truncate(time.Microsecond) // the precision of stored times
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("prune audit log: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, `SELECT seq, ts, hash FROM audit_log ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	var lastSeq int64
	var lastHash string
	cut := formatTime(before)
	for rows.Next() {
		var seq int64
		var ts, hash string
		if err := rows.Scan(&seq, &ts, &hash); err != nil {
			rows.Close()
			return 0, fmt.Errorf("prune audit log: %w", err)
		}
		if ts >= cut {
			break
		}
		lastSeq, lastHash = seq, hash
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit_log WHERE seq <= ?`, lastSeq); err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE audit_chain SET anchor_seq = ?, anchor_hash = ? WHERE id = 1`, lastSeq, lastHash); err != nil {
		return 0, fmt.Errorf("prune audit log: move anchor: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("prune audit log: commit: %w", err)
	}
	return n, nil
}

func exportAudit(ctx context.Context, q querier, w store.RecordWriter) error {
	c, err := auditChain(ctx, q)
	if err != nil {
		return err
	}
	if err := w.CopyAuditChain(ctx, c); err != nil {
		return err
	}
	var after int64
	for {
		recs, err := queryAudit(ctx, q, `SELECT `+auditColumns+` FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?`, after, exportPage)
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
	if _, err := w.q.ExecContext(ctx, `UPDATE audit_chain SET anchor_seq = ?, anchor_hash = ?, head_seq = ?, head_hash = ? WHERE id = 1`,
		c.AnchorSeq, c.AnchorHash, c.HeadSeq, c.HeadHash); err != nil {
		return fmt.Errorf("copy audit chain: %w", err)
	}
	return nil
}

func (w *writer) CopyAuditRecords(ctx context.Context, recs []audit.Record) error {
	for i := range recs {
		if err := writeAudit(ctx, w.q, &recs[i]); err != nil {
			return err
		}
	}
	return nil
}
