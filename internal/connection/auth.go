package connection

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// AuthKind names where a connection's database password comes from.
type AuthKind string

// Auth kinds.
const (
	// AuthPassword: the stored password (the default).
	AuthPassword AuthKind = "password"
	// AuthCommand: a program prints a token, which is the password.
	AuthCommand AuthKind = "command"
	// AuthLakebase: a Databricks Lakebase database credential, fetched
	// with an OAuth machine-to-machine client of the workspace.
	AuthLakebase AuthKind = "lakebase"
	// AuthAlloyDBIAM: a Google OAuth2 access token for an AlloyDB IAM
	// database user, fetched with a service-account key.
	AuthAlloyDBIAM AuthKind = "alloydb-iam"
)

// AuthKinds returns every auth kind in display order.
func AuthKinds() []AuthKind {
	return []AuthKind{AuthPassword, AuthCommand, AuthLakebase, AuthAlloyDBIAM}
}

// Label is the kind's name in the UI.
func (k AuthKind) Label() string {
	switch k {
	case AuthPassword:
		return "Password"
	case AuthCommand:
		return "Token from a command"
	case AuthLakebase:
		return "Databricks Lakebase OAuth"
	case AuthAlloyDBIAM:
		return "AlloyDB IAM (service account)"
	}
	return string(k)
}

// IsToken reports whether the kind logs in with an expiring token that
// pgrelay fetches (every kind but password).
func (k AuthKind) IsToken() bool { return k == AuthCommand || k == AuthLakebase || k == AuthAlloyDBIAM }

// Defaults and limits of token credentials.
const (
	// DefaultCommandTimeout bounds one run of a credential command.
	DefaultCommandTimeout = 30 * time.Second
	MinCommandTimeout     = time.Second
	MaxCommandTimeout     = 10 * time.Minute
	// DefaultCommandLifetime is how long a token printed without
	// expires_at is taken to be valid.
	DefaultCommandLifetime = 15 * time.Minute
	MinCommandLifetime     = 10 * time.Second
	MaxCommandLifetime     = 24 * time.Hour
	// DefaultLakebaseLifetime is the requested lifetime of a Lakebase
	// credential of the projects API (its ttl), which accepts 300 to
	// 3600 seconds.
	DefaultLakebaseLifetime = time.Hour
	MinLakebaseLifetime     = 5 * time.Minute
	MaxLakebaseLifetime     = time.Hour
	// DefaultAlloyDBScope is the OAuth scope of AlloyDB IAM database
	// authentication.
	DefaultAlloyDBScope = "https://www.googleapis.com/auth/alloydb.login"
	// GoogleTokenURL is Google's OAuth2 token endpoint, used when a
	// service-account key names none.
	GoogleTokenURL = "https://oauth2.googleapis.com/token"

	MaxCommandArgs       = 64
	MaxArgLen            = 4096
	MaxClientSecretLen   = 4096
	MaxServiceAccountKey = 64 << 10
)

// Auth says where the database password comes from. The zero kind (or a
// nil *Auth on a Spec) is password: the stored password, as before.
//
// The fields of each kind are set only with that kind. Secrets (the OAuth
// client secret, the service-account key) are secret.Values and are never
// serialised by encoding/json, like Spec.Password.
type Auth struct {
	// Kind is password, command, lakebase or alloydb-iam.
	Kind AuthKind `json:"kind"`

	// Program is the command's program: a name looked up on PATH or an
	// absolute path, run without a shell (command).
	Program string `json:"program,omitempty"`
	// Args are the program's arguments, passed as they are (command).
	Args []string `json:"args,omitempty"`
	// Timeout bounds one run of the program (command; default 30s).
	Timeout Duration `json:"timeout,omitempty"`

	// WorkspaceURL is the Databricks workspace, e.g.
	// https://dbc-a1b2345c-d6e7.cloud.databricks.com (lakebase).
	WorkspaceURL string `json:"workspace_url,omitempty"`
	// ClientID is the OAuth client ID of the service principal (lakebase).
	ClientID string `json:"client_id,omitempty"`
	// ClientSecret is the service principal's OAuth secret (lakebase).
	// Never stored in plain text.
	ClientSecret secret.Value `json:"-"`
	// Instance is the name of a provisioned Lakebase database instance;
	// set Instance or Endpoint (lakebase).
	Instance string `json:"instance,omitempty"`
	// Endpoint is a Lakebase endpoint of the projects API, e.g.
	// projects/my-project/branches/main/endpoints/ep-primary (lakebase).
	Endpoint string `json:"endpoint,omitempty"`

	// ServiceAccountKey is the JSON key file of a Google service account
	// (alloydb-iam). Never stored in plain text.
	ServiceAccountKey secret.Value `json:"-"`
	// ServiceAccount is the key's client_email, filled in from the key
	// (alloydb-iam).
	ServiceAccount string `json:"service_account,omitempty"`
	// Scope is the OAuth scope of the access token, space-separated
	// (alloydb-iam; default https://www.googleapis.com/auth/alloydb.login).
	Scope string `json:"scope,omitempty"`

	// Lifetime is the requested lifetime of a Lakebase credential of the
	// projects API (5m to 1h, default 1h; provisioned instances always
	// issue 1-hour credentials), or how long a token a command prints
	// without expires_at is valid (default 15m).
	Lifetime Duration `json:"lifetime,omitempty"`
}

// AuthKind returns the kind of the spec's auth: password when unset.
func (s *Spec) AuthKind() AuthKind {
	if s.Auth == nil || s.Auth.Kind == "" {
		return AuthPassword
	}
	return s.Auth.Kind
}

// PasswordRefusedNext says what to do when the server refused the saved
// password of the connection's user (SQLSTATE 28P01): "" for a connection
// whose password is a token, which pgrelay fetches itself.
func (s *Spec) PasswordRefusedNext() string {
	if s.AuthKind().IsToken() {
		return ""
	}
	return fmt.Sprintf("the server refused the saved password of user %s: give the right one with "+
		"`pgrelay connection update %s --password-env VAR`", s.User, s.Name)
}

// Clone returns a deep copy of a (nil for nil).
func (a *Auth) Clone() *Auth {
	if a == nil {
		return nil
	}
	c := *a
	c.Args = slices.Clone(a.Args)
	return &c
}

// ApplyDefaults fills unset fields of the kind with their defaults; a nil
// Auth is left nil (password).
func (a *Auth) ApplyDefaults() {
	if a == nil {
		return
	}
	if a.Kind == "" {
		a.Kind = AuthPassword
	}
	switch a.Kind {
	case AuthCommand:
		if a.Timeout == 0 {
			a.Timeout = Duration(DefaultCommandTimeout)
		}
		if a.Lifetime == 0 {
			a.Lifetime = Duration(DefaultCommandLifetime)
		}
	case AuthLakebase:
		a.WorkspaceURL = strings.TrimRight(strings.TrimSpace(a.WorkspaceURL), "/")
		if a.Lifetime == 0 && a.Endpoint != "" {
			a.Lifetime = Duration(DefaultLakebaseLifetime)
		}
	case AuthAlloyDBIAM:
		if a.Scope == "" {
			a.Scope = DefaultAlloyDBScope
		}
		if a.ServiceAccount == "" && !a.ServiceAccountKey.IsZero() {
			if k, err := ParseServiceAccountKey(a.ServiceAccountKey); err == nil {
				a.ServiceAccount = k.ClientEmail
			}
		}
	}
}

// SecretTarget is the canonical form of where the auth's stored secret is
// sent (the Lakebase workspace and client, or the service account), to be
// bound into the associated data of the sealed secret like the endpoint
// of a password: a secret saved for one target never opens for another.
// Empty for kinds without a stored secret.
func (a *Auth) SecretTarget() string {
	if a == nil {
		return ""
	}
	switch a.Kind {
	case AuthLakebase:
		return fmt.Sprintf("lakebase=%q:%q", strings.ToLower(a.WorkspaceURL), a.ClientID)
	case AuthAlloyDBIAM:
		return fmt.Sprintf("alloydb-iam=%q", a.ServiceAccount)
	}
	return ""
}

// ServiceAccountKey is the part of a Google service-account key file that
// pgrelay checks. The private key stays in the secret.Value.
type ServiceAccountKey struct {
	Type         string `json:"type"`
	ClientEmail  string `json:"client_email"`
	PrivateKeyID string `json:"private_key_id"`
	TokenURI     string `json:"token_uri"`
	privateKey   string
}

// ParseServiceAccountKey checks a Google service-account key file: JSON of
// type service_account with client_email, a PEM private key and an https
// token_uri (Google's when absent). Its errors never quote the key.
func ParseServiceAccountKey(v secret.Value) (*ServiceAccountKey, error) {
	var raw struct {
		ServiceAccountKey
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal([]byte(v.Reveal()), &raw); err != nil {
		return nil, errors.New("not a JSON key file: accepted is the JSON key of a Google service account (IAM → Service accounts → Keys → Add key → JSON)")
	}
	k := raw.ServiceAccountKey
	k.privateKey = raw.PrivateKey
	switch {
	case k.Type != "service_account":
		return nil, fmt.Errorf("the key file has type %q: accepted is a service-account key (type \"service_account\")", truncate(k.Type, 40))
	case k.ClientEmail == "" || !strings.Contains(k.ClientEmail, "@"):
		return nil, errors.New("the key file has no client_email: accepted is a complete service-account JSON key as Google issues it")
	case k.privateKey == "":
		return nil, errors.New("the key file has no private_key: accepted is a complete service-account JSON key as Google issues it")
	}
	block, _ := pem.Decode([]byte(k.privateKey))
	if block == nil {
		return nil, errors.New("the key file's private_key is not PEM: accepted is a complete service-account JSON key as Google issues it")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if _, err1 := x509.ParsePKCS1PrivateKey(block.Bytes); err1 != nil {
			return nil, errors.New("the key file's private_key is not an RSA private key: accepted is a complete service-account JSON key as Google issues it")
		}
	}
	if k.TokenURI == "" {
		k.TokenURI = GoogleTokenURL
	}
	if err := validateHTTPSURL(k.TokenURI, true); err != nil {
		return nil, fmt.Errorf("the key file's token_uri: %w", err)
	}
	return &k, nil
}

// AlloyDBUser is the database user name AlloyDB gives an IAM service
// account: its email without the ".gserviceaccount.com" suffix.
func AlloyDBUser(serviceAccountEmail string) string {
	return strings.TrimSuffix(serviceAccountEmail, ".gserviceaccount.com")
}

var (
	lakebaseInstanceRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$`)
	lakebaseEndpointRE = regexp.MustCompile(`^projects/[^/\s]+/branches/[^/\s]+/endpoints/[^/\s]+$`)
)

// validateAuth appends the problems of the spec's auth to probs. Fields
// are named auth.<field>; sslmode and password are checked against the
// kind too.
func (s *Spec) validateAuth(probs []fielderr.Problem) []fielderr.Problem {
	add := func(field string, err error) {
		// Fields outside auth may have a problem already: one each.
		if err != nil && !hasProblem(probs, field) {
			probs = append(probs, fielderr.Problem{Field: field, Problem: err.Error()})
		}
	}
	a := s.Auth
	if a == nil {
		return probs
	}
	kind := a.Kind
	if kind == "" {
		kind = AuthPassword
	}
	if !slices.Contains(AuthKinds(), kind) {
		add("auth.kind", fmt.Errorf("%q is not accepted: use password, command, lakebase or alloydb-iam", truncate(string(kind), 40)))
		return probs
	}
	// Fields of other kinds are refused, so that a switch of kind does not
	// leave settings behind that silently do nothing.
	used := map[string]bool{}
	switch kind {
	case AuthCommand:
		used = map[string]bool{"program": true, "args": true, "timeout": true, "lifetime": true}
	case AuthLakebase:
		used = map[string]bool{"workspace_url": true, "client_id": true, "client_secret": true, "instance": true,
			"endpoint": true, "lifetime": true}
	case AuthAlloyDBIAM:
		used = map[string]bool{"service_account_key": true, "service_account": true, "scope": true}
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"program", a.Program != ""}, {"args", len(a.Args) > 0}, {"timeout", a.Timeout != 0},
		{"workspace_url", a.WorkspaceURL != ""}, {"client_id", a.ClientID != ""}, {"client_secret", !a.ClientSecret.IsZero()},
		{"instance", a.Instance != ""}, {"endpoint", a.Endpoint != ""},
		{"service_account_key", !a.ServiceAccountKey.IsZero()}, {"service_account", a.ServiceAccount != ""}, {"scope", a.Scope != ""},
		{"lifetime", a.Lifetime != 0},
	} {
		if f.set && !used[f.name] {
			add("auth."+f.name, fmt.Errorf("not used with auth kind %s: remove it (it belongs to %s)", kind, ownerKinds(f.name)))
		}
	}
	if !kind.IsToken() {
		return probs
	}
	if !s.Password.IsZero() {
		add("password", fmt.Errorf("not used with auth kind %s: the password is the token pgrelay fetches; remove it", kind))
	}
	if slices.Contains(SSLModes(), s.SSLMode) && !s.SSLMode.Encrypts() {
		add("sslmode", fmt.Errorf("%q is not accepted with auth kind %s: the token is sent as the password and must never travel unencrypted (nor fall back to plain text): use require, verify-ca or verify-full", s.SSLMode, kind))
	}
	switch kind {
	case AuthCommand:
		add("auth.program", validateProgram(a.Program))
		if len(a.Args) > MaxCommandArgs {
			add("auth.args", fmt.Errorf("%d arguments: at most %d", len(a.Args), MaxCommandArgs))
		}
		for i, arg := range a.Args {
			if len(arg) > MaxArgLen || strings.ContainsRune(arg, 0) || !utf8.ValidString(arg) {
				add("auth.args", fmt.Errorf("argument %d is not accepted: valid UTF-8 without NUL characters, at most %d bytes", i+1, MaxArgLen))
				break
			}
		}
		if d := a.Timeout.Duration(); d < MinCommandTimeout || d > MaxCommandTimeout {
			add("auth.timeout", fmt.Errorf("%s is out of range: accepted is %s to %s", d, MinCommandTimeout, MaxCommandTimeout))
		}
		if d := a.Lifetime.Duration(); d < MinCommandLifetime || d > MaxCommandLifetime {
			add("auth.lifetime", fmt.Errorf("%s is out of range: accepted is %s to %s (how long a token printed without expires_at is valid)", d, MinCommandLifetime, MaxCommandLifetime))
		}
	case AuthLakebase:
		if a.WorkspaceURL == "" {
			add("auth.workspace_url", errors.New("required: the Databricks workspace URL, e.g. https://dbc-a1b2345c-d6e7.cloud.databricks.com"))
		} else {
			add("auth.workspace_url", validateHTTPSURL(a.WorkspaceURL, false))
		}
		switch {
		case a.ClientID == "":
			add("auth.client_id", errors.New("required: the OAuth client ID (application ID) of the service principal"))
		case len(a.ClientID) > 256 || strings.ContainsAny(a.ClientID, " \t\r\n:") || !utf8.ValidString(a.ClientID):
			add("auth.client_id", errors.New("not accepted: an OAuth client ID of at most 256 characters without spaces or ':', e.g. 6f6f7a2e-…"))
		}
		if len(a.ClientSecret.Reveal()) > MaxClientSecretLen || strings.ContainsAny(a.ClientSecret.Reveal(), "\x00\r\n") {
			add("auth.client_secret", fmt.Errorf("not accepted: at most %d bytes on one line", MaxClientSecretLen))
		}
		switch {
		case a.Instance == "" && a.Endpoint == "":
			// Both fields named, each with what it accepts.
			add("auth.instance", errors.New("required: auth.instance, the name of a database instance (provisioned Lakebase), "+
				"or auth.endpoint, an endpoint projects/<project>/branches/<branch>/endpoints/<endpoint> (Lakebase projects)"))
		case a.Instance != "" && a.Endpoint != "":
			add("auth.endpoint", errors.New("give either auth.instance (provisioned Lakebase) or auth.endpoint (Lakebase projects), not both"))
		case a.Instance != "" && !lakebaseInstanceRE.MatchString(a.Instance):
			add("auth.instance", fmt.Errorf("%q is not accepted: a database instance name of at most 63 letters, digits and '-'", truncate(a.Instance, 80)))
		case a.Endpoint != "" && !lakebaseEndpointRE.MatchString(a.Endpoint):
			add("auth.endpoint", fmt.Errorf("%q is not accepted: an endpoint resource name projects/<project>/branches/<branch>/endpoints/<endpoint>", truncate(a.Endpoint, 120)))
		}
		if a.Lifetime != 0 {
			switch d := a.Lifetime.Duration(); {
			case a.Endpoint == "":
				add("auth.lifetime", errors.New("used only with auth.endpoint (Lakebase projects): credentials of provisioned instances always last 1 hour; remove it"))
			case d < MinLakebaseLifetime || d > MaxLakebaseLifetime || d%time.Second != 0:
				add("auth.lifetime", fmt.Errorf("%s is out of range: accepted is whole seconds from %s to %s (the API's ttl)", d, MinLakebaseLifetime, MaxLakebaseLifetime))
			}
		}
	case AuthAlloyDBIAM:
		// The account: the key's client_email, or the one saved with a
		// key that is not given again.
		account := a.ServiceAccount
		if n := len(a.ServiceAccountKey.Reveal()); n > MaxServiceAccountKey {
			add("auth.service_account_key", fmt.Errorf("%d bytes: a key file is at most %d bytes", n, MaxServiceAccountKey))
			account = ""
		} else if !a.ServiceAccountKey.IsZero() {
			k, err := ParseServiceAccountKey(a.ServiceAccountKey)
			add("auth.service_account_key", err)
			account = ""
			if err == nil {
				account = k.ClientEmail
				if a.ServiceAccount != "" && a.ServiceAccount != k.ClientEmail {
					add("auth.service_account", fmt.Errorf("%q differs from the key's client_email %q: leave it empty, it is read from the key", truncate(a.ServiceAccount, 120), k.ClientEmail))
					account = ""
				}
			}
		}
		if account != "" && s.User != "" && s.User != AlloyDBUser(account) {
			add("user", fmt.Errorf("%q is not the database user AlloyDB gives service account %s: use %q (the email without .gserviceaccount.com)", s.User, account, AlloyDBUser(account)))
		}
		for sc := range strings.FieldsSeq(a.Scope) {
			if !strings.HasPrefix(sc, "https://") || len(sc) > 256 {
				add("auth.scope", fmt.Errorf("%q is not accepted: OAuth scopes are https URLs separated by spaces, e.g. %s", truncate(sc, 80), DefaultAlloyDBScope))
				break
			}
		}
	}
	return probs
}

// ownerKinds names the auth kind a field belongs to.
func ownerKinds(field string) string {
	switch field {
	case "program", "args", "timeout":
		return "command"
	case "workspace_url", "client_id", "client_secret", "instance", "endpoint":
		return "lakebase"
	case "service_account_key", "service_account", "scope":
		return "alloydb-iam"
	case "lifetime":
		return "command and lakebase"
	}
	return "another kind"
}

func hasProblem(probs []fielderr.Problem, field string) bool {
	return slices.ContainsFunc(probs, func(p fielderr.Problem) bool { return p.Field == field })
}

// validateProgram checks a credential command's program: a name on PATH
// or an absolute path; no shell syntax is interpreted anyway.
func validateProgram(p string) error {
	switch {
	case p == "":
		return errors.New("required: the program that prints the token, e.g. /usr/local/bin/get-db-token (run without a shell)")
	case len(p) > MaxArgLen || strings.ContainsAny(p, "\x00\r\n") || !utf8.ValidString(p):
		return fmt.Errorf("not accepted: a program name or absolute path of at most %d bytes on one line", MaxArgLen)
	case strings.TrimSpace(p) != p:
		return fmt.Errorf("%q has surrounding spaces: give the program alone and each argument in args (no shell is used)", truncate(p, 80))
	case strings.Contains(p, "/") && !filepath.IsAbs(p):
		return fmt.Errorf("%q is a relative path: give a program name found on PATH or an absolute path", truncate(p, 80))
	case !strings.Contains(p, "/") && strings.ContainsAny(p, " \t"):
		return fmt.Errorf("%q contains spaces: the program is run without a shell, so give each argument in args", truncate(p, 80))
	}
	return nil
}

// validateHTTPSURL checks an https URL of a host (and port) with no user
// information, query or fragment; withPath allows a path.
func validateHTTPSURL(raw string, withPath bool) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return fmt.Errorf("%q is not accepted: an https URL such as https://dbc-a1b2345c-d6e7.cloud.databricks.com", truncate(raw, 120))
	case u.Scheme != "https":
		return fmt.Errorf("%q is not accepted: only https URLs are, since credentials are sent to it", truncate(raw, 120))
	case u.User != nil:
		return errors.New("must not contain a user name or password: accepted is https://host")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return fmt.Errorf("%q has a query or fragment: accepted is https://host", truncate(raw, 120))
	case !withPath && u.Path != "" && u.Path != "/":
		return fmt.Errorf("%q has a path: give the workspace URL alone, e.g. https://%s", truncate(raw, 120), u.Host)
	}
	if err := ValidateHost(u.Hostname()); err != nil {
		return fmt.Errorf("host: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
