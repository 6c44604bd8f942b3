package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/remote"
)

// auditBackend is what the audit commands call: the local service or the
// server's API.
type auditBackend interface {
	ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error)
	VerifyAudit(ctx context.Context) (*audit.Verification, error)
	ExportAudit(ctx context.Context, w io.Writer, afterSeq int64, since time.Time) (int64, error)
}

var (
	_ auditBackend = (*app.Service)(nil)
	_ auditBackend = (*remote.Client)(nil)
)

func (r *runner) auditBackend(ctx context.Context) (auditBackend, error) {
	b, err := r.backend(ctx)
	if err != nil {
		return nil, err
	}
	ab, ok := b.(auditBackend)
	if !ok {
		return nil, fmt.Errorf("this backend cannot read the audit log")
	}
	return ab, nil
}

func (r *runner) auditCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read, verify and export the audit log (who changed or used what, when, from where)",
		Long: `The audit log records every change (connections, keys, host-key approvals, jobs,
tokens, the master key) and every use (queries, tests, grants audits, runs started or
cancelled, exec and proxy started here): when, who (token, local OS user or pgrelay
itself), what, on which record, how it went, from which address, and for uses the SSH
key fingerprint, the bastions passed, the statements' digests (never SQL text) and the
commands (secrets masked).

Records are append-only and hash-chained: 'audit verify' finds a record that was
changed or deleted and names the first broken one. With --server these commands read
the server's log (admin token); without, the local data dir's.`,
	}
	cmd.AddCommand(r.auditListCommand(), r.auditVerifyCommand(), r.auditExportCommand())
	return cmd
}

func (r *runner) auditListCommand() *cobra.Command {
	var since, actor, target, action, output string
	var limit int
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List audit records, newest first",
		Example: `  pgrelay audit list --since 24h
  pgrelay audit list --target warehouse --action connection
  pgrelay audit list --actor ci -o json`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			f := audit.Filter{Actor: actor, Target: target, Action: action, Limit: limit}
			var err error
			if f.Since, err = audit.ParseSince(since, time.Now()); err != nil {
				return usagef("--since: %v", err)
			}
			if limit < 1 || limit > audit.MaxLimit {
				return usagef("--limit %d: accepted is 1 to %d", limit, audit.MaxLimit)
			}
			b, err := r.auditBackend(cmd.Context())
			if err != nil {
				return err
			}
			recs, err := b.ListAudit(cmd.Context(), f)
			if err != nil {
				return err
			}
			if output == "json" {
				if recs == nil {
					recs = []audit.Record{}
				}
				return writeJSON(r.out(), recs)
			}
			tw := tabwriter.NewWriter(r.out(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tTARGET\tOUTCOME\tCLIENT\tDETAIL")
			for _, rec := range recs {
				outcome := string(rec.Outcome)
				if rec.Error != "" {
					outcome += " (" + rec.Error + ")"
				}
				// An error may quote a database's message, a client
				// names itself: their control characters written out.
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", rec.Seq, rec.Time.Local().Format(time.RFC3339), cellText(rec.Actor.String()),
					rec.Action, cellText(targetText(rec)), cellText(outcome), cellText(dash(rec.Client)), cellText(dash(detailText(rec))))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "records at or after this time: a duration back from now (30m, 24h, 7d) or a time (2026-01-02, 2026-01-02T15:04:05Z)")
	cmd.Flags().StringVar(&actor, "actor", "", "records of this actor: a token's name or ID, an OS user name or uid, or a part of pgrelay (scheduler, health-check, retention)")
	cmd.Flags().StringVar(&target, "target", "", "records about this record: a name (warehouse) or kind:name (connection:warehouse, job:nightly, run:ID, token:ID)")
	cmd.Flags().StringVar(&action, "action", "", "records of this action (connection.query) or of every action of a noun (connection)")
	intVar(cmd.Flags(), &limit, "limit", audit.DefaultLimit, "at most this many records")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// targetText renders a record's target as kind:name.
func targetText(rec audit.Record) string {
	switch {
	case rec.Target == "":
		return dash(rec.TargetKind)
	case rec.TargetKind == "":
		return rec.Target
	}
	return rec.TargetKind + ":" + rec.Target
}

// detailText is a record's detail and what its use involved, in one line.
func detailText(rec audit.Record) string {
	var parts []string
	if rec.Detail != "" {
		parts = append(parts, rec.Detail)
	}
	if u := rec.Use; u != nil {
		if u.RunID != "" {
			parts = append(parts, "run "+u.RunID)
		}
		if len(u.Hops) > 0 {
			parts = append(parts, "via "+strings.Join(u.Hops, ", "))
		}
		if u.KeyFingerprint != "" {
			parts = append(parts, "key "+u.KeyFingerprint)
		}
		if len(u.SQLDigests) > 0 {
			parts = append(parts, "sql "+strings.Join(u.SQLDigests, ", "))
		}
		for _, c := range u.Commands {
			parts = append(parts, "command "+strings.Join(c, " "))
		}
	}
	return strings.Join(parts, "; ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (r *runner) auditVerifyCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit log's hash chain; name the first record changed or deleted",
		Long: `Reads the whole audit log and checks each record's hash and its link to the record
before, from the chain's anchor (moved by retention) to its head. Exit code 0 when the
chain is whole, 1 when a record was changed or deleted (the first broken one is named).
Note the head's hash: a later verification that ends at another hash for the same
record shows a log rewritten from some record on.`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			b, err := r.auditBackend(cmd.Context())
			if err != nil {
				return err
			}
			v, err := b.VerifyAudit(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				if err := writeJSON(r.out(), v); err != nil {
					return err
				}
				if !v.OK {
					return &exitCodeError{code: exitFailure, msg: v.Error()}
				}
				return nil
			}
			if !v.OK {
				return &exitCodeError{code: exitFailure, msg: v.Error() + " (checked " + fmt.Sprint(v.Records) + " records before it)"}
			}
			fmt.Fprintf(r.out(), "Audit log intact: %d records, %d to %d.\nHead: record %d, hash %s\n",
				v.Records, v.Chain.AnchorSeq+1, v.Chain.HeadSeq, v.Chain.HeadSeq, dash(v.Chain.HeadHash))
			if v.Chain.AnchorSeq > 0 {
				fmt.Fprintf(r.out(), "Records 1 to %d were deleted by retention (anchor hash %s).\n", v.Chain.AnchorSeq, v.Chain.AnchorHash)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func (r *runner) auditExportCommand() *cobra.Command {
	var since string
	var after int64
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write audit records as JSON lines (for a SIEM), oldest first",
		Long: `Writes the records after --after-seq (and at or after --since) to standard output,
one JSON object per line, oldest first: the form SIEMs and log shippers ingest. The
last line's seq is the --after-seq of the next export; the cursor is also printed on
standard error. Control characters in values (C1 controls such as U+009B, and DEL, as
well as those JSON always escapes) are written as \u escapes: the same text in JSON,
which acts on no terminal.`,
		Example: `  pgrelay audit export > audit.jsonl
  pgrelay audit export --after-seq 1200 >> audit.jsonl`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := audit.ParseSince(since, time.Now())
			if err != nil {
				return usagef("--since: %v", err)
			}
			if after < 0 {
				return usagef("--after-seq %d: accepted is 0 or more", after)
			}
			b, err := r.auditBackend(cmd.Context())
			if err != nil {
				return err
			}
			// Records quote text that others wrote (a detail, a
			// command's arguments): C1 controls and DEL escaped, as in
			// every JSON output, so that none acts on a terminal. The
			// hash chain is over the records' canonical encoding, not
			// these bytes: the lines read back to the same records.
			out := &jsonLinesWriter{w: r.out()}
			last, err := b.ExportAudit(cmd.Context(), out, after, t)
			if err != nil {
				return cursorProblem(err, after)
			}
			if err := out.Flush(); err != nil {
				return fmt.Errorf("export audit log: %w", err)
			}
			fmt.Fprintf(r.env.Stderr, "exported up to record %d; next: pgrelay audit export --after-seq %d\n", last, last)
			return nil
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "records at or after this time: a duration back from now (24h, 7d) or a time")
	cmd.Flags().Int64Var(&after, "after-seq", 0, "records after this sequence number (the last one of the previous export); a number past the log's last record is refused")
	return cmd
}

// cursorProblem names the flag of a refused export cursor (the field
// after_seq, locally and from a server alike). It returns err otherwise.
func cursorProblem(err error, after int64) error {
	var ve *app.ValidationError
	if errors.As(err, &ve) && len(ve.Problems) == 1 && ve.Problems[0].Field == "after_seq" {
		return usagef("--after-seq %d: %s", after, strings.TrimPrefix(ve.Problems[0].Problem, strconv.FormatInt(after, 10)+" "))
	}
	return err
}

// auditFlags are serve's flags of the audit log.
type auditFlags struct {
	// retention deletes records older than this (0: keep forever).
	retention time.Duration
}

func (f *auditFlags) register(fs *pflag.FlagSet) {
	fs.Var(retentionFlag{d: &f.retention, what: "records"}, "audit-retention",
		"delete audit records older than this (e.g. 400d), at start and hourly, keeping the hash chain verifiable; 0 (the default) keeps them forever. Export them first (pgrelay audit export) when they must be kept elsewhere")
}

// startAuditRetention deletes audit records past the retention, now and
// hourly, until ctx ends.
func (r *runner) startAuditRetention(ctx context.Context, svc *app.Service, f auditFlags) {
	if f.retention <= 0 {
		return
	}
	prune := func() {
		n, err := svc.PruneAudit(ctx, f.retention)
		if err != nil {
			r.logger.Warn("audit retention", "error", err)
		} else if n > 0 {
			r.logger.Info("audit records deleted by retention", "count", n, "older_than", f.retention.String())
		}
	}
	go func() {
		prune()
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				prune()
			}
		}
	}()
}
