package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/pg"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// entry is an audit record being made by a use case: what it is about, and
// what the use involved. The deferred s.audited fills in who, when, from
// where and how it went.
type entry struct {
	action     string
	targetKind string
	target     string
	detail     string
	use        *audit.Use
	// failure, when set, makes the outcome failed although the use case
	// returned no error (a connection test whose report failed).
	failure string
}

// actor returns who acts in ctx: the request's token, else the actor the
// caller put in ctx (the CLI's local user, a part of the server), else
// pgrelay itself.
func actor(ctx context.Context) audit.Actor {
	if p := auth.PrincipalFrom(ctx); p != nil {
		return audit.Actor{Kind: audit.ActorToken, ID: p.TokenID, Name: p.Name}
	}
	if a, ok := audit.ActorFrom(ctx); ok {
		return a
	}
	return audit.System("pgrelay")
}

// audited appends e's record, with the outcome of *errp; use it deferred.
// A record that cannot be saved is logged (and counted), never fails the
// use case, whose effect has happened.
func (s *Connector) audited(ctx context.Context, e *entry, errp *error) {
	var err error
	if errp != nil {
		err = *errp
	}
	r := &audit.Record{Time: s.now(), Actor: actor(ctx), Action: e.action, TargetKind: e.targetKind,
		Target: e.target, Outcome: audit.OK, Client: audit.ClientFrom(ctx), Detail: e.detail, Use: e.use}
	switch {
	case err != nil:
		r.Outcome, r.Error = audit.Failed, errorClass(err)
	case e.failure != "":
		r.Outcome, r.Error = audit.Failed, e.failure
	}
	s.appendAudit(ctx, r)
}

// Classes of refused requests in the audit log.
const (
	// RefusedRole: the principal's role does not allow the route.
	RefusedRole = "forbidden"
	// RefusedCrossSite: a cookie-authenticated change failed the
	// cross-origin or CSRF check.
	RefusedCrossSite = "csrf"
)

// AccessRefused records a request the server refused to an authenticated
// principal (in ctx): action "access.refused", the route's method and
// pattern as target (never the URL, which may carry names), outcome failed
// with the class (RefusedRole, RefusedCrossSite). Unauthenticated requests
// are not recorded: they name no actor.
func (s *Connector) AccessRefused(ctx context.Context, method, pattern, class string) {
	s.appendAudit(ctx, &audit.Record{Time: s.now(), Actor: actor(ctx), Action: "access.refused", TargetKind: audit.TargetRoute,
		Target: method + " " + pattern, Outcome: audit.Failed, Error: class, Client: audit.ClientFrom(ctx)})
}

// appendAudit saves r.
func (s *Connector) appendAudit(ctx context.Context, r *audit.Record) {
	if err := s.store.AppendAudit(context.WithoutCancel(ctx), r); err != nil {
		s.logger.ErrorContext(ctx, "could not save an audit record", "action", r.Action, "target", r.Target, "error", err)
		if s.metrics != nil {
			s.metrics.AuditFailures.Inc()
		}
	}
}

// errorClass names the kind of a failure for the audit log: never its
// message, which may quote values.
func errorClass(err error) string {
	var ve *ValidationError
	var pe *pgconn.PgError
	var hk *HostKeyChangedError
	var ka *KeyNotAuthorizedError
	var denied *egress.DeniedError
	var dropped *tunnel.DroppedError
	var dial *tunnel.DialError
	var hs *tunnel.HandshakeError
	var fwd *tunnel.ForwardError
	var ce *jobs.CancelledError
	switch {
	case errors.As(err, &ve):
		return "invalid"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, store.ErrNotFound):
		return "not_found"
	case errors.Is(err, store.ErrExists):
		return "exists"
	case errors.Is(err, store.ErrConflict):
		return "conflict"
	case errors.Is(err, ErrNoQueue):
		return "no_queue"
	case errors.Is(err, ErrUnauthenticated):
		return "unauthenticated"
	case errors.Is(err, ErrForbidden):
		// The role allows the route but not this change (a pinned host
		// key replaced by an editor): a refusal, as access.refused's.
		return "forbidden"
	case errors.As(err, &hk):
		return "host_key"
	case errors.As(err, &ka):
		return "ssh_auth"
	case errors.As(err, &denied):
		return "network_policy"
	case errors.As(err, &dropped):
		return "tunnel_dropped"
	case errors.As(err, &dial):
		return "bastion_unreachable"
	case errors.As(err, &hs):
		return "ssh_handshake"
	case errors.As(err, &fwd):
		return "forward_refused"
	case errors.As(err, &pe):
		return "sqlstate " + pe.Code
	case errors.As(err, &ce), errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case IsConnectFailure(err):
		return "unreachable"
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return "network"
	}
	return "error"
}

// connUse is what every use of the connection involves: the SSH key it
// logs in with and the bastions it passes (a hop with a key pair of its own
// names that key's fingerprint: "user@host:port own key SHA256:...").
func connUse(c *store.Connection) *audit.Use {
	u := &audit.Use{}
	if c == nil || c.Spec.Tunnel == nil {
		return u
	}
	if c.SSHPublicKey != "" {
		if pub, err := sshkey.ParsePublic(c.SSHPublicKey); err == nil {
			u.KeyFingerprint = sshkey.Fingerprint(pub)
		}
	}
	u.Hops = hopNames(c.Spec.Tunnel)
	for i, h := range u.Hops {
		if k := c.HopKeyFor(h); k != nil {
			if pub, err := sshkey.ParsePublic(k.PublicKey); err == nil {
				u.Hops[i] = h + " own key " + sshkey.Fingerprint(pub)
			}
		}
	}
	return u
}

// hopNames names every hop of a tunnel, in dial order, as user@host:port.
func hopNames(t *connection.Tunnel) []string {
	var out []string
	for _, h := range t.Hops() {
		out = append(out, h.String())
	}
	return out
}

// useOf returns the use of the named connection (empty when it cannot be
// read: the use case reports that itself).
func (s *Connector) useOf(ctx context.Context, name string) *audit.Use {
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return &audit.Use{}
	}
	return connUse(c)
}

// runUse is what a run of job involves: the connection's key and hops,
// its steps' SQL digests and commands (secret values masked, the
// connection's password among them).
func (s *Connector) runUse(ctx context.Context, j *jobs.Job) *audit.Use {
	u, known := s.useAndSecrets(ctx, j.Connection)
	for _, st := range j.Steps {
		switch {
		case st.SQL != "":
			u.SQLDigests = append(u.SQLDigests, pg.Digest(st.SQL))
		case len(st.Command) > 0:
			u.Commands = append(u.Commands, audit.MaskCommand(st.Command, known...))
		}
	}
	return u
}

// useAndSecrets returns the use of the named connection and its password
// (to mask in commands), when it can be read.
func (s *Connector) useAndSecrets(ctx context.Context, name string) (*audit.Use, []string) {
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return &audit.Use{}, nil
	}
	u := connUse(c)
	spec, err := s.openSpec(ctx, c)
	if err != nil || spec.Password.IsZero() {
		return u, nil
	}
	return u, []string{spec.Password.Reveal()}
}

// ListAudit returns audit records, newest first.
func (s *Service) ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	recs, err := s.store.ListAudit(ctx, f)
	if recs == nil && err == nil {
		recs = []audit.Record{}
	}
	return recs, err
}

// VerifyAudit checks the audit log's hash chain (see audit.Verify).
func (s *Service) VerifyAudit(ctx context.Context) (*audit.Verification, error) {
	return audit.Verify(ctx, s.store)
}

// ExportAudit writes the records after seq afterSeq (and at or after
// since, when set), oldest first, as JSON lines to w, and returns the last
// sequence number written (afterSeq when none): the cursor of the next
// export.
func (s *Service) ExportAudit(ctx context.Context, w io.Writer, afterSeq int64, since time.Time) (int64, error) {
	return audit.Export(ctx, s.store, w, afterSeq, since)
}

// CheckAuditCursor refuses an export cursor past the audit log's last
// record (a *ValidationError of after_seq; see audit.CheckCursor), before
// an export starts writing.
func (s *Service) CheckAuditCursor(ctx context.Context, afterSeq int64) error {
	return audit.CheckCursor(ctx, s.store, afterSeq)
}

// PruneAudit deletes the audit records older than retention (in batches)
// and records that it did, as the retention part of the system. It returns
// how many it deleted.
func (s *Service) PruneAudit(ctx context.Context, retention time.Duration) (int, error) {
	before := s.now().Add(-retention)
	total := 0
	for {
		n, err := s.store.PruneAudit(ctx, before, 1000)
		total += n
		if err != nil {
			return total, err
		}
		if n < 1000 {
			break
		}
	}
	if total > 0 {
		s.appendAudit(ctx, &audit.Record{Time: s.now(), Actor: audit.System("retention"), Action: "audit.prune",
			TargetKind: audit.TargetAudit, Outcome: audit.OK,
			Detail: fmt.Sprintf("%d records older than %s deleted", total, before.UTC().Format(time.RFC3339))})
	}
	return total, nil
}

// AuditExec records that a program is run over the named connection by
// `pgrelay exec` (on this machine, with its secrets), or could not be:
// err is why the connection could not be opened (nil when it was).
func (s *Connector) AuditExec(ctx context.Context, name string, argv []string, err error) {
	u, known := s.useAndSecrets(ctx, name)
	u.Commands = [][]string{audit.MaskCommand(argv, known...)}
	s.audited(ctx, &entry{action: "connection.exec", targetKind: audit.TargetConnection, target: name, use: u}, &err)
}

// AuditScheduledRun records a run queued by its job's schedule (or that
// could not be).
func (s *Connector) AuditScheduledRun(ctx context.Context, job jobs.Job, r *jobs.Run, err error) {
	e := &entry{action: "run.start", targetKind: audit.TargetJob, target: job.Name, detail: "scheduled",
		use: s.runUse(ctx, &job)}
	if r != nil {
		e.use.RunID = r.ID
	}
	s.audited(audit.WithActor(ctx, audit.System("scheduler")), e, &err)
}

// auditFingerprint keeps a fingerprint someone gave within bounds for a
// record's detail.
func auditFingerprint(fp string) string {
	if len(fp) > 80 {
		return fp[:80] + "..."
	}
	return fp
}

// AuditLocalRun records a run started in this process by `pgrelay job run`
// (on this machine, with the store's secrets).
func (s *Connector) AuditLocalRun(ctx context.Context, job jobs.Job, r *jobs.Run) {
	u := s.runUse(ctx, &job)
	u.RunID = r.ID
	s.audited(ctx, &entry{action: "run.start", targetKind: audit.TargetJob, target: job.Name, detail: "local", use: u}, nil)
}

// joinNames lists names for a record's detail, at most a few.
func joinNames(names []string) string {
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
	}
	return strings.Join(names, ", ")
}
