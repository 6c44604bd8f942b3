// Package credentialtest holds local HTTPS servers that implement the
// token endpoints pgrelay's credential sources call, for tests: a
// Databricks workspace (the OAuth token endpoint with client credentials,
// the provisioned-instance and the projects database-credential APIs) and
// Google's OAuth2 token endpoint for the JWT-bearer grant. They check what
// the real servers check (the grant type, the client's credentials or the
// assertion's RS256 signature, the request fields), and hand out tokens
// from an IssueFunc, which may rotate a real role's password (Rotator) so
// that the local PostgreSQL accepts them.
package credentialtest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The local HTTPS servers below implement the documented endpoints and
// check what a real server checks: the grant type, the client's
// credentials or the assertion's signature, and the request fields.

// IssueFunc makes a database token valid for life: it may rotate a real
// role's password to it (Rotator). It returns the token.
type IssueFunc func(ctx context.Context, life time.Duration) (string, error)

// RandomToken returns a random token of hex digits.
func RandomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// WriteJSON writes v as a JSON response with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Databricks is a Databricks workspace: the OAuth token endpoint
// (client_credentials, HTTP Basic client authentication, scope all-apis),
// the provisioned-instance and the projects credential APIs.
type Databricks struct {
	// Srv is the HTTPS server; Srv.URL is the workspace URL and
	// Srv.Client() trusts its certificate.
	Srv *httptest.Server
	// ClientID and ClientSecret are the OAuth client the token endpoint
	// accepts.
	ClientID     string
	ClientSecret string
	// Instance is the provisioned instance, Endpoint the projects
	// endpoint that exist.
	Instance string
	Endpoint string
	// Issue makes the database tokens.
	Issue IssueFunc

	mu        sync.Mutex
	access    map[string]time.Time // workspace tokens issued → expiry
	calls     map[string]int       // by path
	lastTTL   string
	lastReqID string
}

// NewDatabricks starts a workspace whose tokens issue makes (nil: random
// tokens); it stops when the test ends.
func NewDatabricks(t testing.TB, issue IssueFunc) *Databricks {
	t.Helper()
	f := &Databricks{ClientID: "6f6f7a2e-0000-4000-8000-000000000001", ClientSecret: "dose" + RandomToken(),
		Instance: "my-instance", Endpoint: "projects/p1/branches/main/endpoints/ep-primary", Issue: issue,
		access: map[string]time.Time{}, calls: map[string]int{}}
	if f.Issue == nil {
		f.Issue = func(context.Context, time.Duration) (string, error) { return RandomToken(), nil }
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/oidc/v1/token", f.token)
	mux.HandleFunc("/api/2.0/database/credentials", f.instanceCredential)
	mux.HandleFunc("/api/2.0/postgres/credentials", f.projectCredential)
	f.Srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.Srv.Close)
	return f
}

// Count returns how many requests path got.
func (f *Databricks) Count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[path]
}

func (f *Databricks) token(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.calls[r.URL.Path]++
	f.mu.Unlock()
	if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "POST a form"})
		return
	}
	// RFC 6749 2.3.1: the client ID and secret are form-encoded before
	// they go into Basic authentication.
	id, secret, ok := r.BasicAuth()
	if ok {
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		ok = err1 == nil && err2 == nil
	}
	if !ok || id != f.ClientID || secret != f.ClientSecret {
		WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": "Client authentication failed"})
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	if r.PostForm.Get("scope") != "all-apis" {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_scope", "error_description": "scope must be all-apis"})
		return
	}
	if r.PostForm.Get("client_secret") != "" {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "secret in the body"})
		return
	}
	tok := "dapi" + RandomToken()
	f.mu.Lock()
	f.access[tok] = time.Now().Add(time.Hour)
	f.mu.Unlock()
	WriteJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600, "scope": "all-apis"})
}

// authorized checks the bearer token against those the token endpoint
// issued.
func (f *Databricks) authorized(w http.ResponseWriter, r *http.Request) bool {
	f.mu.Lock()
	f.calls[r.URL.Path]++
	exp, ok := f.access[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	f.mu.Unlock()
	if !ok || time.Now().After(exp) {
		WriteJSON(w, http.StatusUnauthorized, map[string]string{"error_code": "UNAUTHENTICATED", "message": "Invalid access token."})
		return false
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error_code": "INVALID_PARAMETER_VALUE", "message": "POST JSON"})
		return false
	}
	return true
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func (f *Databricks) instanceCredential(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	var req struct {
		RequestID     string   `json:"request_id"`
		InstanceNames []string `json:"instance_names"`
		Claims        []any    `json:"claims"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || len(req.InstanceNames) == 0 || !uuidRE.MatchString(req.RequestID) {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error_code": "INVALID_PARAMETER_VALUE",
			"message": "At least one of instance_names or claims must be specified."})
		return
	}
	f.mu.Lock()
	f.lastReqID = req.RequestID
	f.mu.Unlock()
	if len(req.InstanceNames) != 1 || req.InstanceNames[0] != f.Instance {
		WriteJSON(w, http.StatusNotFound, map[string]string{"error_code": "RESOURCE_DOES_NOT_EXIST",
			"message": fmt.Sprintf("Database instance '%s' does not exist.", req.InstanceNames[0])})
		return
	}
	tok, err := f.Issue(r.Context(), time.Hour)
	if err != nil {
		WriteJSON(w, http.StatusInternalServerError, map[string]string{"error_code": "INTERNAL_ERROR", "message": err.Error()})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"token": tok, "expiration_time": time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)})
}

var ttlRE = regexp.MustCompile(`^([0-9]+)s$`)

func (f *Databricks) projectCredential(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	var req struct {
		Endpoint   string `json:"endpoint"`
		TTL        string `json:"ttl"`
		ExpireTime string `json:"expire_time"`
		Claims     []any  `json:"claims"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error_code": "INVALID_PARAMETER_VALUE", "message": "malformed request"})
		return
	}
	m := ttlRE.FindStringSubmatch(req.TTL)
	secs := 0
	if m != nil {
		secs, _ = strconv.Atoi(m[1])
	}
	if secs < 300 || secs > 3600 {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error_code": "INVALID_PARAMETER_VALUE",
			"message": "ttl must be at least 300 seconds and at most 3600 seconds"})
		return
	}
	f.mu.Lock()
	f.lastTTL = req.TTL
	f.mu.Unlock()
	if req.Endpoint != f.Endpoint {
		WriteJSON(w, http.StatusNotFound, map[string]string{"error_code": "NOT_FOUND", "message": "endpoint not found"})
		return
	}
	life := time.Duration(secs) * time.Second
	tok, err := f.Issue(r.Context(), life)
	if err != nil {
		WriteJSON(w, http.StatusInternalServerError, map[string]string{"error_code": "INTERNAL_ERROR", "message": err.Error()})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"token": tok, "expire_time": time.Now().Add(life).UTC().Format(time.RFC3339)})
}

// Google is Google's OAuth2 token endpoint for the JWT-bearer grant:
// it verifies the assertion's RS256 signature with the public key of the
// key ID in its header, and its claims.
type Google struct {
	// Srv is the HTTPS server; Srv.Client() trusts its certificate.
	Srv   *httptest.Server
	scope string
	issue IssueFunc

	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey // key ID → public key of live keys
	account map[string]string         // key ID → service account
	calls   int
}

// NewGoogle starts a token endpoint whose tokens issue makes (nil:
// random tokens); it stops when the test ends.
func NewGoogle(t testing.TB, issue IssueFunc) *Google {
	t.Helper()
	g := &Google{scope: "https://www.googleapis.com/auth/alloydb.login", issue: issue,
		keys: map[string]*rsa.PublicKey{}, account: map[string]string{}}
	if g.issue == nil {
		g.issue = func(context.Context, time.Duration) (string, error) { return "ya29." + RandomToken(), nil }
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", g.token)
	g.Srv = httptest.NewTLSServer(mux)
	t.Cleanup(g.Srv.Close)
	return g
}

// Count returns how many token requests the endpoint got.
func (g *Google) Count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

// TokenURL is the endpoint's URL, the token_uri of its keys.
func (g *Google) TokenURL() string { return g.Srv.URL + "/token" }

// NewKey makes a service-account key file (JSON) for account whose
// token_uri is this server; live says whether the server knows the key (a
// key that was deleted or expired is unknown to it).
func (g *Google) NewKey(t testing.TB, account string, live bool) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	id := RandomToken()[:40]
	if live {
		g.mu.Lock()
		g.keys[id], g.account[id] = &k.PublicKey, account
		g.mu.Unlock()
	}
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "proj", "private_key_id": id,
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": account, "client_id": "1234567890", "token_uri": g.TokenURL(),
		"auth_uri": "https://accounts.google.com/o/oauth2/auth",
	})
	return string(b)
}

func (g *Google) token(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.calls++
	g.mu.Unlock()
	bad := func(code, desc string) {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error": code, "error_description": desc})
	}
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		bad("invalid_request", "POST a form")
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		bad("unsupported_grant_type", "Invalid grant_type: "+r.PostForm.Get("grant_type"))
		return
	}
	parts := strings.Split(r.PostForm.Get("assertion"), ".")
	if len(parts) != 3 {
		bad("invalid_grant", "Invalid JWT: not three segments")
		return
	}
	var header struct{ Alg, Typ, Kid string }
	var claims struct {
		Iss, Scope, Aud, Sub string
		Iat, Exp             int64
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	cb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || json.Unmarshal(hb, &header) != nil || json.Unmarshal(cb, &claims) != nil {
		bad("invalid_grant", "Invalid JWT: malformed")
		return
	}
	g.mu.Lock()
	pub, account := g.keys[header.Kid], g.account[header.Kid]
	g.mu.Unlock()
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if header.Alg != "RS256" || pub == nil || rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) != nil {
		bad("invalid_grant", "Invalid JWT Signature.")
		return
	}
	now := time.Now().Unix()
	switch {
	case claims.Iss != account:
		bad("invalid_grant", "Invalid JWT: iss does not match the key")
	case claims.Aud != g.TokenURL():
		bad("invalid_grant", "Invalid JWT: Failed audience check.")
	case claims.Iat > now+60 || claims.Exp < now || claims.Exp-claims.Iat > 3600:
		bad("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
	case claims.Scope != g.scope:
		bad("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
	default:
		tok, err := g.issue(r.Context(), time.Hour)
		if err != nil {
			WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal_failure", "error_description": err.Error()})
			return
		}
		WriteJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": 3599, "token_type": "Bearer"})
	}
}

// Rotator returns an IssueFunc that sets role's password on p to a fresh
// token valid for the lifetime asked (VALID UNTIL), as the database of a
// real provider accepts its tokens for their lifetime.
func Rotator(connString, role string) IssueFunc {
	return func(ctx context.Context, life time.Duration) (string, error) {
		tok := RandomToken()
		conn, err := pgx.Connect(ctx, connString)
		if err != nil {
			return "", fmt.Errorf("connect as superuser: %w", err)
		}
		defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
		sql := fmt.Sprintf("ALTER ROLE %s PASSWORD '%s' VALID UNTIL '%s'", pgx.Identifier{role}.Sanitize(), tok,
			time.Now().Add(life).UTC().Format(time.RFC3339Nano))
		if _, err := conn.Exec(ctx, sql); err != nil {
			return "", fmt.Errorf("rotate %s: %w", role, err)
		}
		return tok, nil
	}
}

// LastTTL is the ttl of the last projects credential request.
func (f *Databricks) LastTTL() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastTTL
}

// LastRequestID is the request_id of the last instance credential request.
func (f *Databricks) LastRequestID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastReqID
}

// Calls returns the number of requests by path.
func (f *Databricks) Calls() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.calls))
	for k, v := range f.calls {
		out[k] = v
	}
	return out
}

// CertPEM is the servers' certificate, PEM encoded (for SSL_CERT_FILE of a
// pgrelay process that calls it).
func CertPEM(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// RotateScript is a credential command for role $1: it sets the role's
// password to a fresh random token valid for $LIFE seconds (VALID UNTIL)
// and prints it as JSON with that expiry. Each call appends a line (its
// time) to $CALLS. It connects with psql and the PG* variables of its
// environment (a superuser's).
const RotateScript = `#!/bin/sh
set -eu
role="$1"
date +%s.%N >> "$CALLS"
tok=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
exp=$(psql -qAtX -v ON_ERROR_STOP=1 -v role="$role" -v tok="$tok" -v life="$LIFE" <<'SQL'
SELECT now() + make_interval(secs => :life) AS exp \gset
SELECT format('ALTER ROLE %I PASSWORD %L VALID UNTIL %L', :'role', :'tok', :'exp') \gexec
SELECT to_char(:'exp'::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
SQL
)
if [ -n "${TOKENS:-}" ]; then echo "$tok" >> "$TOKENS"; fi
printf '{"token":"%s","expires_at":"%s"}\n' "$tok" "$exp"
`

// Superuser is how a RotateCommand reaches the server.
type Superuser struct {
	Host     string
	Port     int
	User     string
	Password string
}

// RotateCommand writes a credential command (mode 0700, in a directory
// removed when the test ends) that runs RotateScript against su with
// tokens valid for life, so that pgrelay can run it with any environment:
// run with a role name, it rotates that role's password. It returns the
// program's path and the file that logs its calls (CallTimes reads it).
func RotateCommand(t testing.TB, su Superuser, life time.Duration) (program, calls string) {
	t.Helper()
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	inner := filepath.Join(dir, "rotate.sh")
	if err := os.WriteFile(inner, []byte(RotateScript), 0o700); err != nil {
		t.Fatal(err)
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	wrapper := fmt.Sprintf("#!/bin/sh\nexport PATH=%s PGHOST=%s PGPORT=%d PGUSER=%s PGPASSWORD=%s PGDATABASE=postgres PGSSLMODE=require CALLS=%s TOKENS=%s LIFE=%d\nexec %s \"$@\"\n",
		q(os.Getenv("PATH")), q(su.Host), su.Port, q(su.User), q(su.Password), q(calls), q(calls+".tokens"), int(life/time.Second), q(inner))
	program = filepath.Join(dir, "db-token")
	if err := os.WriteFile(program, []byte(wrapper), 0o700); err != nil {
		t.Fatal(err)
	}
	return program, calls
}

// CallTimes reads the times of a RotateCommand's calls (none when it was
// never called).
func CallTimes(t testing.TB, calls string) []time.Time {
	t.Helper()
	b, err := os.ReadFile(calls)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
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

// AccessTokens returns the workspace OAuth access tokens the token
// endpoint issued.
func (f *Databricks) AccessTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.access))
	for t := range f.access {
		out = append(out, t)
	}
	return out
}

// IssuedTokens returns the tokens a RotateCommand printed, given its calls
// file.
func IssuedTokens(t testing.TB, calls string) []string {
	t.Helper()
	b, err := os.ReadFile(calls + ".tokens")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}
