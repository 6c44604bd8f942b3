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
	"golang.org/x/oauth2/google"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// AlloyDBConfig configures an [AlloyDBSource].
type AlloyDBConfig struct {
	// ServiceAccountKey is the service account's JSON key file.
	ServiceAccountKey secret.Value
	// Scope is the space-separated OAuth scope (default
	// connection.DefaultAlloyDBScope).
	Scope string
	// HTTPClient is the client to use (default: the standard transport);
	// redirects are never followed whatever it says.
	HTTPClient *http.Client
}

// AlloyDBSource gets an OAuth2 access token for a service account with the
// JWT-bearer grant (RFC 7523): an assertion signed with the account's key
// is exchanged at the key's token_uri. The token is the password of the
// AlloyDB IAM database user.
type AlloyDBSource struct {
	cfg AlloyDBConfig
	// account and keyID are read from the key, for messages.
	account, keyID string
}

// NewAlloyDBSource returns a source for cfg.
func NewAlloyDBSource(cfg AlloyDBConfig) *AlloyDBSource {
	if cfg.Scope == "" {
		cfg.Scope = connection.DefaultAlloyDBScope
	}
	s := &AlloyDBSource{cfg: cfg}
	if k, err := connection.ParseServiceAccountKey(cfg.ServiceAccountKey); err == nil {
		s.account, s.keyID = k.ClientEmail, k.PrivateKeyID
	}
	return s
}

// Kind returns connection.AuthAlloyDBIAM.
func (s *AlloyDBSource) Kind() connection.AuthKind { return connection.AuthAlloyDBIAM }

// Describe names the service account.
func (s *AlloyDBSource) Describe() string {
	if s.account == "" {
		return "Google service account (key not readable)"
	}
	return "Google service account " + s.account
}

// Token signs an assertion with the key and exchanges it for an access
// token.
func (s *AlloyDBSource) Token(ctx context.Context) (Token, error) {
	if s.cfg.ServiceAccountKey.IsZero() {
		return Token{}, &ConfigError{Kind: connection.AuthAlloyDBIAM, Field: "auth.service_account_key", Problem: "no service-account key is saved"}
	}
	key, err := connection.ParseServiceAccountKey(s.cfg.ServiceAccountKey)
	if err != nil {
		return Token{}, &InvalidKeyError{Err: err}
	}
	cfg, err := google.JWTConfigFromJSON([]byte(s.cfg.ServiceAccountKey.Reveal()), strings.Fields(s.cfg.Scope)...)
	if err != nil {
		// Its errors do not quote the key, but say little: ours do.
		return Token{}, &InvalidKeyError{ServiceAccount: key.ClientEmail, KeyID: key.PrivateKeyID, Err: errors.New("the key file cannot be used to sign")}
	}
	// A fresh TokenSource each time: the Cache decides about reuse.
	rec := &transportRecorder{ctx: ctx}
	hc := httpClient(s.cfg.HTTPClient, rec)
	tok, err := cfg.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, hc)).Token()
	if err != nil {
		return Token{}, s.grantError(ctx, rec, cfg.TokenURL, key, err)
	}
	from := "the answer of " + describeURL(cfg.TokenURL)
	if tok.AccessToken == "" {
		return Token{}, &MalformedError{Kind: connection.AuthAlloyDBIAM, From: from, Problem: `it has no "access_token"`}
	}
	if p := checkToken(tok.AccessToken); p != "" {
		return Token{}, &MalformedError{Kind: connection.AuthAlloyDBIAM, From: from, Problem: "its access_token " + p}
	}
	if tok.Expiry.IsZero() {
		// x/oauth2 drops an expires_in of 0 or less: such a token has
		// already expired (taken for an hour, the database's refusal
		// would be blamed on its IAM setup).
		if secs, ok := expiresIn(tok.Extra("expires_in")); ok && secs <= 0 {
			return Token{}, &MalformedError{Kind: connection.AuthAlloyDBIAM, From: from,
				Problem: fmt.Sprintf("expires_in %d: the access token has already expired", secs),
				Fix: "The token endpoint gave a token that is no longer valid: check the clock of this machine and of " +
					"the endpoint, and that the key's token_uri is Google's (https://oauth2.googleapis.com/token)."}
		}
		// Google always sends expires_in; a token endpoint that does not
		// is taken at Google's usual hour.
		tok.Expiry = time.Now().Add(time.Hour)
	}
	return Token{Value: secret.New(tok.AccessToken), ExpiresAt: tok.Expiry}, nil
}

// grantError classifies an error of the JWT-bearer exchange.
func (s *AlloyDBSource) grantError(ctx context.Context, rec *transportRecorder, u string, key *connection.ServiceAccountKey, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		var e struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		_ = json.Unmarshal(re.Body, &e)
		code, desc := cleanText(e.Error, 80), cleanText(e.Description, 300)
		switch code {
		case "invalid_grant", "invalid_client", "unauthorized_client":
			return &InvalidKeyError{ServiceAccount: key.ClientEmail, KeyID: key.PrivateKeyID, Code: code, Description: desc}
		}
		return &APIError{Kind: connection.AuthAlloyDBIAM, URL: describeURL(u), Status: status, Code: code, Message: desc}
	}
	if terr, redirect := rec.last(); terr != nil || redirect != 0 || ctx.Err() != nil {
		return requestError(ctx, rec, connection.AuthAlloyDBIAM, u, err)
	}
	// x/oauth2's jwt reports an answer it cannot parse as a plain error.
	return &MalformedError{Kind: connection.AuthAlloyDBIAM, From: "the answer of " + describeURL(u),
		Problem: fmt.Sprintf("not an OAuth token response (%s)", cleanText(strings.TrimPrefix(err.Error(), "oauth2: "), 120))}
}

// expiresIn reads the expires_in field of a token response (a JSON number,
// or a string of one as some servers send it).
func expiresIn(v any) (int64, bool) {
	switch n := v.(type) {
	case float64:
		return int64(n), true
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case string:
		i, err := strconv.ParseInt(n, 10, 64)
		return i, err == nil
	}
	return 0, false
}
