package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/grants"
)

// Grants audits the privileges a dbt run needs on the named connection's
// database (see package grants) for the connection's user, or for
// req.Role when set. An empty target schema means the connection's
// schema. The jobs on the connection count as the workload: one with a SQL
// step running CREATE SCHEMA makes CREATE on the database needed. When
// the server refuses the user the database itself for lack of CONNECT,
// the result says so (and how to grant it) rather than failing.
func (s *Service) Grants(ctx context.Context, name string, req grants.Request) (_ *grants.Result, err error) {
	defer s.audited(ctx, &entry{action: "connection.grants", targetKind: audit.TargetConnection, target: name,
		use: s.useOf(ctx, name)}, &err)
	start := s.now()
	sess, err := s.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	spec := sess.Spec()
	if req.TargetSchema == "" {
		req.TargetSchema = spec.Schema
	}
	if req.TargetSchema == "" {
		return nil, invalidf("connection %s has no schema: give the target schema (--target-schema) to audit", name)
	}
	if err := s.schemaCreation(ctx, name, &req); err != nil {
		return nil, err
	}
	conn, err := sess.Connect(ctx)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" && (req.Role == "" || req.Role == spec.User) {
			return grants.ConnectDenied(spec.Database, spec.User, req), nil
		}
		return nil, sess.explain(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	res, err := grants.Audit(ctx, conn, req)
	if errors.Is(err, grants.ErrRoleNotFound) {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err != nil {
		return nil, sess.explain(err)
	}
	s.recordUse(ctx, name, "grants", start)
	return res, nil
}
