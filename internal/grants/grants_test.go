package grants_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/grants"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

func connect(t *testing.T, p *testenv.Postgres, user, password, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.ConnString(user, password, db))
	if err != nil {
		t.Fatalf("connect to %s as %s: %v", db, user, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// script runs SQL (several statements, comments allowed) with the simple
// protocol.
func script(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.PgConn().Exec(context.Background(), sql).ReadAll(); err != nil {
		t.Fatalf("run:\n%s\n: %v", sql, err)
	}
}

func audit(t *testing.T, c *pgx.Conn, req grants.Request) *grants.Result {
	t.Helper()
	res, err := grants.Audit(context.Background(), c, req)
	if err != nil {
		t.Fatalf("audit %+v: %v", req, err)
	}
	for _, ch := range res.Checks {
		t.Logf("%-10s %-8s %s %s", ch.Status, ch.Privilege, ch.Object(), ch.Note)
	}
	t.Logf("SQL:\n%s", res.SQL())
	return res
}

func missing(res *grants.Result) []string {
	var out []string
	for _, c := range res.Checks {
		if c.Status == grants.Missing || c.Status == grants.NotFound {
			out = append(out, c.Privilege+" "+c.Object())
		}
	}
	return out
}

// TestRoundTrip creates a role lacking every privilege on objects whose
// names need quoting, audits it, runs the generated SQL as a superuser and
// audits again: nothing is missing, and the role can read a table created
// after the grants and create its target schema.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	// A cluster of the test's own: its roles and databases have fixed
	// names (that need quoting), which a shared cluster would still hold
	// on a second run (-count).
	p := testenv.StartPostgres(t, testenv.PostgresOptions{})
	const (
		db     = `Analytics DB`
		user   = `dbt User`
		pw     = `dbt-pw`
		loader = `Loader "X"`
		raw    = `Raw "Data"`
		target = `Analytics`
	)
	id := func(s ...string) string { return pgx.Identifier(s).Sanitize() }
	p.CreateRole(t, user, pw)
	p.Exec(t, "CREATE ROLE "+id(loader)+" NOLOGIN")
	p.Exec(t, "CREATE DATABASE "+id(db))
	p.Exec(t, "REVOKE CONNECT ON DATABASE "+id(db)+" FROM PUBLIC")

	su := connect(t, p, p.SuperUser, p.SuperPassword, db)
	script(t, su, `
		CREATE FOREIGN DATA WRAPPER dummy_fdw;
		CREATE SERVER dummy FOREIGN DATA WRAPPER dummy_fdw;
		GRANT USAGE ON FOREIGN SERVER dummy TO `+id(loader)+`;
		CREATE SCHEMA `+id(raw)+` AUTHORIZATION `+id(loader)+`;
		CREATE SCHEMA stripe AUTHORIZATION `+id(loader)+`;
		SET ROLE `+id(loader)+`;
		CREATE TABLE `+id(raw, "Orders")+` (id int);
		INSERT INTO `+id(raw, "Orders")+` VALUES (1);
		CREATE VIEW `+id(raw, "order view")+` AS SELECT id FROM `+id(raw, "Orders")+`;
		CREATE MATERIALIZED VIEW `+id(raw, "mv")+` AS SELECT id FROM `+id(raw, "Orders")+`;
		CREATE TABLE `+id(raw, "events")+` (at date) PARTITION BY RANGE (at);
		CREATE TABLE `+id(raw, "events_2026")+` PARTITION OF `+id(raw, "events")+` FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
		CREATE FOREIGN TABLE `+id(raw, "remote")+` (id int) SERVER dummy;
		CREATE TABLE stripe.charges (id int);
		RESET ROLE;`)

	req := grants.Request{TargetSchema: target, SourceSchemas: []string{raw, "stripe", raw}, Role: user}
	// The role may not even connect: audit it from the superuser's session.
	res := audit(t, su, req)
	if res.Role != user || res.Database != db || res.Superuser || res.OK() {
		t.Fatalf("result header = %+v", res)
	}
	want := []string{
		`CONNECT database "Analytics DB"`,
		`CREATE database "Analytics DB"`,
		`USAGE schema "Raw ""Data"""`,
		`SELECT table "Raw ""Data"""."Orders"`,
		`SELECT partitioned table "Raw ""Data""".events`,
		`SELECT table "Raw ""Data""".events_2026`,
		`SELECT materialized view "Raw ""Data""".mv`,
		`SELECT view "Raw ""Data"""."order view"`,
		`SELECT foreign table "Raw ""Data""".remote`,
		`SELECT future tables of "Loader ""X""" in schema "Raw ""Data"""`,
		`USAGE schema stripe`,
		`SELECT table stripe.charges`,
		`SELECT future tables of "Loader ""X""" in schema stripe`,
	}
	if got := missing(res); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("missing:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	sql := res.SQL()
	for _, s := range []string{
		`GRANT CONNECT, CREATE ON DATABASE "Analytics DB" TO "dbt User";`,
		`GRANT USAGE ON SCHEMA "Raw ""Data""" TO "dbt User";`,
		`GRANT SELECT ON ALL TABLES IN SCHEMA "Raw ""Data""" TO "dbt User";`,
		`ALTER DEFAULT PRIVILEGES FOR ROLE "Loader ""X""" IN SCHEMA "Raw ""Data""" GRANT SELECT ON TABLES TO "dbt User";`,
		`GRANT USAGE ON SCHEMA "stripe" TO "dbt User";`,
		`ALTER DEFAULT PRIVILEGES FOR ROLE "Loader ""X""" IN SCHEMA "stripe" GRANT SELECT ON TABLES TO "dbt User";`,
	} {
		if !strings.Contains(sql, s) {
			t.Errorf("SQL lacks %s", s)
		}
	}
	if strings.Contains(strings.ToLower(sql), "grant create table") || strings.Contains(strings.ToLower(sql), "in database") {
		t.Errorf("SQL has Snowflake syntax:\n%s", sql)
	}

	script(t, su, sql)

	// The role itself now connects and finds nothing missing.
	dbt := connect(t, p, user, pw, db)
	req.Role = ""
	if res := audit(t, dbt, req); !res.OK() || len(res.Statements) != 0 || res.Role != user {
		t.Fatalf("after the grants: missing %v, statements %v", missing(res), res.Statements)
	}
	// A table the loader creates after the grants is readable (default
	// privileges), and the role can create its target schema.
	script(t, su, `SET ROLE `+id(loader)+`; CREATE TABLE `+id(raw, "Later")+` AS SELECT 42 AS answer; RESET ROLE;`)
	var answer int
	if err := dbt.QueryRow(context.Background(), "SELECT answer FROM "+id(raw, "Later")).Scan(&answer); err != nil || answer != 42 {
		t.Fatalf("read a table created after the grants: %v", err)
	}
	script(t, dbt, `CREATE SCHEMA `+id(target)+`; CREATE TABLE `+id(target, "model")+` AS SELECT * FROM `+id(raw, "order view")+`;`)
	if res := audit(t, dbt, req); !res.OK() {
		t.Fatalf("with the target schema created: missing %v", missing(res))
	}
}

// TestEachPrivilege takes one privilege at a time away from a role that has
// all of them: the audit names exactly that one, and its SQL restores it.
func TestEachPrivilege(t *testing.T) {
	t.Parallel()
	p := testenv.StartPostgres(t, testenv.PostgresOptions{}) // roles of fixed names, as TestRoundTrip
	p.Exec(t, "CREATE ROLE loader NOLOGIN")
	p.Exec(t, "CREATE DATABASE cases")
	p.Exec(t, "REVOKE CONNECT ON DATABASE cases FROM PUBLIC")
	su := connect(t, p, p.SuperUser, p.SuperPassword, "cases")
	script(t, su, `
		CREATE FOREIGN DATA WRAPPER dummy_fdw;
		CREATE SERVER dummy FOREIGN DATA WRAPPER dummy_fdw;
		GRANT USAGE ON FOREIGN SERVER dummy TO loader;
		CREATE SCHEMA analytics;
		CREATE SCHEMA raw AUTHORIZATION loader;
		SET ROLE loader;
		CREATE TABLE raw.t (id int);
		CREATE VIEW raw.v AS SELECT 1 AS one;
		CREATE MATERIALIZED VIEW raw.m AS SELECT 1 AS one;
		CREATE FOREIGN TABLE raw.f (id int) SERVER dummy;
		RESET ROLE;`)

	full := []string{
		"GRANT CONNECT ON DATABASE cases TO %[1]s",
		"GRANT USAGE ON SCHEMA analytics TO %[1]s",
		"GRANT CREATE ON SCHEMA analytics TO %[1]s",
		"GRANT USAGE ON SCHEMA raw TO %[1]s",
		"GRANT SELECT ON ALL TABLES IN SCHEMA raw TO %[1]s",
		"ALTER DEFAULT PRIVILEGES FOR ROLE loader IN SCHEMA raw GRANT SELECT ON TABLES TO %[1]s",
	}
	cases := []struct {
		name    string
		skip    int    // index in full not granted, or -1
		revoke  string // run after the grants
		target  string
		missing string
		fix     string
	}{
		{"Connect", 0, "", "analytics", `CONNECT database cases`, `GRANT CONNECT ON DATABASE "cases"`},
		{"CreateOnDatabase", -1, "", "new_schema", `CREATE database cases`, `GRANT CREATE ON DATABASE "cases"`},
		// The workload creates schemas (Request.CreateSchemas).
		{"CreateSchemasInWorkload", -1, "", "analytics", `CREATE database cases`, `GRANT CREATE ON DATABASE "cases"`},
		{"UsageOnTarget", 1, "", "analytics", `USAGE schema analytics`, `GRANT USAGE ON SCHEMA "analytics"`},
		{"CreateOnTarget", 2, "", "analytics", `CREATE schema analytics`, `GRANT CREATE ON SCHEMA "analytics"`},
		{"UsageOnSource", 3, "", "analytics", `USAGE schema raw`, `GRANT USAGE ON SCHEMA "raw"`},
		{"SelectOnTable", -1, "REVOKE SELECT ON raw.t FROM %[1]s", "analytics", `SELECT table raw.t`, `GRANT SELECT ON ALL TABLES IN SCHEMA "raw"`},
		{"SelectOnView", -1, "REVOKE SELECT ON raw.v FROM %[1]s", "analytics", `SELECT view raw.v`, `GRANT SELECT ON ALL TABLES IN SCHEMA "raw"`},
		{"SelectOnMatview", -1, "REVOKE SELECT ON raw.m FROM %[1]s", "analytics", `SELECT materialized view raw.m`, `GRANT SELECT ON ALL TABLES IN SCHEMA "raw"`},
		{"SelectOnForeignTable", -1, "REVOKE SELECT ON raw.f FROM %[1]s", "analytics", `SELECT foreign table raw.f`, `GRANT SELECT ON ALL TABLES IN SCHEMA "raw"`},
		{"DefaultPrivileges", 5, "", "analytics", `SELECT future tables of loader in schema raw`, `ALTER DEFAULT PRIVILEGES FOR ROLE "loader" IN SCHEMA "raw" GRANT SELECT ON TABLES`},
	}
	// Sequential: concurrent GRANTs on the same objects conflict.
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			role := "r_" + strings.ToLower(tc.name)
			p.CreateRole(t, role, "pw")
			var b strings.Builder
			for i, g := range full {
				if i != tc.skip {
					b.WriteString(strings.ReplaceAll(g, "%[1]s", role) + ";\n")
				}
			}
			if tc.revoke != "" {
				b.WriteString(strings.ReplaceAll(tc.revoke, "%[1]s", role) + ";\n")
			}
			script(t, su, b.String())
			req := grants.Request{TargetSchema: tc.target, SourceSchemas: []string{"raw"}, Role: role,
				CreateSchemas: tc.name == "CreateSchemasInWorkload"}
			res := audit(t, su, req)
			if got := missing(res); len(got) != 1 || got[0] != tc.missing {
				t.Fatalf("missing = %q, want [%q]", got, tc.missing)
			}
			if len(res.Statements) != 1 || !strings.HasPrefix(res.Statements[0].SQL, tc.fix) ||
				!strings.HasSuffix(res.Statements[0].SQL, ` TO "`+role+`";`) {
				t.Fatalf("statements = %+v, want one starting with %s", res.Statements, tc.fix)
			}
			script(t, su, res.SQL())
			if res := audit(t, su, req); !res.OK() {
				t.Fatalf("after the fix: missing %v", missing(res))
			}
		})
	}

	// CREATE SCHEMA IF NOT EXISTS needs CREATE on the database although the
	// schema exists: the audit says so when the workload creates schemas,
	// and says why it is not needed otherwise.
	t.Run("CreateSchemaIfNotExists", func(t *testing.T) {
		const role = "r_if_not_exists"
		p.CreateRole(t, role, "pw")
		var b strings.Builder
		for _, g := range full {
			b.WriteString(strings.ReplaceAll(g, "%[1]s", role) + ";\n")
		}
		script(t, su, b.String())
		as := connect(t, p, role, "pw", "cases")
		_, err := as.Exec(context.Background(), "CREATE SCHEMA IF NOT EXISTS analytics")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Fatalf("CREATE SCHEMA IF NOT EXISTS of an existing schema without CREATE on the database: %v, want 42501", err)
		}
		res := audit(t, su, grants.Request{TargetSchema: "analytics", SourceSchemas: []string{"raw"}, Role: role})
		if !res.OK() {
			t.Fatalf("without schema creation: missing %v", missing(res))
		}
		c := res.Checks[1]
		if c.Privilege != "CREATE" || c.ObjectType != grants.ObjectDatabase || c.Status != grants.NotNeeded ||
			strings.HasPrefix(c.Note, "needed") || !strings.Contains(c.Note, "CREATE SCHEMA (even IF NOT EXISTS)") {
			t.Fatalf("CREATE on the database = %+v", c)
		}
		req := grants.Request{TargetSchema: "analytics", SourceSchemas: []string{"raw"}, Role: role, CreateSchemas: true,
			CreateSchemasWhy: "job nightly runs CREATE SCHEMA in step 1"}
		res = audit(t, su, req)
		if got := missing(res); len(got) != 1 || got[0] != `CREATE database cases` || !strings.Contains(res.Checks[1].Note, "job nightly runs CREATE SCHEMA") {
			t.Fatalf("with schema creation: missing %q, note %q", got, res.Checks[1].Note)
		}
		script(t, su, res.SQL())
		if _, err := as.Exec(context.Background(), "CREATE SCHEMA IF NOT EXISTS analytics"); err != nil {
			t.Fatalf("CREATE SCHEMA IF NOT EXISTS after the audit's SQL: %v", err)
		}
	})

	t.Run("SuperuserHasAll", func(t *testing.T) {
		res := audit(t, su, grants.Request{TargetSchema: "analytics", SourceSchemas: []string{"raw"}})
		if !res.Superuser || !res.OK() {
			t.Fatalf("superuser: %+v", missing(res))
		}
	})

	t.Run("UnknownSchemaAndRole", func(t *testing.T) {
		res := audit(t, su, grants.Request{TargetSchema: "analytics", SourceSchemas: []string{"Raw"}, Role: "loader"})
		if got := missing(res); len(got) < 1 || got[len(got)-1] != `USAGE schema "Raw"` || res.OK() {
			t.Fatalf("missing = %q", got)
		}
		if !strings.Contains(res.SQL(), `-- schema "Raw" does not exist`) {
			t.Errorf("SQL = %s", res.SQL())
		}
		script(t, su, res.SQL()) // still valid SQL
		if _, err := grants.Audit(context.Background(), su, grants.Request{TargetSchema: "x", Role: "nobody"}); !errors.Is(err, grants.ErrRoleNotFound) {
			t.Fatalf("unknown role: %v", err)
		}
		if _, err := grants.Audit(context.Background(), su, grants.Request{}); err == nil {
			t.Fatal("no target schema accepted")
		}
	})
}

func TestConnectDenied(t *testing.T) {
	t.Parallel()
	res := grants.ConnectDenied("Analytics DB", "dbt User", grants.Request{TargetSchema: "a"})
	if res.OK() || res.Missing() != 1 || res.SQL() == "" ||
		!strings.Contains(res.SQL(), `GRANT CONNECT ON DATABASE "Analytics DB" TO "dbt User";`) {
		t.Fatalf("%+v\n%s", res, res.SQL())
	}
}

// TestLines checks how a report groups checks: each schema's run of
// relations in one line, and an empty line of relations before the default
// privileges of a schema without relations.
func TestLines(t *testing.T) {
	t.Parallel()
	rel := func(typ, schema, name string, st grants.Status) grants.Check {
		return grants.Check{ObjectType: typ, Schema: schema, Name: name, Privilege: "SELECT", Status: st}
	}
	res := &grants.Result{Checks: []grants.Check{
		{ObjectType: grants.ObjectDatabase, Name: "d", Privilege: "CONNECT", Status: grants.Granted},
		{ObjectType: grants.ObjectSchema, Name: "raw", Privilege: "USAGE", Status: grants.Granted},
		rel(grants.ObjectTable, "raw", "a", grants.Granted),
		rel(grants.ObjectView, "raw", "B", grants.Missing),
		rel(grants.ObjectTable, "stg", "c", grants.Missing),
		{ObjectType: grants.ObjectDefaultPrivileges, Schema: "raw", Name: "loader", Privilege: "SELECT", Status: grants.Granted},
		{ObjectType: grants.ObjectSchema, Name: "empty", Privilege: "USAGE", Status: grants.Granted},
		{ObjectType: grants.ObjectDefaultPrivileges, Schema: "empty", Name: "loader", Privilege: "SELECT", Status: grants.Missing},
	}}
	var got []string
	for _, l := range res.Lines() {
		if l.Check != nil {
			got = append(got, l.Check.Object())
			continue
		}
		got = append(got, fmt.Sprintf("relations of %s: %d, not granted %v", l.Schema, len(l.Relations), l.NotGranted()))
	}
	want := []string{
		`database d`, `schema raw`,
		`relations of raw: 2, not granted ["B"]`,
		`relations of stg: 1, not granted [c]`,
		`future tables of loader in schema raw`,
		`schema empty`,
		`relations of empty: 0, not granted []`,
		`future tables of loader in schema empty`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !grants.IsRelation(grants.ObjectPartitionedTable) || grants.IsRelation(grants.ObjectDefaultPrivileges) {
		t.Error("IsRelation is wrong about partitioned tables or default privileges")
	}
}

// TestTemporaryTables hardens a database the usual way (REVOKE ALL ON
// DATABASE ... FROM PUBLIC, which takes TEMPORARY away with CONNECT): dbt
// creates temporary tables for incremental models and snapshots, so the
// audit must ask for TEMPORARY too, and after its SQL the role can create
// one.
func TestTemporaryTables(t *testing.T) {
	t.Parallel()
	p := testenv.StartPostgres(t, testenv.PostgresOptions{}) // roles of fixed names, as TestRoundTrip
	p.CreateRole(t, "dbt", "pw")
	p.Exec(t, "CREATE DATABASE hardened")
	p.Exec(t, "REVOKE ALL ON DATABASE hardened FROM PUBLIC")
	su := connect(t, p, p.SuperUser, p.SuperPassword, "hardened")
	script(t, su, `CREATE SCHEMA analytics AUTHORIZATION dbt;`)

	req := grants.Request{TargetSchema: "analytics", Role: "dbt"}
	res := audit(t, su, req)
	want := []string{`CONNECT database hardened`, `TEMPORARY database hardened`}
	if got := missing(res); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("missing:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(res.Statements) != 1 || res.Statements[0].SQL != `GRANT CONNECT, TEMPORARY ON DATABASE "hardened" TO "dbt";` {
		t.Fatalf("statements = %+v", res.Statements)
	}
	script(t, su, res.SQL())

	dbt := connect(t, p, "dbt", "pw", "hardened")
	// What dbt-postgres runs for an incremental model.
	script(t, dbt, `CREATE TEMPORARY TABLE "model__dbt_tmp" AS SELECT 1 AS id;`)
	req.Role = ""
	if res := audit(t, dbt, req); !res.OK() || len(res.Statements) != 0 {
		t.Fatalf("after the grants: missing %v, statements %v", missing(res), res.Statements)
	}
}

// TestConnectionRole audits a session that logs in as one user and acts as
// a group role (the connection's role setting, dbt's role): the server
// checks CONNECT for the user that logs in, everything else for the role.
func TestConnectionRole(t *testing.T) {
	t.Parallel()
	p := testenv.StartPostgres(t, testenv.PostgresOptions{}) // roles of fixed names, as TestRoundTrip
	p.CreateRole(t, "alice", "pw")
	p.Exec(t, "CREATE ROLE transformer NOLOGIN")
	p.Exec(t, "GRANT transformer TO alice")
	p.Exec(t, "CREATE DATABASE warehouse")
	p.Exec(t, "REVOKE CONNECT ON DATABASE warehouse FROM PUBLIC")
	p.Exec(t, "GRANT CONNECT ON DATABASE warehouse TO alice")
	su := connect(t, p, p.SuperUser, p.SuperPassword, "warehouse")
	script(t, su, `CREATE SCHEMA analytics AUTHORIZATION transformer;`)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(p.ConnString("alice", "pw", "warehouse"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["role"] = "transformer" // as connection.Spec.Role
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	res := audit(t, conn, grants.Request{TargetSchema: "analytics"})
	if res.Role != "transformer" || !res.OK() || len(res.Statements) != 0 {
		t.Fatalf("role %s: missing %v, statements %v", res.Role, missing(res), res.Statements)
	}

	// Without CONNECT for alice (a superuser's session can audit that),
	// the statement grants it to alice, not to the role.
	p.Exec(t, "REVOKE CONNECT ON DATABASE warehouse FROM alice")
	script(t, su, "SET SESSION AUTHORIZATION alice; SET ROLE transformer;")
	res = audit(t, su, grants.Request{TargetSchema: "analytics"})
	if got := missing(res); len(got) != 1 || got[0] != "CONNECT database warehouse" ||
		len(res.Statements) != 1 || res.Statements[0].SQL != `GRANT CONNECT ON DATABASE "warehouse" TO "alice";` {
		t.Fatalf("missing %v, statements %+v", got, res.Statements)
	}
	script(t, su, "RESET ROLE; RESET SESSION AUTHORIZATION;")
	script(t, su, res.SQL())
	if _, err := pgx.ConnectConfig(ctx, cfg); err != nil {
		t.Fatalf("log in after the grant: %v", err)
	}
}

// TestPartitionsReadThroughParent grants SELECT on a partitioned table and
// not on its partitions (as pg_partman and hand-made partitions often
// leave them): a query of the parent reads them all, so the audit does not
// ask for SELECT on each partition. A partition whose parent the role
// cannot read is still missing.
func TestPartitionsReadThroughParent(t *testing.T) {
	t.Parallel()
	p := testenv.StartPostgres(t, testenv.PostgresOptions{}) // roles of fixed names, as TestRoundTrip
	p.CreateRole(t, "dbt", "pw")
	p.Exec(t, "CREATE DATABASE parts")
	su := connect(t, p, p.SuperUser, p.SuperPassword, "parts")
	script(t, su, `
		CREATE SCHEMA analytics AUTHORIZATION dbt;
		CREATE SCHEMA raw;
		CREATE SCHEMA raw_parts;
		CREATE TABLE raw.events (at date, n int) PARTITION BY RANGE (at);
		CREATE TABLE raw.events_2026 PARTITION OF raw.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')
			PARTITION BY RANGE (at);
		CREATE TABLE raw."events_2026_H1" PARTITION OF raw.events_2026 FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
		CREATE TABLE raw_parts.events_2027 PARTITION OF raw.events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
		INSERT INTO raw.events VALUES ('2026-02-01', 1), ('2027-02-01', 2);
		CREATE TABLE raw.other (at date) PARTITION BY RANGE (at);
		CREATE TABLE raw.other_2026 PARTITION OF raw.other FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
		GRANT USAGE ON SCHEMA raw TO dbt;
		GRANT SELECT ON raw.events TO dbt;
		ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA raw GRANT SELECT ON TABLES TO dbt;`)

	req := grants.Request{TargetSchema: "analytics", SourceSchemas: []string{"raw", "raw_parts"}, Role: "dbt"}
	res := audit(t, su, req)
	want := []string{
		`SELECT partitioned table raw.other`,
		`SELECT table raw.other_2026`,
		`USAGE schema raw_parts`,
		`SELECT future tables of postgres in schema raw_parts`,
	}
	if got := missing(res); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("missing:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range res.Checks {
		if c.Name == "events_2026" || c.Name == "events_2026_H1" || c.Name == "events_2027" {
			if c.Status != grants.NotNeeded || !strings.Contains(c.Note, "events") {
				t.Errorf("%s: %s (%s), want not needed, read through its parent", c.Object(), c.Status, c.Note)
			}
		}
	}
	dbt := connect(t, p, "dbt", "pw", "parts")
	var n int
	if err := dbt.QueryRow(context.Background(), "SELECT sum(n) FROM raw.events").Scan(&n); err != nil || n != 3 {
		t.Fatalf("read the partitioned table: %d, %v", n, err)
	}
	script(t, su, res.SQL())
	if res := audit(t, su, req); !res.OK() {
		t.Fatalf("after the grants: missing %v", missing(res))
	}
}
