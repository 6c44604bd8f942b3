// Package remote offers pgrelay's use cases through a server's REST API
// with package app's signatures: it wraps the public Go client (package
// client, which speaks the wire types of package apiwire) and turns wire
// values into the domain's (connection.Spec, jobs.Run, diagnose.Report,
// ...) and API errors into app's (*app.ValidationError, app.ErrNotFound,
// *app.QueryError), so that the CLI's remote mode runs the same commands
// as its local mode. Values cross as the JSON the API sends, which is the
// domain types' own JSON.
package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/grants"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
)

// Client runs use cases on a pgrelay server.
type Client struct {
	c *client.Client
}

// New wraps an API client.
func New(c *client.Client) *Client { return &Client{c: c} }

// Dial returns a Client of the server at baseURL with token (see
// client.New).
func Dial(baseURL, token string, opts ...client.Option) (*Client, error) {
	c, err := client.New(baseURL, token, opts...)
	if err != nil {
		return nil, err
	}
	return New(c), nil
}

// Wire returns the API client underneath.
func (r *Client) Wire() *client.Client { return r.c }

// BaseURL returns the server's base URL.
func (r *Client) BaseURL() string { return r.c.BaseURL() }

// convert re-reads v's JSON as a T: wire values as domain values and back.
func convert[T any](v any) (T, error) {
	var out T
	b, err := json.Marshal(v)
	if err != nil {
		return out, fmt.Errorf("encode %T: %w", v, err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("read %T as %T: %w", v, out, err)
	}
	return out, nil
}

// result converts a wire result (or passes on the error, as app's).
func result[T any](v any, err error) (T, error) {
	if err != nil {
		var zero T
		return zero, domainError(err)
	}
	return convert[T](v)
}

// kindError is an API error that errors.Is also finds as app's kind.
type kindError struct {
	err  error
	kind error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }

// domainError turns the client's errors into app's: validation problems
// into an *app.ValidationError, a database error into an *app.QueryError,
// and error kinds into app's (app.ErrNotFound, ...), the *client.Error
// still reachable with errors.As.
func domainError(err error) error {
	var ve *client.ValidationError
	if errors.As(err, &ve) {
		out := &app.ValidationError{}
		for _, f := range ve.Fields {
			out.Problems = append(out.Problems, fielderr.Problem{Field: f.Field, Problem: f.Problem})
		}
		return out
	}
	var qe *client.QueryError
	if errors.As(err, &qe) {
		d := qe.Err
		return &app.QueryError{Err: &pgconn.PgError{Severity: d.Severity, Code: d.SQLState, Message: d.Message,
			Detail: d.Detail, Hint: d.Hint, Position: d.Position}}
	}
	kinds := []struct{ wire, app error }{{client.ErrNotFound, app.ErrNotFound}, {client.ErrExists, app.ErrExists},
		{client.ErrConflict, app.ErrConflict}, {client.ErrInvalid, app.ErrInvalid},
		{client.ErrUnauthenticated, app.ErrUnauthenticated}}
	for _, k := range kinds {
		if errors.Is(err, k.wire) {
			return &kindError{err: err, kind: k.app}
		}
	}
	return err
}

// connectionInput is the wire input of spec with password (nil: none).
func connectionInput(spec connection.Spec, password *secret.Value) (apiwire.ConnectionInput, error) {
	return convert[apiwire.ConnectionInput](api.NewConnectionInput(spec, password))
}

// CreateConnection saves a new connection (with spec.Password, if set).
func (r *Client) CreateConnection(ctx context.Context, spec connection.Spec) (*app.ConnectionView, error) {
	var pw *secret.Value
	if !spec.Password.IsZero() {
		pw = &spec.Password
	}
	in, err := connectionInput(spec, pw)
	if err != nil {
		return nil, err
	}
	v, err := r.c.CreateConnection(ctx, in)
	return result[*app.ConnectionView](v, err)
}

// GetConnection returns a connection's view.
func (r *Client) GetConnection(ctx context.Context, name string) (*app.ConnectionView, error) {
	v, err := r.c.GetConnection(ctx, name)
	return result[*app.ConnectionView](v, err)
}

// ListConnections returns every connection's view, ordered by name.
func (r *Client) ListConnections(ctx context.Context) ([]*app.ConnectionView, error) {
	v, err := r.c.ListConnections(ctx)
	return result[[]*app.ConnectionView](v, err)
}

// UpdateConnection replaces the connection's settings with spec; a nil
// password keeps the stored one.
func (r *Client) UpdateConnection(ctx context.Context, name string, spec connection.Spec, password *secret.Value) (*app.ConnectionView, error) {
	in, err := connectionInput(spec, password)
	if err != nil {
		return nil, err
	}
	v, err := r.c.UpdateConnection(ctx, name, in)
	return result[*app.ConnectionView](v, err)
}

// DeleteConnection removes a connection and its keys.
func (r *Client) DeleteConnection(ctx context.Context, name string) error {
	return domainError(r.c.DeleteConnection(ctx, name))
}

// PublicKey returns the authorized_keys line of a connection's tunnel key.
func (r *Client) PublicKey(ctx context.Context, name string, restricted bool) (string, error) {
	k, err := r.c.PublicKey(ctx, name, restricted)
	return k, domainError(err)
}

// BastionSetup returns the shell script that prepares the bastion.
func (r *Client) BastionSetup(ctx context.Context, name string) (string, error) {
	s, err := r.c.BastionSetup(ctx, name)
	return s, domainError(err)
}

// RotateKey replaces a connection's tunnel key pair.
func (r *Client) RotateKey(ctx context.Context, name string) (*app.KeyRotation, error) {
	v, err := r.c.RotateKey(ctx, name)
	return result[*app.KeyRotation](v, err)
}

// TrustHostKey approves the pending bastion host key with the fingerprint.
func (r *Client) TrustHostKey(ctx context.Context, name, fingerprint string) (*app.ConnectionView, error) {
	v, err := r.c.TrustHostKey(ctx, name, fingerprint)
	return result[*app.ConnectionView](v, err)
}

// sink feeds a wire result to app's sink.
type sink struct{ app.ResultSink }

func (s sink) Begin(cols []apiwire.Column) error {
	out := make([]app.Column, len(cols))
	for i, c := range cols {
		out[i] = app.Column{Name: c.Name, TypeOID: c.TypeOID}
	}
	return s.ResultSink.Begin(out)
}

// Query runs sql on the server and feeds the results to out.
func (r *Client) Query(ctx context.Context, name, sql string, out app.ResultSink) error {
	err := domainError(r.c.Query(ctx, name, sql, sink{out}))
	var qe *app.QueryError
	if errors.As(err, &qe) {
		qe.Connection = name
	}
	return err
}

// TestConnection tests a saved connection on the server, reporting each
// step to progress as the server runs it.
func (r *Client) TestConnection(ctx context.Context, name string, progress func(diagnose.Step)) (*diagnose.Report, error) {
	v, err := r.c.TestConnection(ctx, name, stepFunc(progress))
	return result[*diagnose.Report](v, err)
}

// TestDraft tests an unsaved connection on the server (see
// client.TestDraft).
func (r *Client) TestDraft(ctx context.Context, spec connection.Spec, basedOn string, progress func(diagnose.Step)) (*diagnose.Report, error) {
	var pw *secret.Value
	if !spec.Password.IsZero() {
		pw = &spec.Password
	}
	in, err := connectionInput(spec, pw)
	if err != nil {
		return nil, err
	}
	v, err := r.c.TestDraft(ctx, in, basedOn, stepFunc(progress))
	return result[*diagnose.Report](v, err)
}

func stepFunc(progress func(diagnose.Step)) func(apiwire.TestStep) {
	if progress == nil {
		return nil
	}
	return func(s apiwire.TestStep) {
		if st, err := convert[diagnose.Step](s); err == nil {
			progress(st)
		}
	}
}

// Grants audits the privileges a workload needs on the server.
func (r *Client) Grants(ctx context.Context, name string, req grants.Request) (*grants.Result, error) {
	in, err := convert[apiwire.GrantsRequest](req)
	if err != nil {
		return nil, err
	}
	v, err := r.c.Grants(ctx, name, in)
	if err != nil {
		return nil, domainError(err)
	}
	return convert[*grants.Result](v.GrantsResult)
}

// GrantsResponse is Grants with the server's summary (ok, missing, SQL).
func (r *Client) GrantsResponse(ctx context.Context, name string, req grants.Request) (*api.GrantsResponse, error) {
	in, err := convert[apiwire.GrantsRequest](req)
	if err != nil {
		return nil, err
	}
	v, err := r.c.Grants(ctx, name, in)
	return result[*api.GrantsResponse](v, err)
}

// CreateToken creates an API token with a role.
func (r *Client) CreateToken(ctx context.Context, name string, role auth.Role) (*app.NewToken, error) {
	v, err := r.c.CreateToken(ctx, name, string(role))
	return result[*app.NewToken](v, err)
}

// ListTokens lists the tokens.
func (r *Client) ListTokens(ctx context.Context) ([]app.TokenView, error) {
	v, err := r.c.ListTokens(ctx)
	return result[[]app.TokenView](v, err)
}

// RevokeToken revokes a token by ID or name.
func (r *Client) RevokeToken(ctx context.Context, idOrName string) (*app.TokenView, error) {
	v, err := r.c.RevokeToken(ctx, idOrName)
	return result[*app.TokenView](v, err)
}

// WhoAmI returns the token's identity and role.
func (r *Client) WhoAmI(ctx context.Context) (*api.WhoAmI, error) {
	v, err := r.c.WhoAmI(ctx)
	return result[*api.WhoAmI](v, err)
}

// OpenAPI returns the server's OpenAPI document.
func (r *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	b, err := r.c.OpenAPI(ctx)
	return b, domainError(err)
}

func wireJobs(js []jobs.Job) ([]apiwire.Job, error) { return convert[[]apiwire.Job](js) }

// ApplyJobs creates or updates every job (all validated first).
func (r *Client) ApplyJobs(ctx context.Context, js []jobs.Job) ([]app.ApplyResult, error) {
	in, err := wireJobs(js)
	if err != nil {
		return nil, err
	}
	v, err := r.c.ApplyJobs(ctx, in)
	return result[[]app.ApplyResult](v, err)
}

// ApplyJobsFile applies a jobs YAML file as it is.
func (r *Client) ApplyJobsFile(ctx context.Context, yaml []byte) ([]app.ApplyResult, error) {
	v, err := r.c.ApplyJobsFile(ctx, yaml)
	return result[[]app.ApplyResult](v, err)
}

// CreateJob saves a new job.
func (r *Client) CreateJob(ctx context.Context, j jobs.Job) (*app.JobView, error) {
	in, err := convert[apiwire.Job](j)
	if err != nil {
		return nil, err
	}
	v, err := r.c.CreateJob(ctx, in)
	return result[*app.JobView](v, err)
}

// PutJob creates or replaces a job; created says which.
func (r *Client) PutJob(ctx context.Context, j jobs.Job) (*app.JobView, bool, error) {
	in, err := convert[apiwire.Job](j)
	if err != nil {
		return nil, false, err
	}
	v, created, err := r.c.PutJob(ctx, in)
	jv, err := result[*app.JobView](v, err)
	return jv, created, err
}

// GetJob returns a job's view.
func (r *Client) GetJob(ctx context.Context, name string) (*app.JobView, error) {
	v, err := r.c.GetJob(ctx, name)
	return result[*app.JobView](v, err)
}

// ListJobs returns every job's view.
func (r *Client) ListJobs(ctx context.Context) ([]*app.JobView, error) {
	v, err := r.c.ListJobs(ctx)
	return result[[]*app.JobView](v, err)
}

// DeleteJob removes a job.
func (r *Client) DeleteJob(ctx context.Context, name string) error {
	return domainError(r.c.DeleteJob(ctx, name))
}

// RunJob queues a run of the job on the server, which records the trigger
// as jobs.API whatever trigger says (it is there to match app's).
func (r *Client) RunJob(ctx context.Context, name string, _ jobs.Trigger) (*jobs.Run, error) {
	v, err := r.c.RunJob(ctx, name)
	return result[*jobs.Run](v, err)
}

// ListRuns lists runs, newest first.
func (r *Client) ListRuns(ctx context.Context, f store.RunFilter) ([]*jobs.Run, error) {
	v, err := r.c.ListRuns(ctx, wireRunFilter(f))
	return result[[]*jobs.Run](v, err)
}

// ListRunsPage lists a page of runs, newest first, with the f.Before of
// the next page as the server gives it.
func (r *Client) ListRunsPage(ctx context.Context, f store.RunFilter) (*app.RunPage, error) {
	l, err := r.c.ListRunsPage(ctx, wireRunFilter(f))
	if err != nil {
		return nil, domainError(err)
	}
	runs, err := convert[[]*jobs.Run](l.Runs)
	if err != nil {
		return nil, err
	}
	return &app.RunPage{Runs: runs, NextBefore: l.NextBefore}, nil
}

// wireRunFilter is the API's form of a run filter.
func wireRunFilter(f store.RunFilter) apiwire.RunFilter {
	wf := apiwire.RunFilter{Job: f.Job, Before: f.Before, Limit: f.Limit}
	for _, s := range f.Statuses {
		wf.Statuses = append(wf.Statuses, apiwire.RunStatus(s))
	}
	return wf
}

// GetRun returns a run.
func (r *Client) GetRun(ctx context.Context, id string) (*jobs.Run, error) {
	v, err := r.c.GetRun(ctx, id)
	return result[*jobs.Run](v, err)
}

// RunLog returns a run's log lines after afterSeq.
func (r *Client) RunLog(ctx context.Context, id string, afterSeq int64, limit int) ([]jobs.LogLine, error) {
	v, err := r.c.RunLog(ctx, id, afterSeq, limit)
	return result[[]jobs.LogLine](v, err)
}

// CancelRun cancels a run; the server records the token's name as who
// cancelled, whatever by says.
func (r *Client) CancelRun(ctx context.Context, id, _ string) (*jobs.Run, error) {
	v, err := r.c.CancelRun(ctx, id)
	return result[*jobs.Run](v, err)
}

// FollowRun follows a run through the server's event stream until it
// ends, giving fn each log line.
func (r *Client) FollowRun(ctx context.Context, id string, fn func(jobs.LogLine)) (*jobs.Run, error) {
	var wfn func(apiwire.LogLine)
	if fn != nil {
		wfn = func(l apiwire.LogLine) {
			fn(jobs.LogLine{Seq: l.Seq, Time: l.Time, Stream: jobs.Stream(l.Stream), Step: l.Step, Text: l.Text})
		}
	}
	v, err := r.c.FollowRun(ctx, id, wfn)
	return result[*jobs.Run](v, err)
}

// ListAudit returns audit records, newest first (admin only).
func (r *Client) ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	v, err := r.c.ListAudit(ctx, apiwire.AuditFilter{Since: f.Since, Actor: f.Actor, Target: f.Target, Action: f.Action,
		BeforeSeq: f.BeforeSeq, Limit: f.Limit})
	return result[[]audit.Record](v, err)
}

// VerifyAudit has the server verify its audit log's hash chain (admin
// only).
func (r *Client) VerifyAudit(ctx context.Context) (*audit.Verification, error) {
	v, err := r.c.VerifyAudit(ctx)
	return result[*audit.Verification](v, err)
}

// ExportAudit copies the records after afterSeq (and at or after since)
// as JSON lines to w, and returns the last sequence number written (admin
// only).
func (r *Client) ExportAudit(ctx context.Context, w io.Writer, afterSeq int64, since time.Time) (int64, error) {
	last, err := r.c.ExportAudit(ctx, w, afterSeq, since)
	return last, domainError(err)
}
