package credential_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/credential/credentialtest"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/secret"
)

func lakebase(f *fakeDatabricks, mut func(*credential.LakebaseConfig)) *credential.LakebaseSource {
	cfg := credential.LakebaseConfig{WorkspaceURL: f.Srv.URL, ClientID: f.ClientID, ClientSecret: secret.New(f.ClientSecret),
		Instance: f.Instance, HTTPClient: f.Srv.Client()}
	if mut != nil {
		mut(&cfg)
	}
	return credential.NewLakebaseSource(cfg)
}

func TestLakebaseInstance(t *testing.T) {
	t.Parallel()
	f := newFakeDatabricks(t, nil)
	start := time.Now()
	tok, err := lakebase(f, nil).Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v (hint: %s)", err, credential.Hint(err))
	}
	if tok.Value.IsZero() || tok.ExpiresAt.Sub(start) < 59*time.Minute || tok.ExpiresAt.Sub(start) > 61*time.Minute {
		t.Fatalf("token expires %v after the request", tok.ExpiresAt.Sub(start))
	}
	if f.Count("/oidc/v1/token") != 1 || f.Count("/api/2.0/database/credentials") != 1 {
		t.Fatalf("calls: %v", f.Calls())
	}
	// Each request carries a new request_id.
	first := f.LastRequestID()
	if _, err := lakebase(f, nil).Token(context.Background()); err != nil || f.LastRequestID() == first {
		t.Fatalf("second request: %v, request_id %q then %q", err, first, f.LastRequestID())
	}
}

func TestLakebaseProjectEndpoint(t *testing.T) {
	t.Parallel()
	f := newFakeDatabricks(t, nil)
	start := time.Now()
	tok, err := lakebase(f, func(c *credential.LakebaseConfig) {
		c.Instance, c.Endpoint, c.Lifetime = "", f.Endpoint, 10*time.Minute
	}).Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v (hint: %s)", err, credential.Hint(err))
	}
	if d := tok.ExpiresAt.Sub(start); d < 9*time.Minute || d > 11*time.Minute || f.LastTTL() != "600s" {
		t.Fatalf("ttl sent %q, token lives %v", f.LastTTL(), d)
	}
	if f.Count("/api/2.0/postgres/credentials") != 1 {
		t.Fatalf("calls: %v", f.Calls())
	}
}

func TestLakebaseBadClientSecret(t *testing.T) {
	t.Parallel()
	f := newFakeDatabricks(t, nil)
	const wrong = "dose-wrong-secret-canary"
	_, err := lakebase(f, func(c *credential.LakebaseConfig) { c.ClientSecret = secret.New(wrong) }).Token(context.Background())
	var ic *credential.InvalidClientError
	if !errors.As(err, &ic) {
		t.Fatalf("err = %v (%T), want *InvalidClientError", err, err)
	}
	if ic.ClientID != f.ClientID || !strings.Contains(err.Error(), "Client authentication failed") ||
		!strings.Contains(credential.Hint(err), "generate a new secret") || credential.Transient(err) ||
		credential.OutcomeOf(err) != credential.OutcomeInvalidClient {
		t.Errorf("err %v; hint %s", err, credential.Hint(err))
	}
	noSecret(t, err, wrong, f.ClientSecret)
	if f.Count("/api/2.0/database/credentials") != 0 {
		t.Error("the credential API was called without a workspace token")
	}
}

func TestLakebaseAPIErrors(t *testing.T) {
	t.Parallel()
	f := newFakeDatabricks(t, nil)
	_, err := lakebase(f, func(c *credential.LakebaseConfig) { c.Instance = "no-such-instance" }).Token(context.Background())
	var ae *credential.APIError
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "RESOURCE_DOES_NOT_EXIST" ||
		!strings.Contains(err.Error(), "Database instance 'no-such-instance' does not exist.") ||
		!strings.Contains(credential.Hint(err), "auth.instance") || credential.Transient(err) {
		t.Fatalf("unknown instance: %v; hint %s", err, credential.Hint(err))
	}
	_, err = lakebase(f, func(c *credential.LakebaseConfig) {
		c.Instance, c.Endpoint, c.Lifetime = "", f.Endpoint, 2*time.Hour
	}).Token(context.Background())
	if !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(err.Error(), "ttl must be") {
		t.Fatalf("ttl out of range: %v", err)
	}
	// A server error is transient.
	down := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		credentialtest.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
	}))
	defer down.Close()
	_, err = credential.NewLakebaseSource(credential.LakebaseConfig{WorkspaceURL: down.URL, ClientID: "c", ClientSecret: secret.New("s"),
		Instance: "i", HTTPClient: down.Client()}).Token(context.Background())
	if !errors.As(err, &ae) || ae.Status != 503 || !credential.Transient(err) {
		t.Fatalf("503: %v", err)
	}
}

func TestLakebaseRedirectRefused(t *testing.T) {
	t.Parallel()
	var leaked bool
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); ok || r.Header.Get("Authorization") != "" {
			leaked = true
		}
		credentialtest.WriteJSON(w, http.StatusOK, map[string]any{"access_token": "x", "expires_in": 3600})
	}))
	defer other.Close()
	login := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/login", http.StatusFound)
	}))
	defer login.Close()
	_, err := credential.NewLakebaseSource(credential.LakebaseConfig{WorkspaceURL: login.URL, ClientID: "c", ClientSecret: secret.New("s"),
		Instance: "i", HTTPClient: login.Client()}).Token(context.Background())
	var ae *credential.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusFound || !strings.Contains(credential.Hint(err), "redirected") {
		t.Fatalf("err = %v (%T)", err, err)
	}
	if leaked {
		t.Fatal("the client credentials followed the redirect")
	}
}

func TestEndpointDown(t *testing.T) {
	t.Parallel()
	f := newFakeDatabricks(t, nil)
	g := newFakeGoogle(t, nil)
	key := g.NewKey(t, "etl@proj.iam.gserviceaccount.com", true)
	lake := lakebase(f, nil)
	alloy := credential.NewAlloyDBSource(credential.AlloyDBConfig{ServiceAccountKey: secret.New(key), HTTPClient: g.Srv.Client()})
	f.Srv.Close()
	g.Srv.Close()
	for _, src := range []credential.Source{lake, alloy} {
		t.Run(string(src.Kind()), func(t *testing.T) {
			// Through a cache: retried (transient), then the typed error.
			c := credential.NewCache(src, credential.CacheConfig{Backoff: time.Millisecond})
			_, err := c.Token(context.Background())
			var ue *credential.UnreachableError
			if !errors.As(err, &ue) || !credential.Transient(err) || credential.OutcomeOf(err) != credential.OutcomeUnreachable {
				t.Fatalf("err = %v (%T), want a transient *UnreachableError", err, err)
			}
			if !strings.Contains(credential.Hint(err), "Nothing accepts connections") || !strings.Contains(err.Error(), "cannot reach https://127.0.0.1:") {
				t.Errorf("err %v; hint %s", err, credential.Hint(err))
			}
		})
	}
}

func TestUntrustedCertificate(t *testing.T) {
	t.Parallel()
	f := newFakeDatabricks(t, nil)
	_, err := lakebase(f, func(c *credential.LakebaseConfig) { c.HTTPClient = nil }).Token(context.Background())
	var ue *credential.UnreachableError
	if !errors.As(err, &ue) || credential.Transient(err) || !strings.Contains(credential.Hint(err), "not trusted") {
		t.Fatalf("err = %v; hint %s", err, credential.Hint(err))
	}
}

func TestAlloyDBToken(t *testing.T) {
	t.Parallel()
	g := newFakeGoogle(t, nil)
	key := g.NewKey(t, "etl@proj.iam.gserviceaccount.com", true)
	src := credential.NewAlloyDBSource(credential.AlloyDBConfig{ServiceAccountKey: secret.New(key), HTTPClient: g.Srv.Client()})
	start := time.Now()
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v (hint: %s)", err, credential.Hint(err))
	}
	if !strings.HasPrefix(tok.Value.Reveal(), "ya29.") || tok.ExpiresAt.Sub(start) < 59*time.Minute {
		t.Fatalf("token expires in %v", tok.ExpiresAt.Sub(start))
	}
	if src.Kind() != connection.AuthAlloyDBIAM || src.Describe() != "Google service account etl@proj.iam.gserviceaccount.com" {
		t.Errorf("kind %s describe %q", src.Kind(), src.Describe())
	}
	// Another scope than the server grants: an API error with its message.
	_, err = credential.NewAlloyDBSource(credential.AlloyDBConfig{ServiceAccountKey: secret.New(key), Scope: "https://www.googleapis.com/auth/other",
		HTTPClient: g.Srv.Client()}).Token(context.Background())
	var ae *credential.APIError
	if !errors.As(err, &ae) || ae.Code != "invalid_scope" {
		t.Fatalf("wrong scope: %v", err)
	}
}

func TestAlloyDBExpiredKey(t *testing.T) {
	t.Parallel()
	g := newFakeGoogle(t, nil)
	// A key Google no longer knows: deleted, disabled or expired.
	key := g.NewKey(t, "etl@proj.iam.gserviceaccount.com", false)
	_, err := credential.NewAlloyDBSource(credential.AlloyDBConfig{ServiceAccountKey: secret.New(key), HTTPClient: g.Srv.Client()}).
		Token(context.Background())
	var ke *credential.InvalidKeyError
	if !errors.As(err, &ke) {
		t.Fatalf("err = %v (%T), want *InvalidKeyError", err, err)
	}
	if ke.Code != "invalid_grant" || !strings.Contains(err.Error(), "Invalid JWT Signature.") ||
		!strings.Contains(err.Error(), "etl@proj.iam.gserviceaccount.com") ||
		!strings.Contains(credential.Hint(err), "Create a new JSON key") || credential.Transient(err) ||
		credential.OutcomeOf(err) != credential.OutcomeInvalidKey {
		t.Errorf("err %v; hint %s", err, credential.Hint(err))
	}
	noSecret(t, err, "PRIVATE KEY")

	// A key that does not parse never reaches the server.
	calls := g.Count()
	_, err = credential.NewAlloyDBSource(credential.AlloyDBConfig{ServiceAccountKey: secret.New(`{"type":"service_account"}`)}).
		Token(context.Background())
	if !errors.As(err, &ke) || ke.Err == nil || g.Count() != calls || !strings.Contains(credential.Hint(err), "JSON key file") {
		t.Fatalf("unparsable key: %v", err)
	}
}

func TestSourceFromSpec(t *testing.T) {
	t.Parallel()
	s := connection.Spec{Name: "wh"}
	if src := credential.New(&s, credential.Options{}); src != nil {
		t.Fatalf("password spec has source %T", src)
	}
	s.Auth = &connection.Auth{Kind: connection.AuthLakebase, WorkspaceURL: "https://dbc.example.com", ClientID: "c", Instance: "i"}
	src := credential.New(&s, credential.Options{})
	_, err := src.Token(context.Background())
	var ce *credential.ConfigError
	if !errors.As(err, &ce) || ce.Field != "auth.client_secret" || !strings.Contains(credential.Hint(err), "auth.client_secret") {
		t.Fatalf("lakebase without a secret: %v", err)
	}
	// Neither an instance nor an endpoint: both fields are named, with
	// what each accepts.
	s.Auth = &connection.Auth{Kind: connection.AuthLakebase, WorkspaceURL: "https://dbc.example.com", ClientID: "c",
		ClientSecret: secret.New("s")}
	_, err = credential.New(&s, credential.Options{}).Token(context.Background())
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "auth.instance or auth.endpoint: neither is set: accepted is") ||
		!strings.Contains(err.Error(), "projects/<project>/branches/<branch>/endpoints/<endpoint>") ||
		!strings.Contains(credential.Hint(err), "Set auth.instance or auth.endpoint on the connection") {
		t.Fatalf("lakebase without an instance or endpoint: %v; hint %s", err, credential.Hint(err))
	}
	s.Auth = &connection.Auth{Kind: connection.AuthCommand, Program: "true"}
	if src := credential.New(&s, credential.Options{}); src.Kind() != connection.AuthCommand || src.Describe() != "command true" {
		t.Fatalf("command source %T %s", src, src.Describe())
	}
	s.Auth = &connection.Auth{Kind: connection.AuthAlloyDBIAM}
	if _, err := credential.New(&s, credential.Options{}).Token(context.Background()); !errors.As(err, &ce) ||
		ce.Field != "auth.service_account_key" {
		t.Fatalf("alloydb without a key: %v", err)
	}
}

// TestNetworkClientThroughProxy: through an HTTPS proxy the dial only
// sees the proxy, so a workspace URL whose host is a denied IP literal is
// refused before the proxy is asked; the proxy's own address is dialled
// under the policy.
func TestNetworkClientThroughProxy(t *testing.T) {
	t.Parallel()
	var asked atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		asked.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	}))
	t.Cleanup(proxy.Close)
	pu, err := url.Parse(proxy.URL)
	if err != nil {
		t.Fatal(err)
	}
	viaProxy := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	deny := func(prefix string) *egress.Policy {
		p, err := egress.New([]netip.Prefix{netip.MustParsePrefix(prefix)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	src := func(policy *egress.Policy) *credential.LakebaseSource {
		return credential.NewLakebaseSource(credential.LakebaseConfig{WorkspaceURL: "https://10.9.8.7", ClientID: "c",
			ClientSecret: secret.New("dose-proxy"), Instance: "i", HTTPClient: credential.NetworkClient(viaProxy, policy)})
	}
	for _, c := range []struct{ deny, addr string }{{"10.0.0.0/8", "10.9.8.7"}, {"127.0.0.1/32", "127.0.0.1"}} {
		_, err = src(deny(c.deny)).Token(context.Background())
		var nd *credential.NetworkDeniedError
		if !errors.As(err, &nd) || nd.Err.Addr.String() != c.addr || !strings.Contains(err.Error(), "auth.workspace_url") ||
			credential.OutcomeOf(err) != credential.OutcomeNetworkDenied {
			t.Fatalf("deny %s: %v (%T), want %s refused, naming auth.workspace_url", c.deny, err, err, c.addr)
		}
	}
	if n := asked.Load(); n != 0 {
		t.Fatalf("the proxy was asked %d times", n)
	}
}

// TestLakebaseExpiryOnThisClock: the credential's expire_time is the
// server's clock; with this machine's clock 30 minutes behind, a
// 10-minute credential must still count as expiring 10 minutes after it
// was asked for on this clock, not 40 (it was used for half an hour after
// it expired).
func TestLakebaseExpiryOnThisClock(t *testing.T) {
	t.Parallel()
	f := newFakeDatabricks(t, nil)
	behind := func() time.Time { return time.Now().Add(-30 * time.Minute) }
	start := behind()
	tok, err := lakebase(f, func(c *credential.LakebaseConfig) {
		c.Instance, c.Endpoint, c.Lifetime, c.Now = "", f.Endpoint, 10*time.Minute, behind
	}).Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v (hint: %s)", err, credential.Hint(err))
	}
	if d := tok.ExpiresAt.Sub(start); d > 10*time.Minute+5*time.Second {
		t.Fatalf("the token counts as valid for %v on this clock, asked for 10m", d)
	}
}

// TestAlloyDBTokenAlreadyExpired: a token endpoint that answers with
// expires_in 0 or less gave a token that has already expired. x/oauth2
// drops such an expires_in, and the token used to be taken for one of
// Google's usual hour: the connection test then passed the credential
// step and blamed the database's IAM setup for the refused login.
func TestAlloyDBTokenAlreadyExpired(t *testing.T) {
	t.Parallel()
	g := newFakeGoogle(t, nil)
	key := g.NewKey(t, "etl@proj.iam.gserviceaccount.com", true)
	for _, expiresIn := range []string{"0", "-30"} {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"access_token": "ya29.expired-token-value", "token_type": "Bearer", "expires_in": ` + expiresIn + `}`))
		}))
		t.Cleanup(srv.Close)
		// The key's token_uri is g's; send its requests to srv instead.
		hc := srv.Client()
		hc.Transport = rewriteHost{rt: hc.Transport, host: strings.TrimPrefix(srv.URL, "https://")}
		_, err := credential.NewAlloyDBSource(credential.AlloyDBConfig{ServiceAccountKey: secret.New(key), HTTPClient: hc}).
			Token(context.Background())
		var me *credential.MalformedError
		if !errors.As(err, &me) || !strings.Contains(err.Error(), "expires_in "+expiresIn) ||
			!strings.Contains(err.Error(), "already expired") || !strings.Contains(credential.Hint(err), "clock") {
			t.Fatalf("expires_in %s: err = %v (%T); hint %s", expiresIn, err, err, credential.Hint(err))
		}
		noSecret(t, err, "expired-token-value")
	}
}

// rewriteHost sends every request to host.
type rewriteHost struct {
	rt   http.RoundTripper
	host string
}

func (r rewriteHost) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Host = r.host
	return r.rt.RoundTrip(req)
}

// TestLakebaseCredentialAlreadyExpired: a credential whose expiration_time
// has passed is refused with the clock to check, and the hint says so
// (it used to say the API answered in an unknown shape).
func TestLakebaseCredentialAlreadyExpired(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc(credential.LakebaseTokenPath, func(w http.ResponseWriter, r *http.Request) {
		credentialtest.WriteJSON(w, http.StatusOK, map[string]any{"access_token": "ws-token", "token_type": "Bearer", "expires_in": 3600})
	})
	mux.HandleFunc(credential.LakebaseInstanceCredentialPath, func(w http.ResponseWriter, r *http.Request) {
		credentialtest.WriteJSON(w, http.StatusOK, map[string]any{"token": "db-expired-token-value",
			"expiration_time": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)})
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	_, err := credential.NewLakebaseSource(credential.LakebaseConfig{WorkspaceURL: srv.URL, ClientID: "c", ClientSecret: secret.New("s"),
		Instance: "i", HTTPClient: srv.Client()}).Token(context.Background())
	var me *credential.MalformedError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "is not in the future") || !strings.Contains(credential.Hint(err), "clock") ||
		strings.Contains(credential.Hint(err), "shape") {
		t.Fatalf("err = %v (%T); hint %s", err, err, credential.Hint(err))
	}
	noSecret(t, err, "db-expired-token-value")
}
