package connection

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// requireAuthMethods are the method names of libpq's require_auth, each of
// which may be negated with a leading "!".
var requireAuthMethods = []string{"password", "md5", "scram-sha-256", "gss", "sspi", "oauth", "none"}

// DefaultRequireAuthUnverified is the policy used when RequireAuth is
// empty and the database hop is not verified (sslmode below verify-ca): the
// server may not ask for the password in clear text, which anyone on the
// path could then read.
const DefaultRequireAuthUnverified = "!password"

// EffectiveRequireAuth is the require_auth policy pgrelay logs in with: the
// spec's own, or by default a refusal of clear-text password authentication
// unless the server's certificate is verified (verify-ca, verify-full).
func (s *Spec) EffectiveRequireAuth() string {
	if s.RequireAuth != "" {
		return s.RequireAuth
	}
	if s.SSLMode.Verifies() {
		return ""
	}
	return DefaultRequireAuthUnverified
}

// CleartextRefusedByDefault reports whether the effective policy refuses
// clear-text passwords only because of the default for unverified hops.
func (s *Spec) CleartextRefusedByDefault() bool {
	return s.RequireAuth == "" && !s.SSLMode.Verifies()
}

// validateRequireAuth checks a require_auth list with pgx's own parser,
// which follows libpq 16.
func validateRequireAuth(v string) error {
	if v == "" {
		return nil
	}
	for _, part := range strings.Split(v, ",") {
		m := strings.TrimPrefix(strings.TrimSpace(part), "!")
		found := false
		for _, ok := range requireAuthMethods {
			found = found || m == ok
		}
		if !found {
			return fmt.Errorf("%q is not accepted: a comma-separated list of %s (libpq's require_auth), each optionally negated with '!', e.g. scram-sha-256 or !password,!md5",
				strings.TrimSpace(part), strings.Join(requireAuthMethods, ", "))
		}
	}
	if _, err := pgconn.ParseConfig("require_auth=" + quoteValue(v)); err != nil {
		return fmt.Errorf("%q is not accepted: %s; accepted is a comma-separated list of methods, all negated or none, each at most once", v, requireAuthProblem(err))
	}
	return nil
}

// requireAuthProblem is the innermost reason of a ParseConfig error, which
// does not repeat the connection string.
func requireAuthProblem(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// AcceptsAuth reports whether the effective require_auth policy accepts
// the named authentication method ("password", "md5", "scram-sha-256",
// "gss", "sspi", "oauth" or "none"), with libpq's semantics: a list of
// negated methods refuses those, a plain list accepts only those.
func (s *Spec) AcceptsAuth(method string) bool {
	return policyAccepts(s.EffectiveRequireAuth(), method)
}

// PolicyAccepts reports whether a require_auth policy (as
// EffectiveRequireAuth returns it; "" accepts every method) accepts
// method, with libpq's semantics.
func PolicyAccepts(policy, method string) bool { return policyAccepts(policy, method) }

// policyAccepts reports whether a require_auth policy accepts method.
func policyAccepts(policy, method string) bool {
	if policy == "" {
		return true
	}
	negated := strings.HasPrefix(strings.TrimSpace(policy), "!")
	for _, part := range strings.Split(policy, ",") {
		if strings.TrimPrefix(strings.TrimSpace(part), "!") == method {
			return !negated
		}
	}
	return negated
}
