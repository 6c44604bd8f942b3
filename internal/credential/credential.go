// Package credential fetches expiring database passwords (tokens) for
// connections whose auth kind is not password: from a command
// ([CommandSource]), from the Databricks workspace API for Lakebase
// ([LakebaseSource]) and from Google's OAuth2 token endpoint for AlloyDB
// IAM database users ([AlloyDBSource]).
//
// A [Cache] per connection holds the current token and fetches a new one
// at 80 % of its lifetime, one fetch at a time, rate-limited and retried
// with backoff when the failure is transient.
//
// Every failure is a typed error that says what failed and where, with a
// Hint ([Hint]) naming the likely cause and the fix; [Outcome] names it for
// metrics. No error, log line or hint ever contains a token or a secret:
// tokens are secret.Values, API error messages are quoted only from the
// server's documented error fields; a command's stderr (the token masked)
// only by local commands (ProgramStderr).
package credential

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// Token is a database password with its expiry.
type Token struct {
	// Value is the password to log in with.
	Value secret.Value
	// ExpiresAt is when the database stops accepting it for new logins.
	ExpiresAt time.Time
}

// Source fetches tokens. Each call to Token fetches a new one (a [Cache]
// reuses them).
type Source interface {
	// Token fetches a new token.
	Token(ctx context.Context) (Token, error)
	// Kind is the source's auth kind (the metrics label "source").
	Kind() connection.AuthKind
	// Describe names the source for people, without secrets, e.g.
	// "Lakebase instance my-instance at https://dbc-….cloud.databricks.com".
	Describe() string
}

// Hint returns the fix for the first typed error of this package in err's
// chain, or "".
func Hint(err error) string {
	var h interface{ Hint() string }
	if errors.As(err, &h) {
		return h.Hint()
	}
	return ""
}

// Outcome names the result of a fetch for the metrics label "outcome".
type Outcome string

// Outcomes.
const (
	OutcomeOK             Outcome = "ok"
	OutcomeUnreachable    Outcome = "unreachable"
	OutcomeHTTPError      Outcome = "http_error"
	OutcomeInvalidClient  Outcome = "invalid_client"
	OutcomeInvalidKey     Outcome = "invalid_key"
	OutcomeNotAllowed     Outcome = "not_allowed"
	OutcomeCommandFailed  Outcome = "command_failed"
	OutcomeCommandTimeout Outcome = "command_timeout"
	OutcomeMalformed      Outcome = "malformed"
	OutcomeRateLimited    Outcome = "rate_limited"
	OutcomeConfig         Outcome = "config"
	OutcomeNetworkDenied  Outcome = "network_denied"
	OutcomeCanceled       Outcome = "canceled"
	OutcomeError          Outcome = "error"
)

// OutcomeOf classifies err (nil is ok).
func OutcomeOf(err error) Outcome {
	var (
		unreachable *UnreachableError
		api         *APIError
		client      *InvalidClientError
		key         *InvalidKeyError
		notAllowed  *CommandNotAllowedError
		failed      *CommandFailedError
		timeout     *CommandTimeoutError
		malformed   *MalformedError
		limited     *RateLimitedError
		config      *ConfigError
		denied      *NetworkDeniedError
	)
	switch {
	case err == nil:
		return OutcomeOK
	case errors.As(err, &denied):
		return OutcomeNetworkDenied
	case errors.As(err, &unreachable):
		return OutcomeUnreachable
	case errors.As(err, &api):
		return OutcomeHTTPError
	case errors.As(err, &client):
		return OutcomeInvalidClient
	case errors.As(err, &key):
		return OutcomeInvalidKey
	case errors.As(err, &notAllowed):
		return OutcomeNotAllowed
	case errors.As(err, &failed):
		return OutcomeCommandFailed
	case errors.As(err, &timeout):
		return OutcomeCommandTimeout
	case errors.As(err, &malformed):
		return OutcomeMalformed
	case errors.As(err, &limited):
		return OutcomeRateLimited
	case errors.As(err, &config):
		return OutcomeConfig
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return OutcomeCanceled
	}
	return OutcomeError
}

// Transient reports whether err may go away when the fetch is tried again:
// an endpoint that could not be reached (but not an untrusted certificate),
// or an API answer of 429 or 5xx.
func Transient(err error) bool {
	var (
		unreachable *UnreachableError
		api         *APIError
	)
	switch {
	case errors.As(err, &unreachable):
		return !unreachable.certificate()
	case errors.As(err, &api):
		return api.Status == http.StatusTooManyRequests || api.Status >= 500
	}
	return false
}

// ConfigError means the connection's auth settings cannot make a source,
// e.g. a secret that was never saved.
type ConfigError struct {
	Kind connection.AuthKind
	// Field is the auth field at fault, e.g. "auth.client_secret" (or
	// the fields, one of which is to be set: "auth.instance or
	// auth.endpoint").
	Field   string
	Problem string
}

// Error names the field and the problem.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("%s credential: %s: %s", e.Kind, e.Field, e.Problem)
}

// Hint says to set the field.
func (e *ConfigError) Hint() string {
	return fmt.Sprintf("Set %s on the connection (%s) and test again.", e.Field, e.Problem)
}

// UnreachableError means an HTTPS endpoint could not be reached: the name
// did not resolve, the connection was refused or timed out, or TLS failed.
type UnreachableError struct {
	Kind connection.AuthKind
	// URL is the endpoint, without query.
	URL string
	Err error
}

// Error names the endpoint and the network error.
func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%s credential: cannot reach %s: %v", e.Kind, e.URL, e.Err)
}

// Unwrap returns the network error.
func (e *UnreachableError) Unwrap() error { return e.Err }

func (e *UnreachableError) certificate() bool {
	var (
		cv  *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		cie x509.CertificateInvalidError
	)
	return errors.As(e.Err, &cv) || errors.As(e.Err, &ua) || errors.As(e.Err, &he) || errors.As(e.Err, &cie)
}

// Hint names the likely network cause.
func (e *UnreachableError) Hint() string {
	host := e.URL
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	host, _, _ = strings.Cut(host, "/")
	var (
		dnsErr *net.DNSError
		netErr net.Error
	)
	what := "the endpoint"
	switch e.Kind {
	case connection.AuthLakebase:
		what = "the Databricks workspace"
	case connection.AuthAlloyDBIAM:
		what = "Google's token endpoint (the key's token_uri)"
	}
	switch {
	case e.certificate():
		return fmt.Sprintf("The TLS certificate of %s is not trusted by this machine: a proxy that intercepts HTTPS, or a wrong URL. "+
			"Install the proxy's CA certificate in the system trust store, or correct the URL.", host)
	case errors.As(e.Err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Sprintf("The host name %s does not exist in DNS as seen from this machine: check the spelling of %s's URL.", host, what)
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		return fmt.Sprintf("Nothing accepts connections at %s: check %s's URL and port, and that it is up.", host, what)
	case errors.As(e.Err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("No answer from %s in time: a firewall or egress proxy probably drops outbound HTTPS from this machine to %s; "+
			"allow it (TCP 443), or set HTTPS_PROXY for pgrelay. pgrelay retries transient failures with backoff.", host, what)
	}
	return fmt.Sprintf("Could not reach %s (%s): check this machine's network, DNS and outbound HTTPS (TCP 443) to it; "+
		"pgrelay retries transient failures with backoff.", what, host)
}

// NetworkDeniedError means pgrelay's network policy (--deny-network,
// --allow-network, and the default denial of link-local and cloud
// metadata addresses) refused the address an HTTPS endpoint of the source
// resolved to: nothing was sent to it. It is not transient.
type NetworkDeniedError struct {
	Kind connection.AuthKind
	// Field is the setting the endpoint comes from, e.g.
	// "auth.workspace_url".
	Field string
	// URL is the endpoint, without query.
	URL string
	Err *egress.DeniedError
}

// Error names the field, the endpoint and the policy's refusal (the
// address, the rule and the setting that changes it).
func (e *NetworkDeniedError) Error() string {
	return fmt.Sprintf("%s credential: %s: %s: %v", e.Kind, e.Field, e.URL, e.Err)
}

// Unwrap returns the policy's refusal.
func (e *NetworkDeniedError) Unwrap() error { return e.Err }

// Hint says which setting to correct, or how the operator allows the
// address.
func (e *NetworkDeniedError) Hint() string {
	d := e.Err
	target := d.Addr.String()
	if d.Host != "" {
		target = fmt.Sprintf("%s (%s)", d.Host, d.Addr)
	}
	lift := fmt.Sprintf("the operator of the pgrelay process that fetches tokens (the server, for the web UI and API) allows it "+
		"with --allow-network %s (env PGRELAY_ALLOW_NETWORK)", d.Rule.Prefix)
	if !d.Rule.Default {
		lift = fmt.Sprintf("ask the operator, who denied %s with --deny-network (env PGRELAY_DENY_NETWORK), to allow it "+
			"(--allow-network with a narrower range)", d.Rule.Prefix)
	}
	return fmt.Sprintf("%s leads to %s, which pgrelay's network policy does not let it connect to (%s): no token was requested "+
		"and nothing was sent there. Correct %s; if that address really is the provider's endpoint, %s.",
		e.Field, target, d.Rule, e.Field, lift)
}

// urlField names the setting a source's HTTPS endpoints come from.
func urlField(kind connection.AuthKind) string {
	if kind == connection.AuthAlloyDBIAM {
		return "auth.service_account_key (its token_uri)"
	}
	return "auth.workspace_url"
}

// APIError means an API answered with an error status. Code and Message
// are the API's own error fields (Databricks: error_code and message;
// OAuth: error and error_description).
type APIError struct {
	Kind connection.AuthKind
	// URL is the endpoint, without query.
	URL    string
	Status int
	// Code is the API's error code, e.g. RESOURCE_DOES_NOT_EXIST.
	Code string
	// Message is the API's error message.
	Message string
}

// Error names the endpoint, the status and the API's message.
func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s credential: %s answered %d %s", e.Kind, e.URL, e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		msg += ": " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Hint names the cause by status.
func (e *APIError) Hint() string {
	lake := e.Kind == connection.AuthLakebase
	switch {
	case e.Status >= 300 && e.Status < 400:
		return "The API redirected the request, which it never does for a correct URL: the workspace URL probably points at a login page or another site. Use the workspace URL exactly as the browser shows it, e.g. https://dbc-a1b2345c-d6e7.cloud.databricks.com."
	case e.Status == http.StatusUnauthorized:
		return "The API refused the OAuth access token pgrelay obtained: the service principal may have been removed from the workspace, or the workspace URL belongs to another workspace than the service principal. Check both."
	case e.Status == http.StatusForbidden && lake:
		return "The service principal is not allowed to get database credentials: give it permission on the Lakebase instance or project (at least CAN USE / CAN CONNECT) and make sure OAuth was created with scope all-apis."
	case e.Status == http.StatusForbidden:
		return "The account is not allowed to get this token: grant the service account the IAM roles for AlloyDB IAM authentication (roles/alloydb.databaseUser and roles/serviceusage.serviceUsageConsumer)."
	case e.Status == http.StatusNotFound && lake:
		return "The Lakebase instance or endpoint does not exist in this workspace (or the API is not enabled there): check auth.instance / auth.endpoint against the workspace's Lakebase page, and the workspace URL."
	case e.Status == http.StatusBadRequest && lake:
		return "Databricks refused the request: check auth.instance / auth.endpoint (the exact resource name) and auth.lifetime (5m to 1h)."
	case e.Status == http.StatusTooManyRequests:
		return "The API is rate-limiting requests: pgrelay backs off and retries; if it persists, fewer connections should share this service principal or account."
	case e.Status >= 500:
		return "The API failed on its side: pgrelay retries with backoff. Check the provider's status page if it persists."
	}
	return "The API refused the request: its message above says why."
}

// InvalidClientError means the OAuth token endpoint refused the client ID
// or secret (OAuth error invalid_client, or 401).
type InvalidClientError struct {
	Kind connection.AuthKind
	// URL is the token endpoint.
	URL      string
	ClientID string
	// Description is the server's error_description.
	Description string
}

// Error names the client and the endpoint.
func (e *InvalidClientError) Error() string {
	msg := fmt.Sprintf("%s credential: %s refused OAuth client %q (invalid_client)", e.Kind, e.URL, e.ClientID)
	if e.Description != "" {
		msg += ": " + e.Description
	}
	return msg
}

// Hint says how to get a working secret.
func (e *InvalidClientError) Hint() string {
	return "The OAuth client ID or secret is wrong, or the secret expired or was deleted. In Databricks, open the service principal " +
		"(Settings → Identity and access → Service principals → Secrets), generate a new secret, and save it on the connection " +
		"together with the service principal's client ID (its application ID). Check that the workspace URL is the workspace the service principal belongs to."
}

// InvalidKeyError means a Google service-account key cannot be used: it
// does not parse, or the token endpoint refused the signed assertion
// (invalid_grant: the key was deleted, disabled or has expired, or the
// service account is gone).
type InvalidKeyError struct {
	// ServiceAccount is the key's client_email, when known.
	ServiceAccount string
	// KeyID is the key's private_key_id, when known.
	KeyID string
	// Code and Description are the token endpoint's error fields.
	Code        string
	Description string
	// Err is the parse error, for a key that does not parse.
	Err error
}

// Error names the account and the reason.
func (e *InvalidKeyError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("alloydb-iam credential: service-account key: %v", e.Err)
	}
	msg := fmt.Sprintf("alloydb-iam credential: Google refused the key %s of service account %s", e.KeyID, e.ServiceAccount)
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if e.Description != "" {
		msg += ": " + e.Description
	}
	return msg
}

// Unwrap returns the parse error.
func (e *InvalidKeyError) Unwrap() error { return e.Err }

// Hint says how to get a working key.
func (e *InvalidKeyError) Hint() string {
	if e.Err != nil {
		return "Save the service account's JSON key file as Google issued it (IAM & Admin → Service accounts → Keys → Add key → Create new key → JSON)."
	}
	return fmt.Sprintf("The key was deleted, disabled or has expired, or service account %s was deleted or disabled. "+
		"Create a new JSON key for it (IAM & Admin → Service accounts → Keys) and save it on the connection. "+
		"If the key is valid, check this machine's clock: Google refuses assertions signed at a wrong time.", e.ServiceAccount)
}

// MalformedError means a source answered with something that is not a
// token: a command's output or an API's response of the wrong shape. The
// problem describes the shape, never the content, which may hold a token.
type MalformedError struct {
	Kind connection.AuthKind
	// From names what answered, e.g. "the output of /usr/local/bin/db-token".
	From    string
	Problem string
	// Fix, when set, is the hint: the answer had the right shape but
	// cannot be used (a token that has already expired).
	Fix string
}

// Error names what answered and what was wrong.
func (e *MalformedError) Error() string {
	return fmt.Sprintf("%s credential: %s: %s", e.Kind, e.From, e.Problem)
}

// Hint says what is accepted, or Fix.
func (e *MalformedError) Hint() string {
	if e.Fix != "" {
		return e.Fix
	}
	if e.Kind == connection.AuthCommand {
		return `The command must print the token alone on stdout (one line), or JSON {"token": "...", "expires_at": "2025-01-02T15:04:05Z"} ` +
			`with expires_at in RFC 3339, and write anything else to stderr.`
	}
	return "The API answered in a shape pgrelay does not know: check that the URL is the provider's API (not a proxy or login page)."
}

// RateLimitedError means pgrelay itself held a fetch back: the source was
// asked too often (fetches are limited per connection, to stay within
// quotas such as AlloyDB's sign-in quota).
type RateLimitedError struct {
	Kind connection.AuthKind
	// RetryAfter is when the next fetch is allowed.
	RetryAfter time.Duration
	// LastFailure is the error of the last fetch, when it failed: what
	// the fetches held back would most likely meet again. It is not
	// unwrapped, so that the outcome stays rate_limited.
	LastFailure error
}

// Error says when the next fetch is allowed, and why the last one failed.
func (e *RateLimitedError) Error() string {
	msg := fmt.Sprintf("%s credential: too many fetches: the next is allowed in %v", e.Kind, e.RetryAfter.Round(time.Millisecond))
	if e.LastFailure != nil {
		msg += "; the last fetch failed: " + e.LastFailure.Error()
	}
	return msg
}

// Hint explains the limit, and gives the fix of the last failure.
func (e *RateLimitedError) Hint() string {
	if e.LastFailure != nil {
		return "pgrelay limits how often it fetches a token per connection (a burst of 3, then one every 10 s), so after failed " +
			"fetches the next one waits. " + Hint(e.LastFailure)
	}
	return "pgrelay limits how often it fetches a token per connection. A token refused by the database right after it was fetched " +
		"usually means the database user does not match the token's identity: check the connection's user."
}

// describeURL returns u without query and fragment.
func describeURL(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		return u[:i]
	}
	return u
}

// cleanText makes server-supplied text safe to show: control characters
// replaced, at most n bytes.
func cleanText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return ' '
		}
		if unicode.IsControl(r) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return s
}

// newRequestID returns a random UUID (version 4) for idempotent requests.
func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
