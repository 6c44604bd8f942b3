package diagnose_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// tokenScript writes a credential command that runs body.
func tokenScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db-token")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCredentialStep(t *testing.T) {
	// Role clear logs in with a clear-text password, as token providers
	// ask for (they must read the token to check it).
	p := testenv.StartPostgres(t, testenv.PostgresOptions{SSLOnly: true, HBA: []string{
		"hostssl all clear 127.0.0.1/32 password", "hostssl all clear ::1/128 password"}})
	const token = "tok-8b1f0c2d9e7a4c3b"
	p.CreateRole(t, "etl", token)
	p.CreateRole(t, "clear", token)

	tokenSpec := func(auth *connection.Auth) connection.Spec {
		s := connection.Spec{Name: "wh", Host: p.Host, Port: p.Port, Database: "postgres", User: "etl",
			SSLMode: connection.SSLRequire, Auth: auth}
		s.ApplyDefaults()
		if err := s.Validate(); err != nil {
			t.Fatalf("spec: %v", err)
		}
		return s
	}
	input := func(s connection.Spec, src credential.Source) diagnose.Input {
		return diagnose.Input{Spec: s, SavedName: "wh", Credential: src, StepTimeout: 5 * time.Second}
	}
	allow := func(p string) (string, error) { return p, nil }
	commandSource := func(s connection.Spec) credential.Source {
		return credential.New(&s, credential.Options{AllowCommand: allow})
	}
	noToken := func(t *testing.T, rep diagnose.Report, secrets ...string) {
		t.Helper()
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range append(secrets, token) {
			if strings.Contains(string(b), s) {
				t.Errorf("the report reveals a secret %q: %s", s, b)
			}
		}
	}

	t.Run("CommandOK", func(t *testing.T) {
		t.Parallel()
		s := tokenSpec(&connection.Auth{Kind: connection.AuthCommand, Program: tokenScript(t,
			`echo '{"token":"`+token+`","expires_at":"2099-01-01T00:00:00Z"}'`)})
		rep := run(t, input(s, commandSource(s)))
		if !rep.OK {
			t.Fatalf("failed: %+v", rep.Failed())
		}
		if rep.Steps[0].ID != diagnose.StepCredential || !strings.Contains(rep.Steps[0].Detail, "db-token gave a token valid until 2099-01-01T00:00:00Z") {
			t.Errorf("first step = %+v", rep.Steps[0])
		}
		if c := rep.Credential; c == nil || c.Kind != connection.AuthCommand || !c.ExpiresAt.Equal(time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("credential info = %+v", rep.Credential)
		}
		if rep.Server == nil || rep.Server.CurrentUser != "etl" || !rep.Server.Encrypted {
			t.Errorf("server = %+v", rep.Server)
		}
		noToken(t, rep)
	})

	t.Run("CommandFails", func(t *testing.T) {
		t.Parallel()
		s := tokenSpec(&connection.Auth{Kind: connection.AuthCommand, Program: tokenScript(t,
			`echo "vault: permission denied for path db/creds/etl" >&2; exit 2`)})
		rep := run(t, input(s, commandSource(s)))
		f := failedAt(t, rep, diagnose.StepCredential, "shown only by a pgrelay command run on this machine")
		// The step's error is logged, stored in the connection's health
		// and sent to API clients: a program's stderr may quote a secret,
		// so it is not in it; a local command shows it (ProgramStderr).
		if !strings.Contains(f.Error, "exited with code 2") || strings.Contains(f.Error, "vault: permission denied") {
			t.Errorf("error = %q", f.Error)
		}
		if prog, text := credential.ProgramStderr(f.Err); !strings.HasSuffix(prog, "db-token") || !strings.Contains(text, "vault: permission denied") {
			t.Errorf("ProgramStderr = %q, %q", prog, text)
		}
	})

	t.Run("CommandNotAllowedByDefault", func(t *testing.T) {
		t.Parallel()
		s := tokenSpec(&connection.Auth{Kind: connection.AuthCommand, Program: tokenScript(t, "echo "+token)})
		rep := run(t, input(s, nil))
		failedAt(t, rep, diagnose.StepCredential, "--allow-command")
	})

	t.Run("TokenRefusedByDatabase", func(t *testing.T) {
		t.Parallel()
		s := tokenSpec(&connection.Auth{Kind: connection.AuthCommand, Program: tokenScript(t, "echo tok-not-the-password")})
		rep := run(t, input(s, commandSource(s)))
		f := failedAt(t, rep, diagnose.StepPostgresAuth, "The command gave a token, but the database refused it")
		if sqlstate(f.Err) != "28P01" || rep.Step(diagnose.StepCredential).Status != diagnose.StatusOK {
			t.Errorf("step %+v", f)
		}
		noToken(t, rep, "tok-not-the-password")
	})

	t.Run("LakebaseBadClientSecret", func(t *testing.T) {
		t.Parallel()
		ws := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"Client authentication failed"}`))
		}))
		defer ws.Close()
		const secretCanary = "dose-canary-5d1e"
		s := tokenSpec(&connection.Auth{Kind: connection.AuthLakebase, WorkspaceURL: ws.URL, ClientID: "sp-1",
			ClientSecret: secret.New(secretCanary), Instance: "inst"})
		rep := run(t, input(s, credential.New(&s, credential.Options{HTTPClient: ws.Client()})))
		f := failedAt(t, rep, diagnose.StepCredential, "generate a new secret")
		if !strings.Contains(f.Error, `refused OAuth client "sp-1"`) {
			t.Errorf("error = %q", f.Error)
		}
		noToken(t, rep, secretCanary)
	})

	t.Run("LakebaseEndpointDown", func(t *testing.T) {
		t.Parallel()
		ws := httptest.NewTLSServer(http.NotFoundHandler())
		url, client := ws.URL, ws.Client()
		ws.Close()
		s := tokenSpec(&connection.Auth{Kind: connection.AuthLakebase, WorkspaceURL: url, ClientID: "sp-1",
			ClientSecret: secret.New("x"), Instance: "inst"})
		src := credential.NewCache(credential.New(&s, credential.Options{HTTPClient: client}),
			credential.CacheConfig{Backoff: time.Millisecond})
		rep := run(t, input(s, src))
		f := failedAt(t, rep, diagnose.StepCredential, "Nothing accepts connections")
		if !strings.Contains(f.Error, "cannot reach "+url+"/oidc/v1/token") {
			t.Errorf("error = %q", f.Error)
		}
	})

	t.Run("AlloyDBWithoutKey", func(t *testing.T) {
		t.Parallel()
		s := tokenSpec(&connection.Auth{Kind: connection.AuthAlloyDBIAM})
		rep := run(t, input(s, nil))
		failedAt(t, rep, diagnose.StepCredential, "auth.service_account_key")
	})

	t.Run("ClearTextTokenNeedsVerifiedServer", func(t *testing.T) {
		t.Parallel()
		s := tokenSpec(&connection.Auth{Kind: connection.AuthCommand, Program: tokenScript(t, "echo "+token)})
		s.User, s.Flavor = "clear", connection.Lakebase
		rep := run(t, input(s, commandSource(s)))
		f := failedAt(t, rep, diagnose.StepPostgresAuth, "clear text", "could read the token", "public CAs",
			"pgrelay connection update wh --sslmode verify-full")
		var refused *diagnose.AuthRefusedError
		if !errors.As(f.Err, &refused) || refused.Method != "password" {
			t.Errorf("err = %v", f.Err)
		}
		// Verified, the same token logs in.
		s.SSLMode, s.SSLRootCert = connection.SSLVerifyFull, string(p.CAPEM)
		rep = run(t, input(s, commandSource(s)))
		if !rep.OK || !strings.Contains(rep.Step(diagnose.StepPostgresAuth).Detail, "clear text") {
			t.Fatalf("verify-full: %+v", rep.Failed())
		}
		noToken(t, rep)
	})

	t.Run("ClearTextPasswordAcceptedKnowingly", func(t *testing.T) {
		t.Parallel()
		// Accepting clear text from an unverified server is refused
		// without the password again: the hint's command gives it; the
		// stricter sslmode needs nothing.
		s := connection.Spec{Name: "wh", Host: p.Host, Port: p.Port, Database: "postgres", User: "clear",
			Password: secret.New(token), SSLMode: connection.SSLRequire}
		f := failedAt(t, run(t, input(s, nil)), diagnose.StepPostgresAuth, "clear text",
			"`pgrelay connection update wh --sslmode verify-full`",
			"`DB_PASSWORD=... pgrelay connection update wh --require-auth password,md5,scram-sha-256 --password-env DB_PASSWORD`")
		var refused *diagnose.AuthRefusedError
		if !errors.As(f.Err, &refused) || refused.Method != "password" {
			t.Errorf("err = %v", f.Err)
		}
		// An explicit policy: LIST stands for one that accepts the method.
		s.RequireAuth = "scram-sha-256"
		failedAt(t, run(t, input(s, nil)), diagnose.StepPostgresAuth,
			"`DB_PASSWORD=... pgrelay connection update wh --require-auth LIST --password-env DB_PASSWORD`")
	})

	t.Run("PasswordPlanUnchanged", func(t *testing.T) {
		t.Parallel()
		s := connection.Spec{Name: "wh", Host: p.Host, Port: p.Port, Database: "postgres", User: "etl",
			Password: secret.New(token), SSLMode: connection.SSLRequire}
		rep := run(t, input(s, nil))
		if !rep.OK || rep.Steps[0].ID != diagnose.StepResolve || rep.Credential != nil {
			t.Fatalf("password connection: %+v", rep.Steps[0])
		}
	})
}
