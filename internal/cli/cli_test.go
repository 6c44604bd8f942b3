package cli_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/cli"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// harness runs pgrelay commands in-process against its own data dir.
type harness struct {
	t       *testing.T
	dataDir string
	env     map[string]string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return &harness{t: t, dataDir: t.TempDir(), env: map[string]string{}}
}

// newHarnessOn is newHarness working locally, or with remote through srv
// as its admin (PGRELAY_SERVER and PGRELAY_TOKEN set).
func newHarnessOn(t *testing.T, srv *apitest.Server, remote bool) *harness {
	t.Helper()
	h := newHarness(t)
	if remote {
		h.env["PGRELAY_SERVER"] = srv.URL
		h.env["PGRELAY_TOKEN"] = srv.AdminToken
	}
	return h
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func (h *harness) runCtx(ctx context.Context, stdin string, args ...string) result {
	// Locked: exec copies its program's output in while pgrelay logs.
	var out, errb lockedBuffer
	env := cli.Env{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb,
		Getenv: func(k string) string {
			if k == "PGRELAY_DATA_DIR" {
				return h.dataDir
			}
			return h.env[k]
		},
		StdinIsTerminal: func() bool { return false },
	}
	code := cli.Execute(ctx, env, args)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func (h *harness) run(args ...string) result {
	return h.runCtx(context.Background(), "", args...)
}

// ok runs a command that must succeed.
func (h *harness) ok(args ...string) result {
	h.t.Helper()
	r := h.run(args...)
	if r.code != 0 {
		h.t.Fatalf("pgrelay %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// fail runs a command that must fail with code, and returns its result.
func (h *harness) fail(code int, args ...string) result {
	h.t.Helper()
	r := h.run(args...)
	if r.code != code {
		h.t.Fatalf("pgrelay %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	return r
}

func contains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

// env is the shared set of servers of this package's tests.
type env struct {
	pg      dbTarget
	tls     dbTarget // SSL-only, like AlloyDB and Lakebase
	bastion *testenv.Bastion
}

// dbTarget is where a test's connections go: a server, and a database
// and its owner role there.
type dbTarget struct {
	*testenv.Postgres
	DB, User, Password string
}

// sharedDB is a database and owner role of the test's own on the
// package's shared cluster.
func sharedDB(t *testing.T) dbTarget {
	t.Helper()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	d := pg.NewDatabase(t)
	return dbTarget{Postgres: pg, DB: d.Name, User: d.User, Password: d.Password}
}

// ownDB is database analytics and role dbt (password dbt-pw) on pg, a
// cluster of the test's own.
func ownDB(t *testing.T, pg *testenv.Postgres) dbTarget {
	t.Helper()
	pg.CreateRole(t, "dbt", "dbt-pw")
	pg.CreateDatabase(t, "analytics", "dbt")
	return dbTarget{Postgres: pg, DB: "analytics", User: "dbt", Password: "dbt-pw"}
}

// envPassword is the password of the owners of an env's databases, on
// both servers, so that one DB_PASSWORD serves both.
const envPassword = "dbt-pw"

// startEnv returns databases of the test's own on the package's shared
// plain and SSL-only clusters, and the shared bastion.
func startEnv(t *testing.T) *env {
	t.Helper()
	e := &env{bastion: testenv.SharedBastion(t, testenv.BastionOptions{})}
	for _, db := range []struct {
		to   *dbTarget
		opts testenv.PostgresOptions
	}{{&e.pg, testenv.PostgresOptions{}}, {&e.tls, testenv.PostgresOptions{SSLOnly: true}}} {
		pg := testenv.SharedPostgres(t, db.opts)
		d := pg.NewDatabase(t)
		d.SetPassword(t, envPassword)
		*db.to = dbTarget{Postgres: pg, DB: d.Name, User: d.User, Password: d.Password}
	}
	return e
}

// createArgs returns `connection create` arguments for pg's database, as
// its owner (password in DB_PASSWORD).
func createArgs(name string, pg dbTarget, extra ...string) []string {
	return append([]string{"connection", "create", name, "--host", pg.Host, "--port", strconv.Itoa(pg.Port),
		"--database", pg.DB, "--user", pg.User, "--password-env", "DB_PASSWORD"}, extra...)
}

func tunnelArgs(b *testenv.Bastion) []string {
	return []string{"--ssh-host", b.Host, "--ssh-port", strconv.Itoa(b.Port), "--ssh-user", b.User}
}

func TestCLI(t *testing.T) {
	t.Parallel()
	e := startEnv(t)

	t.Run("DirectQuery", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.env["DB_PASSWORD"] = "dbt-pw"
		r := h.ok(createArgs("direct", e.pg)...)
		contains(t, "create output", r.stdout, `Connection "direct" saved`, "PostgreSQL")
		r = h.ok("query", "direct", "select current_user, 1 + 1 as two", "-o", "csv")
		recs, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 || recs[0][0] != "current_user" || recs[1][0] != e.pg.User || recs[1][1] != "2" {
			t.Fatalf("csv = %q", recs)
		}
		r = h.ok("query", "direct", "select 1 as n, null::text as t, true as b, '{\"a\":1}'::jsonb as j", "-o", "json")
		var rows []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
			t.Fatalf("json output %q: %v", r.stdout, err)
		}
		if len(rows) != 1 || rows[0]["n"] != float64(1) || rows[0]["t"] != nil || rows[0]["b"] != true {
			t.Fatalf("json rows = %v", rows)
		}
		r = h.ok("query", "direct", "select 'x' as a union all select 'yy'")
		contains(t, "table output", r.stdout, " a", "----", " yy", "(2 rows)")

		// A SQL error exits non-zero with the server's message.
		r = h.fail(1, "query", "direct", "select * from no_such_table")
		contains(t, "sql error", r.stderr, `relation "no_such_table" does not exist`, "42P01")
	})

	t.Run("ThroughBastion", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.env["DB_PASSWORD"] = "dbt-pw"
		r := h.ok(append(createArgs("wh", e.pg), tunnelArgs(e.bastion)...)...)
		contains(t, "create output", r.stdout, "ssh-ed25519 ", " pgrelay:wh", "authorized_keys", "bastion-setup wh")

		// The key is not on the bastion yet: the error says so and shows it.
		pub := strings.TrimSpace(h.ok("connection", "public-key", "wh").stdout)
		r = h.fail(1, "query", "wh", "select 1")
		contains(t, "unauthorized error", r.stderr, "not authorized", "authorized_keys", pub)

		restricted := strings.TrimSpace(h.ok("connection", "public-key", "wh", "--restricted").stdout)
		wantPrefix := fmt.Sprintf(`restrict,port-forwarding,permitopen="%s:%d" `, e.pg.Host, e.pg.Port)
		if restricted != wantPrefix+pub {
			t.Fatalf("restricted line = %q, want %q", restricted, wantPrefix+pub)
		}
		e.bastion.Authorize(t, restricted)

		r = h.ok("query", "wh", "select current_user, inet_server_port()", "-o", "csv")
		contains(t, "query through bastion", r.stdout, fmt.Sprintf("%s,%d", e.pg.User, e.pg.Port))

		// The first connection pinned the bastion's host key.
		r = h.ok("connection", "show", "wh")
		contains(t, "show", r.stdout, sshkey.Fingerprint(e.bastion.HostKey)+" (pinned)")
		var v struct {
			SSHTunnel struct {
				HostKeyFingerprint string `json:"host_key_fingerprint"`
				PublicKey          string `json:"public_key"`
			} `json:"ssh_tunnel"`
			HasPassword bool `json:"has_password"`
		}
		if err := json.Unmarshal([]byte(h.ok("connection", "show", "wh", "-o", "json").stdout), &v); err != nil {
			t.Fatal(err)
		}
		if v.SSHTunnel.HostKeyFingerprint != sshkey.Fingerprint(e.bastion.HostKey) || v.SSHTunnel.PublicKey != pub || !v.HasPassword {
			t.Fatalf("show -o json = %+v", v)
		}

		// Rotating the key: the old key is shown, the new one is not yet
		// authorized.
		r = h.ok("connection", "rotate-key", "wh")
		contains(t, "rotate-key", r.stdout, pub, "pgrelay connection public-key wh --restricted")
		newPub := strings.TrimSpace(h.ok("connection", "public-key", "wh").stdout)
		if newPub == pub {
			t.Fatal("rotate-key kept the same key")
		}
		r = h.fail(1, "query", "wh", "select 1")
		contains(t, "after rotation", r.stderr, "not authorized", newPub)
		e.bastion.Authorize(t, newPub)
		h.ok("query", "wh", "select 1")
	})

	// Ctrl-C (a cancelled context, as the signal makes it) stops the
	// statement on the server, through the tunnel, not only the client.
	t.Run("QueryInterruptCancelsStatement", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.env["DB_PASSWORD"] = "dbt-pw"
		h.ok(append(createArgs("wh", e.pg), tunnelArgs(e.bastion)...)...)
		e.bastion.Authorize(t, strings.TrimSpace(h.ok("connection", "public-key", "wh").stdout))
		admin := e.pg.Connect(t, "postgres")
		const marker = "select pg_sleep(300) /* interrupt-me */"
		running := func() int {
			var n int
			if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
				WHERE query = $1 AND state = 'active'`, marker).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan result, 1)
		go func() { done <- h.runCtx(ctx, "", "query", "wh", marker) }()
		waitUntil(t, "the statement to run", 15*time.Second, func() bool { return running() == 1 })
		cancel()
		r := <-done
		if r.code != 130 || !strings.Contains(r.stderr, "cancelled on the server") {
			t.Fatalf("interrupted query: %s", r)
		}
		waitUntil(t, "the statement to stop on the server", 5*time.Second, func() bool { return running() == 0 })
	})

	t.Run("ProxyThroughBastion", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.env["DB_PASSWORD"] = "dbt-pw"
		h.ok(append(createArgs("px", e.pg), tunnelArgs(e.bastion)...)...)
		e.bastion.Authorize(t, strings.TrimSpace(h.ok("connection", "public-key", "px").stdout))
		port := testenv.FreePort(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan result, 1)
		go func() {
			done <- h.runCtx(ctx, "", "proxy", "px", "--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		}()
		var conn *pgx.Conn
		var err error
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			conn, err = pgx.Connect(context.Background(), fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s password=%s sslmode=disable", port, e.pg.DB, e.pg.User, envPassword))
			if err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			cancel()
			t.Fatalf("connect through proxy: %v\n%s", err, <-done)
		}
		var n int
		if err := conn.QueryRow(context.Background(), "select inet_server_port()").Scan(&n); err != nil || n != e.pg.Port {
			t.Fatalf("query through proxy: %d, %v", n, err)
		}
		_ = conn.Close(context.Background())
		cancel()
		select {
		case r := <-done:
			if r.code != 0 {
				t.Fatalf("proxy exit: %s", r)
			}
			contains(t, "proxy output", r.stdout, fmt.Sprintf("Listening on 127.0.0.1:%d", port), "Stopped.",
				fmt.Sprintf("Connect with: psql 'host=127.0.0.1 port=%d dbname=%s user=%s channel_binding=disable'", port, e.pg.DB, e.pg.User))
		case <-time.After(10 * time.Second):
			t.Fatal("proxy did not stop after cancel")
		}
	})

	// The psql line the proxy prints logs in once, with TLS to the
	// endpoint: with channel binding (libpq's default) the login fails
	// and libpq's sslmode=prefer tries again without TLS.
	t.Run("ProxyPrintedPsqlLine", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.env["DB_PASSWORD"] = envPassword
		h.ok(createArgs("pxtls", e.tls, "--sslmode", "require")...)
		cmd, out := h.startPgrelay("proxy", "pxtls")
		waitUntil(t, "the proxy to listen", 15*time.Second, func() bool { return strings.Contains(out.String(), "Press Ctrl-C") })
		_, line, ok := strings.Cut(out.String(), "Connect with: psql ")
		line, _, _ = strings.Cut(line, "\n")
		conninfo := strings.Trim(line, "'") // plain values here: quoted once by the shell quoting
		if !ok {
			t.Fatalf("no psql line in %q", out.String())
		}
		// sslmode=require: TLS to the endpoint, no second try without.
		psql := exec.Command("psql", "-X", "-At", "-c", "select ssl from pg_stat_ssl where pid = pg_backend_pid()", conninfo)
		psql.Env = append(os.Environ(), "PGPASSWORD="+envPassword, "PGSSLMODE=require")
		got, err := psql.CombinedOutput()
		if err != nil || strings.TrimSpace(string(got)) != "t" {
			t.Fatalf("psql %q with sslmode=require: %v\n%s", conninfo, err, got)
		}
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
	})

	t.Run("HostKeyChanged", func(t *testing.T) {
		t.Parallel()
		b := testenv.StartBastion(t, testenv.BastionOptions{})
		h := newHarness(t)
		h.env["DB_PASSWORD"] = "dbt-pw"
		h.ok(append(createArgs("hk", e.pg), tunnelArgs(b)...)...)
		b.Authorize(t, strings.TrimSpace(h.ok("connection", "public-key", "hk").stdout))
		h.ok("query", "hk", "select 1")
		old := sshkey.Fingerprint(b.HostKey)
		b.RotateHostKey(t)
		presented := sshkey.Fingerprint(b.HostKey)
		r := h.fail(1, "query", "hk", "select 1")
		contains(t, "changed host key error", r.stderr, old, presented,
			"pgrelay connection trust-host-key hk --fingerprint "+presented)
		r = h.ok("connection", "show", "hk")
		contains(t, "show pending", r.stdout, "CHANGED", presented)
		// Still refused until approved.
		h.fail(1, "query", "hk", "select 1")
		r = h.fail(2, "connection", "trust-host-key", "hk", "--fingerprint", old)
		contains(t, "pinned fingerprint", r.stderr, "host key "+old+" is already pinned",
			"the key waiting for approval at "+b.Addr()+" is "+presented)
		h.ok("connection", "trust-host-key", "hk", "--fingerprint", presented)
		h.ok("query", "hk", "select 1")
		contains(t, "show trusted", h.ok("connection", "show", "hk").stdout, presented+" (pinned)")
	})

	t.Run("SSLOnlyServer", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.env["DB_PASSWORD"] = "dbt-pw"
		// alloydb defaults to sslmode=require, which an SSL-only server accepts.
		h.ok(createArgs("alloy", e.tls, "--flavor", "alloydb")...)
		r := h.ok("query", "alloy", "select ssl from pg_stat_ssl where pid = pg_backend_pid()", "-o", "csv")
		contains(t, "ssl in use", r.stdout, "t")
		// sslmode=disable is refused by the server's pg_hba.
		h.ok(createArgs("plain", e.tls, "--sslmode", "disable")...)
		r = h.fail(1, "query", "plain", "select 1")
		contains(t, "disable against SSL-only", r.stderr, "28000")
		// verify-full with the right CA.
		h.ok(createArgs("vf", e.tls, "--sslmode", "verify-full", "--ssl-root-cert", e.tls.CAFile)...)
		h.ok("query", "vf", "select 1")
		// verify-full with another CA fails certificate verification.
		otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
		if err := os.WriteFile(otherCA, testenv.NewTLSCert(t).CAPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		h.ok(createArgs("wrongca", e.tls, "--sslmode", "verify-full", "--ssl-root-cert", otherCA)...)
		r = h.fail(1, "query", "wrongca", "select 1")
		contains(t, "wrong CA", r.stderr, "certificate")
		// lakebase refuses a non-encrypting sslmode at validation.
		r = h.fail(2, createArgs("lb", e.tls, "--flavor", "lakebase", "--sslmode", "prefer")...)
		contains(t, "lakebase sslmode", r.stderr, "--sslmode", "Lakebase")
	})

	t.Run("AuthAndDatabaseErrors", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.env["DB_PASSWORD"] = "wrong-password"
		h.ok(createArgs("badpw", e.pg)...)
		r := h.fail(1, "query", "badpw", "select 1")
		contains(t, "wrong password", r.stderr, "28P01",
			"Next: the server refused the saved password of user "+e.pg.User+": give the right one with `pgrelay connection update badpw --password-env VAR`")
		h.env["DB_PASSWORD"] = "dbt-pw"
		h.ok("connection", "create", "nodb", "--host", e.pg.Host, "--port", strconv.Itoa(e.pg.Port),
			"--database", "no_such_db", "--user", e.pg.User, "--password-env", "DB_PASSWORD")
		r = h.fail(1, "query", "nodb", "select 1")
		contains(t, "unknown database", r.stderr, "3D000", "no_such_db", "Next: `pgrelay connection test nodb` checks each step")
		// Fixing the password with update keeps everything else.
		h.ok("connection", "update", "badpw", "--password-env", "DB_PASSWORD")
		h.ok("query", "badpw", "select 1")
	})

	t.Run("SecretsNotOnDisk", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		canary := "canary-pw-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		h.env["DB_PASSWORD"] = canary
		r := h.ok(append(createArgs("sec", e.pg), tunnelArgs(e.bastion)...)...)
		if r := h.runCtx(context.Background(), canary+"\n", "connection", "create", "sec2", "--host", "db.internal",
			"--database", "a", "--user", "u", "--password-stdin"); r.code != 0 {
			t.Fatalf("create with --password-stdin: %s", r)
		}
		outputs := r.stdout + r.stderr
		for _, args := range [][]string{{"connection", "show", "sec"}, {"connection", "show", "sec", "-o", "json"},
			{"connection", "list", "-o", "json"}, {"connection", "list"}, {"connection", "bastion-setup", "sec"}} {
			r := h.ok(args...)
			outputs += r.stdout + r.stderr
		}
		if strings.Contains(outputs, canary) {
			t.Fatalf("password canary in output")
		}
		// The private key, opened with the master key, must not be on disk.
		key, err := secret.LoadMasterKey("", h.dataDir)
		if err != nil {
			t.Fatal(err)
		}
		kr, _ := secret.NewKeyring(key)
		st, err := sqlite.Open(context.Background(), filepath.Join(h.dataDir, sqlite.FileName))
		if err != nil {
			t.Fatal(err)
		}
		rec, err := st.GetConnection(context.Background(), "sec")
		_ = st.Close()
		if err != nil {
			t.Fatal(err)
		}
		pemKey, err := kr.Open(rec.SealedPrivateKey, []byte("pgrelay/connection/"+rec.ID+"/ssh_private_key"))
		if err != nil {
			t.Fatalf("open sealed private key: %v", err)
		}
		var keyLines []string
		for _, l := range strings.Split(string(pemKey), "\n") {
			if len(l) > 40 && !strings.HasPrefix(l, "-----") {
				keyLines = append(keyLines, l)
			}
		}
		if len(keyLines) == 0 {
			t.Fatal("no key material in the unsealed private key")
		}
		files, _ := filepath.Glob(filepath.Join(h.dataDir, "*"))
		if len(files) < 2 {
			t.Fatalf("data dir has %v", files)
		}
		var disk []byte
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			disk = append(disk, b...)
		}
		if bytes.Contains(disk, []byte(canary)) {
			t.Fatalf("password canary found in %v", files)
		}
		for _, l := range keyLines {
			if bytes.Contains(disk, []byte(l)) || strings.Contains(outputs, l) {
				t.Fatalf("private key material found on disk or in output")
			}
		}
	})

	t.Run("Delete", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.env["DB_PASSWORD"] = "x"
		h.ok(createArgs("gone", e.pg)...)
		h.ok(createArgs("kept", e.pg)...)
		r := h.fail(2, "connection", "delete", "gone")
		contains(t, "delete without --yes", r.stderr, "--yes")
		h.ok("connection", "delete", "gone", "--yes")
		h.fail(3, "connection", "show", "gone")
		h.ok("connection", "show", "kept")
		r = h.fail(2, createArgs("kept", e.pg)...)
		contains(t, "duplicate", r.stderr, "kept", "already exists")
	})
}

func TestValidationNamesFlags(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.fail(2, "connection", "create", "Bad Name", "--host", "db:5432", "--port", "70000",
		"--ssh-host", "[::1]", "--ssh-keepalive-interval", "1ms", "--sslmode", "foo", "--flavor", "mysql")
	contains(t, "validation", r.stderr, "NAME:", "--host:", "--port:", "--database:", "--user:", "--sslmode:",
		"--flavor:", "--ssh-host:", "--ssh-user:", "--ssh-keepalive-interval:", "accepted")
	r = h.fail(2, "connection", "create", "x", "--host", "h", "--database", "d", "--user", "u", "--password", "hunter2")
	contains(t, "password flag", r.stderr, "--password-env", "--password-stdin")
	if strings.Contains(r.stderr+r.stdout, "hunter2") {
		t.Fatal("password flag value echoed")
	}
	r = h.fail(2, "connection", "create", "x", "--host", "h", "--database", "d", "--user", "u", "--password-env", "UNSET_VAR")
	contains(t, "unset env", r.stderr, "UNSET_VAR")
	// Nothing was saved by the failed attempts.
	contains(t, "list", h.ok("connection", "list").stdout, "No connections yet")
	h.fail(2, "query", "x")
	h.fail(3, "query", "missing", "select 1")
}

func TestWrongMasterKeyIsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("connection", "create", "c", "--host", "db.internal", "--database", "d", "--user", "u")
	h.env["PGRELAY_MASTER_KEY"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	r := h.fail(1, "connection", "list")
	contains(t, "wrong key", r.stderr, "master key does not match")
	h.env["PGRELAY_MASTER_KEY"] = "not base64!"
	r = h.fail(1, "connection", "list")
	contains(t, "bad key", r.stderr, "PGRELAY_MASTER_KEY", "base64")
	delete(h.env, "PGRELAY_MASTER_KEY")
	h.ok("connection", "show", "c")
}

// TestEndpointChangeNeedsPassword: moving a connection to another host,
// port, user or bastion without giving the password again is refused and
// names the password flags; with the password it is accepted.
func TestEndpointChangeNeedsPassword(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["DB_PASSWORD"] = "endpoint-pw-canary"
	h.ok("connection", "create", "wh", "--host", "db.internal", "--database", "d", "--user", "u", "--password-env", "DB_PASSWORD")
	for _, args := range [][]string{{"--host", "evil.example.com"}, {"--port", "6543"}, {"--user", "postgres"},
		{"--ssh-host", "bastion.example.com", "--ssh-user", "jump"}} {
		r := h.fail(2, append([]string{"connection", "update", "wh"}, args...)...)
		contains(t, "update "+strings.Join(args, " "), r.stderr, "--password-env/--password-stdin:",
			"enter the password again: the endpoint or how it is verified changed")
		if strings.Contains(r.stderr+r.stdout, "endpoint-pw-canary") {
			t.Fatal("the password was echoed")
		}
	}
	contains(t, "show", h.ok("connection", "show", "wh").stdout, "db.internal")
	h.ok("connection", "update", "wh", "--schema", "marts")
	h.ok("connection", "update", "wh", "--port", "6543", "--password-env", "DB_PASSWORD")
	h.ok("connection", "update", "wh", "--require-auth", "scram-sha-256")
	r := h.fail(2, "connection", "update", "wh", "--require-auth", "scram")
	contains(t, "bad require-auth", r.stderr, "--require-auth:", "scram-sha-256")
}

// waitUntil polls cond until it holds, failing the test after within.
func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
	}
}

// writeJobs writes a jobs file holding yaml and returns its path.
func writeJobs(t *testing.T, yaml string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "jobs.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// applyJobs applies a jobs file holding yaml, which must succeed.
func (h *harness) applyJobs(yaml string) {
	h.t.Helper()
	h.ok("job", "apply", "-f", writeJobs(h.t, yaml))
}
