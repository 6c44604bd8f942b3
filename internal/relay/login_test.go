package relay_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/proxy"
	"github.com/pgrelay/pgrelay/internal/relay"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// localPassword is the endpoint's own password in the login tests.
const localPassword = "local-Pw-7f3a"

// hintedError stands for a credential error: it has a Hint.
type hintedError struct{}

func (hintedError) Error() string { return "lakebase credential: the workspace refused the client" }
func (hintedError) Hint() string  { return "Generate a new OAuth secret." }

// loginEndpoint starts an endpoint in login mode whose Connect logs in to
// pg as scramUser with password() (the "token"), with sslmode and
// through the tunnel when viaTunnel. connects counts Connect calls.
func (f *fixture) loginEndpoint(t *testing.T, pg *testenv.Postgres, mode connection.SSLMode, viaTunnel bool,
	password func() (string, error), connects *atomic.Int32) *endpoint {
	t.Helper()
	up := f.upstream(t, pg, mode, "127.0.0.1", viaTunnel)
	spec := connection.Spec{Name: "test", Host: "127.0.0.1", Port: pg.Port, User: scramUser, Database: "postgres",
		SSLMode: mode, SSLRootCert: string(pg.CAPEM)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &endpoint{addr: ln.Addr().(*net.TCPAddr), rec: newRecorder(), refused: make(chan *relay.RefusedError, 16)}
	lt, err := relay.NewLocalTLS("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	e.cert = lt.CertPEM
	login := &relay.Login{Password: secret.New(localPassword), User: scramUser,
		Connect: func(ctx context.Context, params map[string]string) (*pgconn.PgConn, error) {
			connects.Add(1)
			pw, err := password()
			if err != nil {
				return nil, err
			}
			s := spec
			s.Password = secret.New(pw)
			if db := params["database"]; db != "" {
				s.Database = db
			}
			cfg, err := s.PgxConfig()
			if err != nil {
				return nil, err
			}
			pc := cfg.Config.Copy()
			pc.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) { return up.Dial(ctx) }
			for k, v := range params {
				if k != "database" {
					pc.RuntimeParams[k] = v
				}
			}
			return pgconn.ConnectConfig(ctx, pc)
		}}
	rl := relay.New(relay.Config{Upstream: up, LocalTLS: lt.Config, Observer: e.rec, Logger: testLogger(t), Login: login,
		Refused: func(r *relay.RefusedError) { e.refused <- r }})
	p := proxy.New(ln, proxy.DialFunc(up.Dial), testLogger(t), proxy.WithHandshake(rl.Handshake))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Serve(context.Background())
	}()
	t.Cleanup(func() {
		_ = p.Close()
		<-done
	})
	return e
}

func (f *fixture) testLoginMode(t *testing.T) {
	t.Parallel()
	var connects atomic.Int32
	var upstreamPassword atomic.Value
	upstreamPassword.Store(scramPassword)
	pw := func() (string, error) {
		if p := upstreamPassword.Load().(string); p != "" {
			return p, nil
		}
		return "", hintedError{}
	}
	for _, c := range []struct {
		name   string
		mode   connection.SSLMode
		tunnel bool
	}{{"require_direct", connection.SSLRequire, false}, {"verify-ca_tunnel", connection.SSLVerifyCA, true}} {
		t.Run(c.name, func(t *testing.T) {
			e := f.loginEndpoint(t, f.tlsPG, c.mode, c.tunnel, pw, &connects)
			super := superConn(t, f.tlsPG)
			// The client knows only the endpoint's password, and logs in as
			// the connection's user, over TLS (with channel binding, which
			// works here: the relay ends the client's SCRAM itself) or not.
			for _, cl := range []string{"sslmode=disable", "sslmode=require channel_binding=require", "sslmode=prefer",
				"sslmode=require channel_binding=disable"} {
				conn, err := e.connect(t, scramUser, localPassword, cl+" application_name=lm options='-c search_path=lm_schema'")
				if err != nil {
					t.Fatalf("%s: connect with the endpoint's password: %v", cl, err)
				}
				var who, app, path string
				var ssl bool
				var pid int64
				if err := conn.QueryRow(context.Background(), `SELECT current_user, current_setting('application_name'),
					current_setting('search_path'), coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false),
					pg_backend_pid()`).Scan(&who, &app, &path, &ssl, &pid); err != nil {
					t.Fatalf("%s: query: %v", cl, err)
				}
				if who != scramUser || app != "lm" || path != "lm_schema" || !ssl {
					t.Errorf("%s: user %q app %q search_path %q server-side ssl %v; want %s, lm, lm_schema, true", cl, who, app, path, ssl, scramUser)
				}
				b, ok := e.rec.backend(uint32(pid))
				if !ok || b.User != scramUser || !b.Encrypted || b.Params["server_version"] == "" {
					t.Errorf("%s: backend %d reported as %+v (%v)", cl, pid, b, ok)
				}
				if conn.PgConn().PID() != uint32(pid) || conn.PgConn().ParameterStatus("server_version") == "" {
					t.Errorf("%s: client got PID %d and server_version %q; the server's are %d", cl, conn.PgConn().PID(),
						conn.PgConn().ParameterStatus("server_version"), pid)
				}
				// The client's own cancel request reaches its backend: it
				// has the server's BackendKeyData.
				errc := make(chan error, 1)
				go func() { _, err := conn.Exec(context.Background(), "SELECT pg_sleep(30)"); errc <- err }()
				waitFor(t, goneWithin, "the statement to run", func() bool { return backendState(t, super, uint32(pid)) == "active" })
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := conn.PgConn().CancelRequest(ctx); err != nil {
					t.Errorf("%s: cancel request: %v", cl, err)
				}
				cancel()
				err = <-errc
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != "57014" {
					t.Errorf("%s: a cancelled statement ended with %v, want SQLSTATE 57014 (the cancel request reached the server)", cl, err)
				}
				_ = conn.Close(context.Background())
				waitFor(t, goneWithin, "the session to end on the server", func() bool { return backendState(t, super, uint32(pid)) == "" })
			}

			// psql with the endpoint's password.
			out, err := exec.Command("psql", "-X", "-Atc", "select current_user", e.connString(scramUser, localPassword, "")).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != scramUser {
				t.Errorf("psql: %v: %s", err, out)
			}

			// A wrong local password is refused by the relay, which then
			// never logs in upstream (no token fetched for it).
			before := connects.Load()
			_, err = e.connect(t, scramUser, scramPassword, "sslmode=disable")
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "28P01" || !strings.Contains(pe.Hint, "PGPASSWORD") {
				t.Errorf("the database's password at the endpoint: %v; want 28P01 with the relay's hint", err)
			}
			if n := connects.Load(); n != before {
				t.Errorf("a client with a wrong password made the relay log in upstream (%d times)", n-before)
			}
			// Another user is refused.
			_, err = e.connect(t, md5User, localPassword, "sslmode=disable")
			if !errors.As(err, &pe) || pe.Code != "28000" || !strings.Contains(pe.Message, scramUser) {
				t.Errorf("another user: %v; want 28000 naming the connection's user", err)
			}
			// A database that does not exist: the server's own error.
			_, err = e.connect(t, scramUser, localPassword, "sslmode=disable dbname=nope_db")
			if !errors.As(err, &pe) || pe.Code != "3D000" {
				t.Errorf("a missing database: %v; want the server's 3D000", err)
			}
		})
	}
	// The token (or stored password) is refused by the server: the client
	// hears 28P01 from it, and the relay's Refused learns of it (before
	// the client is told), as when authentication passes through.
	e := f.loginEndpoint(t, f.tlsPG, connection.SSLRequire, false, func() (string, error) { return "expired-token", nil }, &connects)
	_, err := e.connect(t, scramUser, localPassword, "sslmode=disable")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28P01" || strings.Contains(pe.Hint, "PGPASSWORD") {
		t.Errorf("a refused token: %v; want the server's 28P01", err)
	}
	select {
	case r := <-e.refused:
		if r.Err.Code != "28P01" || r.User != scramUser || !r.ClientTold() {
			t.Errorf("Refused got %v as user %q", r, r.User)
		}
	default:
		t.Error("the server's refusal did not reach Config.Refused")
	}
	// No token at all: the relay's error with the source's hint.
	upstreamPassword.Store("")
	e = f.loginEndpoint(t, f.tlsPG, connection.SSLRequire, false, pw, &connects)
	_, err = e.connect(t, scramUser, localPassword, "sslmode=disable")
	if !errors.As(err, &pe) || pe.Code != "08001" || pe.Hint != (hintedError{}).Hint() || !strings.Contains(pe.Message, "refused the client") {
		t.Errorf("no token: %v; want 08001 with the credential's hint", err)
	}
}

// TestLoginModeNeedsPassword: a relay in login mode without a password
// refuses every session instead of letting anyone in.
func TestLoginModeNeedsPassword(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	called := false
	rl := relay.New(relay.Config{Upstream: relay.Upstream{Addr: "db:5432"}, Login: &relay.Login{User: "u",
		Connect: func(context.Context, map[string]string) (*pgconn.PgConn, error) {
			called = true
			return nil, errors.New("no")
		}}})
	p := proxy.New(ln, func(context.Context) (net.Conn, error) { return nil, errors.New("no dial") }, testLogger(t), proxy.WithHandshake(rl.Handshake))
	go func() { _ = p.Serve(context.Background()) }()
	t.Cleanup(func() { _ = p.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	port := ln.Addr().(*net.TCPAddr).Port
	_, err = pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=u password=x sslmode=disable", port))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "08001" || called {
		t.Fatalf("login mode without a password: %v (Connect called: %v); want 08001 and no upstream login", err, called)
	}
}
