package connection

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/secret"
)

const (
	clientSecretCanary = "canary-client-secret-7f3a"
	saEmail            = "etl@proj.iam.gserviceaccount.com"
)

var (
	testKeyOnce sync.Once
	testKeyJSON string
)

// serviceAccountKey returns a service-account key file with a real RSA key.
func serviceAccountKey(t *testing.T) string {
	t.Helper()
	testKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			panic(err)
		}
		b, _ := json.Marshal(map[string]string{
			"type": "service_account", "project_id": "proj", "private_key_id": "k1",
			"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
			"client_email": saEmail, "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
		})
		testKeyJSON = string(b)
	})
	return testKeyJSON
}

func commandSpec() Spec {
	s := validSpec()
	s.Password = secret.Value{}
	s.SSLMode = SSLRequire
	s.Auth = &Auth{Kind: AuthCommand, Program: "/usr/local/bin/db-token", Args: []string{"--role", "etl"}}
	s.ApplyDefaults()
	return s
}

func lakebaseSpec() Spec {
	s := validSpec()
	s.Flavor = Lakebase
	s.Password = secret.Value{}
	s.SSLMode = SSLRequire
	s.Database = "databricks_postgres"
	s.Auth = &Auth{Kind: AuthLakebase, WorkspaceURL: "https://dbc-a1b2345c-d6e7.cloud.databricks.com/",
		ClientID: "6f6f7a2e-aaaa-bbbb-cccc-0123456789ab", ClientSecret: secret.New(clientSecretCanary), Instance: "my-instance"}
	s.ApplyDefaults()
	return s
}

func alloySpec(t *testing.T) Spec {
	s := validSpec()
	s.Flavor = AlloyDB
	s.Password = secret.Value{}
	s.SSLMode = SSLRequire
	s.User = "etl@proj.iam"
	s.Auth = &Auth{Kind: AuthAlloyDBIAM, ServiceAccountKey: secret.New(serviceAccountKey(t))}
	s.ApplyDefaults()
	return s
}

// runAuthCases is runValidationCases starting from base instead of validSpec.
func runAuthCases(t *testing.T, base func() Spec, tests []validationCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := base()
			tt.mutate(&s)
			err := s.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ve *fielderr.Error
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want *fielderr.Error on %s", err, tt.wantField)
			}
			if len(ve.Problems) != 1 {
				t.Fatalf("Validate gave %d problems, want 1 on %s:\n%v", len(ve.Problems), tt.wantField, err)
			}
			p := ve.Problems[0]
			if p.Field != tt.wantField {
				t.Errorf("problem on field %q, want %q (%s)", p.Field, tt.wantField, p.Problem)
			}
			for _, want := range tt.wantText {
				if !strings.Contains(p.Problem, want) {
					t.Errorf("problem %q lacks %q", p.Problem, want)
				}
			}
			if strings.Contains(p.Problem, clientSecretCanary) || strings.Contains(p.Problem, "PRIVATE KEY") {
				t.Errorf("problem reveals a secret: %s", p.Problem)
			}
		})
	}
}

func TestAuthDefaults(t *testing.T) {
	t.Parallel()
	s := validSpec()
	if s.AuthKind() != AuthPassword {
		t.Fatalf("a spec without auth has kind %q", s.AuthKind())
	}
	s.ApplyDefaults()
	if s.Auth != nil {
		t.Fatalf("ApplyDefaults gave a password spec an auth: %+v", s.Auth)
	}
	c := commandSpec()
	if c.Auth.Timeout.Duration() != DefaultCommandTimeout || c.Auth.Lifetime.Duration() != DefaultCommandLifetime {
		t.Errorf("command defaults: %+v", c.Auth)
	}
	l := lakebaseSpec()
	if l.Auth.WorkspaceURL != "https://dbc-a1b2345c-d6e7.cloud.databricks.com" || l.Auth.Lifetime != 0 {
		t.Errorf("lakebase defaults (instance): %+v", l.Auth)
	}
	l.Auth.Instance, l.Auth.Endpoint = "", "projects/p/branches/main/endpoints/ep"
	l.ApplyDefaults()
	if l.Auth.Lifetime.Duration() != time.Hour {
		t.Errorf("lakebase defaults (endpoint): lifetime %v", l.Auth.Lifetime)
	}
	a := alloySpec(t)
	if a.Auth.Scope != DefaultAlloyDBScope || a.Auth.ServiceAccount != saEmail {
		t.Errorf("alloydb defaults: scope %q service account %q", a.Auth.Scope, a.Auth.ServiceAccount)
	}
	if AlloyDBUser(saEmail) != "etl@proj.iam" {
		t.Errorf("AlloyDBUser = %q", AlloyDBUser(saEmail))
	}
	for _, s := range []Spec{c, l, a} {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", s.AuthKind(), err)
		}
	}
}

func TestValidateAuthCommon(t *testing.T) {
	t.Parallel()
	runAuthCases(t, commandSpec, []validationCase{
		{name: "explicit password kind", mutate: func(s *Spec) {
			*s = validSpec()
			s.Auth = &Auth{Kind: AuthPassword}
		}},
		{name: "password kind keeps sslmode prefer", mutate: func(s *Spec) {
			*s = validSpec()
			s.Auth = &Auth{}
			s.ApplyDefaults()
		}},
		{name: "unknown kind", mutate: func(s *Spec) { s.Auth.Kind = "kerberos" }, wantField: "auth.kind",
			wantText: []string{`"kerberos"`, "password, command, lakebase or alloydb-iam"}},
		{name: "password with a token kind", mutate: func(s *Spec) { s.Password = secret.New("pw") }, wantField: "password",
			wantText: []string{"not used with auth kind command", "remove it"}},
		{name: "sslmode prefer", mutate: func(s *Spec) { s.SSLMode = SSLPrefer }, wantField: "sslmode",
			wantText: []string{`"prefer" is not accepted with auth kind command`, "never travel unencrypted", "require, verify-ca or verify-full"}},
		{name: "sslmode disable", mutate: func(s *Spec) { s.SSLMode = SSLDisable }, wantField: "sslmode",
			wantText: []string{`"disable"`, "require"}},
		{name: "sslmode allow", mutate: func(s *Spec) { s.SSLMode = SSLAllow }, wantField: "sslmode"},
		{name: "sslmode verify-full", mutate: func(s *Spec) { s.SSLMode = SSLVerifyFull }},
		{name: "lakebase flavor reports sslmode once", mutate: func(s *Spec) { s.Flavor = Lakebase; s.SSLMode = SSLDisable },
			wantField: "sslmode", wantText: []string{"Lakebase"}},
		{name: "field of another kind", mutate: func(s *Spec) { s.Auth.WorkspaceURL = "https://x.example.com" },
			wantField: "auth.workspace_url", wantText: []string{"not used with auth kind command", "lakebase"}},
		{name: "password kind with command fields", mutate: func(s *Spec) {
			s.Auth.Kind = AuthPassword
			s.Auth.Args, s.Auth.Timeout, s.Auth.Lifetime = nil, 0, 0
			s.SSLMode = SSLPrefer
		}, wantField: "auth.program", wantText: []string{"not used with auth kind password"}},
	})
}

func TestValidateAuthCommand(t *testing.T) {
	t.Parallel()
	set := func(f func(a *Auth)) func(*Spec) { return func(s *Spec) { f(s.Auth) } }
	runAuthCases(t, commandSpec, []validationCase{
		{name: "name on PATH", mutate: set(func(a *Auth) { a.Program = "db-token" })},
		{name: "no args", mutate: set(func(a *Auth) { a.Args = nil })},
		{name: "missing program", mutate: set(func(a *Auth) { a.Program = "" }), wantField: "auth.program",
			wantText: []string{"required", "without a shell"}},
		{name: "shell line", mutate: set(func(a *Auth) { a.Program = "db-token --role etl" }), wantField: "auth.program",
			wantText: []string{"without a shell", "args"}},
		{name: "relative path", mutate: set(func(a *Auth) { a.Program = "./db-token" }), wantField: "auth.program",
			wantText: []string{"relative path", "absolute path"}},
		{name: "newline", mutate: set(func(a *Auth) { a.Program = "/bin/x\n" }), wantField: "auth.program"},
		{name: "NUL in an argument", mutate: set(func(a *Auth) { a.Args = []string{"ok", "a\x00b"} }), wantField: "auth.args",
			wantText: []string{"argument 2", "NUL"}},
		{name: "too many args", mutate: set(func(a *Auth) { a.Args = make([]string, MaxCommandArgs+1) }), wantField: "auth.args",
			wantText: []string{"at most 64"}},
		{name: "timeout too short", mutate: set(func(a *Auth) { a.Timeout = Duration(time.Millisecond) }), wantField: "auth.timeout",
			wantText: []string{"1ms is out of range", "1s to 10m0s"}},
		{name: "lifetime too long", mutate: set(func(a *Auth) { a.Lifetime = Duration(48 * time.Hour) }), wantField: "auth.lifetime",
			wantText: []string{"out of range", "expires_at"}},
	})
}

func TestValidateAuthLakebase(t *testing.T) {
	t.Parallel()
	set := func(f func(a *Auth)) func(*Spec) { return func(s *Spec) { f(s.Auth) } }
	runAuthCases(t, lakebaseSpec, []validationCase{
		{name: "endpoint", mutate: set(func(a *Auth) { a.Instance, a.Endpoint = "", "projects/p/branches/main/endpoints/ep-1" })},
		{name: "endpoint with lifetime", mutate: set(func(a *Auth) {
			a.Instance, a.Endpoint, a.Lifetime = "", "projects/p/branches/main/endpoints/ep-1", Duration(10*time.Minute)
		})},
		{name: "secret kept elsewhere", mutate: set(func(a *Auth) { a.ClientSecret = secret.Value{} })},
		{name: "loopback with port", mutate: set(func(a *Auth) { a.WorkspaceURL = "https://127.0.0.1:8443" })},
		{name: "missing workspace", mutate: set(func(a *Auth) { a.WorkspaceURL = "" }), wantField: "auth.workspace_url",
			wantText: []string{"required", "https://"}},
		{name: "http workspace", mutate: set(func(a *Auth) { a.WorkspaceURL = "http://dbc.cloud.databricks.com" }),
			wantField: "auth.workspace_url", wantText: []string{"only https URLs"}},
		{name: "workspace with path", mutate: set(func(a *Auth) { a.WorkspaceURL = "https://dbc.cloud.databricks.com/sql/1" }),
			wantField: "auth.workspace_url", wantText: []string{"has a path", "https://dbc.cloud.databricks.com"}},
		{name: "workspace with user", mutate: set(func(a *Auth) { a.WorkspaceURL = "https://u:p@dbc.cloud.databricks.com" }),
			wantField: "auth.workspace_url", wantText: []string{"user name or password"}},
		{name: "workspace not a URL", mutate: set(func(a *Auth) { a.WorkspaceURL = "dbc.cloud.databricks.com" }),
			wantField: "auth.workspace_url", wantText: []string{"https URL"}},
		{name: "missing client id", mutate: set(func(a *Auth) { a.ClientID = "" }), wantField: "auth.client_id",
			wantText: []string{"required", "service principal"}},
		{name: "client id with colon", mutate: set(func(a *Auth) { a.ClientID = "a:b" }), wantField: "auth.client_id"},
		{name: "secret with newline", mutate: set(func(a *Auth) { a.ClientSecret = secret.New(clientSecretCanary + "\n") }),
			wantField: "auth.client_secret", wantText: []string{"one line"}},
		{name: "neither instance nor endpoint", mutate: set(func(a *Auth) { a.Instance = "" }), wantField: "auth.instance",
			wantText: []string{"required: auth.instance, the name of a database instance", "or auth.endpoint, an endpoint projects/<project>/"}},
		{name: "both", mutate: set(func(a *Auth) { a.Endpoint = "projects/p/branches/b/endpoints/e" }), wantField: "auth.endpoint",
			wantText: []string{"either auth.instance", "or auth.endpoint", "not both"}},
		{name: "bad instance", mutate: set(func(a *Auth) { a.Instance = "my instance" }), wantField: "auth.instance",
			wantText: []string{"letters, digits and '-'"}},
		{name: "bad endpoint", mutate: set(func(a *Auth) { a.Instance, a.Endpoint = "", "ep-1" }), wantField: "auth.endpoint",
			wantText: []string{"projects/<project>/branches/<branch>/endpoints/<endpoint>"}},
		{name: "lifetime with instance", mutate: set(func(a *Auth) { a.Lifetime = Duration(time.Hour) }), wantField: "auth.lifetime",
			wantText: []string{"only with auth.endpoint", "1 hour"}},
		{name: "lifetime too short", mutate: set(func(a *Auth) {
			a.Instance, a.Endpoint, a.Lifetime = "", "projects/p/branches/b/endpoints/e", Duration(time.Minute)
		}), wantField: "auth.lifetime", wantText: []string{"5m0s to 1h0m0s"}},
		{name: "command field", mutate: set(func(a *Auth) { a.Program = "x" }), wantField: "auth.program",
			wantText: []string{"not used with auth kind lakebase", "command"}},
	})
}

func TestValidateAuthAlloyDB(t *testing.T) {
	t.Parallel()
	base := func() Spec { return alloySpec(t) }
	set := func(f func(a *Auth)) func(*Spec) { return func(s *Spec) { f(s.Auth) } }
	key := func(mut func(m map[string]any)) secret.Value {
		var m map[string]any
		if err := json.Unmarshal([]byte(serviceAccountKey(t)), &m); err != nil {
			t.Fatal(err)
		}
		mut(m)
		b, _ := json.Marshal(m)
		return secret.New(string(b))
	}
	runAuthCases(t, base, []validationCase{
		{name: "key kept elsewhere", mutate: set(func(a *Auth) { a.ServiceAccountKey = secret.Value{} })},
		{name: "several scopes", mutate: set(func(a *Auth) { a.Scope = DefaultAlloyDBScope + " https://www.googleapis.com/auth/cloud-platform" })},
		{name: "not JSON", mutate: set(func(a *Auth) { a.ServiceAccountKey = secret.New("-----BEGIN PRIVATE KEY-----") }),
			wantField: "auth.service_account_key", wantText: []string{"not a JSON key file", "service account"}},
		{name: "wrong type", mutate: set(func(a *Auth) { a.ServiceAccountKey = key(func(m map[string]any) { m["type"] = "authorized_user" }) }),
			wantField: "auth.service_account_key", wantText: []string{`"authorized_user"`, "service_account"}},
		{name: "no private key", mutate: set(func(a *Auth) { a.ServiceAccountKey = key(func(m map[string]any) { delete(m, "private_key") }) }),
			wantField: "auth.service_account_key", wantText: []string{"no private_key"}},
		{name: "private key not PEM", mutate: set(func(a *Auth) { a.ServiceAccountKey = key(func(m map[string]any) { m["private_key"] = "abc" }) }),
			wantField: "auth.service_account_key", wantText: []string{"not PEM"}},
		{name: "http token uri", mutate: set(func(a *Auth) {
			a.ServiceAccountKey = key(func(m map[string]any) { m["token_uri"] = "http://oauth2.googleapis.com/token" })
		}), wantField: "auth.service_account_key", wantText: []string{"token_uri", "only https"}},
		{name: "service account differs", mutate: set(func(a *Auth) { a.ServiceAccount = "other@proj.iam.gserviceaccount.com" }),
			wantField: "auth.service_account", wantText: []string{"differs from the key's client_email"}},
		{name: "user is the email", mutate: func(s *Spec) { s.User = saEmail }, wantField: "user",
			wantText: []string{`use "etl@proj.iam"`, "without .gserviceaccount.com"}},
		{name: "user checked against the saved account", mutate: func(s *Spec) { s.Auth.ServiceAccountKey = secret.Value{}; s.User = "etl" },
			wantField: "user", wantText: []string{`use "etl@proj.iam"`}},
		{name: "scope not a URL", mutate: set(func(a *Auth) { a.Scope = "alloydb.login" }), wantField: "auth.scope",
			wantText: []string{"https URLs"}},
		{name: "lifetime", mutate: set(func(a *Auth) { a.Lifetime = Duration(time.Hour) }), wantField: "auth.lifetime",
			wantText: []string{"not used with auth kind alloydb-iam"}},
	})
}

func TestAuthJSONNeverHasSecrets(t *testing.T) {
	t.Parallel()
	for _, s := range []Spec{lakebaseSpec(), alloySpec(t)} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{clientSecretCanary, "PRIVATE KEY", `"client_secret"`, `"service_account_key"`} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s: JSON contains %s: %s", s.AuthKind(), bad, b)
			}
		}
		for _, verb := range []string{"%v", "%+v", "%#v"} {
			for _, v := range []any{s, s.Auth, *s.Auth} {
				if got := fmt.Sprintf(verb, v); strings.Contains(got, clientSecretCanary) || strings.Contains(got, "PRIVATE KEY") {
					t.Errorf("Sprintf(%q) reveals a secret: %s", verb, got)
				}
			}
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "spec", s, "auth", s.Auth)
		if strings.Contains(buf.String(), clientSecretCanary) || strings.Contains(buf.String(), "PRIVATE KEY") {
			t.Errorf("slog reveals a secret: %s", buf.String())
		}
		// The rest round-trips; secrets in the input are ignored.
		in := strings.Replace(string(b), `"auth":{`, `"auth":{"client_secret":"x","service_account_key":"y",`, 1)
		var back Spec
		if err := json.Unmarshal([]byte(in), &back); err != nil {
			t.Fatal(err)
		}
		if !back.Auth.ClientSecret.IsZero() || !back.Auth.ServiceAccountKey.IsZero() {
			t.Errorf("JSON decoding set a secret")
		}
		back.Auth.ClientSecret, back.Auth.ServiceAccountKey = s.Auth.ClientSecret, s.Auth.ServiceAccountKey
		if !reflect.DeepEqual(back, s) {
			t.Errorf("round trip:\n got %+v\nwant %+v", back.Auth, s.Auth)
		}
	}
	c := commandSpec()
	b, _ := json.Marshal(c)
	if !strings.Contains(string(b), `"auth":{"kind":"command","program":"/usr/local/bin/db-token","args":["--role","etl"],"timeout":"30s","lifetime":"15m0s"}`) {
		t.Errorf("command auth JSON = %s", b)
	}
}

func TestAuthClone(t *testing.T) {
	t.Parallel()
	s := commandSpec()
	c := s.Clone()
	if !reflect.DeepEqual(c, s) || c.Auth == s.Auth {
		t.Fatalf("Clone shares or changes the auth: %+v", c.Auth)
	}
	c.Auth.Args[0] = "changed"
	c.Auth.Program = "changed"
	if s.Auth.Args[0] != "--role" || s.Auth.Program != "/usr/local/bin/db-token" {
		t.Errorf("changing the clone changed the original: %+v", s.Auth)
	}
}

func TestAuthSecretTarget(t *testing.T) {
	t.Parallel()
	a, b := lakebaseSpec(), lakebaseSpec()
	if a.Auth.SecretTarget() != b.Auth.SecretTarget() || a.Auth.SecretTarget() == "" {
		t.Fatalf("same settings, targets %q and %q", a.Auth.SecretTarget(), b.Auth.SecretTarget())
	}
	b.Auth.WorkspaceURL = "https://other.cloud.databricks.com"
	if a.Auth.SecretTarget() == b.Auth.SecretTarget() {
		t.Error("another workspace has the same target")
	}
	b = lakebaseSpec()
	b.Auth.ClientID = "other"
	if a.Auth.SecretTarget() == b.Auth.SecretTarget() {
		t.Error("another client has the same target")
	}
	if strings.Contains(a.Auth.SecretTarget(), clientSecretCanary) {
		t.Error("the target contains the secret")
	}
	if c := commandSpec(); c.Auth.SecretTarget() != "" {
		t.Errorf("command target = %q", c.Auth.SecretTarget())
	}
	if al := alloySpec(t); !strings.Contains(al.Auth.SecretTarget(), saEmail) {
		t.Errorf("alloydb target = %q", al.Auth.SecretTarget())
	}
}
