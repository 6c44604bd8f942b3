package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// Databricks endpoints, relative to the workspace URL.
const (
	// LakebaseTokenPath is the workspace's OAuth token endpoint
	// (client_credentials grant, scope all-apis).
	LakebaseTokenPath = "/oidc/v1/token"
	// LakebaseInstanceCredentialPath generates a credential for
	// provisioned database instances: {"instance_names": [...],
	// "request_id": "..."} → {"token", "expiration_time"}.
	LakebaseInstanceCredentialPath = "/api/2.0/database/credentials"
	// LakebaseProjectCredentialPath generates a credential for an endpoint
	// of the projects API: {"endpoint": "projects/…", "ttl": "3600s"} →
	// {"token", "expire_time"}.
	LakebaseProjectCredentialPath = "/api/2.0/postgres/credentials"
	// LakebaseScope is the OAuth scope requested for the workspace token.
	LakebaseScope = "all-apis"
	// lakebaseDefaultLifetime is what provisioned instances issue.
	lakebaseDefaultLifetime = time.Hour
)

// LakebaseConfig configures a [LakebaseSource].
type LakebaseConfig struct {
	// WorkspaceURL is https://<workspace host>, without a path.
	WorkspaceURL string
	// ClientID and ClientSecret are the service principal's OAuth
	// machine-to-machine credentials.
	ClientID     string
	ClientSecret secret.Value
	// Instance is a provisioned database instance name; or set Endpoint.
	Instance string
	// Endpoint is an endpoint of the projects API
	// (projects/<p>/branches/<b>/endpoints/<e>).
	Endpoint string
	// Lifetime is the requested ttl for Endpoint credentials (default 1h).
	Lifetime time.Duration
	// HTTPClient is the client to use (default: the standard transport);
	// redirects are never followed whatever it says.
	HTTPClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// LakebaseSource gets a workspace OAuth token with the client-credentials
// grant, then a database credential from the Databricks API: for a
// provisioned instance or for an endpoint of the projects API.
type LakebaseSource struct {
	cfg LakebaseConfig
}

// NewLakebaseSource returns a source for cfg.
func NewLakebaseSource(cfg LakebaseConfig) *LakebaseSource {
	cfg.WorkspaceURL = strings.TrimRight(cfg.WorkspaceURL, "/")
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = connection.DefaultLakebaseLifetime
	}
	return &LakebaseSource{cfg: cfg}
}

// Kind returns connection.AuthLakebase.
func (s *LakebaseSource) Kind() connection.AuthKind { return connection.AuthLakebase }

// Describe names the instance or endpoint and the workspace.
func (s *LakebaseSource) Describe() string {
	if s.cfg.Endpoint != "" {
		return fmt.Sprintf("Lakebase endpoint %s at %s", s.cfg.Endpoint, s.cfg.WorkspaceURL)
	}
	return fmt.Sprintf("Lakebase instance %s at %s", s.cfg.Instance, s.cfg.WorkspaceURL)
}

// Token fetches a workspace OAuth token and then a database credential.
func (s *LakebaseSource) Token(ctx context.Context) (Token, error) {
	switch {
	case s.cfg.WorkspaceURL == "":
		return Token{}, &ConfigError{Kind: connection.AuthLakebase, Field: "auth.workspace_url", Problem: "no workspace URL is set"}
	case s.cfg.ClientID == "":
		return Token{}, &ConfigError{Kind: connection.AuthLakebase, Field: "auth.client_id", Problem: "no OAuth client ID is set"}
	case s.cfg.ClientSecret.IsZero():
		return Token{}, &ConfigError{Kind: connection.AuthLakebase, Field: "auth.client_secret", Problem: "no OAuth client secret is saved"}
	case s.cfg.Instance == "" && s.cfg.Endpoint == "":
		return Token{}, &ConfigError{Kind: connection.AuthLakebase, Field: "auth.instance or auth.endpoint", Problem: "neither is set: " +
			"accepted is the name of a database instance (provisioned Lakebase) or an endpoint " +
			"projects/<project>/branches/<branch>/endpoints/<endpoint> (Lakebase projects)"}
	}
	rec := &transportRecorder{ctx: ctx}
	hc := httpClient(s.cfg.HTTPClient, rec)
	ws, err := s.workspaceToken(ctx, hc, rec)
	if err != nil {
		return Token{}, err
	}
	start := s.cfg.Now()
	if s.cfg.Endpoint != "" {
		u := s.cfg.WorkspaceURL + LakebaseProjectCredentialPath
		req := struct {
			Endpoint string `json:"endpoint"`
			TTL      string `json:"ttl"`
		}{s.cfg.Endpoint, strconv.FormatInt(int64(s.cfg.Lifetime/time.Second), 10) + "s"}
		var resp struct {
			Token      string `json:"token"`
			ExpireTime string `json:"expire_time"`
		}
		if err := postJSON(ctx, hc, rec, connection.AuthLakebase, u, ws, req, &resp); err != nil {
			return Token{}, err
		}
		return lakebaseToken(u, resp.Token, resp.ExpireTime, "expire_time", start.Add(s.cfg.Lifetime), start)
	}
	u := s.cfg.WorkspaceURL + LakebaseInstanceCredentialPath
	req := struct {
		InstanceNames []string `json:"instance_names"`
		RequestID     string   `json:"request_id"`
	}{[]string{s.cfg.Instance}, newRequestID()}
	var resp struct {
		Token          string `json:"token"`
		ExpirationTime string `json:"expiration_time"`
	}
	if err := postJSON(ctx, hc, rec, connection.AuthLakebase, u, ws, req, &resp); err != nil {
		return Token{}, err
	}
	return lakebaseToken(u, resp.Token, resp.ExpirationTime, "expiration_time", start.Add(lakebaseDefaultLifetime), start)
}

// lakebaseToken checks a credential answer. An answer without an expiry
// (the field is optional) is taken to last the requested lifetime
// (fallback), and one with an expiry lasts no longer than that: the
// expiry is the server's clock, and with this machine's clock behind, a
// token would otherwise be taken for valid after it expired.
func lakebaseToken(u, token, expiry, field string, fallback, now time.Time) (Token, error) {
	from := "the answer of " + describeURL(u)
	if token == "" {
		return Token{}, &MalformedError{Kind: connection.AuthLakebase, From: from, Problem: `it has no "token"`}
	}
	if p := checkToken(token); p != "" {
		return Token{}, &MalformedError{Kind: connection.AuthLakebase, From: from, Problem: "its token " + p}
	}
	tok := Token{Value: secret.New(token), ExpiresAt: fallback}
	if expiry != "" {
		at, err := time.Parse(time.RFC3339Nano, expiry)
		if err != nil {
			return Token{}, &MalformedError{Kind: connection.AuthLakebase, From: from,
				Problem: fmt.Sprintf("%s %q is not an RFC 3339 time", field, cleanText(expiry, 40))}
		}
		if !at.After(now) {
			return Token{}, &MalformedError{Kind: connection.AuthLakebase, From: from,
				Problem: fmt.Sprintf("%s %s is not in the future (now %s): check this machine's clock", field,
					at.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)),
				Fix: "The workspace gave a credential that has already expired: check this machine's clock (timedatectl, or " +
					"chronyc tracking), which the expiry is compared with."}
		}
		if at.Before(fallback) {
			tok.ExpiresAt = at
		}
	}
	return tok, nil
}

// workspaceToken runs the OAuth client-credentials grant against the
// workspace's token endpoint (client ID and secret in HTTP Basic auth).
func (s *LakebaseSource) workspaceToken(ctx context.Context, hc *http.Client, rec *transportRecorder) (secret.Value, error) {
	u := s.cfg.WorkspaceURL + LakebaseTokenPath
	cc := clientcredentials.Config{
		ClientID:     s.cfg.ClientID,
		ClientSecret: s.cfg.ClientSecret.Reveal(),
		TokenURL:     u,
		Scopes:       []string{LakebaseScope},
		AuthStyle:    oauth2.AuthStyleInHeader,
	}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, hc))
	if err != nil {
		return secret.Value{}, s.oauthError(ctx, rec, u, err)
	}
	if tok.AccessToken == "" {
		return secret.Value{}, &MalformedError{Kind: connection.AuthLakebase, From: "the answer of " + u, Problem: `it has no "access_token"`}
	}
	return secret.New(tok.AccessToken), nil
}

// oauthError classifies an error of the token endpoint.
func (s *LakebaseSource) oauthError(ctx context.Context, rec *transportRecorder, u string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		code, desc := re.ErrorCode, re.ErrorDescription
		if code == "" {
			var e databricksError
			if json.Unmarshal(re.Body, &e) == nil {
				code, desc = e.Error, e.Description
				if code == "" {
					code, desc = e.ErrorCode, e.Message
				}
			}
		}
		if code == "invalid_client" || (status == http.StatusUnauthorized && code == "") {
			return &InvalidClientError{Kind: connection.AuthLakebase, URL: u, ClientID: s.cfg.ClientID, Description: cleanText(desc, 300)}
		}
		return &APIError{Kind: connection.AuthLakebase, URL: u, Status: status, Code: cleanText(code, 80), Message: cleanText(desc, 300)}
	}
	if terr, redirect := rec.last(); terr != nil || redirect != 0 || ctx.Err() != nil {
		return requestError(ctx, rec, connection.AuthLakebase, u, err)
	}
	var ue interface{ Timeout() bool }
	if errors.As(err, &ue) {
		return requestError(ctx, rec, connection.AuthLakebase, u, err)
	}
	// x/oauth2 reports an answer it cannot use (no access_token, not
	// JSON) as a plain error.
	return &MalformedError{Kind: connection.AuthLakebase, From: "the answer of " + u, Problem: "not an OAuth token response"}
}
