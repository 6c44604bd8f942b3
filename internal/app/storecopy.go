package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
)

// CopyOptions configures CopyStore.
type CopyOptions struct {
	// Merge adds the records to a target that has records already; any
	// record the target has (same ID or name) is refused. Without Merge a
	// target with records is refused.
	Merge bool
	// Now stamps runs that were unfinished in the source; default
	// time.Now.
	Now func() time.Time
}

// CopyReport is what CopyStore copied and found.
type CopyReport struct {
	// Copied counts the records copied.
	Copied store.Counts `json:"copied"`
	// Target counts the target's records afterwards.
	Target store.Counts `json:"target"`
	// Unfinished is how many runs were queued or running in the source;
	// the target has them as failed (their process is not there).
	Unfinished int `json:"unfinished_runs"`
	// AuditSkipped is set when the source's audit log was not copied: a
	// merge into a target with an audit log of its own, which one hash
	// chain cannot hold both of (export the source's with `pgrelay audit
	// export` first).
	AuditSkipped bool `json:"audit_skipped,omitempty"`
}

// ErrTargetNotEmpty means a copy's target has records and Merge was not
// asked for.
var ErrTargetNotEmpty = errors.New("the target store is not empty")

// UnfinishedReason is the reason of a run that was queued or running when
// its store was copied.
const UnfinishedReason = "the run was unfinished when its store was copied to this one; run the job again"

// RestoredUnfinishedReason is the reason of a run that was queued or
// running when the backup it was restored from was made.
const RestoredUnfinishedReason = "the run was unfinished when the backup it was restored from was made; run the job again"

// FailUnfinishedRuns fails every run of st that is queued or running, with
// reason, and returns how many it failed. A store restored from a backup
// holds the runs that were in progress when the backup was made, whose
// process is not there: left as they were, a server on the restored store
// would declare the running ones lost, stop their database sessions (those
// of the process that made the backup, which may still be running them)
// and queue again those whose job has retries, and it would work the
// queued ones. Their sessions are left alone, as CopyStore leaves those of
// the runs it copies as failed.
func FailUnfinishedRuns(ctx context.Context, st store.RunStore, reason string, now time.Time) (int, error) {
	n := 0
	for {
		runs, err := st.ListRuns(ctx, store.RunFilter{Statuses: []jobs.Status{jobs.Queued, jobs.Running}, Limit: 500})
		if err != nil {
			return n, fmt.Errorf("list unfinished runs: %w", err)
		}
		if len(runs) == 0 {
			return n, nil
		}
		for _, r := range runs {
			r.Status, r.Reason, r.CancelRequested = jobs.Failed, reason, false
			end := now.UTC()
			r.EndedAt = &end
			if err := st.UpdateRun(ctx, r); err != nil {
				return n, fmt.Errorf("fail unfinished run %s: %w", r.ID, err)
			}
			n++
		}
	}
}

// CopyStore copies every record of from into to, in one transaction on
// to: connections with their sealed secrets and key pairs (same IDs, so
// the secrets open there with the same master key, and the same public
// keys, so nothing changes on bastions), pinned host keys, tokens (their
// hashes), jobs, runs with their logs, and the store's meta values (the
// master key check among them). from is only read.
//
// It checks first that kr opens from (and to, if to has sealed values
// already), and while copying that every secret opens with kr, so that a
// process serving to with that key works at once. It refuses a target with
// records unless opts.Merge, and a record the target has already. It
// verifies the counts before committing: the target holds what it held
// plus what was copied, and what was copied is what from holds.
func CopyStore(ctx context.Context, from, to store.Store, kr *secret.Keyring, opts CopyOptions) (*CopyReport, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := VerifyMasterKey(ctx, from, kr); err != nil {
		return nil, fmt.Errorf("source store: %w", err)
	}
	if err := VerifyMasterKey(ctx, to, kr); err != nil {
		return nil, fmt.Errorf("target store: its secrets are sealed with another master key than the source's, and a store holds secrets of one key only: %w", err)
	}
	_, err := to.GetMeta(ctx, keyCheckMeta)
	targetHasCheck := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	before, err := to.Counts(ctx)
	if err != nil {
		return nil, fmt.Errorf("target store: %w", err)
	}
	if !before.Empty() && !opts.Merge {
		return nil, fmt.Errorf("%w: it holds %s; copy into an empty store, or add --merge to add the records to these", ErrTargetNotEmpty, describeCounts(before))
	}
	source, err := from.Counts(ctx)
	if err != nil {
		return nil, fmt.Errorf("source store: %w", err)
	}
	rep := &CopyReport{}
	err = to.Import(ctx, func(w store.RecordWriter) error {
		*rep = CopyReport{}
		c := &copier{w: w, kr: kr, rep: rep, skipKeyCheck: targetHasCheck, now: opts.Now().UTC(),
			skipAudit: targetHasAuditChain(ctx, to)}
		rep.AuditSkipped = c.skipAudit && source.AuditRecords > 0
		if err := from.Export(ctx, c); err != nil {
			if errors.Is(err, store.ErrExists) {
				return fmt.Errorf("%w: the target has it already (--merge adds only records the target does not have); nothing was copied", err)
			}
			return fmt.Errorf("%w; nothing was copied", err)
		}
		want := source
		if c.skipAudit {
			want.AuditRecords = 0
		}
		if rep.Copied != want {
			return fmt.Errorf("the source changed while it was copied (it held %s, the copy read %s): stop pgrelay on it and copy again; nothing was copied",
				describeCounts(source), describeCounts(rep.Copied))
		}
		after, err := w.Counts(ctx)
		if err != nil {
			return err
		}
		if want := before.Add(rep.Copied); after != want {
			return fmt.Errorf("verify copy: the target would hold %s, want %s; nothing was copied", describeCounts(after), describeCounts(want))
		}
		rep.Target = after
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}

func describeCounts(c store.Counts) string {
	return fmt.Sprintf("%d connections, %d tokens, %d jobs, %d runs, %d run log lines, %d audit records",
		c.Connections, c.Tokens, c.Jobs, c.Runs, c.RunLogLines, c.AuditRecords)
}

// targetHasAuditChain reports whether a store's audit chain has started
// (records appended, perhaps all deleted by retention since).
func targetHasAuditChain(ctx context.Context, st store.Store) bool {
	c, err := st.AuditChain(ctx)
	return err != nil || c.HeadSeq > 0
}

// copier passes records from a source's Export to a target's writer,
// checking secrets and counting.
type copier struct {
	w            store.RecordWriter
	kr           *secret.Keyring
	rep          *CopyReport
	skipKeyCheck bool
	// skipAudit leaves the source's audit log out (a merge into a target
	// with a chain of its own).
	skipAudit bool
	now       time.Time
}

func (c *copier) CopyConnectionChecks(ctx context.Context, id string, cs []store.ConnectionCheck) error {
	return c.w.CopyConnectionChecks(ctx, id, cs)
}

func (c *copier) CopyAuditChain(ctx context.Context, ch audit.Chain) error {
	if c.skipAudit {
		return nil
	}
	return c.w.CopyAuditChain(ctx, ch)
}

func (c *copier) CopyAuditRecords(ctx context.Context, recs []audit.Record) error {
	if c.skipAudit {
		return nil
	}
	if err := c.w.CopyAuditRecords(ctx, recs); err != nil {
		return err
	}
	c.rep.Copied.AuditRecords += int64(len(recs))
	return nil
}

func (c *copier) PutMeta(ctx context.Context, key string, value []byte) error {
	if key == keyCheckMeta && c.skipKeyCheck {
		// The target's check opens with the same key (checked before).
		return nil
	}
	if key == sshCAMeta {
		if _, err := c.kr.Open(value, sshCAAD()); err != nil {
			return fmt.Errorf("SSH CA key: %w", err)
		}
	}
	return c.w.PutMeta(ctx, key, value)
}

func (c *copier) CopyConnection(ctx context.Context, conn *store.Connection) error {
	if len(conn.SealedPassword) > 0 {
		if _, err := c.kr.Open(conn.SealedPassword, passwordAD(conn.ID, conn.Spec.Endpoint())); err != nil {
			if _, err := c.kr.Open(conn.SealedPassword, legacyPasswordAD(conn.ID)); err != nil {
				return fmt.Errorf("connection %s: password: %w", conn.Spec.Name, err)
			}
		}
	}
	if len(conn.SealedPrivateKey) > 0 {
		if _, err := c.kr.Open(conn.SealedPrivateKey, privateKeyAD(conn.ID)); err != nil {
			return fmt.Errorf("connection %s: SSH private key: %w", conn.Spec.Name, err)
		}
	}
	if len(conn.SealedAuthSecret) > 0 {
		if _, err := c.kr.Open(conn.SealedAuthSecret, authSecretAD(conn.ID, &conn.Spec)); err != nil {
			return fmt.Errorf("connection %s: %s: %w", conn.Spec.Name, authSecretField(conn.Spec.AuthKind()), err)
		}
	}
	if len(conn.SealedPendingPrivateKey) > 0 {
		if _, err := c.kr.Open(conn.SealedPendingPrivateKey, pendingKeyAD(conn.ID)); err != nil {
			return fmt.Errorf("connection %s: new SSH private key (key rotation): %w", conn.Spec.Name, err)
		}
	}
	for _, k := range conn.HopKeys {
		if _, err := c.kr.Open(k.SealedPrivateKey, hopKeyAD(conn.ID, k.Hop)); err != nil {
			return fmt.Errorf("connection %s: SSH private key of hop %s: %w", conn.Spec.Name, k.Hop, err)
		}
		if len(k.SealedPendingPrivateKey) > 0 {
			if _, err := c.kr.Open(k.SealedPendingPrivateKey, hopPendingKeyAD(conn.ID, k.Hop)); err != nil {
				return fmt.Errorf("connection %s: new SSH private key of hop %s (key rotation): %w", conn.Spec.Name, k.Hop, err)
			}
		}
	}
	if err := c.w.CopyConnection(ctx, conn); err != nil {
		return err
	}
	c.rep.Copied.Connections++
	return nil
}

func (c *copier) CopyToken(ctx context.Context, t *store.Token) error {
	if err := c.w.CopyToken(ctx, t); err != nil {
		return err
	}
	c.rep.Copied.Tokens++
	return nil
}

func (c *copier) CopyJob(ctx context.Context, j *store.JobRecord) error {
	if err := c.w.CopyJob(ctx, j); err != nil {
		return err
	}
	c.rep.Copied.Jobs++
	return nil
}

func (c *copier) CopyRun(ctx context.Context, r *jobs.Run) error {
	if !r.Status.Terminal() {
		rr := *r
		rr.Status, rr.Reason, rr.CancelRequested = jobs.Failed, UnfinishedReason, false
		end := c.now
		rr.EndedAt = &end
		r = &rr
		c.rep.Unfinished++
	}
	if err := c.w.CopyRun(ctx, r); err != nil {
		return err
	}
	c.rep.Copied.Runs++
	return nil
}

func (c *copier) CopyRunLog(ctx context.Context, runID string, lines []jobs.LogLine) error {
	if err := c.w.CopyRunLog(ctx, runID, lines); err != nil {
		return err
	}
	c.rep.Copied.RunLogLines += int64(len(lines))
	return nil
}

func (c *copier) Counts(ctx context.Context) (store.Counts, error) { return c.w.Counts(ctx) }

func (c *copier) CopyRunBackends(ctx context.Context, runID string, bs []jobs.Backend, cl *jobs.Cleanup) error {
	return c.w.CopyRunBackends(ctx, runID, bs, cl)
}
