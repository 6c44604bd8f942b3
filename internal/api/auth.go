package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
)

// authenticate finds the request's principal (bearer token first, else the
// session cookie), checks the CSRF token of cookie-authenticated unsafe
// requests, and checks that the principal's role allows the route.
func (a *API) authenticate(r *http.Request, rt Route) (*auth.Principal, error) {
	ctx := r.Context()
	var p *auth.Principal
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return nil, &apiError{status: http.StatusUnauthorized, code: CodeUnauthenticated,
				message: `unauthenticated: the Authorization header must be "Bearer <token>"`}
		}
		var err error
		if p, err = a.cfg.App.Authenticate(ctx, strings.TrimSpace(token)); err != nil {
			return nil, err
		}
	} else if c, err := r.Cookie(auth.SessionCookie); err == nil && a.cfg.Sessions != nil {
		id, err := a.cfg.Sessions.Verify(c.Value)
		if err != nil {
			return nil, &apiError{status: http.StatusUnauthorized, code: CodeUnauthenticated,
				message: "unauthenticated: the session is invalid or expired; sign in again"}
		}
		if p, err = a.cfg.App.AuthenticateSession(ctx, id); err != nil {
			return nil, err
		}
		// Two layers for cookie-authenticated changes: the browser's own
		// cross-origin signals (Origin, Sec-Fetch-Site), then the
		// session's CSRF token.
		if unsafeMethod(r.Method) && a.cfg.OriginProtection.Check(r) != nil {
			a.log.WarnContext(ctx, "cross-origin request refused", "method", r.Method, "route", rt.Pattern,
				"token_id", p.TokenID, "token_name", p.Name)
			a.cfg.App.AccessRefused(auth.WithPrincipal(ctx, p), r.Method, rt.Pattern, app.RefusedCrossSite)
			return nil, &apiError{status: http.StatusForbidden, code: CodeCSRF,
				message: "forbidden: a cross-origin request cannot use the session cookie to change something; use an API token"}
		}
		if unsafeMethod(r.Method) && !a.cfg.Sessions.CheckCSRF(c.Value, r.Header.Get(auth.CSRFHeader)) {
			a.log.WarnContext(ctx, "csrf check failed", "method", r.Method, "route", rt.Pattern,
				"token_id", p.TokenID, "token_name", p.Name)
			a.cfg.App.AccessRefused(auth.WithPrincipal(ctx, p), r.Method, rt.Pattern, app.RefusedCrossSite)
			return nil, &apiError{status: http.StatusForbidden, code: CodeCSRF,
				message: "forbidden: missing or wrong CSRF token; requests that use the session cookie and change something must send the session's CSRF token in the " + auth.CSRFHeader + " header"}
		}
	} else {
		return nil, &apiError{status: http.StatusUnauthorized, code: CodeUnauthenticated,
			message: "unauthenticated: send an API token as \"Authorization: Bearer <token>\" (create one with `pgrelay token create`)"}
	}
	if !p.Role.Can(rt.Action) {
		a.log.WarnContext(ctx, "forbidden", "method", r.Method, "route", rt.Pattern, "action", string(rt.Action),
			"token_id", p.TokenID, "token_name", p.Name, "role", string(p.Role))
		a.cfg.App.AccessRefused(auth.WithPrincipal(ctx, p), r.Method, rt.Pattern, app.RefusedRole)
		return nil, &apiError{status: http.StatusForbidden, code: CodeForbidden,
			message: fmt.Sprintf("forbidden: %s needs the %s role; token %q has the %s role",
				actionText(rt.Action), rolesAllowed(rt.Action), p.Name, p.Role)}
	}
	return p, nil
}

// actionText describes an action for error messages.
func actionText(a auth.Action) string {
	switch a {
	case auth.Read:
		return "reading connections, jobs and runs"
	case auth.Write:
		return "changing connections and jobs"
	case auth.Use:
		return "opening connections (queries, running and cancelling jobs)"
	case auth.ManageTokens:
		return "managing API tokens"
	case auth.ReadAudit:
		return "reading the audit log"
	}
	return string(a)
}

// rolesAllowed names the roles that may perform a, e.g. "admin or editor".
func rolesAllowed(a auth.Action) string {
	var names []string
	for _, r := range auth.Roles() {
		if r.Can(a) {
			names = append(names, string(r))
		}
	}
	return strings.Join(names, " or ")
}

// WhoAmI is the principal a request acts as.
type WhoAmI struct {
	TokenID string    `json:"token_id"`
	Name    string    `json:"name"`
	Role    auth.Role `json:"role"`
	// Actions lists what the role may do: read, write, use, manage_tokens,
	// read_audit.
	Actions []auth.Action `json:"actions"`
}

func (a *API) whoAmI(w http.ResponseWriter, r *http.Request) error {
	p := auth.PrincipalFrom(r.Context())
	if p == nil {
		return app.ErrUnauthenticated
	}
	out := WhoAmI{TokenID: p.TokenID, Name: p.Name, Role: p.Role, Actions: []auth.Action{}}
	for _, act := range []auth.Action{auth.Read, auth.Write, auth.Use, auth.ManageTokens, auth.ReadAudit} {
		if p.Role.Can(act) {
			out.Actions = append(out.Actions, act)
		}
	}
	return writeJSON(w, http.StatusOK, out)
}
