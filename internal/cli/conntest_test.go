package cli_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestConnectionTestCommand runs `pgrelay connection test` through a real
// bastion and directly: each step printed with its mark, the failing one
// with error and hint, a summary line, JSON output, and the exit code.
func TestConnectionTestCommand(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = "dbt-pw"

	h.ok(append(createArgs("wh", e.tls, "--sslmode", "require"), tunnelArgs(e.bastion)...)...)
	pub := strings.TrimSpace(h.ok("connection", "public-key", "wh").stdout)

	// The key is not on the bastion yet: ssh_auth fails with the line to add.
	r := h.fail(1, "connection", "test", "wh")
	contains(t, "unauthorized test", r.stdout, `Testing connection "wh"`, "✓ resolve", "✓ bastion_tcp", "✓ ssh_handshake",
		"✗ ssh_auth", "error: ", "hint:  ", pub, "pgrelay connection bastion-setup wh", "– forward", "– query",
		"Failed at ssh_auth: ", "(3 of 9 steps passed")
	contains(t, "unauthorized stderr", r.stderr, "failed its test at ssh_auth")
	restricted := strings.TrimSpace(h.ok("connection", "public-key", "wh", "--restricted").stdout)
	contains(t, "ssh_auth hint", r.stdout, restricted)
	if strings.Index(r.stdout, "✓ resolve") > strings.Index(r.stdout, "✗ ssh_auth") {
		t.Error("steps out of order")
	}

	// JSON: the documented shape, also on failure.
	r = h.fail(1, "connection", "test", "wh", "-o", "json")
	var out struct {
		Connection string `json:"connection"`
		OK         bool   `json:"ok"`
		Steps      []struct {
			ID         string   `json:"id"`
			Status     string   `json:"status"`
			DurationMS *float64 `json:"duration_ms"`
			Error      string   `json:"error"`
			Hint       string   `json:"hint"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("json output %q: %v", r.stdout, err)
	}
	if out.Connection != "wh" || out.OK || len(out.Steps) != 9 || out.Steps[3].ID != "ssh_auth" ||
		out.Steps[3].Status != "failed" || out.Steps[3].Hint == "" || out.Steps[8].Status != "skipped" ||
		out.Steps[0].DurationMS == nil {
		t.Fatalf("json = %+v", out)
	}

	// The handshake pinned the host key; the key has not logged in yet, and
	// the hint gives the restricted authorized_keys line.
	contains(t, "show after a failed login", h.ok("connection", "show", "wh").stdout,
		sshkey.Fingerprint(e.bastion.HostKey)+" (pinned)", "no login with this key yet")

	e.bastion.Authorize(t, pub)
	r = h.ok("connection", "test", "wh")
	contains(t, "passing test", r.stdout, "✓ forward", "✓ tls", "✓ postgres_auth", "✓ database", "✓ query",
		"All 9 steps passed in ", `current_user "`+e.tls.User+`"`)
	// The first passing test pinned the host key and recorded the login.
	contains(t, "show", h.ok("connection", "show", "wh").stdout, sshkey.Fingerprint(e.bastion.HostKey)+" (pinned)",
		"accepted by the bastion (last login ")
	r = h.ok("connection", "test", "wh", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || !out.OK || len(out.Steps) != 9 {
		t.Fatalf("json after authorizing: %+v, %v", out, err)
	}

	// Direct, without TLS: tls is not requested, which is no failure.
	h.ok(createArgs("direct", e.pg, "--sslmode", "disable")...)
	r = h.ok("connection", "test", "direct")
	contains(t, "direct test", r.stdout, "– tls", "not requested", "All 5 steps passed in ", "(not requested: tls).")

	// The server rejects unencrypted logins: the hint says so.
	h.ok(createArgs("plain", e.tls, "--sslmode", "disable")...)
	r = h.fail(1, "connection", "test", "plain")
	contains(t, "ssl required", r.stdout, "✗ postgres_auth", "28000", "requires SSL",
		"pgrelay connection update plain --sslmode require")

	h.fail(3, "connection", "test", "nope")
	h.fail(2, "connection", "test", "wh", "-o", "yaml")
}

// TestConnectionTestAndGrantsRemoteMode runs `connection test` and
// `grants` against a server: the steps print as the server runs them, a
// wrong password fails at postgres_auth with its hint, and the audit's SQL,
// run as a superuser, leaves nothing missing.
func TestConnectionTestAndGrantsRemoteMode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A cluster of its own: the test revokes CREATE on the database from
	// PUBLIC and audits by names.
	pg := ownDB(t, testenv.StartPostgres(t, testenv.PostgresOptions{}))
	pg.CreateRole(t, "remote reader", "reader-pw")
	srv := apitest.Start(t, apitest.Options{})
	h := newHarness(t)
	h.env["PGRELAY_SERVER"] = srv.URL
	h.env["PGRELAY_TOKEN"] = srv.AdminToken
	h.env["DB_PASSWORD"] = "dbt-pw"
	h.ok(createArgs("wh", pg, "--sslmode", "disable")...)
	h.env["DB_PASSWORD"] = "wrong-pw"
	h.ok(createArgs("badpw", pg, "--sslmode", "disable")...)
	h.env["DB_PASSWORD"] = "reader-pw"
	h.ok("connection", "create", "reader", "--host", pg.Host, "--port", itoa(pg.Port), "--database", "analytics",
		"--user", "remote reader", "--password-env", "DB_PASSWORD", "--sslmode", "disable")

	r := h.ok("connection", "test", "wh")
	contains(t, "remote test", r.stdout, `Testing connection "wh"`, "✓ resolve", "✓ tcp", "– tls", "✓ postgres_auth",
		"✓ database", "✓ query", `current_user "dbt"`, "All 5 steps passed in ")
	r = h.fail(1, "connection", "test", "badpw")
	contains(t, "remote failing test", r.stdout, "✗ postgres_auth", "28P01", "hint:  ", "– database", "Failed at postgres_auth")
	contains(t, "remote failing stderr", r.stderr, "failed its test at postgres_auth")
	r = h.fail(1, "connection", "test", "badpw", "-o", "json")
	var out struct {
		Connection string `json:"connection"`
		OK         bool   `json:"ok"`
		Steps      []struct {
			ID, Status, Hint string
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Connection != "badpw" || out.OK ||
		len(out.Steps) != 6 || out.Steps[3].ID != "postgres_auth" || out.Steps[3].Status != "failed" || out.Steps[3].Hint == "" {
		t.Fatalf("remote json %+v, %v:\n%s", out, err, r.stdout)
	}
	h.fail(3, "connection", "test", "nope")

	pg.Exec(t, `REVOKE CREATE ON DATABASE analytics FROM PUBLIC`)
	args := []string{"grants", "reader", "--target-schema", "analytics"}
	r = h.fail(1, args...)
	contains(t, "remote grants", r.stdout, `Privileges of "remote reader" in database analytics`,
		"✗ CREATE on database analytics", `GRANT CREATE ON DATABASE "analytics" TO "remote reader";`)
	sql := h.fail(1, append(args, "-o", "sql")...).stdout
	su, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, "analytics"))
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(ctx)
	if _, err := su.PgConn().Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	contains(t, "remote grants after", h.ok(args...).stdout, "Nothing is missing.")
	h.fail(3, "grants", "nope", "--target-schema", "analytics")
}

// TestGrantsCommand audits a user lacking privileges, runs the printed SQL
// as a superuser, and audits again.
func TestGrantsCommand(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	ctx := context.Background()
	// A role of the test's own, with a name that needs quoting, dropped
	// after the database that holds its privileges.
	reader := "Reader " + rand.Text()[:8]
	e.pg.CreateRole(t, reader, "reader-pw")
	t.Cleanup(func() {
		e.pg.Exec(t, "DROP DATABASE IF EXISTS "+e.pg.DB+" WITH (FORCE)")
		e.pg.Exec(t, "DROP ROLE "+pgx.Identifier{reader}.Sanitize())
	})
	su, err := pgx.Connect(ctx, e.pg.ConnString(e.pg.SuperUser, e.pg.SuperPassword, e.pg.DB))
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(ctx)
	run := func(sql string) {
		t.Helper()
		if _, err := su.PgConn().Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	run(`CREATE SCHEMA raw AUTHORIZATION ` + e.pg.User + `; SET ROLE ` + e.pg.User + `; CREATE TABLE raw.orders (id int);
		CREATE VIEW raw."Big Orders" AS SELECT * FROM raw.orders; RESET ROLE;
		CREATE SCHEMA stripe AUTHORIZATION ` + e.pg.User + `;`)

	h := newHarness(t)
	h.env["DB_PASSWORD"] = "reader-pw"
	h.ok("connection", "create", "wh", "--host", e.pg.Host, "--port", itoa(e.pg.Port), "--database", e.pg.DB,
		"--user", reader, "--password-env", "DB_PASSWORD", "--sslmode", "disable")

	args := []string{"grants", "wh", "--target-schema", "analytics", "--source-schema", "raw", "--source-schema", "stripe"}
	r := h.fail(1, args...)
	contains(t, "grants text", r.stdout, `Privileges of "`+reader+`" in database `+e.pg.DB,
		"✓ CONNECT on database "+e.pg.DB,
		"✗ CREATE on database "+e.pg.DB+": needed to create the target schema analytics",
		"✗ USAGE on schema raw",
		`✗ SELECT on 2 of 2 tables and views in raw: "Big Orders", orders`,
		"✗ SELECT on future tables of "+e.pg.User+" in schema raw",
		"✓ SELECT on tables and views in stripe: none there yet",
		"privileges missing.",
		`GRANT CREATE ON DATABASE "`+e.pg.DB+`" TO "`+reader+`";`,
		`GRANT SELECT ON ALL TABLES IN SCHEMA "raw" TO "`+reader+`";`,
		`ALTER DEFAULT PRIVILEGES FOR ROLE "`+e.pg.User+`" IN SCHEMA "stripe" GRANT SELECT ON TABLES TO "`+reader+`";`)
	contains(t, "grants stderr", r.stderr, `"`+reader+`" lacks`)
	t.Logf("grants output:\n%s", r.stdout)

	sql := h.fail(1, append(args, "-o", "sql")...).stdout
	if strings.Contains(sql, "✗") || !strings.HasPrefix(sql, "-- ") {
		t.Fatalf("-o sql prints more than SQL:\n%s", sql)
	}
	run(sql)

	r = h.ok(args...)
	contains(t, "after grants", r.stdout, "Nothing is missing.", "✓ SELECT on all 2 tables and views in raw")
	r = h.ok(append(args, "-o", "json")...)
	var res struct {
		Role       string            `json:"role"`
		Checks     []json.RawMessage `json:"checks"`
		Statements []json.RawMessage `json:"statements"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Role != reader || len(res.Statements) != 0 ||
		len(res.Checks) == 0 {
		t.Fatalf("json: %+v, %v", res, err)
	}
	if out := h.ok(append(args, "-o", "sql")...).stdout; out != "" {
		t.Fatalf("-o sql with nothing missing printed %q", out)
	}
	h.fail(2, "grants", "wh", "--target-schema", "analytics", "-o", "yaml")
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
