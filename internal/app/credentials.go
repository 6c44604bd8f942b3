package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/childenv"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
)

// This file holds what app does for connections whose password is an
// expiring token (auth kinds command, lakebase and alloydb-iam): sealing
// the source's secret, one credential.Cache per connection in the
// process, and logging in with the current token.

// CredentialConfig is what token credentials need from the process.
type CredentialConfig struct {
	// AllowCommand vets the program of a command source (the server's
	// allowlist, jobs.Allowlist.Path) and returns the path it runs as;
	// nil refuses every program.
	AllowCommand func(program string) (string, error)
	// HTTPClient fetches Lakebase and AlloyDB tokens (default: the
	// standard transport, which honours HTTPS_PROXY and SSL_CERT_FILE).
	// Its *http.Transport is copied to dial under Config.Network
	// (credential.NetworkClient).
	HTTPClient *http.Client
	// Cache overrides the caches' defaults (refresh at 80 %, rate limit,
	// retries); its Name, Hooks and Logger are set by the service.
	Cache credential.CacheConfig
	// RunAs is the user command programs run as (--run-as), nil for this
	// process's: whoever saves a connection chooses its token command's
	// arguments, so under --run-as it runs as the user command steps run
	// as, not as pgrelay.
	RunAs *jobs.RunAs
}

// newCredentials returns the process's registry of token caches, whose
// sources get opts, with metrics when m is set.
func newCredentials(cfg CredentialConfig, opts credential.Options, m *metrics.Metrics, logger *slog.Logger) *credential.Registry {
	cc := cfg.Cache
	cc.Logger = logger
	if m != nil {
		cc.Hooks.Fetch = func(source connection.AuthKind, outcome credential.Outcome, _ time.Duration) {
			m.CountCredentialFetch(string(source), string(outcome))
		}
	}
	r := credential.NewRegistry(opts, cc)
	if m != nil {
		m.SetCredentialExpiry(func() []metrics.CredentialExpiry {
			var out []metrics.CredentialExpiry
			for _, st := range r.Statuses() {
				out = append(out, metrics.CredentialExpiry{Connection: st.Connection, Source: string(st.Kind), ExpiresAt: st.ExpiresAt})
			}
			return out
		})
	}
	return r
}

// credentialOptions are the options of every source the service makes:
// their HTTPS requests (Lakebase, AlloyDB) dial under the network policy,
// as bastions and databases do.
func credentialOptions(cfg CredentialConfig, network *egress.Policy) credential.Options {
	opts := credential.Options{AllowCommand: cfg.AllowCommand, HTTPClient: credential.NetworkClient(cfg.HTTPClient, network)}
	if ra := cfg.RunAs; ra != nil {
		opts.CommandCredential, opts.CommandDir = ra.Credential(), ra.ChildDir()
		opts.CommandEnv = ra.ChildEnv(childenv.Clean(os.Environ()))
	}
	return opts
}

// authSecretField is the field of the kind's stored secret.
func authSecretField(k connection.AuthKind) string {
	switch k {
	case connection.AuthLakebase:
		return "auth.client_secret"
	case connection.AuthAlloyDBIAM:
		return "auth.service_account_key"
	}
	return ""
}

// authSecret returns the spec's auth secret (the client secret or the
// service-account key), zero when none.
func authSecret(spec *connection.Spec) secret.Value {
	if spec.Auth == nil {
		return secret.Value{}
	}
	switch spec.Auth.Kind {
	case connection.AuthLakebase:
		return spec.Auth.ClientSecret
	case connection.AuthAlloyDBIAM:
		return spec.Auth.ServiceAccountKey
	}
	return secret.Value{}
}

// setAuthSecret puts v in the spec's auth as its kind's secret.
func setAuthSecret(spec *connection.Spec, v secret.Value) {
	if spec.Auth == nil {
		return
	}
	switch spec.Auth.Kind {
	case connection.AuthLakebase:
		spec.Auth.ClientSecret = v
	case connection.AuthAlloyDBIAM:
		spec.Auth.ServiceAccountKey = v
	}
}

// clearAuthSecrets removes the secrets from the spec's auth (the spec kept
// in the store holds none).
func clearAuthSecrets(spec *connection.Spec) {
	if spec.Auth != nil {
		spec.Auth.ClientSecret, spec.Auth.ServiceAccountKey = secret.Value{}, secret.Value{}
	}
}

// authSecretAD binds a sealed auth secret to its record and field, to
// where it is sent (the Lakebase workspace and OAuth client, or the
// service account: Auth.SecretTarget) and to the database endpoint the
// token is for. Opened for any other, it fails to decrypt, so a secret is
// never sent to a workspace, account or database it was not saved for.
func authSecretAD(id string, spec *connection.Spec) []byte {
	return []byte("pgrelay/connection/" + id + "/" + authSecretField(spec.AuthKind()) +
		"\x00target=" + spec.Auth.SecretTarget() + "\x00endpoint=" + spec.Endpoint().Key())
}

// sealAuthSecret stores v sealed on c for c.Spec (or clears it when
// empty).
func (s *Connector) sealAuthSecret(c *store.Connection, v secret.Value) error {
	if v.IsZero() || authSecretField(c.Spec.AuthKind()) == "" {
		c.SealedAuthSecret = nil
		return nil
	}
	sealed, err := s.keyring.Seal([]byte(v.Reveal()), authSecretAD(c.ID, &c.Spec))
	if err != nil {
		return err
	}
	c.SealedAuthSecret = sealed
	return nil
}

// openAuthSecret opens c's auth secret into spec (c's spec, cloned).
func (s *Connector) openAuthSecret(c *store.Connection, spec *connection.Spec) error {
	if len(c.SealedAuthSecret) == 0 || authSecretField(spec.AuthKind()) == "" {
		return nil
	}
	plain, err := s.keyring.Open(c.SealedAuthSecret, authSecretAD(c.ID, spec))
	if err != nil {
		return fmt.Errorf("connection %s: %s: %w", c.Spec.Name, authSecretField(spec.AuthKind()), err)
	}
	setAuthSecret(spec, secret.New(string(plain)))
	clear(plain)
	return nil
}

// secretAgainProblem is the field problem given when what a stored auth
// secret is bound to changes without the secret being given again.
func secretAgainProblem(old, next *connection.Spec) fielderr.Problem {
	field := authSecretField(next.AuthKind())
	what := "client secret"
	if next.AuthKind() == connection.AuthAlloyDBIAM {
		what = "service-account key"
	}
	var changes []string
	if old.Auth.SecretTarget() != next.Auth.SecretTarget() {
		switch next.AuthKind() {
		case connection.AuthLakebase:
			changes = append(changes, "the workspace URL or client ID")
		case connection.AuthAlloyDBIAM:
			changes = append(changes, "the service account")
		}
	}
	if c := old.Endpoint().Changes(next.Endpoint()); len(c) > 0 {
		changes = append(changes, strings.Join(c, ", "))
	}
	return fielderr.Problem{Field: field, Problem: fmt.Sprintf(
		"give the %s again: %s changed, and a stored %s is only used for what it was saved for", what, strings.Join(changes, "; "), what)}
}

// prepareAuth settles spec's auth secret against the saved connection c
// (nil on create) before spec is validated: a secret not given again is
// kept (and the service account it belongs to filled in) when the kind,
// the target and the endpoint stay; otherwise it is required. It returns
// the secret to seal (zero: keep c's sealed one, or none).
func (s *Connector) prepareAuth(c *store.Connection, spec *connection.Spec) (given secret.Value, keep bool, err error) {
	kind := spec.AuthKind()
	field := authSecretField(kind)
	if field == "" {
		return secret.Value{}, false, nil
	}
	given = authSecret(spec)
	if !given.IsZero() {
		return given, false, nil
	}
	sameKind := c != nil && c.Spec.AuthKind() == kind && len(c.SealedAuthSecret) > 0
	if sameKind && kind == connection.AuthAlloyDBIAM && spec.Auth.ServiceAccount == "" {
		// The account is read from the key, which is not given again.
		spec.Auth.ServiceAccount = c.Spec.Auth.ServiceAccount
	}
	if !sameKind {
		what := "the OAuth secret of the service principal"
		if spec.Auth.ClientID != "" {
			what += " (client ID " + spec.Auth.ClientID + ")"
		}
		if kind == connection.AuthAlloyDBIAM {
			what = "the service account's JSON key file"
		}
		return secret.Value{}, false, &ValidationError{Problems: []fielderr.Problem{{Field: field,
			Problem: "required: " + what}}}
	}
	next := spec.Clone()
	next.ApplyDefaults()
	if c.Spec.Auth.SecretTarget() != next.Auth.SecretTarget() || !c.Spec.Endpoint().Covers(next.Endpoint()) {
		return secret.Value{}, false, &ValidationError{Problems: []fielderr.Problem{secretAgainProblem(&c.Spec, &next)}}
	}
	return secret.Value{}, true, nil
}

// joinProblems returns the field problems of both validation errors as
// one (each field once), or the first error that is not a validation
// error.
func joinProblems(err, more error) error {
	if err == nil {
		return more
	}
	if more == nil {
		return err
	}
	var a, b *ValidationError
	if !errors.As(err, &a) || !errors.As(more, &b) {
		return err
	}
	out := &ValidationError{Problems: append([]fielderr.Problem(nil), a.Problems...)}
	for _, p := range b.Problems {
		if !slices.ContainsFunc(out.Problems, func(q fielderr.Problem) bool { return q.Field == p.Field }) {
			out.Problems = append(out.Problems, p)
		}
	}
	return out
}

// recordingSource is a connection's token cache as a connection test uses
// it: it keeps the token it gave, so that a token the database refused can
// be dropped from the cache.
type recordingSource struct {
	credential.Source
	mu   sync.Mutex
	last credential.Token
}

func (r *recordingSource) Token(ctx context.Context) (credential.Token, error) {
	tok, err := r.Source.Token(ctx)
	if err == nil {
		r.mu.Lock()
		r.last = tok
		r.mu.Unlock()
	}
	return tok, err
}

// invalidate drops the token given from the cache.
func (r *recordingSource) invalidate() {
	r.mu.Lock()
	tok := r.last
	r.mu.Unlock()
	if c, ok := r.Source.(*credential.Cache); ok {
		c.Invalidate(tok)
	}
}

// tokenRefused reports whether a test failed because the server refused
// the password (the token).
func tokenRefused(rep *diagnose.Report) bool {
	st := rep.Step(diagnose.StepPostgresAuth)
	return st != nil && st.Status == diagnose.StatusFailed && isTokenRefused(st.Err)
}

// draftAuthSecret gives a draft based on saved connection c c's auth
// secret when the draft has none, under the rules of an update: same
// kind, target and endpoint, or a field error.
func (s *Connector) draftAuthSecret(c *store.Connection, draft *connection.Spec) error {
	field := authSecretField(draft.AuthKind())
	if field == "" || !authSecret(draft).IsZero() || c.Spec.AuthKind() != draft.AuthKind() || len(c.SealedAuthSecret) == 0 {
		return nil
	}
	if c.Spec.Auth.SecretTarget() != draft.Auth.SecretTarget() || !c.Spec.Endpoint().Covers(draft.Endpoint()) {
		return &ValidationError{Problems: []fielderr.Problem{secretAgainProblem(&c.Spec, draft)}}
	}
	saved := c.Spec.Clone()
	if err := s.openAuthSecret(c, &saved); err != nil {
		return err
	}
	setAuthSecret(draft, authSecret(&saved))
	return nil
}

// TokenStatus is what this process knows of a connection's current token;
// never the token itself.
type TokenStatus = credential.Status

// AuthView is the auth part of a ConnectionView: the settings without the
// secrets, whether a secret is stored, and the current token's state.
type AuthView struct {
	connection.Auth
	// HasClientSecret: a Lakebase OAuth client secret is stored.
	HasClientSecret bool `json:"has_client_secret,omitempty"`
	// HasServiceAccountKey: an AlloyDB service-account key is stored.
	HasServiceAccountKey bool `json:"has_service_account_key,omitempty"`
	// Token is the state of the token this process holds for the
	// connection (source, expiry, last failure); nil when it has fetched
	// none yet.
	Token *TokenStatus `json:"token,omitempty"`
}

// authView returns c's auth view (nil for the password kind).
func authView(c *store.Connection) *AuthView {
	a := c.Spec.Auth
	if a == nil || !c.Spec.AuthKind().IsToken() {
		return nil
	}
	v := &AuthView{Auth: *a.Clone()}
	v.ClientSecret, v.ServiceAccountKey = secret.Value{}, secret.Value{}
	has := len(c.SealedAuthSecret) > 0
	switch a.Kind {
	case connection.AuthLakebase:
		v.HasClientSecret = has
	case connection.AuthAlloyDBIAM:
		v.HasServiceAccountKey = has
	}
	return v
}

// withToken adds the state of this process's token for c to v.
func (s *Connector) withToken(v *ConnectionView, c *store.Connection) *ConnectionView {
	if v.Auth == nil || s.credentials == nil {
		return v
	}
	if st, ok := s.credentials.Statuses()[c.ID]; ok && (!st.ExpiresAt.IsZero() || st.LastError != "") {
		v.Auth.Token = &st
	}
	return v
}

// credentialFor returns the token cache of c, whose spec has its secrets
// opened; nil for the password kind.
func (s *Connector) credentialFor(c *store.Connection, spec *connection.Spec) *credential.Cache {
	if s.credentials == nil {
		return nil
	}
	return s.credentials.For(c.ID, spec)
}

// isTokenRefused reports whether err is the server refusing a password
// (SQLSTATE 28P01), which for a token means it expired or was revoked.
func isTokenRefused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "28P01"
}

// token returns the session's current token.
func (s *Session) token(ctx context.Context) (credential.Token, error) {
	tok, err := s.cred.Token(ctx)
	if err != nil {
		return credential.Token{}, &CredentialError{Connection: s.spec.Name, Source: s.cred.Describe(), Err: err}
	}
	return tok, nil
}

// CredentialError means a connection's token could not be fetched.
type CredentialError struct {
	Connection string
	// Source describes the source.
	Source string
	Err    error
}

// Error names the connection and the source's failure.
func (e *CredentialError) Error() string {
	return fmt.Sprintf("connection %s: no token from %s: %v", e.Connection, e.Source, e.Err)
}

// Unwrap returns the source's error.
func (e *CredentialError) Unwrap() error { return e.Err }

// Hint is the source's fix.
func (e *CredentialError) Hint() string { return credential.Hint(e.Err) }

// connectWithToken opens a pgx session with the current token as the
// password. When the server refuses the token (28P01: expired or revoked
// before its time), the token is dropped from the cache and one new token
// is tried.
func (s *Session) connectWithToken(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	var last error
	for range 2 {
		tok, err := s.token(ctx)
		if err != nil {
			return nil, err
		}
		c := cfg.Copy()
		c.Password = tok.Value.Reveal()
		conn, err := pgx.ConnectConfig(ctx, c)
		if err == nil {
			return conn, nil
		}
		last = err
		if !isTokenRefused(err) {
			break
		}
		s.cred.Invalidate(tok)
	}
	return nil, last
}

// LoginUpstream opens an authenticated, idle session with the database
// for the local endpoint's relay (relay.Login, jobs.EndpointLogin): as the
// connection's user, with the current token as the password (a new one if
// the server refuses it) or else the stored password, the connection's
// TLS and require_auth policy, through the tunnel. params are the
// client's startup parameters: database, application_name, options and
// the like.
func (s *Session) LoginUpstream(ctx context.Context, params map[string]string) (*pgconn.PgConn, error) {
	cfg, err := s.PgxConfig()
	if err != nil {
		return nil, err
	}
	pc := cfg.Config.Copy()
	if db := params["database"]; db != "" {
		pc.Database = db
	}
	for k, v := range params {
		if k != "database" && k != "user" {
			pc.RuntimeParams[k] = v
		}
	}
	for k := range connection.StartupParams(&s.spec) {
		// The client chose it in its options: the connection's must not
		// override it.
		if _, given := params[k]; !given && connection.OptionSets(params["options"], k) {
			delete(pc.RuntimeParams, k)
		}
	}
	var last error
	for range 2 {
		c := pc.Copy()
		var tok credential.Token
		if s.cred != nil {
			if tok, err = s.token(ctx); err != nil {
				return nil, err
			}
			c.Password = tok.Value.Reveal()
		}
		conn, err := pgconn.ConnectConfig(ctx, c)
		if err == nil {
			return conn, nil
		}
		last = err
		if s.cred == nil || !isTokenRefused(err) {
			break
		}
		s.cred.Invalidate(tok)
	}
	return nil, last
}

// TokenAuth reports whether the session logs in with tokens that pgrelay
// fetches. A `pgrelay proxy` then authenticates its clients itself, as a
// run's endpoint does for every connection with a stored credential
// (jobs.EndpointLogin).
func (s *Session) TokenAuth() bool { return s.cred != nil }

// newLocalPassword returns a random password for a local endpoint that
// authenticates its clients itself: 32 bytes of entropy, URL-safe base64.
func newLocalPassword() (secret.Value, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return secret.Value{}, fmt.Errorf("make the local endpoint's password: %w", err)
	}
	return secret.New(base64.RawURLEncoding.EncodeToString(b)), nil
}
