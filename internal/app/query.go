package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/pg"
	"github.com/pgrelay/pgrelay/internal/tracing"
)

// Column describes one result column.
type Column struct {
	Name string `json:"name"`
	// TypeOID is the PostgreSQL type OID of the column.
	TypeOID uint32 `json:"type_oid"`
}

// ResultSink receives query results as they stream in, in PostgreSQL's text
// format. A statement without a result set (e.g. CREATE TABLE) calls only
// End with its command tag.
type ResultSink interface {
	// Begin starts a result set.
	Begin(cols []Column) error
	// Row receives one row; a nil value is SQL NULL. The slices are only
	// valid during the call.
	Row(values [][]byte) error
	// End finishes a statement with its command tag (e.g. "SELECT 3").
	End(tag string) error
}

// QueryError is a SQL error reported by the server.
type QueryError struct {
	Connection string
	Err        *pgconn.PgError
	// Next, when set, says what to do about it (for a refused login).
	Next string
}

// Error gives the server's message, detail, hint and SQLSTATE.
func (e *QueryError) Error() string {
	msg := fmt.Sprintf("%s: %s (SQLSTATE %s)", e.Err.Severity, e.Err.Message, e.Err.Code)
	if e.Err.Detail != "" {
		msg += "\nDETAIL: " + e.Err.Detail
	}
	if e.Err.Hint != "" {
		msg += "\nHINT: " + e.Err.Hint
	}
	if e.Err.Position > 0 {
		msg += fmt.Sprintf("\nat character %d of the query", e.Err.Position)
	}
	if e.Next != "" {
		msg += "\nNext: " + e.Next
	}
	return msg
}

// Unwrap returns the server's error.
func (e *QueryError) Unwrap() error { return e.Err }

// Query runs sql (one or more statements, simple protocol) on the named
// connection and streams the results to sink.
func (s *Service) Query(ctx context.Context, name, sql string, sink ResultSink) (err error) {
	u := s.useOf(ctx, name)
	u.SQLDigests = []string{pg.Digest(sql)}
	ctx, span := s.startSpan(ctx, "connection.query", tracing.Connection.String(name), tracing.StatementHash.String(u.SQLDigests[0]))
	defer func() { endSpan(span, err) }()
	defer s.audited(ctx, &entry{action: "connection.query", targetKind: audit.TargetConnection, target: name, use: u}, &err)
	if pg.CopiesFromStdin(sql) {
		return fielderr.New(fielderr.Request, fielderr.Problem{Field: "sql", Problem: fmt.Sprintf(
			"COPY ... FROM STDIN waits for data from the client, which a query cannot send: run psql over the connection "+
				"(pgrelay exec %s -- psql -c '\\copy TABLE from FILE'), or COPY ... FROM a file on the server", name)})
	}
	start := s.now()
	sess, err := s.Open(ctx, name)
	if err != nil {
		return err
	}
	defer sess.Close()
	if err := sess.Query(ctx, sql, sink); err != nil {
		return err
	}
	s.recordUse(ctx, name, "query", start)
	return nil
}

// Query runs sql on a new database session of this Session.
func (s *Session) Query(ctx context.Context, sql string, sink ResultSink) (err error) {
	if s.tunnel != nil {
		// Stop the query as soon as the tunnel drops.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		done := ctx.Done() // ctx itself is replaced below
		go func() {
			select {
			case <-s.tunnel.Done():
				cancel()
			case <-done:
			}
		}()
	}
	conn, err := s.Connect(ctx)
	if err != nil {
		return s.explainLogin(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if s.tracer != nil {
		var span trace.Span
		ctx, span = s.tracer.Start(ctx, "db.statement", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(tracing.Connection.String(s.spec.Name), tracing.StatementHash.String(pg.Digest(sql))))
		defer func() { endSpan(span, err) }()
	}
	mrr := conn.PgConn().Exec(ctx, sql)
	for mrr.NextResult() {
		rr := mrr.ResultReader()
		fds := rr.FieldDescriptions()
		if len(fds) > 0 {
			cols := make([]Column, len(fds))
			for i, fd := range fds {
				cols[i] = Column{Name: fd.Name, TypeOID: fd.DataTypeOID}
			}
			if err := sink.Begin(cols); err != nil {
				_ = mrr.Close()
				return err
			}
			for rr.NextRow() {
				if err := sink.Row(rr.Values()); err != nil {
					_ = mrr.Close()
					return err
				}
			}
		}
		tag, err := rr.Close()
		if err != nil {
			_ = mrr.Close()
			return s.explain(err)
		}
		if err := sink.End(tag.String()); err != nil {
			_ = mrr.Close()
			return err
		}
	}
	if err := mrr.Close(); err != nil {
		return s.explain(err)
	}
	return nil
}

// explain turns a query-time error into the error a user should see: the
// tunnel's drop when that is the cause, the server's message for SQL errors.
// explainLogin is explain for an error of opening the database session,
// with what to do next: the connection test goes through it step by step.
func (s *Session) explainLogin(err error) error {
	if s.Err() != nil {
		return s.explain(err)
	}
	next := fmt.Sprintf("`pgrelay connection test %s` checks each step of the connection and says what to fix", s.spec.Name)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if pgErr.Code == "28P01" {
			if n := s.spec.PasswordRefusedNext(); n != "" {
				next = n
			}
		}
		return &QueryError{Connection: s.spec.Name, Err: pgErr, Next: next}
	}
	return fmt.Errorf("connection %s: %w\nNext: %s", s.spec.Name, err, next)
}

func (s *Session) explain(err error) error {
	if terr := s.Err(); terr != nil {
		return fmt.Errorf("connection %s: %w", s.spec.Name, terr)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return &QueryError{Connection: s.spec.Name, Err: pgErr}
	}
	return fmt.Errorf("connection %s: %w", s.spec.Name, err)
}
