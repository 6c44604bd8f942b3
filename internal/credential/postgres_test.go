package credential_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/credential/credentialtest"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// rotateScript is credentialtest.RotateScript: it rotates role $1's
// password to a token valid for $LIFE seconds and logs each call to $CALLS.
var rotateScript = credentialtest.RotateScript

// pgEnv is a PostgreSQL server that only accepts SSL, like AlloyDB and
// Lakebase, with a login helper.
type pgEnv struct {
	pg    *testenv.Postgres
	super string // superuser connection string
}

// login opens a session as user with tok, the way pgrelay does
// (connection.Spec.PgxConfig, sslmode require), and checks current_user.
func (e *pgEnv) login(ctx context.Context, user string, tok credential.Token) error {
	spec := connection.Spec{Name: "wh", Host: e.pg.Host, Port: e.pg.Port, Database: "postgres", User: user,
		Password: tok.Value, SSLMode: connection.SSLRequire}
	cfg, err := spec.PgxConfig()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	var who string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil {
		return err
	}
	if who != user {
		return errors.New("logged in as " + who)
	}
	return nil
}

func sqlstate(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// TestTokensLogIn proves, against a real PostgreSQL, that tokens from
// each source log in, and that the cache refreshes them before they
// expire, about 80 % of their lifetime apart.
func TestTokensLogIn(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for tokens to be rotated (about 40 s): skipped with -short (make test runs it)")
	}
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed (the rotation script uses it)")
	}
	p := testenv.StartPostgres(t, testenv.PostgresOptions{SSLOnly: true})
	e := &pgEnv{pg: p, super: p.ConnString(p.SuperUser, p.SuperPassword, "postgres")}
	for _, role := range []string{"rotor", "stale", "lake", "lake_ep", "etl@proj.iam"} {
		p.CreateRole(t, role, "initial-"+randomToken())
	}
	ctx := context.Background()

	// commandSource returns the rotating command for role, with tokens
	// valid for life, and the file that logs its calls.
	commandSource := func(t *testing.T, role string, life time.Duration) (*credential.CommandSource, string) {
		calls := filepath.Join(t.TempDir(), "calls")
		prog := script(t, strings.TrimPrefix(rotateScript, "#!/bin/sh\n"))
		env := []string{"PATH=" + os.Getenv("PATH"), "CALLS=" + calls, "LIFE=" + strconv.Itoa(int(life/time.Second)),
			"PGHOST=" + p.Host, "PGPORT=" + strconv.Itoa(p.Port), "PGUSER=" + p.SuperUser, "PGPASSWORD=" + p.SuperPassword,
			"PGDATABASE=postgres", "PGSSLMODE=require"}
		return credential.NewCommandSource(credential.CommandConfig{Program: prog, Args: []string{role}, Env: env,
			AllowCommand: allowAll, Timeout: 10 * time.Second}), calls
	}
	callTimes := func(t *testing.T, file string) []time.Time {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var out []time.Time
		for line := range strings.FieldsSeq(string(b)) {
			f, err := strconv.ParseFloat(line, 64)
			if err != nil {
				t.Fatalf("calls file: %q", line)
			}
			out = append(out, time.Unix(0, int64(f*1e9)))
		}
		return out
	}

	t.Run("CommandRefreshedAcrossExpiry", func(t *testing.T) {
		t.Parallel()
		const life = 10 * time.Second
		src, calls := commandSource(t, "rotor", life)
		c := credential.NewCache(src, credential.CacheConfig{Name: "rotor"})
		defer c.Close()
		// Log in every half second for twice the token's lifetime: every
		// login must work, with tokens fetched about 8 s apart (not at
		// the last moment, nor on every login).
		start := time.Now()
		logins := 0
		for time.Since(start) < 2*life {
			tok, err := c.Token(ctx)
			if err != nil {
				t.Fatalf("after %v: Token: %v (hint: %s)", time.Since(start).Round(time.Millisecond), err, credential.Hint(err))
			}
			if err := e.login(ctx, "rotor", tok); err != nil {
				t.Fatalf("after %v: login %d with the cached token failed: %v (SQLSTATE %s)", time.Since(start).Round(time.Millisecond),
					logins+1, err, sqlstate(err))
			}
			logins++
			time.Sleep(500 * time.Millisecond)
		}
		times := callTimes(t, calls)
		t.Logf("%d logins, %d calls of the script", logins, len(times))
		if len(times) < 3 || len(times) > 4 {
			t.Fatalf("the script ran %d times for %d logins over %v; want 3 or 4 (every ~%v)", len(times), logins, 2*life, life*8/10)
		}
		for i := 1; i < len(times); i++ {
			gap := times[i].Sub(times[i-1])
			t.Logf("call %d after %v", i+1, gap.Round(time.Millisecond))
			// Refreshed at 80 % (8 s), on the first login from then on.
			if gap < life*8/10-time.Second || gap > life*8/10+2500*time.Millisecond {
				t.Errorf("calls %d and %d are %v apart; want about %v", i, i+1, gap, life*8/10)
			}
		}
	})

	t.Run("CommandWithoutRefreshExpires", func(t *testing.T) {
		t.Parallel()
		const life = 10 * time.Second
		src, _ := commandSource(t, "stale", life)
		tok, err := src.Token(ctx)
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if d := time.Until(tok.ExpiresAt); d < life-3*time.Second || d > life+time.Second {
			t.Fatalf("expires_at is %v away; want about %v", d, life)
		}
		// The same token, never refreshed: logins work until it expires,
		// then fail with 28P01.
		deadline := tok.ExpiresAt.Add(15 * time.Second)
		for {
			err := e.login(ctx, "stale", tok)
			now := time.Now()
			if err == nil {
				if now.After(tok.ExpiresAt.Add(2 * time.Second)) {
					t.Fatalf("login with the token worked %v after its expiry", now.Sub(tok.ExpiresAt))
				}
				if now.After(deadline) {
					t.Fatal("the token never expired")
				}
				time.Sleep(500 * time.Millisecond)
				continue
			}
			if sqlstate(err) != "28P01" {
				t.Fatalf("login failed with %v (SQLSTATE %s); want 28P01 after expiry", err, sqlstate(err))
			}
			if now.Before(tok.ExpiresAt.Add(-time.Second)) {
				t.Fatalf("login failed %v before the token's expiry: %v", tok.ExpiresAt.Sub(now), err)
			}
			t.Logf("refused %v after expiry: %v", now.Sub(tok.ExpiresAt).Round(time.Millisecond), err)
			return
		}
	})

	t.Run("LakebaseInstance", func(t *testing.T) {
		t.Parallel()
		f := newFakeDatabricks(t, rotator(e.super, "lake"))
		c := credential.NewCache(lakebase(f, nil), credential.CacheConfig{Name: "lake"})
		defer c.Close()
		first, err := c.Token(ctx)
		if err != nil {
			t.Fatalf("Token: %v (hint: %s)", err, credential.Hint(err))
		}
		for range 3 {
			tok, err := c.Token(ctx)
			if err != nil || tok.Value.Reveal() != first.Value.Reveal() {
				t.Fatalf("cached token changed or failed: %v", err)
			}
			if err := e.login(ctx, "lake", tok); err != nil {
				t.Fatalf("login with the Lakebase credential: %v", err)
			}
		}
		if n := f.Count("/api/2.0/database/credentials"); n != 1 {
			t.Fatalf("%d credential requests for 3 logins, want 1", n)
		}
		// The database refused a token (here: revoked by a new one from
		// elsewhere): Invalidate fetches another.
		if _, err := f.Issue(ctx, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := e.login(ctx, "lake", first); sqlstate(err) != "28P01" {
			t.Fatalf("login with a rotated-away token: %v", err)
		}
		c.Invalidate(first)
		tok, err := c.Token(ctx)
		if err != nil || tok.Value.Reveal() == first.Value.Reveal() {
			t.Fatalf("after Invalidate: %v", err)
		}
		if err := e.login(ctx, "lake", tok); err != nil {
			t.Fatalf("login with the new credential: %v", err)
		}
	})

	t.Run("LakebaseProjectEndpoint", func(t *testing.T) {
		t.Parallel()
		f := newFakeDatabricks(t, rotator(e.super, "lake_ep"))
		src := lakebase(f, func(c *credential.LakebaseConfig) { c.Instance, c.Endpoint, c.Lifetime = "", f.Endpoint, 5*time.Minute })
		tok, err := src.Token(ctx)
		if err != nil {
			t.Fatalf("Token: %v (hint: %s)", err, credential.Hint(err))
		}
		if err := e.login(ctx, "lake_ep", tok); err != nil {
			t.Fatalf("login: %v", err)
		}
	})

	t.Run("AlloyDBIAM", func(t *testing.T) {
		t.Parallel()
		g := newFakeGoogle(t, rotator(e.super, "etl@proj.iam"))
		key := g.NewKey(t, "etl@proj.iam.gserviceaccount.com", true)
		spec := connection.Spec{Name: "alloy", Flavor: connection.AlloyDB, Host: p.Host, Port: p.Port, Database: "postgres",
			User: connection.AlloyDBUser("etl@proj.iam.gserviceaccount.com"), SSLMode: connection.SSLRequire,
			Auth: &connection.Auth{Kind: connection.AuthAlloyDBIAM, ServiceAccountKey: secret.New(key)}}
		spec.ApplyDefaults()
		if err := spec.Validate(); err != nil {
			t.Fatalf("spec: %v", err)
		}
		c := credential.NewCache(credential.New(&spec, credential.Options{HTTPClient: g.Srv.Client()}), credential.CacheConfig{Name: "alloy"})
		defer c.Close()
		tok, err := c.Token(ctx)
		if err != nil {
			t.Fatalf("Token: %v (hint: %s)", err, credential.Hint(err))
		}
		if err := e.login(ctx, spec.User, tok); err != nil {
			t.Fatalf("login as the IAM user: %v", err)
		}
	})
}
