package diagnose

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/connection"
)

// serverInfoSQL reads what the query step reports. The flavor markers are
// settings only those servers define: AlloyDB's alloydb.* and
// google_columnar_engine.* parameters, Lakebase's neon.* (it runs on
// Neon's storage engine) and databricks* parameters. pg_settings lists the
// parameters of loaded modules; current_setting(name, true) also finds a
// few well-known ones that are only set, not defined. A server may hide
// settings from an unprivileged user, so only their presence counts as
// evidence, never their absence.
const serverInfoSQL = `SELECT current_setting('server_version'),
	current_setting('server_version_num')::int,
	current_user::text,
	current_database()::text,
	pg_is_in_recovery(),
	EXISTS (SELECT 1 FROM pg_settings WHERE name LIKE 'alloydb.%' OR name LIKE 'google\_columnar\_engine.%')
		OR current_setting('alloydb.iam_authentication', true) IS NOT NULL
		OR current_setting('google_columnar_engine.enabled', true) IS NOT NULL,
	EXISTS (SELECT 1 FROM pg_settings WHERE name LIKE 'neon.%' OR name LIKE 'databricks%')
		OR current_setting('neon.timeline_id', true) IS NOT NULL`

// query runs the query step: SELECT 1 round trips and the server's facts.
func (r *runner) query(ctx context.Context, conn *pgx.Conn) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.in.StepTimeout)
	defer cancel()
	fail := func(err error) {
		switch {
		case r.tunnelDown():
			err = r.tunnel.Err()
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			err = &StepTimeoutError{Step: StepQuery, After: r.in.StepTimeout, Err: err}
		}
		r.fail(StepQuery, start, err, r.hintQuery(err))
	}
	best := time.Duration(-1)
	for range 3 {
		t0 := time.Now()
		if _, err := conn.PgConn().Exec(ctx, "SELECT 1").ReadAll(); err != nil {
			fail(fmt.Errorf("SELECT 1: %w", err))
			return
		}
		if d := time.Since(t0); best < 0 || d < best {
			best = d
		}
	}
	info := &ServerInfo{RoundTripMS: ms(best)}
	_, info.Encrypted = conn.PgConn().Conn().(*tls.Conn)
	var alloy, lakebase bool
	err := conn.QueryRow(ctx, serverInfoSQL).Scan(&info.Version, &info.VersionNum, &info.CurrentUser,
		&info.Database, &info.ReadOnlyReplica, &alloy, &lakebase)
	if err != nil {
		fail(fmt.Errorf("read server facts: %w", err))
		return
	}
	switch {
	case alloy && !lakebase:
		info.Flavor = connection.AlloyDB
	case lakebase && !alloy:
		info.Flavor = connection.Lakebase
	}
	r.report.Server = info

	var b strings.Builder
	fmt.Fprintf(&b, "SELECT 1 round trip %.2f ms; PostgreSQL %s", info.RoundTripMS, info.Version)
	if info.Flavor != "" {
		fmt.Fprintf(&b, " (%s)", info.Flavor.Label())
	}
	fmt.Fprintf(&b, "; current_user %q; database %q; ", info.CurrentUser, info.Database)
	if info.ReadOnlyReplica {
		b.WriteString("read-only replica (in recovery)")
	} else {
		b.WriteString("read-write primary")
	}
	if !info.Encrypted {
		b.WriteString("; not encrypted")
	}
	var hints []string
	if info.ReadOnlyReplica {
		hints = append(hints, "This server is a read-only replica (hot standby): queries work, but dbt cannot create "+
			"tables or views here. Point the connection at the primary for dbt runs.")
	}
	if h := flavorHint(r.spec.Flavor, info.Flavor); h != "" {
		hints = append(hints, h)
	}
	r.ok(StepQuery, start, b.String(), strings.Join(hints, " "))
}

// flavorHint says when the declared flavor and the server's own settings
// seem to disagree. Only positive evidence of another flavor counts.
func flavorHint(declared, detected connection.Flavor) string {
	if detected == "" || detected == declared {
		return ""
	}
	return fmt.Sprintf("The connection is declared as %s, but the server has settings only %s defines: it seems to be %s. "+
		"If so, set the flavor to %s (its defaults, such as sslmode=require, then apply).",
		declared.Label(), detected.Label(), detected.Label(), detected)
}
